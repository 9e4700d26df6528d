"""AlpacaEval-style pairwise evaluation: a model's outputs against a baseline's, judged by an LLM.

The paper (METHOD.md, evaluation) compares each model's greedy responses to the 805 AlpacaEval prompts
with those of the **full-data model of the same size**, judged pairwise by Qwen3-32B, and reports the
win rate per subset and overall, a tie counting 0 (its integer win rates imply the judge could not tie).

Pipeline (:func:`run_pairwise`)
    1. Prompts: :func:`load_eval_set` (AlpacaEval's ``alpaca_eval.jsonl``/``.json``), optionally some subsets and
       a per-subset ``limit``.
    2. Outputs of each side: :func:`generate_outputs` (greedy, ``max_new_tokens``, the
       :data:`~thtb.eval.prompts.RESPOND` template) through an in-process judge backend used as a plain generator,
       cached in the request cache under the model's **content fingerprint** — so a model's 805 responses are
       generated once, whatever runs reuse them — or a reference-outputs file (:func:`load_outputs`:
       text-davinci-003 in ``alpaca_eval.jsonl``, GPT-4-turbo in ``gpt4_turbo_baseline.json``). An output that
       **hit the ``max_new_tokens`` cap** is flagged ``truncated`` (:func:`hit_cap`: the generation layer returns no
       finish reason, so the completion-token count is compared to the cap).
    3. Judging (:func:`judge_pairs`) through any judge backend (cache, retries, re-asks, failure accounting as in
       selection) with ``template="forced"`` (:data:`~thtb.eval.prompts.PAIRWISE_FORCED`, the paper's default: no
       tie option; a "Tie" answer is a parse failure, re-asked, then counted as a failure) or ``"with_tie"``
       (:data:`~thtb.eval.prompts.PAIRWISE`). ``order="random"``: the model's output is shown as (a) or (b) by a
       seeded coin per prompt; ``order="both"``: judged in both orders, the prompt's outcome is the mean
       preference (1 win, ½ tie, 0 loss per order: above ½ a win, below a loss, exactly ½ a tie) and the
       *position-consistency rate* is the share of prompts whose two verdicts agree (with the forced template a
       disagreement is the only judged tie). Identical outputs are a tie without a call.
    4. :func:`win_rates`: per subset and overall, the paper's win rate (ties 0) and the tie-½ variant, with
       percentile-bootstrap 95% intervals (seeded) over prompts; mean output lengths (characters), their ratio,
       per-side truncation rates; overall, AlpacaEval 2.0's **length-controlled** win rate
       (:func:`~thtb.eval.length_control.length_controlled`, on the tie-½ scale) from the per-prompt records of
       ``pairwise_samples.jsonl``. A prompt whose generation or judgement failed is excluded and listed — never
       scored; more failures than ``failure_budget`` stop the run (:class:`EvaluationError`, with the indices).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.data.errors import DataError
from thtb.data.formats import text_column
from thtb.data.readers import read_source
from thtb.eval.harness import model_fingerprint
from thtb.eval.length_control import length_controlled, truncation_rates
from thtb.fingerprint import fingerprint, ids_digest
from thtb.io import atomic_write_text
from thtb.judge.base import JudgeBackend
from thtb.eval.prompts import PAIRWISE_TEMPLATES, RESPOND
from thtb.judge.prompts import PromptTemplate

log = logging.getLogger(__name__)

SUBSETS = ("helpful_base", "koala", "selfinstruct", "oasst", "vicuna")
"""AlpacaEval's five source datasets (its ``dataset`` field), in the paper's order."""
ORDERS = ("random", "both")
TIE_POLICY = {
    "forced": ("forced choice: the judge is offered no tie and a 'Tie' answer is a parse failure (re-asked, then "
               "counted as a failed prompt); identical outputs are a tie without a call; in both-orders mode two "
               "disagreeing verdicts are a tie. win_rate counts a tie as 0 (the paper), win_rate_tie_half as 0.5"),
    "with_tie": ("the judge may answer 'Tie'; identical outputs are a tie without a call. win_rate counts a tie as "
                 "0 (the paper), win_rate_tie_half as 0.5"),
}


def pairwise_template(template: str | PromptTemplate) -> PromptTemplate:
    """The judge template of an ``eval.pairwise.template`` value (``forced`` | ``with_tie``) or a template."""
    if isinstance(template, PromptTemplate):
        return template
    if template not in PAIRWISE_TEMPLATES:
        raise ValueError(f"eval.pairwise.template must be one of {tuple(PAIRWISE_TEMPLATES)}, got {template!r}")
    return PAIRWISE_TEMPLATES[template]


def tie_policy(template: str | PromptTemplate) -> str:
    """How ties arise and count under ``template`` (for pairwise.json and provenance)."""
    t = pairwise_template(template)
    if choice := next((c for c, known in PAIRWISE_TEMPLATES.items() if t.name == known.name), None):
        return TIE_POLICY[choice]
    return f"custom template {t.id}: ties as its parser allows; win_rate counts a tie as 0, win_rate_tie_half as 0.5"


class EvaluationError(RuntimeError):
    """An evaluation cannot go on (too many failures, inconsistent inputs); the message says which."""

    def __init__(self, message: str, failed: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


# ------------------------------------------------------------------------------------------ inputs
DEMO_PROMPTS = "demo"
HUB_PREFIX = "hf://datasets/"


def resolve_prompts(spec: str) -> str:
    """``demo`` → the packaged ``demo_eval.jsonl`` (10 prompts written for the project, 2 per subset);
    ``hf://datasets/<owner>/<repo>/<file>`` → that file downloaded from the Hugging Face hub (cached by
    ``huggingface_hub``; e.g. ``hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json``); a path unchanged."""
    if spec == DEMO_PROMPTS:
        from importlib import resources

        return str(resources.files("thtb") / "resources" / "demo_eval.jsonl")
    if spec.startswith(HUB_PREFIX):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = spec[len(HUB_PREFIX):].split("/", 2)
        return hf_hub_download(f"{owner}/{repo}", filename, repo_type="dataset")
    return spec


def _read(path: str | os.PathLike[str], fields: Sequence[str]):
    """The file's table (``read_source``), with a DataError naming the first of ``fields`` it lacks."""
    table = read_source(path, split="eval")
    for name in fields:
        if name not in table.columns:
            raise DataError(os.fspath(path), f"no {name!r} field (fields: {', '.join(table.columns) or 'none'})",
                            field=name)
    return table


