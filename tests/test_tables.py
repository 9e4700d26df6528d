"""Paper tables: the published numbers as transcribed, and the tables stage on fixture run lines."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ROOT, run_py
from tests.tables_fixtures import FIXTURE, MMLU_N, PAPER, line, mmlu_samples, provenance, write_lines
from thtb.eval.tables_stage import run_tables
from thtb.eval.tables import (
    ALPACAEVAL_SUBSETS,
    MISSING,
    MMLU_PRO_CATEGORIES,
    TABLES,
    RunLineError,
    cell_text,
    line_from_wandb,
    parse_line,
    read_published,
    read_run_files,
)

ALPACA_N = {"helpful_base": 129, "koala": 156, "selfinstruct": 252, "oasst": 188, "vicuna": 80}
# docs/METHOD.md "Published numbers": the overall columns, transcribed a second time
OVERALL = {
    "table1_mmlu_pro": {"1B": (18.46, 19.58, 17.95, 20.65), "3B": (29.38, 31.24, 33.25, 34.56),
                        "8B": (32.76, 37.01, 39.81, 40.40)},
    "table2_alpacaeval": {"1B": (None, 63.98, 73.54, 75.03), "3B": (None, 73.42, 78.39, 81.86),
                          "8B": (None, 73.17, 83.26, 85.34)},
}


# ------------------------------------------------------------------------------------ published numbers
def published(table: str) -> pd.DataFrame:
    return read_published(PAPER, table)


def value(frame, method, size, column) -> float:
    row = frame[(frame.method == method) & (frame.model_size == size) & (frame.column == column)]
    assert len(row) == 1, (method, size, column)
    return float(row["value"].iloc[0])


def test_published_values_as_printed():
    t1, t2, t3 = published("table1_mmlu_pro"), published("table2_alpacaeval"), published("table3_tcm")
    assert value(t1, "thtb", "1B", "business") == 20.41
    assert value(t1, "random", "3B", "history") == 30.97
    assert value(t1, "full", "8B", "psychology") == 48.99  # the typo stays, noted
    assert value(t2, "thtb", "8B", "vicuna") == 95.00
    assert value(t2, "alpagasus", "8B", "overall") == 83.26
    assert value(t3, "tcm_hard", "8B", "exam") == 61.82 and value(t3, "tcm_hard", "8B", "thtb_score") == 0.5518
    assert value(t3, "vanilla", "8B", "exam") == 55.15 and math.isnan(value(t3, "vanilla", "8B", "thtb_score"))
    assert set(t1.groupby(["method", "model_size"]).size()) == {15}
    assert list(t1["column"].unique()) == [*MMLU_PRO_CATEGORIES, "overall"]
    assert list(t2["column"].unique()) == [*ALPACAEVAL_SUBSETS, "overall"]
    assert "full" not in set(t2["method"])  # Full is Table 2's baseline


@pytest.mark.parametrize("table", sorted(OVERALL))
def test_each_published_overall_matches(table):
    frame = published(table)
    for size, values in OVERALL[table].items():
        for method, expected in zip(("full", "random", "alpagasus", "thtb"), values, strict=True):
            if expected is not None:
                assert value(frame, method, size, "overall") == expected, (method, size)


@pytest.mark.parametrize(("table", "sizes"), [("table1_mmlu_pro", MMLU_N), ("table2_alpacaeval", ALPACA_N)])
def test_published_overall_is_the_weighted_mean_except_noted_typos(table, sizes):
    """Each cell is k/n; the question-weighted mean of the cells gives the overall, except the noted typos."""
    frame = published(table)
    typos = frame[frame["note"].str.startswith("typo")]
    assert len(typos) == 2
    for (method, size), rows in frame.groupby(["method", "model_size"]):
        cells = rows.set_index("column")["value"]
        counts = {c: round(cells[c] * n / 100) for c, n in sizes.items()}
        weighted = 100 * sum(counts.values()) / sum(sizes.values())
        exact = all(abs(100 * counts[c] / n - cells[c]) < 0.006 for c, n in sizes.items())
        noted = (typos["method"].eq(method) & typos["model_size"].eq(size)).any()
        if noted:
            assert not exact or abs(weighted - cells["overall"]) > 0.006, (method, size)
        else:
            assert exact and abs(weighted - cells["overall"]) < 0.006, (method, size)


# ------------------------------------------------------------------------------------------ fixture runs
def cfg_for(runs: Path, out: Path, **tables) -> dict:
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "tables" / "default.yaml").read_text())
    conf.update(runs_dir=str(runs), out_dir=str(out), paper_dir=str(PAPER), **tables)
    return {"tables": conf, "experiment_name": "paper_tables"}


def md_table(md: str) -> dict[str, list[str]]:
    """A markdown table's rows by their first cell (the header row under its first header), each its other cells
    (the cells stripped of the renderer's padding; the alignment row left out)."""
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in md.splitlines() if r.startswith("|")]
    return {r[0]: r[1:] for r in rows if not set("".join(r)) <= set(":-")}


