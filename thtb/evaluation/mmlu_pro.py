"""MMLU-Pro through lm-eval: 5-shot chain-of-thought, greedy, ``answer is \\(?([A-J])\\)?`` extraction.

Two task sets, identical prompts (``tests/test_eval_mmlu_pro.py`` compares them byte for byte):

* ``thtb_mmlu_pro`` (``eval/tasks/mmlu_pro_local/``, the default): reads ``test.parquet`` and
  ``validation.parquet`` from ``data_dir`` (passed to the task as lm-eval metadata ``mmlu_pro_data_dir``);
  works offline.
* ``mmlu_pro`` (lm-eval's built-in task, ``builtin=True``): loads ``TIGER-Lab/MMLU-Pro`` from the hub.

Few-shot examples are the first ``fewshot`` validation questions of the same category (lm-eval's ``first_n``
sampler), as in the built-in task. ``limit`` (smoke runs) is a number of questions **per category**: the first
``limit`` test questions of each category in file order (lm-eval's own ``limit``, deterministic, no sampling).

Outputs in ``out_dir``: ``mmlu_pro.json`` (per-category accuracy and n, question-weighted overall, parse
failures = responses in which the regex found no letter, model/data fingerprints, lm-eval version, settings) and
``mmlu_pro_samples.jsonl`` (one row per question).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from thtb.evaluation import harness

CATEGORIES = (
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
)
LOCAL_GROUP = "thtb_mmlu_pro"
BUILTIN_GROUP = "mmlu_pro"
DATA_DIR_KEY = "mmlu_pro_data_dir"
DATA_DIR_ENV = "THTB_MMLU_PRO_DIR"
SPLIT_FILES = {"test": "test.parquet", "validation": "validation.parquet"}
REQUIRED_COLUMNS = ("question_id", "question", "options", "answer", "cot_content", "category")
FILTER = "custom-extract"
INVALID = "[invalid]"  # lm-eval's regex filter fallback when no letter is found
JSON_NAME = "mmlu_pro.json"
SAMPLES_NAME = "mmlu_pro_samples.jsonl"


def task_name(category: str, *, builtin: bool = False) -> str:
    """lm-eval task name of a category (``computer science`` → ``thtb_mmlu_pro_computer_science``)."""
    return f"{BUILTIN_GROUP if builtin else LOCAL_GROUP}_{category.replace(' ', '_')}"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` or, when it is None/empty, ``$THTB_MMLU_PRO_DIR``; an error when neither is set."""
    value = data_dir or os.environ.get(DATA_DIR_ENV)
    if not value:
        raise ValueError(
            f"no MMLU-Pro data folder given: pass data_dir (lm-eval metadata '{DATA_DIR_KEY}') or set ${DATA_DIR_ENV} "
            "to a folder holding test.parquet and validation.parquet"
        )
    return Path(value).expanduser()


def mmlu_pro_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """``{"test": .../test.parquet, "validation": .../validation.parquet}``, checked to exist."""
    root = Path(data_dir).expanduser()
    files = {split: root / name for split, name in SPLIT_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"MMLU-Pro parquet file(s) not found: {', '.join(missing)} (expected test.parquet and "
            f"validation.parquet from TIGER-Lab/MMLU-Pro in {root})"
        )
    return files


def data_fingerprint(data_dir: str | os.PathLike) -> dict[str, Any]:
    """sha256 and size of each parquet file."""
    return {
        split: {"path": str(p.resolve()), "sha256": harness.file_digest(p), "size": p.stat().st_size}
        for split, p in mmlu_pro_files(data_dir).items()
    }


def load_mmlu_pro_dataset(data_dir: str | os.PathLike):
    """The two parquet files as a ``datasets.DatasetDict`` (``test``, ``validation``), loaded with the ``parquet``
    builder exactly as the hub dataset is; memoised per file identity, since lm-eval asks once per category."""
    files = mmlu_pro_files(data_dir)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files.values())
    return _load_cached(key)


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


