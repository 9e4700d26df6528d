"""Golden files: what ``thtb.eval.stats`` and the table renderers of ``thtb.eval.tables`` give on fixed inputs,
compared with ``tests/golden/``.

The files were written from the code as it was before the statistics moved onto scipy and the tables onto pandas'
renderers (issue 24, commit 303af3a), so that the change shows here as a diff. ``THTB_UPDATE_GOLDEN=1`` rewrites
those that differ from the code as it is now (then say in the commit which values changed, and why). Since then:

- no number changed: scipy's Wilson and t intervals and McNemar test equal the hand formulas to 1e-12, and
  ``scipy.stats.bootstrap`` draws the same resample indices from the same generator (``stats.json``, the CSVs and
  ``cells.json`` are as first written);
- every ``.md`` table is padded into aligned columns with a ``|:---|`` alignment row (pandas' ``to_markdown``,
  tabulate's pipe format) — the same cells, in the same order;
- ``protocol_table1_mmlu_pro.tex``: the footnote of a cell evaluated otherwise starts with ``$^\S$`` like its cell
  (it was a bare ``§``).

The files:

- ``stats.json``: every function of ``thtb.eval.stats`` on fixed inputs, compared to 1e-12.
- ``<scenario>_<table>.{md,tex,csv}``: the paper tables built from the run lines of ``tests/test_tables.py``'s
  scenarios (:mod:`tests.tables_fixtures`); text compared exactly, the tidy frames' numbers to 1e-12.
- ``compare.*``, ``paired.*``, ``summary_table.md``, ``cells.json``: the method comparison, the paired tests, the
  demo's summary table and :func:`~thtb.eval.tables.cell_text` / :func:`~thtb.eval.tables.footnotes` alone.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tables_fixtures import FIXTURE, PAPER, line, mmlu_samples, provenance
from thtb.eval import stats
from thtb.eval.tables import (TABLES, build_table, cell_text, compare_markdown, compare_methods, footnotes,
                              paired_comparisons, paired_markdown, parse_line, read_published, tex, to_latex,
                              to_markdown)
from thtb.eval.tables_stage import summary_table

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("THTB_UPDATE_GOLDEN") == "1"
TOL = 1e-12


# ------------------------------------------------------------------------------------------ comparing
def _compare(name: str, text: str, differences) -> None:
    """Assert that ``differences(golden text)`` is empty; under ``THTB_UPDATE_GOLDEN=1`` write ``text`` instead where
    the golden file is missing or differs (files within the tolerance stay as they are)."""
    path = GOLDEN / name
    found = differences(path.read_text(encoding="utf-8")) if path.exists() else [f"{path} is missing"]
    if UPDATE and found:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert not found, f"{name} differs from the golden file (THTB_UPDATE_GOLDEN=1 rewrites it): {found}"


def check_text(name: str, text: str) -> None:
    def differences(golden: str) -> list[str]:
        if text == golden:
            return []
        diff = difflib.unified_diff(golden.splitlines(), text.splitlines(), "golden", "now", lineterm="", n=1)
        return list(diff)[:40]

    _compare(name, text, differences)


def _flat(value, key: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for sub, item in value.items() for k, v in _flat(item, f"{key}/{sub}").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{key}/{i}").items()}
    return {key: value}


def check_numbers(name: str, value: dict) -> None:
    """Numbers to 1e-12 (absolute), everything else exactly."""
    got = _flat(json.loads(json.dumps(value)))

    def differences(golden: str) -> list[str]:
        want = _flat(json.loads(golden))
        if sorted(got) != sorted(want):
            return [f"keys: {sorted(set(got) ^ set(want))}"]
        return [f"{k}: {got[k]!r} != {w!r}" for k, w in want.items()
                if not (got[k] == pytest.approx(w, abs=TOL, nan_ok=True) if isinstance(w, float) else got[k] == w)]

    _compare(name, json.dumps(value, indent=1, ensure_ascii=False) + "\n", differences)


def check_frame(name: str, frame: pd.DataFrame) -> None:
    """A frame through CSV: its text columns exactly, its numbers to 1e-12."""
    text = frame.to_csv(index=False)

    def differences(golden: str) -> list[str]:
        read = [pd.read_csv(io.StringIO(t), keep_default_na=False, na_values=[""]) for t in (text, golden)]
        try:
            pd.testing.assert_frame_equal(*read, check_exact=False, rtol=0, atol=TOL)
        except AssertionError as err:
            return [str(err)]
        return []

    _compare(name, text, differences)


# ------------------------------------------------------------------------------------------ statistics
def test_stats_golden():
    rng = np.random.default_rng(5)
    a = (rng.random(400) < 0.6).astype(float)
    b = np.where(np.isin(np.arange(400), rng.choice(400, size=30, replace=False)), 1 - a, a)  # 30 answers flipped
    big = np.random.default_rng(7)
    x, y = (big.random(3000) < 0.42).astype(float), (big.random(3000) < 0.4).astype(float)
    out = {
        "wilson": {f"{k}/{n}@{c}": stats.wilson_interval(k, n, c)
                   for k, n in [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (5217, 12032), (1, 1000), (37, 40),
                                (0, 0), (2.5, 10), (0.5, 3), (7.3, 12), (4.1, 805)]
                   for c in (0.9, 0.95, 0.99)},
        "t": {f"{v}@{c}": stats.t_interval(v, c) for v in ([20.0, 21.0], [1.0, 2.5, 2.0, 7.0], [3.0, 3.0, 3.0],
                                                            [10.0, 14.0, 100.0], [1.0]) for c in (0.9, 0.95)},
        "bootstrap_mean": {
            "uniform57": stats.bootstrap_mean_ci(np.random.default_rng(3).random(57), n_boot=700, seed=11),
            "binary300@0.9": stats.bootstrap_mean_ci((np.random.default_rng(4).random(300) < 0.3).astype(float),
                                                     n_boot=2000, confidence=0.9),
            "one": stats.bootstrap_mean_ci([5.0], n_boot=50),
            "empty": stats.bootstrap_mean_ci([], n_boot=10),
        },
        "paired_bootstrap": {"flip30": stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=1),
                             "same": stats.paired_bootstrap_diff(a, a, n_boot=100)},
        "mcnemar": {f"{b_}/{c_}": stats.mcnemar_exact(b_, c_)
                    for b_, c_ in [(0, 0), (0, 1), (1, 0), (3, 7), (10, 10), (0, 25), (40, 61), (200, 150)]},
        "paired_comparison": {
            "ten": stats.paired_comparison([1, 1, 1, 0, 0, 1, 0, 1, 1, 1], [1, 0, 0, 0, 1, 1, 0, 0, 1, 0], n_boot=500,
                                           seed=2),
            "3000_default": stats.paired_comparison(x, y),
        },
    }
    check_numbers("stats.json", out)


# ------------------------------------------------------------------------------------------ tables
def _parsed(lines: list[dict]) -> list[dict]:
    return [parse_line(json.loads(json.dumps(x)), f"golden:{i}") for i, x in enumerate(lines, start=1)]


def _cost(sel_s: float, train_s: float, requests: int) -> dict:
    from thtb.cost import run_cost, stage_cost

    return run_cost(stage_cost(sel_s, devices={"kind": "cpu", "name": "2-core CPU", "count": 1},
                               judge={"calls": requests}),
                    stage_cost(train_s, devices={"kind": "cuda", "name": "H100", "count": 2}, tokens=1_200_000,
                               token_kind="trained"), None)


def _pairwise(rate: float, ci: list[float] | None = None, judge: str = "Qwen/Qwen3-32B", **overall) -> dict:
    return {"baseline": "full", "judge": judge, "n_prompts": 805,
            "overall": {"win_rate": rate, "win_rate_ci95": ci, "win_rate_tie_half": rate + 1, "n": 805, **overall},
            "subsets": {}}


def _scenarios() -> dict[str, tuple[list[dict], tuple[str, ...]]]:
    """The run lines of tests/test_tables.py's table tests, by scenario, and the tables each one renders."""
    offline = provenance("thtb", setup="offline")
    sig = line("thtb", "3B", 42, mmlu=30.0, pairwise=_pairwise(60.0, [56.6, 63.4], lc_win_rate=55.0,
                                                               lc_win_rate_ci95=[50.0, 60.0]))
    sig["metrics"]["mmlu_pro"].update(ci95=[29.2, 30.8], scheme="official_guess",
                                      schemes={"strict": {"overall": 28.0, "ci95": [27.2, 28.8]}})
    overlap = {"mmlu_pro": {"checked": True, "n_selected": 2600, "n_flagged": 3, "rate": 3 / 2600},
               "alpaca_eval": {"checked": False, "n_selected": 2600, "n_flagged": None, "rate": None}}
    return {
        "fixture": (FIXTURE, tuple(TABLES)),
        "provenance": ([line("thtb", "1B", 42, mmlu=20.0), line("thtb", "1B", 42, mmlu=17.0, prov=offline),
                        line("thtb", "1B", 43, mmlu=18.0, prov=offline),
                        line("thtb", "1B", 42, mmlu=19.0, prov=provenance("thtb", fidelity="paper")),
                        {k: v for k, v in line("thtb", "1B", 44, mmlu=30.0).items() if k != "provenance"}],
                       ("table1_mmlu_pro",)),
        "protocol": ([line("thtb", "1B", 42, mmlu=21.0, prov=provenance("thtb", mmlu_protocol="lm-eval"),
                           pairwise=_pairwise(70.0, judge="smollm2"),),
                      line("random", "1B", 42, mmlu=19.0)], ("table1_mmlu_pro", "table2_alpacaeval")),
        "significance": ([sig], ("table1_mmlu_pro", "table2_alpacaeval")),
        "cost": ([line("thtb", "1B", 1, mmlu=20.0, cost=_cost(3600, 1800, 100), contamination=overlap),
                  line("thtb", "1B", 2, mmlu=21.0, cost=_cost(7200, 1800, 300), contamination=overlap),
                  line("random", "1B", 1, mmlu=19.0), line("random", "1B", 2, mmlu=14.0), line("random", "1B", 3,
                                                                                              mmlu=100.0)],
                 ("table1_mmlu_pro",)),
    }


