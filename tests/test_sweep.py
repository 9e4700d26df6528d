"""Hydra multirun sweeps: two experiments end to end on a tiny model, a second sweep that reuses every stage,
and a failing job that neither stops the others nor leaves its W&B run open."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_py, shared_file


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shared_data):
    alpaca = shared_file("alpaca", "alpaca_data.json", base=shared_data)
    shared_file("mmlu_pro", "test.parquet", base=shared_data)
    root = tmp_path_factory.mktemp("sweep")
    args = ["-m", "+experiment=alpaca_5pct,alpaca_random", "model=tiny_random", "train=cpu_smoke", "eval=smoke",
            "scoring=offline",
            f"data.path={alpaca}", "data.limit=2000", f"eval.mmlu_pro.data_dir={shared_data / 'mmlu_pro'}",
            f"paths.cache_dir={root / 'cache'}", f"eval.results_dir={root / 'results'}",
            "eval.pairwise.judge.max_attempts=1"]
    first = run_py(*args, f"hydra.sweep.dir={root / 's1'}")
    assert first.returncode == 0, first.stderr[-4000:]
    return root, args, first


@pytest.mark.slow
def test_both_jobs_run_every_stage(sweep):
    root, _, first = sweep
    jobs = _jobs(root / "s1")
    assert len(jobs) == 2
    for job in jobs:
        for name in ("selection/subset.jsonl", "train/summary.json", "eval/mmlu_pro.json", "eval/pairwise.json"):
            assert (job / name).exists(), (job, name)
    methods = {json.loads(x)["method"] for f in (root / "results").glob("*.jsonl") for x in f.read_text().splitlines()}
    assert methods == {"thtb", "random"}
    subsets = [(job / "selection" / "subset.jsonl").read_bytes() for job in jobs]
    assert subsets[0] != subsets[1]  # two methods, two subsets (size-matched: 2000 → 400 → 200 → 100)
    assert all(len(s.splitlines()) == 100 for s in subsets)
    assert all("done: select ran" in (job / "run.log").read_text() for job in jobs)


@pytest.mark.slow
def test_second_sweep_reuses_every_stage(sweep):
    root, args, _ = sweep
    again = run_py(*args, f"hydra.sweep.dir={root / 's2'}")
    assert again.returncode == 0, again.stderr[-4000:]
    for job in _jobs(root / "s2"):  # each job's log says which stages it reused: all of them
        assert re.search(r"done: select reused \([\d.]+ s\) · train reused \([\d.]+ s\) · eval reused",
                         (job / "run.log").read_text())
    for a, b in zip(_jobs(root / "s1"), _jobs(root / "s2"), strict=True):
        assert (a / "selection" / "subset.jsonl").read_bytes() == (b / "selection" / "subset.jsonl").read_bytes()
        assert json.loads((b / "train" / "summary.json").read_text())["reused"] is True


def test_a_failed_job_does_not_stop_the_others_and_closes_its_wandb_run(tmp_path):
    bad = tmp_path / "bad.json"  # exists (the run's preflight passes), fails inside the select stage
    bad.write_text("[{\"instruction\": \"x\", ", encoding="utf-8")
    proc = run_py("-m", "+experiment=demo", "stages=[select]", "logger=wandb_offline",
                  f"data.path=demo,{bad},demo", "seed=1", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode != 0
    assert "bad.json" in proc.stderr
    jobs = _jobs(tmp_path / "s")
    assert len(jobs) == 3  # the job after the failed one ran too
    assert (jobs[0] / "selection" / "subset.jsonl").is_file() and (jobs[2] / "selection" / "subset.jsonl").is_file()
    assert not (jobs[1] / "selection").exists()
    for job in jobs:  # every job's W&B run was written and finished (its run file closed), the failed one too
        (run,) = list((job / "wandb").glob("offline-run-*"))
        assert any(p.suffix == ".wandb" for p in run.iterdir())
