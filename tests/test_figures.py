"""The figures the docs quote are printed by a command the text names, and say the same thing everywhere.

* The Alpaca empty-input share: README quotes what ``make bench ARGS="--only data"`` prints from the file.
* The offline cascade, its 2% re-cut and the previous default's run: README's figures are the ones
  ``benchmarks/README.md`` records from ``make bench ARGS="--only cascade"``, whose lines the bench prints in that
  format.
* Training rows measured with other versions than today's pins name them in the row.
* The judge bench has no row for a run it does not make.
* Who wrote the calibration labels reads the same in every file that says it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, section, shared_file

README = ROOT / "README.md"
BENCH_README = ROOT / "benchmarks" / "README.md"
BENCH = ROOT / "benchmarks" / "bench_selection.py"


def flat(text: str) -> str:
    """Markdown with its line breaks folded into spaces (a figure may wrap)."""
    return " ".join(text.split())


def test_empty_input_share_is_what_the_bench_prints(shared_data):
    alpaca = shared_file("alpaca", "alpaca_data.json", base=shared_data)
    out = subprocess.run([sys.executable, str(BENCH), "--only", "data", "--data", str(alpaca)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    empty, rows, share = re.search(r"empty input in ([\d,]+) of ([\d,]+) rows \(([\d.]+%)\)", out).groups()
    readme = flat(README.read_text(encoding="utf-8"))
    assert f"{empty} of {rows} Alpaca rows ({share}" in readme and 'ARGS="--only data"' in readme
    assert "87%" not in readme  # the figure no command printed


def test_cascade_figures_are_the_recorded_bench_lines():
    """README's cascade figures (wall seconds, peak RSS, the re-cut) are those of the bench lines recorded in
    benchmarks/README.md, and those lines have the shape the bench prints."""
    recorded = [line for line in section(BENCH_README.read_text(encoding="utf-8"),
                                         "The full offline cascade on Alpaca 52k").splitlines()
                if line.startswith("cascade alpaca")]
    source = BENCH.read_text(encoding="utf-8")
    for printed, recorded_as in (('f"cascade alpaca run {i + 1}: ', "cascade alpaca run 1: "),
                                 ('f"cascade alpaca: peak RSS ', "cascade alpaca: peak RSS "),
                                 ('f"cascade alpaca re-cut: 2% after the 5% run', "cascade alpaca re-cut: 2% after"),
                                 ('f"cascade alpaca previous default (', "cascade alpaca previous default (")):
        assert printed in source and any(line.startswith(recorded_as) for line in recorded), (recorded_as, recorded)
    text = "\n".join(recorded)
    wall = re.search(r"run 1: .* in ([\d.]+) s wall", text).group(1)
    peak = re.search(r"peak RSS ([\d.]+) GB \(largest", text).group(1)
    recut = re.search(r"re-cut: .* in ([\d.]+) s wall", text).group(1)
    previous, ratio = re.search(r"previous default \(reward=proxy\): ([\d.]+) s wall.* ([\d.]+)× the wall",
                                text).groups()
    readme = flat(section(README.read_text(encoding="utf-8"), "Benchmarks"))
    assert f"in {round(float(wall))} s wall with a {peak} GB peak RSS" in readme, readme  # run 1's wall
    assert f"a 2% re-cut after the 5% run takes {round(float(recut))} s" in readme, readme
    assert f"the previous default (`reward=proxy`) {round(float(previous))} s, a ratio of {ratio}" in readme, readme
    assert 'ARGS="--only cascade"' in readme


def test_training_rows_name_the_versions_that_produced_them():
    text = section(BENCH_README.read_text(encoding="utf-8"), "LoRA SFT throughput (`benchmarks/bench_train.py`)")
    h100 = [line for line in text.splitlines() if line.startswith("| o")]  # the rows of the H100 table
    assert len(h100) == 3 and all("torch 2.11" in line and "transformers 5.24" in line for line in h100), h100
    assert "versions: " in (ROOT / "benchmarks" / "bench_train.py").read_text(encoding="utf-8")


def test_the_judge_bench_has_no_row_for_a_run_it_does_not_make():
    text = BENCH_README.read_text(encoding="utf-8")
    assert "without that warm-up" not in text and "77%" not in text


LABEL_AUTHORS = "AI assistants"
WRONG_AUTHORS = re.compile(r"read by (the )?(people|maintainers)|by a person|labels read by|annotated by reading|"
                           r"maintainer who read|by the maintainers")


LABEL_DOCS = [("README.md",), ("CHANGELOG.md",), ("benchmarks", "README.md"), ("calibration", "README.md"),
              *(("docs", path.name) for path in sorted((ROOT / "docs").glob("*.md"))),
              ("conf", "reward", "proxy.yaml"), ("conf", "judge", "proxy.yaml")]


@pytest.mark.parametrize("parts", LABEL_DOCS, ids=["/".join(p) for p in LABEL_DOCS])
def test_the_labels_authorship_reads_the_same_everywhere(parts):
    text = flat(ROOT.joinpath(*parts).read_text(encoding="utf-8"))
    assert not WRONG_AUTHORS.search(text), WRONG_AUTHORS.search(text).group(0)
    assert LABEL_AUTHORS in text and "one reader per pair" in text


def test_the_proxies_say_who_wrote_the_labels_they_were_fitted_on():
    for path in sorted((ROOT / "thtb" / "resources" / "proxies").glob("*.json")):
        fitted_on = json.loads(path.read_text(encoding="utf-8")).get("fitted_on")
        if fitted_on is None:
            continue  # not a fitted proxy (e.g. a record of held-out figures)
        assert LABEL_AUTHORS in fitted_on and not WRONG_AUTHORS.search(fitted_on), (path.name, fitted_on)