@pytest.mark.parametrize("scenario", ["fixture", "provenance", "protocol", "significance", "cost"])
def test_paper_tables_golden(scenario):
    lines, names = _scenarios()[scenario]
    for name in names:
        spec = TABLES[name]
        frame = build_table(_parsed(lines), read_published(PAPER, name), spec)
        check_text(f"{scenario}_{name}.md", to_markdown(frame, spec))
        check_text(f"{scenario}_{name}.tex", to_latex(frame, spec))
        check_frame(f"{scenario}_{name}.csv", frame)


def test_cells_and_footnotes_golden():
    spec = TABLES["table1_mmlu_pro"]
    frame = build_table(_parsed(FIXTURE), read_published(PAPER, spec.name), spec)
    nan = math.nan
    hand = [{"ours": nan, "n_seeds": 0, "ours_std": nan, "ours_ci_low": nan, "ours_ci_high": nan, "smoke": False,
             "published": nan, "published_note": "", "delta": nan},
            {"ours": 1 / 3, "n_seeds": 3, "ours_std": 0.125, "ours_ci_low": -0.5, "ours_ci_high": 1.25, "smoke": True,
             "published": 0.5518, "published_note": "typo: 0.55", "delta": 1 / 3 - 0.5518, "differs": "x",
             "significant": False},
            {"ours": 61.825, "n_seeds": 1, "ours_std": nan, "ours_ci_low": 60.0, "ours_ci_high": 63.5, "smoke": False,
             "published": 61.82, "published_note": "", "delta": 0.005, "significant": True}]
    records = [*frame.to_dict("records"), *hand]
    check_numbers("cells.json", {
        "md": [cell_text(r, d) for r in records for d in (2, 4)],
        "tex": [tex(cell_text(r, d)) for r in records for d in (2, 4)],
        "footnotes": {name: footnotes(build_table(_parsed(FIXTURE), read_published(PAPER, name), TABLES[name]),
                                      TABLES[name]) for name in TABLES} | {"no spec": footnotes(frame)},
    })


