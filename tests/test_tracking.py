"""W&B tracking (offline mode, real wandb) and secret redaction."""

from __future__ import annotations

import pandas as pd
import pytest

from thtb.tracking import Tracker, make_tracker, redact


def test_redact_hides_secrets_at_any_depth():
    cfg = {"judge": {"api_key": "sk-live-123", "base_url": "http://x"}, "logger": {"token": None}, "n": [{"secret": "s"}]}
    out = redact(cfg)
    assert out["judge"] == {"api_key": "***", "base_url": "http://x"}
    assert out["logger"]["token"] is None  # nothing to hide
    assert out["n"][0]["secret"] == "***"
    assert "sk-live-123" not in repr(out)


def test_none_tracker_is_a_context_manager():
    with make_tracker({"backend": "none"}, name="x", config={}) as tracker:
        assert type(tracker) is Tracker
        tracker.log_metrics({"a": 1})


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="logger.backend"):
        make_tracker({"backend": "tensorboard"}, name="x", config={})


def test_wandb_offline_run_is_written_and_closed_on_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = {"backend": "wandb", "mode": "offline", "project": "thtb-test"}
    with pytest.raises(RuntimeError, match="stage failed"):
        with make_tracker(cfg, name="t", config={"judge": {"api_key": "sk-live-123"}}, run_dir=tmp_path) as tracker:
            tracker.log_metrics({"count/input": 10}, prefix="select/")
            tracker.log_table("select/card", pd.DataFrame({
                "id": ["a", "b"], "disciplines": [["physics", "law"], None],
                "rank": pd.array([1, None], dtype="Int64"),  # nullable ints (ranks of failed samples) are NA
                "error": [None, pd.NA],
            }))
            tracker.log_histogram("select/hist/q", [0.1, 0.5, 0.9])
            raise RuntimeError("stage failed")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].rglob("*"))
    assert any(p.suffix == ".wandb" for p in files)
    blob = b"".join(p.read_bytes() for p in files if p.is_file())
    assert b"count/input" in blob  # the metrics reached the run file
    assert b"sk-live-123" not in blob  # the secret did not