def load_eval_set(path: str | os.PathLike[str], *, subsets: Sequence[str] | None = None,
                  limit: int | None = None) -> pd.DataFrame:
    """AlpacaEval prompts: columns ``instruction``, ``dataset`` (``"default"`` when absent) and
    ``reference`` (the file's own ``output``, ``""`` when absent), in file order; ``subsets`` keeps those
    datasets only, ``limit`` then keeps the first N per subset (a stratified smoke set)."""
    table = _read(path, ("instruction",))
    instructions = text_column(table, "instruction")
    for i, text in enumerate(instructions):
        if not text.strip():
            raise table.error(i, "field 'instruction' is empty", field="instruction")
    frame = pd.DataFrame({
        "instruction": instructions,
        "dataset": [d or "default" for d in text_column(table, "dataset", optional=True)],
        "reference": text_column(table, "output", optional=True),
    })
    if subsets:
        unknown = sorted(set(subsets) - set(frame["dataset"]))
        if unknown:
            raise DataError(os.fspath(path), f"subset(s) {unknown} not in the file (it has "
                            f"{sorted(set(frame['dataset']))})", field="dataset")
        frame = frame[frame["dataset"].isin(list(subsets))]
    if limit is not None:
        frame = frame.groupby("dataset", sort=False, group_keys=False).head(int(limit))
    return frame.reset_index(drop=True)


def load_outputs(path: str | os.PathLike[str], instructions: Sequence[str]) -> list[str]:
    """The outputs of a reference-outputs file (records with ``instruction`` and ``output``), in the order
    of ``instructions``; a prompt the file lacks is an error listing how many and which."""
    table = _read(path, ("instruction", "output"))
    by_instruction = dict(zip(text_column(table, "instruction"), text_column(table, "output"), strict=True))
    missing = [i for i, text in enumerate(instructions) if text not in by_instruction]
    if missing:
        shown = "; ".join(repr(instructions[i][:60]) for i in missing[:3])
        raise DataError(os.fspath(path), f"{len(missing)} of {len(instructions)} evaluation prompts have no output "
                        f"in this file (first: {shown})", field="instruction")
    return [by_instruction[text] for text in instructions]