def md_row(md: str, label: str) -> list[str]:
    """The metric cells of a table row (the cost and overlap columns after them: :func:`md_extra`)."""
    table = md_table(md)
    return table[label][:table["Method"].index("Cost (device-hours)")]


def md_extra(md: str, label: str) -> dict[str, str]:
    """A row's cost and eval-set overlap cells, by header."""
    table = md_table(md)
    width = table["Method"].index("Cost (device-hours)")
    return dict(zip(table["Method"][width:], table[label][width:], strict=True))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tables")
    write_lines(tmp / "runs" / "alpaca.jsonl", FIXTURE[:4])
    write_lines(tmp / "runs" / "more.jsonl", FIXTURE[4:])
    summary = run_tables(cfg_for(tmp / "runs", tmp / "out"), tmp / "run")
    return tmp / "out", summary


def test_stage_writes_every_file(tables):
    out, summary = tables
    for name in TABLES:
        for ext in ("md", "tex", "csv", "png"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    assert summary["n_run_lines"] == len(FIXTURE)
    assert summary["tables"]["table1_mmlu_pro"]["smoke_cells"] == 1


def test_cell_shows_ours_published_and_delta(tables):
    out, _ = tables
    md = (out / "table1_mmlu_pro.md").read_text()
    cells = md_row(md, "Ours-1B")
    assert cells[0] == "20.41 / 20.41 (+0.00)"  # business, one seed
    # overall: two seeds averaged, the stale line ignored
    assert cells[-2] == "20.50 ± 0.71 [14.15, 26.85] (n=2 seeds) / 20.65 (-0.15, ns)"
    assert md_row(md, "AlpaGasus-1B")[-2] == f"{MISSING} / 17.95"  # not run: missing, never filled
    assert md_row(md, "Ours-1B")[1] == f"{MISSING} / 16.35"
    assert md_row(md, "Full-8B")[2] == f"{MISSING} / 48.99‡"  # the published typo is marked and footnoted
    assert "391/798 = 49.00" in md
    tex = (out / "table1_mmlu_pro.tex").read_text()
    assert r"20.50 $\pm$ 0.71 [14.15, 26.85] (n=2 seeds) / 20.65 (-0.15, ns)" in tex and r"\begin{tabular}" in tex


def test_seeds_are_averaged_in_the_csv(tables):
    out, _ = tables
    csv = pd.read_csv(out / "table1_mmlu_pro.csv", dtype={"seeds": str})
    cell = csv[(csv.method == "thtb") & (csv.model_size == "1B") & (csv.column == "overall")].iloc[0]
    assert (cell.ours, cell.n_seeds, cell.seeds, cell.published) == (20.5, 2, "42,43", 20.65)
    assert (round(cell.ours_ci_low, 4), round(cell.ours_ci_high, 4), cell.ci_over) == (14.1469, 26.8531, "seeds")
    assert cell.ours_std == pytest.approx(math.sqrt(0.5)) and cell.delta == pytest.approx(-0.15)
    assert not cell.smoke
    missing = csv[(csv.method == "alpagasus") & (csv.model_size == "1B") & (csv.column == "overall")].iloc[0]
    assert math.isnan(missing.ours) and missing.n_seeds == 0 and missing.published == 17.95


def test_smoke_cell_is_flagged(tables):
    out, _ = tables
    md = (out / "table1_mmlu_pro.md").read_text()
    assert md_row(md, "Random Sampling-1B")[-2] == "30.00† / 19.58 (+10.42)"
    assert "† Random Sampling-1B: smoke slice (limit=100), not comparable to the paper." in md
    csv = pd.read_csv(out / "table1_mmlu_pro.csv")
    smoke = csv[csv.smoke]
    assert list(zip(smoke.method, smoke.column, strict=True)) == [("random", "overall")]
    assert smoke.smoke_reason.iloc[0] == "limit=100"


def test_ours_only_methods_are_appended_under_their_block(tables):
    out, _ = tables
    md = (out / "table1_mmlu_pro.md").read_text()
    labels = list(md_table(md))[1:]
    assert labels.index("Longest-3B") == labels.index("Ours-3B") + 1
    assert md_row(md, "Longest-3B")[-2] == f"31.00 / {MISSING}"


def test_pairwise_ci_and_table3(tables):
    out, _ = tables
    md2 = (out / "table2_alpacaeval.md").read_text()
    assert md_row(md2, "Ours-1B")[-2] == "75.00 [72.10, 78.00] / 75.03 (-0.03, ns)"  # inside our CI: not significant
    assert md_row(md2, "Ours-1B")[1] == "80.00 [73.00, 86.00] / 79.49 (+0.51, ns)"
    assert "ns: the published number lies inside our 95% CI" in md2
    assert "Full-1B" not in md_table(md2)
    md3 = (out / "table3_tcm.md").read_text()
    assert md_row(md3, "Hard Instruction Dataset (200, THTB-guided)") == ["60.00 / 61.82 (-1.82)",
                                                                           "0.5000 / 0.5518 (-0.0518)"]
    assert md_row(md3, "Vanilla (Qwen3-8B, no SFT)") == [f"{MISSING} / 55.15", f"{MISSING} / {MISSING}"]
    assert "tcm_hard" not in (out / "table1_mmlu_pro.csv").read_text()


def test_no_run_lines_still_gives_the_published_tables(tmp_path):
    summary = run_tables(cfg_for(tmp_path / "absent", tmp_path / "out"), tmp_path / "run")
    assert summary["n_run_lines"] == 0
    for name, info in summary["tables"].items():
        csv = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        assert csv["ours"].isna().all() and info["ours_cells"] == 0
        assert info["published_cells"] == published(name)["value"].notna().sum() > 0
    md = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    assert md_row(md, "Ours-8B")[-2] == f"{MISSING} / 40.40"


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"method": "thtb", "model_size": "1B"}\n{"method": "thtb", "model_size": \n', r"bad\.jsonl:2: invalid JSON"),
     ('\n{"model_size": "1B", "metrics": {}}\n', r"bad\.jsonl:2: missing required field\(s\) method"),
     ('{"method": "thtb", "model_size": "1B", "metrics": []}\n', r"bad\.jsonl:1: `metrics` must be an object")],
)
def test_bad_run_line_names_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(RunLineError, match=message):
        read_run_files(tmp_path)