def _compare_lines() -> list[dict]:
    def pw(rate):
        return {"baseline": "base", "judge": "smollm2", "n_prompts": 10, "limit": None,
                "overall": {"win_rate": rate, "win_rate_ci95": [rate - 20, rate + 20], "win_rate_tie_half": rate,
                            "n": 10, "n_failed": 0}, "subsets": {}}

    offline = provenance("thtb", setup="offline", judge="smollm2")
    overlap = {"mmlu_pro": {"checked": True, "n_selected": 33, "n_flagged": 1, "rate": 1 / 33}}
    return [line("thtb", "135M", 1, mmlu=20.0, n=14, limit=1, pairwise=pw(40.0), prov=offline, experiment="compare",
                 cost=_cost(60, 120, 40), contamination=overlap),
            line("thtb", "135M", 2, mmlu=30.0, n=14, limit=1, pairwise=pw(60.0), prov=offline, experiment="compare",
                 cost=_cost(90, 120, 50), contamination=overlap),
            line("thtb", "135M", 3, mmlu=50.0, n=14, limit=1, experiment="compare"),
            line("random", "135M", 1, mmlu=10.0, n=14, limit=1, pairwise=pw(30.0), experiment="compare"),
            line("random", "135M", 2, mmlu=99.0, n=14, limit=1, experiment="elsewhere")]