# -------------------------------------------------------------------------------------- generation
@dataclass
class Outputs:
    """One side's outputs: ``text[i]`` is ``None`` where ``error[i]`` says why there is none. ``tokens[i]``:
    completion tokens generated (``None``: not reported); ``truncated[i]``: the output hit the ``max_tokens``
    cap (``None``: unknown — no token count, or a reference-outputs file)."""

    name: str
    text: list[str | None]
    error: list[str | None]
    fingerprint: str
    stats: dict[str, Any]
    tokens: list[int | None] | None = None
    truncated: list[bool | None] | None = None
    max_tokens: int | None = None

    def flags(self) -> list[bool | None]:
        return list(self.truncated) if self.truncated is not None else [None] * len(self.text)


def hit_cap(completion_tokens: int | None, max_tokens: int | None) -> bool | None:
    """Whether an answer of ``completion_tokens`` tokens (the stop token included, as the backends count) used
    the whole ``max_tokens`` budget; ``None`` when either is unknown (0 tokens: the backend did not report)."""
    return int(completion_tokens) >= int(max_tokens) if completion_tokens and max_tokens else None


def generate_outputs(generator: JudgeBackend, instructions: Sequence[str], *, name: str | None = None) -> Outputs:
    """Greedy responses of ``generator``'s model to ``instructions`` (the RESPOND template; decoding —
    e.g. ``max_tokens`` — from the generator's ``decoding``), cached under ``generator.model_id``; each
    output's completion-token count and whether it hit the ``max_tokens`` cap (:func:`hit_cap`)."""
    results = generator.run(RESPOND, [{"instruction": text} for text in instructions])
    cap = generator.params(RESPOND).get("max_tokens")
    cap = int(cap) if cap is not None else None
    tokens = [int(r.completion_tokens) if r.ok and r.completion_tokens else None for r in results]
    return Outputs(name=name or generator.model, text=[r.value if r.ok else None for r in results],
                   error=[r.error for r in results], fingerprint=generator.model_id, stats=generator.stats(),
                   tokens=tokens, max_tokens=cap,
                   truncated=[hit_cap(t, cap) if r.ok else None for t, r in zip(tokens, results, strict=True)])


def model_generator(model: str, *, backend: str = "hf", **kwargs: Any) -> JudgeBackend:
    """An in-process generator (``hf``: :class:`~thtb.judge.HFJudge`, ``vllm``: :class:`~thtb.judge.VLLMJudge`) for
    ``model`` whose cache id is its content fingerprint (:func:`~thtb.eval.harness.model_fingerprint`), with
    one answer per prompt (no re-asks); ``kwargs`` go to the backend (e.g. ``dtype``, ``max_model_len``, or ``llm``,
    a running ``vllm.LLM`` of the same model to share). Content, not path: a moved or copied model stays cached.
    The cache id names the backend other than ``hf`` (``model@<fingerprint>+vllm``): the two backends' greedy
    answers of the same weights differ (vLLM vs HF on SmolLM2: 12 of 14 MMLU-Pro answers identical), and a cached
    answer must say what produced it.

    vLLM runs on the CPU build too (eager mode by default there). A vLLM generator's engine stops when the
    generator is closed (``with model_generator(...) as gen:``) or dropped — before the baseline's generator
    starts its own."""
    from thtb.judge.local import HFJudge, VLLMJudge

    kwargs = {"max_attempts": 1, **kwargs}
    model_id = f"model@{model_fingerprint(model)['fingerprint']}" + ("" if backend == "hf" else f"+{backend}")
    if backend == "hf":
        return HFJudge(model, model_id=model_id, **kwargs)
    if backend == "vllm":
        return VLLMJudge(model, model_id=model_id, **kwargs)
    raise ValueError(f"generation backend must be 'hf' or 'vllm', got {backend!r}")