def test_non_numeric_metric_names_the_line(tmp_path):
    write_lines(tmp_path / "runs" / "r.jsonl", [line("thtb", "1B", 42, mmlu="20.1")])
    with pytest.raises(RunLineError, match=r"r\.jsonl:1: mmlu_pro/overall must be a number"):
        run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")


def test_runs_of_different_provenance_never_share_a_cell(tmp_path):
    """One method and size, four provenances: the paper's scorers, offline scorers, fidelity=paper and a line
    without provenance. Each is its own row; only the paper-made run stands beside the published number."""
    lines = [line("thtb", "1B", 42, mmlu=20.0),
             line("thtb", "1B", 42, mmlu=17.0, prov=provenance("thtb", setup="offline")),
             line("thtb", "1B", 43, mmlu=18.0, prov=provenance("thtb", setup="offline")),
             line("thtb", "1B", 42, mmlu=19.0, prov=provenance("thtb", fidelity="paper")),
             {k: v for k, v in line("thtb", "1B", 44, mmlu=30.0).items() if k != "provenance"}]
    write_lines(tmp_path / "runs" / "r.jsonl", lines)
    run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")
    md = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    assert md_row(md, "Ours-1B")[-2] == "20.00 / 20.65 (-0.65)"
    # two seeds, one cell
    assert md_row(md, "Ours-1B · offline scorers")[-2] == f"17.50 ± 0.71 [11.15, 23.85] (n=2 seeds) / {MISSING}"
    assert md_row(md, "Ours-1B · fidelity=paper")[-2] == f"19.00 / {MISSING}"
    assert md_row(md, "Ours-1B · provenance unknown")[-2] == f"30.00 / {MISSING}"
    csv = pd.read_csv(tmp_path / "out" / "table1_mmlu_pro.csv", keep_default_na=False, na_values={"ours": [""]})
    overall = csv[(csv.method == "thtb") & (csv.model_size == "1B") & (csv.column == "overall")]
    assert sorted(overall["variant"]) == ["", "fidelity=paper", "offline scorers", "provenance unknown"]
    paper_cell = overall[overall["variant"] == ""].iloc[0]["provenance"]
    assert "reward internlm2-7b-reward" in paper_cell and "judge Qwen3-32B (bloom@1)" in paper_cell
    assert "train lora_paper" in paper_cell and "MMLU-Pro tiger" in paper_cell and "@ abc" in paper_cell
    assert "differs from the paper's setup" in md