def test_compare_golden():
    frame = compare_methods(_parsed(_compare_lines()), ["compare"])
    check_frame("compare.csv", frame)
    check_text("compare.md", compare_markdown(frame, "Selection methods compared (compare)"))
    check_text("compare_empty.md", compare_markdown(compare_methods([], ["nothing"])))


def test_paired_golden(tmp_path):
    """Three methods on the same 200 questions (seed 42) and two seed pairs of THTB and random (seeds 1, 2): per-seed
    rows, a pooled row, McNemar p-values and the paired-bootstrap intervals (2000 resamples)."""
    runs = {("thtb", 42): [True] * 60 + [False] * 10 + [True] * 50 + [False] * 80,
            ("random", 42): [False] * 60 + [True] * 10 + [True] * 50 + [False] * 80,
            ("longest", 42): [False] * 5 + [True] * 55 + [True] * 5 + [False] * 5 + [True] * 50 + [False] * 80,
            ("thtb", 1): [True] * 30 + [False] * 70, ("random", 1): [False] * 20 + [True] * 10 + [False] * 70,
            ("thtb", 2): [True] * 10 + [False] * 90, ("random", 2): [True] * 14 + [False] * 86}
    lines = []
    for (method, seed), correct in runs.items():
        run_dir = tmp_path / f"{method}{seed}"
        mmlu_samples(run_dir, correct)
        size = "1B" if seed == 42 else "3B"
        lines.append(line(method, size, seed, mmlu=100 * sum(correct) / len(correct), n=len(correct),
                          run_dir=str(run_dir)))
        lines[-1]["metrics"]["mmlu_pro"]["scheme"] = "official"
    frame = paired_comparisons(_parsed(lines))
    check_frame("paired.csv", frame)
    check_text("paired.md", paired_markdown(frame))
    check_text("paired_empty.md", paired_markdown(paired_comparisons([])))


def test_summary_table_golden():
    pairwise = {"baseline": "random", "judge": "smollm2", "n_prompts": 10, "position_consistency": 0.5,
                "overall": {"win_rate": 40.0, "win_rate_tie_half": 45.0, "n": 10, "n_failed": 0, "lc_win_rate": 47.5}}
    ours = line("thtb", "135M", 42, mmlu=25.0, n=28, pairwise=pairwise,
                prov=provenance("thtb", setup="offline", mmlu_protocol="lm-eval", judge="smollm2"))
    ours["metrics"]["mmlu_pro"].update(ci95=[12.7, 43.4], scheme="official_guess")
    check_text("summary_table.md", summary_table(_parsed([ours, line("random", "135M", 42, mmlu=20.0, n=28)]),
                                                 ["x_thtb", "x_random", "x_absent"]))
