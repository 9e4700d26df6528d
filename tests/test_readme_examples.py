"""README's offline examples run here as written.

Every ``run.py`` line of the README block "Offline: select only, on any CPU" runs, in README order, with three
additions that keep the test fast and self-contained: ``data.limit=4000`` on the Alpaca examples, its own
``hydra.run.dir`` and one ``paths.cache_dir`` shared by the block (so the budget example re-cuts the cached
scores of the 5% example, as the README says). The examples' promises are checked on what they wrote.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, SHARED_DATA, fenced_block, section, shared_file

README = ROOT / "README.md"
ALPACA = SHARED_DATA / "alpaca" / "alpaca_data.json"
LIMIT = 4000


def offline_examples() -> list[list[str]]:
    lines = fenced_block(section(README.read_text(encoding="utf-8"), "Offline: select only, on any CPU"))
    commands = [shlex.split(line) for line in lines if line.startswith(".venv/bin/python run.py")]
    assert len(commands) >= 6, lines
    return commands


def test_the_offline_block_sets_the_offline_environment():
    lines = fenced_block(section(README.read_text(encoding="utf-8"), "Offline: select only, on any CPU"))
    assert any("HF_HUB_OFFLINE=1" in line and line.startswith("export") for line in lines)
    for command in offline_examples():
        assert "stages=[select]" in command, command  # select only: nothing here trains or evaluates


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> list[tuple[list[str], Path]]:
    shared_file(ALPACA.name, base=ALPACA.parent)
    tmp = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    out = []
    for i, command in enumerate(offline_examples()):
        args = [a for a in command[2:] if not a.startswith("hydra.run.dir=")]
        if any(a.startswith("data.path=") for a in args):
            args.append(f"data.limit={LIMIT}")
        run_dir = tmp / f"example{i}"
        proc = subprocess.run([sys.executable, "run.py", *args, f"hydra.run.dir={run_dir}",
                               f"paths.cache_dir={tmp / 'cache'}"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"README example {' '.join(command)} failed:\n{proc.stderr[-3000:]}"
        out.append((command, run_dir))
    return out


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "selection" / "summary.json").read_text(encoding="utf-8"))


def _find(ran, predicate) -> dict:
    (match,) = [run_dir for command, run_dir in ran if predicate(" ".join(command))]
    return _summary(match)


VARIANT_WORDS = ("selection.budget=", "selection.stages=", "fidelity=")


@pytest.mark.slow
def test_every_offline_example_selects(ran):
    for command, run_dir in ran:
        summary = _summary(run_dir)
        assert summary["n_selected"] > 0 and (run_dir / "selection" / "subset.jsonl").is_file(), command


@pytest.mark.slow
def test_the_5pct_and_the_ablation_keep_five_percent_and_the_ablation_has_its_own_name(ran):
    full = _find(ran, lambda c: "alpaca_5pct" in c and not any(w in c for w in VARIANT_WORDS))
    ablation = _find(ran, lambda c: "selection.stages=[quality,extrinsic]" in c)
    assert full["n_selected"] == ablation["n_selected"] == LIMIT // 20
    assert ablation["provenance"]["selection"]["variant"] == "thtb_no_ihs"
    assert full["provenance"]["selection"]["variant"] == "thtb"


@pytest.mark.slow
def test_the_budget_example_recuts_without_scoring(ran):
    two = _find(ran, lambda c: "selection.budget=0.02" in c)
    assert two["n_selected"] == LIMIT * 2 // 100
    assert two["provenance"]["selection"]["variant"] == "thtb_2pct"
    cache = two["scorers"]["score_cache"]
    assert cache["misses"] == 0 and cache["hits"] == 3, cache  # quality, Bloom, disciplines: all reused