def test_a_difference_outside_the_ci_is_not_marked_ns(tmp_path):
    pairwise = {"baseline": "full", "judge": "Qwen/Qwen3-32B", "n_prompts": 805,
                "overall": {"win_rate": 60.0, "win_rate_ci95": [56.6, 63.4], "win_rate_tie_half": 61.0, "n": 805},
                "subsets": {}}
    mmlu_ci = line("thtb", "3B", 42, mmlu=30.0, pairwise=pairwise)
    mmlu_ci["metrics"]["mmlu_pro"].update(ci95=[29.2, 30.8], scheme="official_guess",
                                          schemes={"strict": {"overall": 28.0, "ci95": [27.2, 28.8]}})
    mmlu_ci["metrics"]["pairwise"]["overall"].update(lc_win_rate=55.0, lc_win_rate_ci95=[50.0, 60.0])
    write_lines(tmp_path / "runs" / "r.jsonl", [mmlu_ci])
    run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")
    md2 = (tmp_path / "out" / "table2_alpacaeval.md").read_text()
    assert md_row(md2, "Ours-3B")[-2] == "60.00 [56.60, 63.40] / 81.86 (-21.86)"  # significant: no ns
    md1 = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    assert md_row(md1, "Ours-3B")[-2] == "30.00 [29.20, 30.80] / 34.56 (-4.56)"  # MMLU-Pro CIs come from the run line
    assert md_row(md1, "Ours-3B")[-1] == f"28.00 [27.20, 28.80] / {MISSING}"  # the same answers, lm-eval's regex alone
    assert md_row(md2, "Ours-3B")[-1] == f"55.00 [50.00, 60.00] / {MISSING}"  # length-controlled: not in the paper


