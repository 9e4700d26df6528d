"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.serving"]  # the real `transformers serve` fixtures


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


@pytest.fixture(scope="module")
def mmlu_dir(shared_data):
    """``../shared/data/mmlu_pro`` (test and validation parquet); tests using it skip when it is absent."""
    root = shared_data / "mmlu_pro"
    if not (root / "test.parquet").is_file():
        pytest.skip(f"MMLU-Pro parquet not found in {root}")
    return root
