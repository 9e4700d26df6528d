"""How each evaluation task was run: the protocol block of every eval result's provenance (the run line's
``provenance.eval``, ``<task>.json``'s ``provenance.protocol``); :func:`thtb.eval.provenance.deviations` compares
it with the paper's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from thtb.eval.mmlu_pro import config_kwargs
from thtb.eval.mmlu_pro_prompts import DEFAULT_MAX_GEN_TOKS
from thtb.eval.mmlu_pro_scoring import DESCRIPTIONS, GUESS_SEED
from thtb.provenance import short_target


def mmlu_pro_protocol(ev: Mapping) -> dict[str, Any]:
    """How MMLU-Pro was prompted and scored. ``protocol`` is ``tiger`` for the authors' setup
    (:data:`thtb.eval.provenance.PAPER_SETUP`: TIGER-AI-Lab's evaluate_from_api.py prompt through the chat template,
    scored by their extraction chain + seeded guess), ``lm-eval`` for lm-eval's task with its strict regex, else a
    phrase naming format and scheme."""
    mp = ev.get("mmlu_pro") or {}
    kw = config_kwargs(mp)
    fmt, primary, chat = kw["prompt_format"], kw["primary_scheme"], kw["apply_chat_template"]
    if fmt == "tiger_api" and primary == "official_guess" and chat:
        protocol = "tiger"
    elif fmt == "lm_eval" and primary == "strict":
        protocol = "lm-eval"
    else:
        protocol = f"{fmt} prompt{'' if chat else ' without chat template'}, {primary} scoring"
    return {
        "protocol": protocol, "prompt_format": fmt,
        "task": (f"thtb_mmlu_pro_tiger ({'local parquet' if mp.get('data_dir') else 'hub'})" if fmt == "tiger_api"
                 else "thtb_mmlu_pro (local parquet)" if mp.get("data_dir") else "mmlu_pro (lm-eval built-in)"),
        "extraction": DESCRIPTIONS[primary], "primary_scheme": primary, "schemes": list(kw["schemes"]),
        "guess_seed": GUESS_SEED if "official_guess" in kw["schemes"] else None, "fewshot": kw["fewshot"],
        "apply_chat_template": chat, "fewshot_as_multiturn": kw["fewshot_as_multiturn"] and chat and fmt == "lm_eval",
        "max_gen_toks": kw["max_gen_toks"] or DEFAULT_MAX_GEN_TOKS[fmt],
        "stop": "Question:" if fmt == "lm_eval" else None, "limit": kw["limit"], "backend": ev.get("backend", "hf"),
    }


def pairwise_protocol(ev: Mapping) -> dict[str, Any]:
    from thtb.eval.pairwise import pairwise_template, tie_policy

    pw = ev.get("pairwise") or {}
    judge = pw.get("judge") or {}
    template = pairwise_template(pw.get("template", "forced"))
    return {"judge_backend": short_target(judge), "judge": judge.get("model"), "prompt": template.id,
            "template": pw.get("template", "forced"), "ties": tie_policy(template),
            "length_control": "alpaca_eval length_controlled_minimal GLM (thtb.eval.length_control)",
            "order": pw.get("order", "random"), "max_new_tokens": pw.get("max_new_tokens"), "limit": pw.get("limit")}


def exam_protocol(ev: Mapping) -> dict[str, Any]:
    ex = ev.get("exam") or {}
    return {"prompt_language": ex.get("prompt_language", "auto"), "max_gen_toks": ex.get("max_gen_toks"),
            "enable_thinking": ex.get("enable_thinking"), "limit": ex.get("limit")}


PROTOCOLS = {"mmlu_pro": mmlu_pro_protocol, "pairwise": pairwise_protocol, "exam": exam_protocol}
"""Each task's protocol block, from the ``eval`` config block."""


def eval_provenance(cfg: Mapping, tasks: Iterable[str]) -> dict[str, Any]:
    ev = cfg.get("eval") or {}
    return {"model": ev.get("model", "trained"), **{task: PROTOCOLS[task](ev) for task in tasks if task in PROTOCOLS}}