def test_another_eval_protocol_is_marked_beside_the_published_number(tmp_path):
    lines = [line("thtb", "1B", 42, mmlu=21.0, prov=provenance("thtb", mmlu_protocol="lm-eval")),
             line("random", "1B", 42, mmlu=19.0)]
    write_lines(tmp_path / "runs" / "r.jsonl", lines)
    run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")
    md = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    assert md_row(md, "Ours-1B · MMLU-Pro via lm-eval")[-2] == "21.00 / 20.65§ (+0.35)"
    assert "Ours-1B" not in md_table(md)  # the paper's row is the marked one, not a second empty row
    assert md_row(md, "Random Sampling-1B")[-2] == "19.00 / 19.58 (-0.58)"
    assert "§ Ours-1B · MMLU-Pro via lm-eval: evaluated differently from the paper (MMLU-Pro via lm-eval)" in md
    assert "TIGER-AI-Lab's MMLU-Pro script" in md


def test_paired_comparisons_on_the_same_questions(tmp_path):
    """THTB vs random on the same 200 questions: 60 questions only THTB gets right, 10 only random does →
    McNemar significant; vs longest with 5/5 discordant → not significant. Lines without samples are skipped."""
    runs = {"thtb": [True] * 60 + [False] * 10 + [True] * 50 + [False] * 80,
            "random": [False] * 60 + [True] * 10 + [True] * 50 + [False] * 80,
            "longest": [False] * 5 + [True] * 55 + [True] * 5 + [False] * 5 + [True] * 50 + [False] * 80}
    lines = []
    for method, correct in runs.items():
        run_dir = tmp_path / method
        mmlu_samples(run_dir, correct)
        acc = 100 * sum(correct) / len(correct)
        lines.append(line(method, "1B", 42, mmlu=acc, n=len(correct), run_dir=str(run_dir)))
        lines[-1]["metrics"]["mmlu_pro"]["scheme"] = "official"
    lines.append(line("alpagasus", "1B", 42, mmlu=30.0, run_dir=str(tmp_path / "gone")))  # samples deleted
    write_lines(tmp_path / "runs" / "r.jsonl", lines)
    summary = run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")
    paired = pd.read_csv(tmp_path / "out" / "paired.csv").set_index("method_b")
    assert sorted(paired.index) == ["longest", "random"]
    r, lg = paired.loc["random"], paired.loc["longest"]
    assert (r.n, r["diff"], r.test) == (200, 25.0, "exact McNemar") and r.p_value < 1e-6 and r.significant
    assert lg["diff"] == pytest.approx(0.0) and lg.p_value == pytest.approx(1.0) and not lg.significant  # 5 vs 5
    md = (tmp_path / "out" / "paired.md").read_text()
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in md.splitlines() if r.startswith("| mmlu_pro")]
    random = next(r for r in rows if r[3] == "thtb − random")
    assert random[:7] == ["mmlu_pro", "1B", "m", "thtb − random", "42", "accuracy (official)", "200"]
    assert random[7].startswith("+25.00 [") and "(ns)" in md
    assert len(summary["paired"]["comparisons"]) == 2


def test_paired_comparisons_pair_runs_by_seed_and_pool_them(tmp_path):
    """Two seeds of THTB and of random: one row per seed pair, then a pooled row over both pairs' questions (each
    pair's 100 questions once: n = 200) with the decision — THTB ahead in seed 1 (+20 pp), behind in seed 2 (−4 pp).
    Random's third seed has no THTB run to pair with: left out."""
    runs = {("thtb", 1): [True] * 30 + [False] * 70, ("random", 1): [False] * 20 + [True] * 10 + [False] * 70,
            ("thtb", 2): [True] * 10 + [False] * 90, ("random", 2): [True] * 14 + [False] * 86,
            ("random", 3): [True] * 100}
    lines = []
    for (method, seed), correct in runs.items():
        run_dir = tmp_path / f"{method}{seed}"
        mmlu_samples(run_dir, correct)
        lines.append(line(method, "1B", seed, mmlu=float(sum(correct)), n=100, run_dir=str(run_dir)))
        lines[-1]["metrics"]["mmlu_pro"]["scheme"] = "official"
    write_lines(tmp_path / "runs" / "r.jsonl", lines)
    run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")
    paired = pd.read_csv(tmp_path / "out" / "paired.csv", dtype={"seeds": str}).set_index("seeds")
    assert list(paired.index) == ["1", "2", "pooled (2 pairs)"]
    assert paired.loc["1", "diff"] == pytest.approx(20.0) and paired.loc["2", "diff"] == pytest.approx(-4.0)
    pooled = paired.loc["pooled (2 pairs)"]
    assert pooled.n == 200 and pooled["diff"] == pytest.approx(8.0)  # (40 − 24) / 200
    assert pooled.decision == "thtb ahead in 1 of 2 seed pairs" and pd.isna(paired.loc["1", "decision"])
    md = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    # random's three seeds (10, 14, 100) in one cell: mean ± std and the t-interval, which says how little three
    # seeds pin down
    assert md_row(md, "Random Sampling-1B")[-2].startswith("41.33 ± 50.85 [-84.98, 167.64] (n=3 seeds)")