# ----------------------------------------------------------------------------------------- judging
def judge_pairs(judge: JudgeBackend, instructions: Sequence[str], model_outputs: Sequence[str | None],
                baseline_outputs: Sequence[str | None], *, order: str = "random", seed: int = 42,
                template: str | PromptTemplate = "forced") -> pd.DataFrame:
    """One row per prompt: ``outcome`` (``win``/``tie``/``loss`` for the model, ``None`` on failure),
    ``score`` (1/½/0), the verdicts per order, ``consistent`` (both-orders mode), ``error``; judged with the
    ``template`` (:func:`pairwise_template`: ``forced`` or ``with_tie``)."""
    prompt = pairwise_template(template)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    n = len(instructions)
    if not len(model_outputs) == len(baseline_outputs) == n:
        raise ValueError(f"{n} prompts, {len(model_outputs)} model outputs, {len(baseline_outputs)} baseline outputs")
    model_first = (np.random.default_rng(seed).integers(0, 2, size=n) == 0) if order == "random" else None
    rows: list[dict[str, Any]] = []
    items: list[dict[str, str]] = []
    where: list[tuple[int, bool]] = []  # (prompt, model shown as (a))
    for i in range(n):
        row: dict[str, Any] = {"model_first": None if model_first is None else bool(model_first[i]),
                               "error": None, "verdicts": [], "reasoning": []}
        rows.append(row)
        mine, theirs = model_outputs[i], baseline_outputs[i]
        if mine is None or theirs is None:
            row["error"] = "no model output" if mine is None else "no baseline output"
            continue
        if mine.strip() == theirs.strip():
            row["identical"] = True
            continue
        for a_is_model in ((bool(model_first[i]),) if model_first is not None else (True, False)):
            a, b = (mine, theirs) if a_is_model else (theirs, mine)
            items.append({"instruction": instructions[i], "output_a": a, "output_b": b})
            where.append((i, a_is_model))
    results = judge.run(prompt, items) if items else []
    for (i, a_is_model), result in zip(where, results, strict=True):
        row = rows[i]
        if not result.ok:
            row["error"] = row["error"] or f"judge: {result.error}"
            continue
        winner = result.value["winner"]
        side = "tie" if winner == "tie" else ("model" if (winner == "a") == a_is_model else "baseline")
        row["verdicts"].append(side)
        row["reasoning"].append(result.value.get("reasoning", ""))
    out = []
    for row in rows:
        verdicts = row.pop("verdicts")
        if row["error"] is not None:
            score, outcome, consistent = np.nan, None, None
        elif row.get("identical"):
            score, outcome, consistent = 0.5, "tie", True
        else:
            score = float(np.mean([{"model": 1.0, "tie": 0.5, "baseline": 0.0}[v] for v in verdicts]))
            outcome = "win" if score > 0.5 else "loss" if score < 0.5 else "tie"
            consistent = (verdicts[0] == verdicts[-1]) if order == "both" else None
        out.append({**row, "verdicts": verdicts, "score": score, "outcome": outcome, "consistent": consistent,
                    "identical": bool(row.get("identical", False))})
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ scores
def _bootstrap(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> list[float] | None:
    if len(values) == 0 or n_boot <= 0:
        return None
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(100 * float(lo), 2), round(100 * float(hi), 2)]