def summarize(results: dict[str, Any], *, builtin: bool = False, max_response_chars: int | None = 4000,
              log_prompts: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-category and question-weighted overall accuracy, plus one row per question, from lm-eval's logged
    samples (the ``custom-extract`` filter: regex letter or ``[invalid]``)."""
    per_category: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    samples = results.get("samples") or {}
    for category in CATEGORIES:
        name = task_name(category, builtin=builtin)
        if name not in samples:
            continue
        cat_samples = [s for s in samples[name] if s.get("filter") == FILTER]
        correct = failures = 0
        for s in cat_samples:
            doc = s["doc"]
            extracted = harness.filtered_response(s)
            ok = bool(s.get("exact_match", 0.0))
            parsed = extracted != INVALID
            correct += ok
            failures += not parsed
            row = {
                "category": category,
                "question_id": doc.get("question_id"),
                "doc_id": s.get("doc_id"),
                "target": s.get("target"),
                "extracted": extracted if parsed else None,
                "correct": ok,
                "response": harness.truncate_middle(harness.raw_response(s), max_response_chars),
            }
            if log_prompts:
                row["prompt"] = s["arguments"][0][0]
            rows.append(row)
        n = len(cat_samples)
        lm_eval_acc = results.get("results", {}).get(name, {}).get(f"exact_match,{FILTER}")
        per_category[category] = {
            "accuracy": correct / n if n else None,
            "n": n,
            "correct": correct,
            "parse_failures": failures,
            "lm_eval_exact_match": lm_eval_acc,
        }
    total = sum(c["n"] for c in per_category.values())
    n_correct = sum(c["correct"] for c in per_category.values())
    summary = {
        "overall": {
            "accuracy": n_correct / total if total else None,
            "n": total,
            "correct": n_correct,
            "parse_failures": sum(c["parse_failures"] for c in per_category.values()),
            "weighting": "question-weighted mean over categories (total correct / total questions)",
        },
        "per_category": per_category,
    }
    return summary, rows


def run_mmlu_pro(
    model_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike,
    limit: int | None = None,
    backend: str = "hf",
    batch_size: int | str = 1,
    max_gen_toks: int | None = None,
    device: str | None = None,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
    fewshot: int = 5,
    apply_chat_template: bool = False,
    fewshot_as_multiturn: bool = True,
    builtin: bool = False,
    extra_model_args: dict[str, Any] | None = None,
    max_response_chars: int | None = 4000,
    log_prompts: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on MMLU-Pro with lm-eval and write ``mmlu_pro.json`` + ``mmlu_pro_samples.jsonl``.

    Args:
        model_path: HF model folder or hub id (a merged model, or the base model when ``adapter`` is given).
        adapter: a PEFT adapter folder (HF: ``peft=``; vLLM: ``lora_local_path=``).
        data_dir: folder with ``test.parquet`` and ``validation.parquet`` (local task; default
            ``$THTB_MMLU_PRO_DIR``). Ignored with ``builtin=True``.
        out_dir: where the two output files go.
        limit: questions per category (the first ``limit`` in test order); None = all 12,032.
        backend: ``"hf"`` or ``"vllm"`` (imported lazily; tensor/data parallel via the two sizes).
        batch_size: lm-eval batch size (int or ``"auto"``).
        max_gen_toks: override the task's 2048 generated tokens (smoke runs).
        device, dtype: passed to the backend (``device`` to lm-eval, ``dtype`` as a model arg).
        fewshot: number of chain-of-thought shots (0–5; the paper and the built-in task use 5).
        apply_chat_template, fewshot_as_multiturn: lm-eval's chat-template options (off by default, as
            lm-eval's CLI default; shots become turns when on).
        builtin: use lm-eval's built-in ``mmlu_pro`` (hub download) instead of the local parquet task.
        extra_model_args: merged into lm-eval's model_args (e.g. ``{"max_length": 8192}``).
        max_response_chars: raw responses longer than this are cut in the middle in the samples file.
        log_prompts: also store each full rendered prompt in the samples file (large).

    Returns:
        The summary written to ``mmlu_pro.json``.

    Raises:
        FileNotFoundError: a parquet file is missing (checked before any model is loaded).
        ImportError: ``backend="vllm"`` without vLLM installed.
    """
    if limit is not None and (int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer (questions per category) or None, got {limit!r}")
    if not 0 <= int(fewshot) <= 5:
        raise ValueError(f"fewshot must be between 0 and 5 (the validation split has 5 per category), got {fewshot}")
    if builtin:
        data_info: dict[str, Any] = {"hub_dataset": "TIGER-Lab/MMLU-Pro"}
        metadata: dict[str, Any] = {}
    else:
        root = resolve_data_dir(data_dir)
        data_info = data_fingerprint(root)  # raises on a missing file before the model is loaded
        metadata = {DATA_DIR_KEY: str(root.resolve())}
    margs = harness.model_args(
        backend, model_path, adapter=adapter, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size, extra=extra_model_args,
    )
    started = time.time()
    results = harness.run_lm_eval(
        backend=backend,
        model_args=margs,
        tasks=[BUILTIN_GROUP if builtin else LOCAL_GROUP],
        include_path=None if builtin else harness.tasks_dir() / "mmlu_pro_local",
        include_defaults=builtin,
        task_metadata=metadata,
        num_fewshot=int(fewshot),
        limit=int(limit) if limit is not None else None,
        batch_size=batch_size,
        device=device,
        max_gen_toks=max_gen_toks,
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=fewshot_as_multiturn,
    )
    summary, rows = summarize(results, builtin=builtin, max_response_chars=max_response_chars,
                              log_prompts=log_prompts)
    any_task = next(iter(results.get("configs", {}).values()), {})
    summary.update(
        {
            "task": BUILTIN_GROUP if builtin else LOCAL_GROUP,
            "task_version": (any_task.get("metadata") or {}).get("version"),
            "model": harness.model_fingerprint(model_path, adapter),
            "data": data_info,
            "settings": {
                "backend": backend,
                "model_args": margs,
                "num_fewshot": int(fewshot),
                "fewshot_sampler": "first_n (validation split, same category)",
                "limit_per_category": limit,
                "limit_rule": "first N test questions of each category, in file order" if limit else None,
                "generation_kwargs": any_task.get("generation_kwargs"),
                "apply_chat_template": apply_chat_template,
                "fewshot_as_multiturn": fewshot_as_multiturn if apply_chat_template else False,
                "answer_regex": r"answer is \(?([ABCDEFGHIJ])\)?",
                "batch_size": batch_size,
                "device": device,
                "dtype": dtype,
            },
            "lm_eval_version": harness.lm_eval_version(),
            "wall_s": round(time.time() - started, 2),
        }
    )
    harness.write_outputs(out_dir, JSON_NAME, summary, SAMPLES_NAME, rows)
    return summary