def test_cell_text_with_nothing_on_either_side():
    rec = {"ours": math.nan, "n_seeds": 0, "ours_std": math.nan, "ours_ci_low": math.nan, "ours_ci_high": math.nan,
           "smoke": False, "published": math.nan, "published_note": "", "delta": math.nan}
    assert cell_text(rec) == f"{MISSING} / {MISSING}"


def test_wandb_run_becomes_a_run_line():
    config = {"experiment_name": "alpaca_5pct", "seed": 42, "selection": {"name": "thtb"},
              "model": {"name": "llama32_1b", "size": "1b"}, "data": {"name": "alpaca"}}
    summary = {"eval/mmlu_pro/overall": 20.65, "eval/mmlu_pro/n": 12032, "eval/mmlu_pro/categories/law/accuracy": 16.35,
               "pairwise/overall/win_rate": 75.03, "train/loss": 1.2}
    got = line_from_wandb(config, summary, created_at="2026-11-24T22:00:00Z")
    assert (got["method"], got["model_size"], got["seed"], got["experiment"]) == ("thtb", "1b", 42, "alpaca_5pct")
    assert got["metrics"] == {"mmlu_pro": {"overall": 20.65, "n": 12032, "categories": {"law": {"accuracy": 16.35}}},
                              "pairwise": {"overall": {"win_rate": 75.03}}}
    whole = {"method": "random", "model_size": "3B", "metrics": {}}
    assert line_from_wandb(config, {"run_line": whole}) == whole


def test_wandb_source_reads_through_the_api(tmp_path):
    from thtb.eval.tables import read_wandb_lines

    class Run:
        path = ["me", "thtb", "abc123"]
        created_at = "2026-11-24T22:00:00Z"
        config = {"experiment_name": "e", "seed": 1, "selection": {"name": "thtb"}, "model": {"size": "1b"}}
        summary_metrics = {"metrics": {"mmlu_pro": {"overall": 20.0, "n": 12032, "limit": None}}}

    class SelectOnly(Run):
        summary_metrics = {"select/n_selected": 2600}

    class Api:
        def runs(self, path, filters):
            assert (path, filters) == ("me/thtb", {"state": "finished"})
            return [Run(), SelectOnly()]

    lines = read_wandb_lines("thtb", entity="me", filters={"state": "finished"}, api=Api())
    assert [(x["method"], x["model_size"], x["_where"]) for x in lines] == [("thtb", "1B", "wandb:me/thtb/abc123")]


