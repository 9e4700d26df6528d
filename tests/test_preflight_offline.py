"""A new user's first run, offline and from a fresh clone: one message lists every problem of every stage — the
select stage's data source and scorers included — in seconds, without a traceback; the project's errors print
as their message alone (``HYDRA_FULL_ERROR=1`` shows the traceback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_cfg

HF_CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE",
                 "SENTENCE_TRANSFORMERS_HOME", "HF_HOME", "THTB_JUDGE_BASE_URL", "THTB_JUDGE_MODEL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fresh_user(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None, timeout: int = 120):
    """``python run.py *overrides`` offline with an empty Hugging Face cache (no model, no dataset cached) and a
    judge URL nothing listens on; returns the process and its wall time."""
    base = {k: v for k, v in os.environ.items() if k not in HF_CACHE_VARS}
    base.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
                THTB_JUDGE_BASE_URL=f"http://127.0.0.1:{_free_port()}/v1", **(env or {}))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "run.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}",
                           f"paths.cache_dir={tmp_path / 'cache'}"], cwd=ROOT, env=base, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - start


def _cfg(tmp_path: Path, *overrides: str) -> dict:
    return OmegaConf.to_container(compose_cfg([*overrides, f"paths.run_dir={tmp_path / 'run'}",
                                               f"paths.cache_dir={tmp_path / 'cache'}"]), resolve=True)


# ------------------------------------------------------------------------------------- the acceptance run
def test_alpaca_5pct_offline_lists_every_problem_at_once_without_a_traceback(tmp_path):
    proc, seconds = _fresh_user(tmp_path, "+experiment=alpaca_5pct")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert seconds < 60, seconds
    err = proc.stderr
    assert err.count("found before the first stage; nothing has run") == 1  # one message ...
    listed = [line for line in err.splitlines() if line.startswith("  - ")]
    expected = [  # ... naming the data source, each scorer of the selection, and the train and eval problems
        "select: data.path=tatsu-lab/alpaca ",
        "select: the reward model internlm/internlm2-7b-reward: ",
        "select: the embedder BAAI/bge-large-en-v1.5: ",
        "select: the LLM judge Qwen/Qwen3-32B at judge.base_url=http://127.0.0.1:",
        "train: model 'llama32_1b'",
        "eval: no finished training of experiment 'alpaca_full'",
        "eval: the pairwise judge at http://127.0.0.1:",
    ]
    for start in expected:
        assert any(line[4:].startswith(start) for line in listed), (start, err)
    data_line = next(line for line in listed if "data.path=tatsu-lab/alpaca" in line)
    assert "HF_DATASETS_OFFLINE=1" in data_line and "local copy" in data_line
    assert "the server does not answer" in err and "scoring=offline" in err
    assert not (tmp_path / "run" / "selection").exists()  # nothing ran
    assert "run stopped: RunCannotStart" in (tmp_path / "run" / "run.log").read_text()  # the run's log says why


def test_the_offline_scorers_and_a_local_file_leave_only_train_and_eval(tmp_path):
    data = tmp_path / "alpaca.json"
    data.write_text('[{"instruction": "Say hi.", "input": "", "output": "Hi."}]', encoding="utf-8")
    proc, _ = _fresh_user(tmp_path, "+experiment=alpaca_5pct", "scoring=offline", f"data.path={data}")
    assert proc.returncode != 0
    assert "select:" not in proc.stderr and "train: model 'llama32_1b'" in proc.stderr, proc.stderr[-3000:]


def test_hydra_full_error_still_shows_the_traceback(tmp_path):
    missing = f"data.path={tmp_path / 'nope.json'}"
    plain, _ = _fresh_user(tmp_path, "+experiment=demo", "stages=[select]", missing)
    full, _ = _fresh_user(tmp_path, "+experiment=demo", "stages=[select]", missing, env={"HYDRA_FULL_ERROR": "1"})
    assert plain.returncode != 0 and full.returncode != 0
    assert "Traceback" not in plain.stderr and "nope.json does not exist" in plain.stderr
    assert "Traceback" in full.stderr and "RunCannotStart" in full.stderr and "nope.json does not exist" in full.stderr


def test_a_project_error_inside_a_stage_prints_its_message_alone(tmp_path):
    bad = tmp_path / "bad.json"  # exists (the preflight passes); the select stage's loader stops on it
    bad.write_text('[{"instruction": "x", ', encoding="utf-8")
    proc, _ = _fresh_user(tmp_path, "+experiment=demo", "stages=[select]", f"data.path={bad}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("DataError: ")]
    assert "bad.json" in line and "invalid JSON" in line


# ------------------------------------------------------------------------------- the select preflight
def test_data_source_problems(tmp_path, monkeypatch):
    from datasets import config

    from thtb.data.loaders import data_source_problem

    monkeypatch.setattr(config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert data_source_problem(str(tmp_path / "nope.json")) == "does not exist"
    (tmp_path / "there.jsonl").write_text("{}\n", encoding="utf-8")
    assert data_source_problem(str(tmp_path / "there.jsonl")) is None
    assert data_source_problem("https://example.org/data.json") is None  # a URL is left to the loader
    why = data_source_problem("owner/set")
    assert why and "HF_DATASETS_OFFLINE=1" in why and str(tmp_path / "datasets" / "owner___set") in why
    (tmp_path / "datasets" / "owner___set" / "default" / "0.0.0" / "abc123").mkdir(parents=True)
    assert data_source_problem("owner/set") is None  # what load_dataset reads offline
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE=1" in data_source_problem("other/set")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # datasets' own switch wins: online, nothing is asked here
    assert data_source_problem("other/set") is None


def test_the_demo_preflight_finds_nothing(tmp_path, monkeypatch):
    from thtb.stages.select import preflight

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert preflight(_cfg(tmp_path, "+experiment=demo"), tmp_path / "run", ["select"]) == []


def test_a_judge_server_that_never_answers_is_reported_within_the_bound():
    from thtb.scorers.availability import server_unavailable

    with socket.socket() as sock:  # accepts connections (the kernel's backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        start = time.monotonic()
        why = server_unavailable(url, timeout_s=1.0)
        assert time.monotonic() - start < 3
    assert why and "does not answer" in why


def test_missing_scorers_are_no_problem_when_the_finished_selection_is_reused(tmp_path, monkeypatch):
    from thtb.methods.cascade import THTB
    from thtb.stages.select import preflight, run_select

    cfg = _cfg(tmp_path, "+experiment=demo", "selection.stages=[quality]", "logger=none")
    run_select(cfg, tmp_path / "run")  # the proxy reward only: a finished selection in paths.cache_dir
    monkeypatch.setattr(THTB, "problems", lambda self, cfg: [("the reward model X: gone", "download it")])
    assert preflight(cfg, tmp_path / "run", ["select"]) == []  # reused: its scorers are not needed
    other = {**cfg, "selection": {**cfg["selection"], "budget": 0.1}}  # another subset: it would score
    (problem,) = preflight(other, tmp_path / "run", ["select"])
    assert problem.startswith("select: the reward model X: gone; download it") and "scoring=offline" in problem
    assert preflight({**cfg, "reuse": False}, tmp_path / "run", ["select"])[0].startswith("select: the reward")


def test_every_listed_project_error_is_a_class_of_that_name():
    import importlib

    import run

    for name in run.PROJECT_ERRORS:  # matched by module and name: a rename or a move must update the list
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr)
        assert f"{cls.__module__}.{cls.__qualname__}" == name and issubclass(cls, Exception)
    from thtb.judge.flow import JudgeServerUnreachableError

    assert run._is_project_error(JudgeServerUnreachableError("x"))  # subclasses count too
    assert not run._is_project_error(ValueError("x")) and run._is_project_error(run.RunCannotStart("x"))
