"""`make compare` end to end, cut down to two methods × two seeds: a Hydra multirun of `+experiment=compare`
(select → LoRA on SmolLM2 → MMLU-Pro slice + pairwise vs the untuned model, each job a real run.py process), then
`+experiment=compare_table` over the run lines it appended. The aggregation rules themselves are tested on
hand-written lines in tests/test_tables.py; this checks that the sweep produces lines they aggregate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.helpers import run_py

pytestmark = pytest.mark.slow


def test_the_compare_sweep_gives_one_row_per_method_with_its_seeds_ci_and_cost(tmp_path):
    runs = tmp_path / "runs"
    sweep = run_py("-m", "+experiment=compare", "selection=thtb,random", "seed=1,2", f"eval.results_dir={runs}",
                   f"hydra.sweep.dir={tmp_path / 'multirun'}", timeout=3600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    lines = [json.loads(x) for f in runs.glob("*.jsonl") for x in f.read_text().splitlines()]
    assert sorted((ln["method"], ln["seed"]) for ln in lines) == [("random", 1), ("random", 2), ("thtb", 1),
                                                                  ("thtb", 2)]
    table = run_py("+experiment=compare_table", f"tables.runs_dir={runs}", f"tables.out_dir={tmp_path / 'out'}",
                   f"hydra.run.dir={tmp_path / 'table'}")
    assert table.returncode == 0, table.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "out" / "compare.csv", dtype={"seeds": str}).set_index("method")
    assert sorted(frame.index) == ["random", "thtb"]
    for method in ("random", "thtb"):
        row = frame.loc[method]
        assert (row.n_seeds, row.seeds) == (2, "1,2")
        assert 0 <= row.mmlu_pro <= 100 and row.mmlu_pro_ci_low <= row.mmlu_pro <= row.mmlu_pro_ci_high
        assert 0 <= row.win_rate <= 100 and row.pairwise_baseline == "base"
    assert frame.loc["thtb"].selection_device_hours > 0 and frame.loc["thtb"].training_device_hours > 0
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "2 (1,2)" in md and "cost (device-hours)" in md
    assert (tmp_path / "out" / "compare_mmlu_pro.png").stat().st_size > 0