# --------------------------------------------------------------------------------------------- run.py
def run_paper_tables(*overrides: str) -> subprocess.CompletedProcess:
    """``python run.py +experiment=paper_tables …``; registers the stage first if run.py does not know it yet."""
    import run

    if "tables" in run.STAGES:
        return run_py("+experiment=paper_tables", *overrides)
    code = ("import sys, run; run.STAGES.setdefault('tables', 'thtb.eval.tables_stage:run_tables'); "
            "run.main.__wrapped__.__module__ = '__main__'; "  # so Hydra finds conf/ beside run.py
            "sys.argv = ['run.py', *sys.argv[1:]]; run.main()")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-c", code, "+experiment=paper_tables", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_run_py_paper_tables_end_to_end(tmp_path):
    write_lines(tmp_path / "runs" / "a.jsonl", FIXTURE)
    proc = run_paper_tables(f"tables.runs_dir={tmp_path / 'runs'}", f"tables.out_dir={tmp_path / 'out'}",
                            f"hydra.run.dir={tmp_path / 'run'}", "logger=wandb_offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    assert md_row(md, "Ours-1B")[-2] == "20.50 ± 0.71 [14.15, 26.85] (n=2 seeds) / 20.65 (-0.15, ns)"
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".md", ".tex", ".csv", ".png"}
    summary = json.loads((tmp_path / "run" / "tables" / "summary.json").read_text())
    assert summary["n_run_lines"] == len(FIXTURE)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    blob = b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
    assert b"tables/table1_mmlu_pro" in blob and b"tables/charts" in blob


def test_demo_summary_table_says_how_each_number_was_made():
    from thtb.eval.tables_stage import summary_table

    pairwise = {"baseline": "random", "judge": "smollm2", "n_prompts": 10, "position_consistency": 0.5,
                "overall": {"win_rate": 40.0, "win_rate_tie_half": 45.0, "n": 10, "n_failed": 0, "lc_win_rate": 47.5}}
    thtb_line = line("thtb", "135M", 42, mmlu=25.0, n=28, pairwise=pairwise, prov=provenance("thtb", setup="offline"))
    thtb_line["metrics"]["mmlu_pro"].update(ci95=[12.7, 43.4], scheme="official_guess")
    text = summary_table([parse_line(thtb_line, "x:1")], ["x_thtb", "x_random"])
    row = " | ".join(md_table(text)["x_thtb"])
    assert "offline, fidelity=reference" in row and "25.00% [12.7, 43.4] (28, official_guess)" in row
    assert "40.0% / 45.0%, length-controlled 47.5% vs random" in row
    assert md_table(text)["x_random"][0] == "—"


def test_cost_and_eval_set_overlap_sit_beside_the_metric(tmp_path):
    """Each row says what it cost (the mean over its seeds of each stage's device-hours, the judge requests, the
    tokens trained) and how many subset rows overlap the evaluation set; a row without records says —."""
    from thtb.cost import run_cost, stage_cost

    cpu = {"kind": "cpu", "name": "2-core CPU", "count": 1}

    def cost(sel_s: float, train_s: float, requests: int) -> dict:
        return run_cost(stage_cost(sel_s, devices=cpu, judge={"calls": requests}),
                        stage_cost(train_s, devices={"kind": "cuda", "name": "H100", "count": 2},
                                   tokens=1_200_000, token_kind="trained"), None)

    overlap = {"mmlu_pro": {"checked": True, "n_selected": 2600, "n_flagged": 3, "rate": 3 / 2600},
               "alpaca_eval": {"checked": False, "n_selected": 2600, "n_flagged": None, "rate": None}}
    lines = [line("thtb", "1B", 1, mmlu=20.0, cost=cost(3600, 1800, 100), contamination=overlap),
             line("thtb", "1B", 2, mmlu=21.0, cost=cost(7200, 1800, 300), contamination=overlap),
             line("random", "1B", 1, mmlu=19.0)]
    write_lines(tmp_path / "runs" / "r.jsonl", lines)
    run_tables(cfg_for(tmp_path / "runs", tmp_path / "out"), tmp_path / "run")
    md = (tmp_path / "out" / "table1_mmlu_pro.md").read_text()
    # selection 1 and 2 device-hours → 1.5; training 2 GPUs × 0.5 h = 1 device-hour; 200 judge requests on average
    assert md_extra(md, "Ours-1B") == {"Cost (device-hours)": "sel 1.5 h · 200 judge req · train 1 h, 1.2M tok",
                                       "Eval-set overlap": "3/2600"}
    assert md_extra(md, "Random Sampling-1B") == {"Cost (device-hours)": MISSING, "Eval-set overlap": MISSING}
    assert "Cost: device-hours" in md and "13-word n-gram with mmlu_pro" in md
    tex = (tmp_path / "out" / "table1_mmlu_pro.tex").read_text()  # the LaTeX table carries the same columns
    assert r"sel 1.5 h $\cdot$ 200 judge req $\cdot$ train 1 h, 1.2M tok & 3/2600 \\" in tex
    md2 = (tmp_path / "out" / "table2_alpacaeval.md").read_text()
    assert md_table(md2)["Method"][-1] == "Eval-set overlap"
    csv = pd.read_csv(tmp_path / "out" / "table1_mmlu_pro.csv")
    ours = csv[(csv.method == "thtb") & (csv.column == "overall")].iloc[0]
    assert (ours.selection_device_hours, ours.training_device_hours, ours.judge_requests) == (1.5, 1.0, 200.0)


