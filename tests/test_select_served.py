"""`scoring=served`: the select stage with the HTTP judge against a real `transformers serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_py

# real servers generating with SmolLM2 through run.py: the slow tier (make test-slow; CI runs it)
pytestmark = pytest.mark.slow

SECRET = "sk-served-run-secret"


@pytest.fixture(scope="module")
def served_args(smollm2_server, tmp_path_factory):
    cache = tmp_path_factory.mktemp("judge_cache") / "judge.sqlite"
    return [
        "+experiment=demo",
        "scoring=served",
        f"judge.base_url={smollm2_server.base_url}",
        f"judge.model={smollm2_server.model}",
        f"judge.cache={cache}",
        "judge.timeout_s=600",              # bound requests, not wall time: no answer times out on a busy machine
        "judge.max_attempts=1",             # SmolLM2-135M is slow on 2 CPU cores (~4 s per answer):
        "judge.decoding={max_tokens:48}",   # short answers, no re-asks (tests/test_judge_served.py has those),
        "data.limit=8",                     # 8 → 4 → 2 through the stages that use the judge
        "selection.stages=[quality,intrinsic]",
        "stages=[select]",
        "reuse=false",                      # every run selects (and asks the judge cache) again
    ]


@pytest.fixture(scope="module")
def first_run(served_args, tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("served1")
    monkeypatch_module.setenv("OPENAI_API_KEY", SECRET)
    proc = run_py(*served_args, "judge.failure_budget=1000", f"hydra.run.dir={out}")
    assert _finished(proc), proc.stderr[-3000:]
    return out, json.loads((out / "selection" / "summary.json").read_text())


def _finished(proc) -> bool:
    """Exit 0, or the clear stop when every sample failed within the budget (SmolLM2 may fail them all): the
    summary and score card are written either way."""
    return proc.returncode == 0 or "the selection kept 0 of" in proc.stderr


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_served_run_completes_and_reports_judge_stats(first_run):
    out, summary = first_run
    judge = summary["scorers"]["judge"]
    assert summary["counts"]["input"] == 8 and summary["counts"]["quality"] == 4
    assert judge["calls"] > 0 and judge["cache_hits"] == 0
    assert judge["transport_failures"] == 0 and judge["timeouts"] == 0, judge  # every request got an answer
    # failures within the budget are listed by id, never scored
    failed = [i for ids in summary["failed_ids"].values() for i in ids]
    assert summary["n_failed"] == len(failed)


def test_rerun_repeats_no_finished_request(first_run, served_args, tmp_path):
    _, first = first_run
    proc = run_py(*served_args, "judge.failure_budget=1000", f"hydra.run.dir={tmp_path}")
    assert _finished(proc), proc.stderr[-3000:]
    again = json.loads((tmp_path / "selection" / "summary.json").read_text())
    assert again["scorers"]["judge"]["calls"] == 0
    assert again["scorers"]["judge"]["cache_hits"] == first["scorers"]["judge"]["items"]
    assert again["n_selected"] == first["n_selected"] and again["failed_ids"] == first["failed_ids"]
    if first["n_selected"]:
        assert (tmp_path / "selection" / "subset.jsonl").read_bytes() == (
            first_run[0] / "selection" / "subset.jsonl").read_bytes()


def test_failure_budget_stops_with_the_failed_ids(first_run, served_args, tmp_path):
    _, first = first_run
    failed = [i for ids in first["failed_ids"].values() for i in ids]
    proc = run_py(*served_args, "judge.failure_budget=0", f"hydra.run.dir={tmp_path}")
    if not failed:  # SmolLM2 answered every row: a zero budget is enough
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    assert proc.returncode != 0
    assert "failure budget 0" in proc.stderr and failed[0] in proc.stderr


def test_no_api_key_in_any_written_file(first_run, served_args):
    out, _ = first_run
    cache = next(a.split("=", 1)[1] for a in served_args if a.startswith("judge.cache="))
    files = [p for p in out.rglob("*") if p.is_file()] + [p for p in Path(cache).parent.glob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files)  # Hydra's dump is among them
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------ the served demo against vLLM (thtb.serve)
@pytest.mark.vllm
def test_served_demo_against_vllm_completes_then_reruns_with_zero_requests(vllm_server, tmp_path):
    """`+experiment=demo scoring=served` against the project's vLLM server (SmolLM2, JSON-guided answers): the
    whole cascade runs and selects; an identical rerun asks the server nothing and selects the same ids."""
    args = ["+experiment=demo", "scoring=served", f"judge.base_url={vllm_server.base_url}",
            f"judge.model={vllm_server.model}", f"judge.cache={tmp_path / 'judge.sqlite'}", "judge.failure_budget=1000",
            "data.limit=40", "stages=[select]", "reuse=false"]
    first = run_py(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "selection" / "summary.json").read_text())
    judge = a["scorers"]["judge"]
    assert a["counts"]["quality"] == 20 and a["n_selected"] > 0
    assert judge["calls"] > 0 and judge["transport_failures"] == 0 and judge["timeouts"] == 0
    assert judge["failures"] < judge["items"] // 2, judge  # guided answers parse (SmolLM2 unguided: none do)
    again = run_py(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-3000:]
    b = json.loads((tmp_path / "b" / "selection" / "summary.json").read_text())
    assert b["scorers"]["judge"]["calls"] == 0 and b["scorers"]["judge"]["cache_hits"] == judge["items"]
    assert (tmp_path / "b" / "selection" / "subset.jsonl").read_bytes() == (
        tmp_path / "a" / "selection" / "subset.jsonl").read_bytes()
