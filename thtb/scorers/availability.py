"""Can the configured scorers run here? Checked before any scoring, so a run that would fail stops early.

A model is available when it is a local folder, a name shipped with a package (``smollm2``,
``minilm_offline``), a hub id already in the local Hugging Face cache, or — when the hub may be reached — a
hub id the hub knows. An HTTP judge is available when its server answers at all (any HTTP status).
Nothing is downloaded here; the check costs one cache look-up or one short request per model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SHIPPED = ("smollm2", "minilm_offline", "tiny_random")
"""Model names that resolve to files shipped by an installed package (or built locally)."""

OFFLINE_HINT = ("or select with the offline proxies instead: scoring=offline (no download, no API; the results "
                "are then labelled 'offline scorers' and never placed beside the paper's numbers)")


class ScorerUnavailableError(RuntimeError):
    """A configured scorer's model or server cannot be reached (the message names it and the alternatives)."""


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (as huggingface_hub reads it: 1, true, yes, on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_unavailable(model: str) -> str | None:
    """Why ``model`` cannot be loaded here, or ``None`` when it can."""
    if model in SHIPPED or Path(model).expanduser().exists():
        return None
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return f"no folder {model}"
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(model, name), str)
           for name in ("config.json", "modules.json", "tokenizer_config.json")):
        return None
    if hub_offline():
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it"
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model, timeout=15)
    except Exception as exc:  # noqa: BLE001 - no network, gated, unknown id: all mean "cannot load"
        return f"the hub cannot provide it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


SERVER_CHECK_S = 5.0
"""The most seconds one server check takes, name resolution and a slow answer included."""

_slow_answers: dict[str, tuple[float, str | None]] = {}
_SLOW_S, _REMEMBER_S = 1.0, 15.0  # a check slower than _SLOW_S is not repeated for _REMEMBER_S (one run's preflights)


def server_unavailable(base_url: str, timeout_s: float = SERVER_CHECK_S) -> str | None:
    """Why the OpenAI-compatible server at ``base_url`` cannot be used, or ``None`` when it answers.

    One ``GET <base_url>/models`` (the route the judge client asks for the context length); any HTTP status is an
    answer. The whole check — name resolution, connecting, the answer — is bounded by ``timeout_s``: a host that
    swallows packets or a DNS lookup that hangs is reported after that long, not after the OS's timeouts. A slow
    answer is remembered for a few seconds, so the stages of one run checking one server wait for it once.
    """
    import threading

    import httpx

    url = base_url.rstrip("/") + "/models"
    start = time.monotonic()
    seen = _slow_answers.get(url)
    if seen is not None and start - seen[0] < _REMEMBER_S:
        return seen[1]
    result: list[str | None] = []

    def probe() -> None:
        try:
            httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            result.append(f"the server does not answer ({type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - a malformed URL (httpx.InvalidURL) and the like
            result.append(f"not a usable URL ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        else:
            result.append(None)

    worker = threading.Thread(target=probe, name="thtb-server-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    why = result[0] if result else f"the server does not answer within {timeout_s:g} s"
    if time.monotonic() - start > _SLOW_S:
        _slow_answers[url] = (time.monotonic(), why)
    return why


def judge_problem(judge: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(what, fix)]`` when the LLM judge of ``judge`` (a ``cfg.judge``) cannot answer here: a server of
    ``judge.base_url`` that does not answer, in-process weights that are neither local nor cached offline; ``[]`` when
    it can or when the judge is the offline classifiers."""
    client = judge.get("client")
    if not client:
        return []  # offline classifiers
    model = str(judge.get("model"))
    if "base_url" in judge:
        from thtb.judge.client import split_base_urls

        for url in split_base_urls(judge["base_url"]):  # each server of the list must answer
            why = server_unavailable(url)
            if why:
                return [(f"the LLM judge {model} at judge.base_url={url}: {why}",
                         f"start it (e.g. vllm serve {model}) and set judge.base_url / judge.model")]
        return []
    why = model_unavailable(model)
    return [(f"the LLM judge {model} (judge={judge.get('name')}): {why}", "download it")] if why else []


def model_problem(role: str, model: Any) -> list[tuple[str, str]]:
    """``[(what, fix)]`` when ``model`` (the ``role`` a selection method uses it for) cannot be loaded here."""
    why = model_unavailable(str(model)) if model else None
    return [(f"the {role} {model}: {why}", f"download it (huggingface-cli download {model})")] if why else []