def _rates(frame: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    ok = frame[frame["outcome"].notna()]
    wins = (ok["outcome"] == "win").to_numpy(np.float64)
    half = wins + 0.5 * (ok["outcome"] == "tie").to_numpy(np.float64)
    n = len(ok)
    return {"n": n, "n_wins": int(wins.sum()), "n_ties": int((ok["outcome"] == "tie").sum()),
            "n_losses": int((ok["outcome"] == "loss").sum()), "n_failed": int(frame["outcome"].isna().sum()),
            "win_rate": round(100 * float(wins.mean()), 2) if n else None,
            "win_rate_ci95": _bootstrap(wins, rng, n_boot),  # drawn before the tie-½ interval (one rng)
            "win_rate_tie_half": round(100 * float(half.mean()), 2) if n else None,
            "win_rate_tie_half_ci95": _bootstrap(half, rng, n_boot)}


def win_rates(frame: pd.DataFrame, subsets: Sequence[str], *, n_boot: int = 2000, seed: int = 42) -> dict[str, Any]:
    """Overall and per-subset rates (see module doc); ``frame`` = :func:`judge_pairs` plus ``dataset``."""
    rng = np.random.default_rng(seed)  # one stream: overall first, then the subsets in order
    parts = {name: frame[frame["dataset"] == name] for name in subsets}
    out: dict[str, Any] = {"overall": _rates(frame, rng, n_boot),
                           "subsets": {name: _rates(part, rng, n_boot) for name, part in parts.items() if len(part)}}
    both = frame[frame["consistent"].notna()]
    out["position_consistency"] = round(float(both["consistent"].astype(bool).mean()), 4) if len(both) else None
    return out


# -------------------------------------------------------------------------------------------- run
def run_pairwise(prompts: pd.DataFrame, model: Outputs, baseline: Outputs, judge: JudgeBackend, *,
                 out_dir: str | os.PathLike[str], order: str = "random", seed: int = 42, failure_budget: int = 0,
                 n_boot: int = 2000, template: str | PromptTemplate = "forced",
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Judge ``model`` against ``baseline`` on ``prompts`` with the pairwise ``template`` (``forced`` |
    ``with_tie``) and write ``pairwise.json`` (with ``extra`` fields added) and ``pairwise_samples.jsonl`` under
    ``out_dir``; return the summary (see module doc)."""
    prompt = pairwise_template(template)
    frame = judge_pairs(judge, prompts["instruction"].tolist(), model.text, baseline.text, order=order, seed=seed,
                        template=prompt)
    frame.insert(0, "dataset", prompts["dataset"].to_numpy())
    for side, outputs in (("model", model), ("baseline", baseline)):  # generation errors say which side
        for i, err in enumerate(outputs.error):
            if err is not None:
                frame.loc[i, "error"] = f"{side} generation: {err}"
    failed = frame.index[frame["outcome"].isna()].tolist()
    subsets = [s for s in SUBSETS if s in set(prompts["dataset"])] + sorted(set(prompts["dataset"]) - set(SUBSETS))
    sides = {"model": model, "baseline": baseline}
    lengths = {side: round(float(np.mean(n)), 1) if (n := [len(t) for t in o.text if t is not None]) else None
               for side, o in sides.items()}
    flags = {side: o.flags() for side, o in sides.items()}
    tokens = {side: o.tokens if o.tokens is not None else [None] * len(o.text) for side, o in sides.items()}
    samples = [
        {"index": i, "dataset": r["dataset"], "instruction": prompts.loc[i, "instruction"],
         "model_output": model.text[i], "baseline_output": baseline.text[i], "model_first": _scalar(r["model_first"]),
         "verdicts": r["verdicts"], "outcome": _scalar(r["outcome"]), "score": _scalar(r["score"]),
         "consistent": _scalar(r["consistent"]), "reasoning": r["reasoning"], "error": _scalar(r["error"]),
         "model_tokens": tokens["model"][i], "baseline_tokens": tokens["baseline"][i],
         "model_truncated": flags["model"][i], "baseline_truncated": flags["baseline"][i]}
        for i, r in frame.iterrows()
    ]
    rates = win_rates(frame, subsets, n_boot=n_boot, seed=seed)
    lc = length_controlled(samples, n_boot=n_boot, seed=seed)
    rates["overall"].update(lc_win_rate=lc["lc_win_rate"], lc_win_rate_ci95=lc["lc_win_rate_ci95"])
    truncation = truncation_rates(samples)
    for side, o in sides.items():
        truncation[side]["max_new_tokens"] = o.max_tokens
    summary: dict[str, Any] = {
        "model": {"name": model.name, "id": model.fingerprint},
        "baseline": {"name": baseline.name, "id": baseline.fingerprint},
        "judge": {"backend": judge.backend, "model": judge.model_id, "template": prompt.id},
        "order": order, "seed": seed, "n_prompts": len(prompts), "prompts_digest": ids_digest(prompts["instruction"]),
        **rates, "length_controlled": lc, "mean_length": lengths,
        "length_ratio": (round(lengths["model"] / lengths["baseline"], 3)
                         if lengths["model"] is not None and lengths["baseline"] else None),
        "truncation": truncation, "n_identical": int(frame["identical"].sum()), "n_failed": len(failed),
        "failed": [{"index": int(i), "error": frame.loc[i, "error"]} for i in failed], "judge_stats": judge.stats(),
        "tie_convention": "win_rate counts a tie as 0 (the paper); win_rate_tie_half counts it as 0.5",
        "tie_policy": tie_policy(prompt), **(extra or {}),
    }
    out = Path(out_dir)
    atomic_write_text(out / "pairwise_samples.jsonl",
                      "".join(json.dumps(s, ensure_ascii=False, allow_nan=False) + "\n" for s in samples))
    atomic_write_text(out / "pairwise.json", json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    if len(failed) > failure_budget:
        first = frame.loc[failed[0], "error"]
        raise EvaluationError(f"{len(failed)} pairwise comparison(s) failed (failure budget {failure_budget}); first: "
                              f"prompt {failed[0]}: {first}; indices: {failed[:20]}{' …' if len(failed) > 20 else ''} "
                              f"(details in {out / 'pairwise.json'})", failed=failed)
    return summary


def _scalar(value: Any) -> Any:
    """A JSON-safe cell: NaN/None → ``None``, numpy scalars → Python ones."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def outputs_from_file(path: str | os.PathLike[str], instructions: Sequence[str], name: str | None = None) -> Outputs:
    """A reference-outputs file as one side of the comparison."""
    text = load_outputs(path, instructions)
    return Outputs(name=name or Path(path).name, text=list(text), error=[None] * len(text),
                   fingerprint=f"file:{fingerprint(text)}", stats={})

