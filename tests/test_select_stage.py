"""The select stage end to end through run.py (real Hydra, real MiniLM, real files)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.helpers import ROOT, run_py, shared_file


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # its own cache: this run must compute (and log) every stage, whatever other tests finished before
    proc = run_py("+experiment=demo", "stages=[select]", "logger=wandb_offline", f"hydra.run.dir={out}",
                  f"paths.cache_dir={out / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "selection"


def test_demo_writes_every_output(demo_run):
    for name in ("subset.jsonl", "subset_alpaca.json", "subset_messages.jsonl", "scores.parquet", "summary.json"):
        assert (demo_run / name).stat().st_size > 0, name
    assert {p.name for p in demo_run.glob("hist_*.png")} >= {"hist_quality_raw.png", "hist_ihs.png", "hist_ehs.png"}


def test_demo_summary_counts_add_up(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    card = pd.read_parquet(demo_run / "scores.parquet")
    subset = [json.loads(line) for line in (demo_run / "subset.jsonl").read_text().splitlines()]
    assert summary["n_input"] == len(card) == summary["data"]["n_rows"]
    counts = summary["counts"]
    assert list(counts) == ["input", "quality", "intrinsic", "extrinsic"]
    assert counts["extrinsic"] == summary["n_selected"] == len(subset)
    assert summary["n_selected"] + sum(summary["n_dropped_per_stage"].values()) + summary["n_failed"] == summary["n_input"]
    assert card["fell_at"].value_counts().sum() == len(card)
    # the subset is the card's selected rows, best first
    selected = card[card["selected"]].sort_values("rank")
    assert [r["id"] for r in subset] == selected["id"].tolist()
    assert set(summary["timings_s"]) >= {"load", "contamination", "total"}
    assert summary["fingerprint"] and len(summary["fingerprint"]) == 16


def test_demo_broken_pairs_fall_at_quality(demo_run):
    card = pd.read_parquet(demo_run / "scores.parquet")
    demo = pd.read_json(ROOT / "thtb" / "resources" / "demo.jsonl", lines=True)
    broken_rows = demo.index[demo["broken"].notna()]
    assert len(broken_rows) >= 8
    assert (card.loc[broken_rows, "fell_at"] == "quality").all()
    # and they are the lowest-ranked of all
    worst = card["quality_rank"].nlargest(len(broken_rows)).index
    assert set(worst) == set(broken_rows)


def test_demo_reports_bloom_accuracy(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    acc = summary["bloom_accuracy"]
    assert acc["n"] == summary["counts"]["quality"]  # every Bloom-scored sample carries a label
    assert 0 <= acc["accuracy"] <= acc["within_one_level"] <= 1


def test_demo_logs_an_offline_wandb_run(demo_run):
    runs = list((demo_run.parent / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    blob = b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
    for key in (b"select/count/quality", b"select/hist/ehs", b"select/score_card_sample", b"select/histograms"):
        assert key in blob, key


def test_rerun_without_wandb_gives_byte_identical_subset(demo_run, tmp_path):
    proc = run_py("+experiment=demo", "stages=[select]", "logger=none", "reuse=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "selection" / "subset.jsonl").read_bytes() == (demo_run / "subset.jsonl").read_bytes()
    a = json.loads((tmp_path / "selection" / "summary.json").read_text())
    b = json.loads((demo_run / "summary.json").read_text())
    assert a["fingerprint"] == b["fingerprint"]


def test_rerun_reuses_the_finished_selection(demo_run, tmp_path):
    cache = f"paths.cache_dir={demo_run.parent / 'cache'}"
    proc = run_py("+experiment=demo", "stages=[select]", "logger=none", cache, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "selection" / "summary.json").read_text())
    assert summary["reused"] is True and "select reused" in proc.stdout + proc.stderr
    assert (tmp_path / "selection" / "subset.jsonl").read_bytes() == (demo_run / "subset.jsonl").read_bytes()
    assert (tmp_path / "selection" / "scores.parquet").is_file()
    # another selection config is another artifact
    other = run_py("+experiment=demo", "stages=[select]", "logger=none", "selection.fractions.quality=0.4", cache,
                   f"hydra.run.dir={tmp_path / 'o'}")
    assert other.returncode == 0, other.stderr[-3000:]
    assert json.loads((tmp_path / "o" / "selection" / "summary.json").read_text())["reused"] is False


def test_unknown_stage_fails_before_any_work(tmp_path):
    proc = run_py("+experiment=demo", "stages=[select,evaluate]", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "unknown stage 'evaluate'" in proc.stderr
    assert not (tmp_path / "selection").exists()


def test_missing_data_file_names_the_path(tmp_path):
    proc = run_py("+experiment=demo", f"data.path={tmp_path}/nope.json", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "nope.json" in proc.stderr


@pytest.mark.slow  # end to end through run.py: the slow tier (CI runs it)
def test_alpaca_5pct_offline_selects_2600(shared_data, tmp_path):
    """The issue's acceptance run: 52,002 → 10,400 → 5,200 → 2,600 (about 40 s here)."""
    path = shared_file("alpaca", "alpaca_data.json", base=shared_data)
    proc = run_py("+experiment=alpaca_5pct", "stages=[select]", "scoring=offline", f"data.path={path}",
                  f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "selection" / "summary.json").read_text())
    assert summary["counts"] == {"input": 52002, "quality": 10400, "intrinsic": 5200, "extrinsic": 2600}
    assert summary["n_failed"] == 0 and summary["data"]["empty_response_rows"]  # reported, kept
    lines = (tmp_path / "selection" / "subset.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(x)["id"] for x in lines}) == 2600
