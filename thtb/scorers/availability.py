"""Can the configured scorers run here? Checked before any scoring, so a run that would fail stops early.

A model is available when it is a local folder, a name shipped with a package (``smollm2``,
``minilm_offline``), a hub id already in the local Hugging Face cache, or — when the hub may be reached — a
hub id the hub knows. An HTTP judge is available when its server answers at all (any HTTP status).
Nothing is downloaded here; the check costs one cache look-up or one short request per model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SHIPPED = ("smollm2", "minilm_offline", "tiny_random")
"""Model names that resolve to files shipped by an installed package (or built locally)."""

OFFLINE_HINT = ("or select with the offline proxies instead: scoring=offline (no download, no API; the results "
                "are then labelled 'offline scorers' and never placed beside the paper's numbers)")


class ScorerUnavailableError(RuntimeError):
    """A configured scorer's model or server cannot be reached (the message names it and the alternatives)."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_unavailable(model: str) -> str | None:
    """Why ``model`` cannot be loaded here, or ``None`` when it can."""
    if model in SHIPPED or Path(model).expanduser().exists():
        return None
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return f"no folder {model}"
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "modules.json", "tokenizer_config.json"):
        found = try_to_load_from_cache(model, name)
        if isinstance(found, str):
            return None
    if _offline():
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it"
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model, timeout=15)
    except Exception as exc:  # noqa: BLE001 - no network, gated, unknown id: all mean "cannot load"
        return f"the hub cannot provide it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


def server_unavailable(base_url: str, timeout_s: float = 5.0) -> str | None:
    """Why the OpenAI-compatible server at ``base_url`` cannot be used, or ``None`` when it answers."""
    import httpx

    try:
        httpx.get(base_url.rstrip("/") + "/models", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"the server does not answer ({type(exc).__name__})"
    return None


def _judge_problem(judge: Mapping[str, Any]) -> tuple[str, str] | None:
    client = judge.get("client")
    if not client:
        return None  # offline classifiers
    model = str(judge.get("model"))
    if "base_url" in judge:
        why = server_unavailable(str(judge["base_url"]))
        if why:
            return (f"the LLM judge {model} at judge.base_url={judge['base_url']}: {why}",
                    f"start it (e.g. vllm serve {model}) and set judge.base_url / judge.model")
        return None
    why = model_unavailable(model)
    return (f"the LLM judge {model} (judge={judge.get('name')}): {why}", "download it") if why else None


def check_scorers_available(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ScorerUnavailableError` naming every scorer of the selection that cannot run here."""
    sel = cfg.get("selection") or {}
    method = sel.get("method", "thtb")
    stages = list(sel.get("stages") or []) if method == "thtb" else []
    problems: list[tuple[str, str]] = []

    def model_check(role: str, model: Any) -> None:
        if model:
            why = model_unavailable(str(model))
            if why:
                problems.append((f"the {role} {model}: {why}", f"download it (huggingface-cli download {model})"))

    if "quality" in stages:
        model_check("reward model", (cfg.get("reward") or {}).get("model"))
    if "intrinsic" in stages:
        model_check("embedder", (cfg.get("embedder") or {}).get("model"))
    if "intrinsic" in stages or method == "alpagasus":
        judged = _judge_problem(cfg.get("judge") or {})
        if judged:
            problems.append(judged)
    if method == "ifd":
        model_check("IFD scoring model", (sel.get("ifd") or {}).get("model"))
    if problems:
        lines = "\n".join(f"  - {what}; {fix}" for what, fix in problems)
        raise ScorerUnavailableError(
            f"experiment {cfg.get('experiment_name')!r} cannot select: its scorers are not available here\n{lines}\n"
            f"Make them available, {OFFLINE_HINT}."
        )
