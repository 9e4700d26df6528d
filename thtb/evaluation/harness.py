"""Shared plumbing for the lm-eval based evaluations: model arguments, the ``simple_evaluate`` call, fingerprints
of the model and data, and atomic output files.

Everything goes through lm-eval's public API (``lm_eval.simple_evaluate`` with a ``TaskManager`` built on our
task folder ``eval/tasks/``); nothing here re-implements prompting, generation or scoring.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thtb.fingerprint import (  # noqa: F401 - content fingerprints live there; re-exported for the eval code
    FULL_HASH_LIMIT,
    describe_model_dir,
    file_digest,
    fingerprint,
    model_fingerprint,
)
from thtb.io import atomic_path, atomic_write_text

BACKENDS = ("hf", "vllm")
TASKS_DIR_ENV = "THTB_EVAL_TASKS_DIR"


def tasks_dir() -> Path:
    """The project's lm-eval task folder (``eval/tasks`` at the repository root, or ``$THTB_EVAL_TASKS_DIR``)."""
    env = os.environ.get(TASKS_DIR_ENV)
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "eval" / "tasks"
    if not root.is_dir():
        raise FileNotFoundError(
            f"lm-eval task folder not found at {root}; run from a source checkout of thtb or set ${TASKS_DIR_ENV}"
        )
    return root


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def model_args(
    backend: str,
    model_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """lm-eval ``model_args`` for ``backend``: HF (``pretrained`` + ``peft`` for an adapter) or vLLM
    (``pretrained`` + ``lora_local_path``, tensor/data parallel). ``extra`` is merged last (e.g.
    ``max_length``, ``enable_thinking``, ``gpu_memory_utilization``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    args: dict[str, Any] = {"pretrained": str(model_path), "dtype": dtype}
    if backend == "hf":
        if adapter is not None:
            args["peft"] = str(adapter)
        if tensor_parallel_size != 1 or data_parallel_size != 1:
            raise ValueError(
                "tensor/data parallelism is a vLLM option here; for HF use `accelerate launch` (data parallel) "
                "or extra model_args parallelize=True"
            )
    else:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "backend='vllm' needs the vLLM package, which is not installed; install it (pip install "
                "'lm-eval[vllm]') on a GPU machine, or use backend='hf'"
            )
        args["tensor_parallel_size"] = int(tensor_parallel_size)
        args["data_parallel_size"] = int(data_parallel_size)
        if adapter is not None:
            args["lora_local_path"] = str(adapter)
    args.update(dict(extra or {}))
    return args


def run_lm_eval(
    *,
    backend: Any,
    model_args: Mapping[str, Any],
    tasks: list[str],
    include_path: str | os.PathLike | None,
    include_defaults: bool,
    task_metadata: Mapping[str, Any] | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int | str = 1,
    device: str | None = None,
    max_gen_toks: int | None = None,
    apply_chat_template: bool = False,
    fewshot_as_multiturn: bool = True,
    system_instruction: str | None = None,
) -> dict[str, Any]:
    """One ``lm_eval.simple_evaluate`` call with sample logging on; returns its result dict.

    ``backend`` is an lm-eval model name (``"hf"``, ``"vllm"``) built from ``model_args``, or a ready
    ``lm_eval.api.model.LM`` instance (``model_args`` then ignored). Tasks are looked up in ``include_path``
    (and lm-eval's own tasks when ``include_defaults``); ``task_metadata`` reaches each task's
    ``custom_dataset`` hook. ``limit`` is per task; ``max_gen_toks`` overrides the tasks' generation length.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(include_path) if include_path is not None else None,
        include_defaults=include_defaults,
        metadata=dict(task_metadata or {}),
    )
    results = lm_eval.simple_evaluate(
        model=backend,
        model_args=dict(model_args),
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        device=device,
        log_samples=True,
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=fewshot_as_multiturn if apply_chat_template else False,
        system_instruction=system_instruction,
        gen_kwargs={"max_gen_toks": int(max_gen_toks)} if max_gen_toks is not None else None,
        task_manager=manager,
        bootstrap_iters=0,
    )
    if results is None:  # non-zero rank in a distributed run
        raise RuntimeError("lm-eval returned no results on this rank")
    return results


def raw_response(sample: Mapping[str, Any]) -> str:
    """The model's generated text for one logged lm-eval sample (first request, first repeat)."""
    resps = sample.get("resps") or [[""]]
    first = resps[0]
    return str(first[0] if isinstance(first, list) and first else first)


def filtered_response(sample: Mapping[str, Any]) -> str:
    filt = sample.get("filtered_resps") or [""]
    first = filt[0]
    return str(first[0] if isinstance(first, list) and first else first)


def truncate_middle(text: str, max_chars: int | None) -> str:
    """Keep the head and the tail of ``text`` (where an answer usually is) within ``max_chars``."""
    if max_chars is None or len(text) <= max_chars:
        return text
    marker = f" …[{len(text) - max_chars} chars cut]… "
    keep = max(max_chars - len(marker), 0)
    head = keep * 2 // 3
    return text[:head] + marker + text[len(text) - (keep - head) :] if keep else text[:max_chars]


def write_outputs(out_dir: str | os.PathLike, json_name: str, summary: Mapping, jsonl_name: str, rows: Iterable) -> Path:
    """Write the summary JSON and the per-sample jsonl atomically; return the JSON's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / jsonl_name) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return atomic_write_text(out / json_name, json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