def test_compare_aggregates_seeds_per_method_and_never_merges_provenance(tmp_path):
    """`make compare`'s table: two seeds of one method and size → one row with n=2, its mean, std and t-interval;
    THTB with the offline scorers and THTB with the authors' are two rows; lines of another experiment stay out."""
    def pw(rate):
        return {"baseline": "base", "judge": "smollm2", "n_prompts": 10, "limit": None,
                "overall": {"win_rate": rate, "win_rate_ci95": [rate - 20, rate + 20], "win_rate_tie_half": rate,
                            "n": 10, "n_failed": 0}, "subsets": {}}

    offline = provenance("thtb", setup="offline", judge="smollm2")  # another pairwise judge: still one row
    lines = [line("thtb", "135M", 1, mmlu=20.0, n=14, limit=1, pairwise=pw(40.0), prov=offline, experiment="compare"),
             line("thtb", "135M", 2, mmlu=30.0, n=14, limit=1, pairwise=pw(60.0), prov=offline, experiment="compare"),
             line("thtb", "135M", 3, mmlu=50.0, n=14, limit=1, experiment="compare"),  # the authors' scorers
             line("random", "135M", 1, mmlu=10.0, n=14, limit=1, pairwise=pw(30.0), experiment="compare"),
             line("random", "135M", 2, mmlu=99.0, n=14, limit=1, experiment="elsewhere")]
    write_lines(tmp_path / "runs" / "r.jsonl", lines)
    cfg = cfg_for(tmp_path / "runs", tmp_path / "out")
    cfg["tables"]["compare"] = ["compare"]
    summary = run_tables(cfg, tmp_path / "run")
    frame = pd.read_csv(tmp_path / "out" / "compare.csv", dtype={"seeds": str})
    assert len(frame) == 3 and len(summary["compare"]["rows"]) == 3
    two = frame[(frame.method == "thtb") & (frame.variant == "offline scorers")].iloc[0]
    assert (two.n_seeds, two.seeds, two.mmlu_pro, two.win_rate) == (2, "1,2", 25.0, 50.0)
    assert two.mmlu_pro_std == pytest.approx(7.0711, abs=1e-4)
    assert (two.mmlu_pro_ci_low, two.mmlu_pro_ci_high) == pytest.approx((25 - 63.531, 25 + 63.531), abs=1e-3)
    assert two.smoke and two.pairwise_baseline == "base"
    authors = frame[(frame.method == "thtb") & frame.variant.isna()].iloc[0]
    assert (authors.n_seeds, authors.mmlu_pro) == (1, 50.0) and np.isnan(authors.win_rate)
    assert frame[frame.method == "random"].iloc[0].mmlu_pro == 10.0  # the other experiment's 99 stays out
    md = (tmp_path / "out" / "compare.md").read_text()
    assert md_table(md)["Ours-135M · offline scorers"][:2] == ["2 (1,2)", "25.00 ± 7.07 [-38.53, 88.53]†"]
    assert md_table(md)["Ours-135M · offline scorers"][2].startswith("50.00 ± 14.14 [")
    assert (tmp_path / "out" / "compare_mmlu_pro.png").stat().st_size > 0
    assert (tmp_path / "out" / "compare_win_rate.png").stat().st_size > 0
