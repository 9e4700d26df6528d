"""The ``tables`` stage: finished runs → the paper's Tables 1–3, ours beside the published numbers.

``python run.py +experiment=paper_tables`` (config: ``conf/tables/default.yaml``). Reads the run lines
(``tables.source=files``: ``<tables.runs_dir>/*.jsonl``; ``tables.source=wandb``: the W&B public API) and the
published numbers (``<tables.paper_dir>/<table>.csv``) and writes, under ``tables.out_dir``:

- ``table1_mmlu_pro.{md,tex,csv,png}``, ``table2_alpacaeval.*``, ``table3_tcm.*`` (see :mod:`thtb.eval.tables`)
- ``paired.{md,csv}``: THTB against every other method on the same items, per seed pair and pooled
- with ``tables.compare: [<experiment>, …]`` (``make compare``): ``compare.{md,csv}`` and ``compare_*.png``, the
  selection methods of those experiments side by side over their seeds, with their costs

and ``<run_dir>/tables/summary.json`` (counts per table, where the lines came from). With no run line at all
the tables still carry every published number, and every "ours" cell is "—".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from thtb import __version__
from thtb.io import atomic_write_text
from thtb.eval.provenance import deviations
from thtb.eval.tables import (compare_markdown, compare_methods, paired_comparisons, paired_markdown, plot_compare,
                              read_run_files, read_wandb_lines, write_tables)
from thtb.tracking import Tracker

log = logging.getLogger(__name__)


def read_lines(tables: dict[str, Any]) -> tuple[list[dict], str]:
    """The run lines named by ``tables.source`` and a description of where they came from."""
    source = tables.get("source", "files")
    if source == "files":
        return read_run_files(tables["runs_dir"]), str(tables["runs_dir"])
    if source == "wandb":
        wb = tables.get("wandb") or {}
        lines = read_wandb_lines(wb["project"], entity=wb.get("entity"), filters=wb.get("filters"))
        return lines, f"wandb:{wb.get('entity') or ''}/{wb['project']}".replace(":/", ":")
    raise ValueError(f"unknown tables.source {source!r}: use files or wandb")


def summary_table(lines: list[dict], experiments: list[str]) -> str:
    """A compact markdown table of the latest run line of each listed experiment (the demo's last word)."""
    # files are read in order: the last line of an experiment wins
    latest = {line["experiment"]: line for line in lines if line.get("experiment") in experiments}
    headers = ["experiment", "method", "model", "selection scorers", "MMLU-Pro [95% CI] (n, scheme)",
               "win rate vs baseline, ties 0 / ½ (n, failed)", "position consistency"]
    rows = []
    for name in experiments:
        line = latest.get(name)
        if line is None:
            rows.append([name] + ["—"] * 6)
            continue
        mp, pw = (line.get("metrics", {}).get(block) for block in ("mmlu_pro", "pairwise"))
        mmlu = "—"
        if mp:
            ci = f" [{mp['ci95'][0]:.1f}, {mp['ci95'][1]:.1f}]" if mp.get("ci95") else ""
            mmlu = f"{mp['overall']:.2f}%{ci} ({mp['n']}{', ' + mp['scheme'] if mp.get('scheme') else ''})"
        if pw:
            o = pw["overall"]
            rate = "—" if o["win_rate"] is None else f"{o['win_rate']:.1f}% / {o['win_rate_tie_half']:.1f}%"
            if o.get("lc_win_rate") is not None:
                rate += f", length-controlled {o['lc_win_rate']:.1f}%"
            win = f"{rate} vs {pw['baseline']} ({o['n']}, {o['n_failed']})"
            cons = "—" if pw.get("position_consistency") is None else f"{pw['position_consistency']:.2f}"
        else:
            win = cons = "—"
        selection = (line.get("provenance") or {}).get("selection") or {}
        scorers = selection.get("scorer_setup", "unknown")
        if selection.get("fidelity"):
            scorers += f", fidelity={selection['fidelity']}"
        if mp and deviations(line, "mmlu_pro")["eval"]:
            mmlu += f" ({'; '.join(deviations(line, 'mmlu_pro')['eval'])})"
        if pw and deviations(line, "pairwise")["eval"]:
            win += f" ({'; '.join(deviations(line, 'pairwise')['eval'])})"
        rows.append([name, line.get("method"), line.get("model"), scorers, mmlu, win, cons])
    return pd.DataFrame(rows, columns=headers).to_markdown(index=False, disable_numparse=True) + "\n"


def write_comparison(lines: list[dict], experiments: list[str], out_dir: Path, plots: bool = True) -> dict[str, Any]:
    """``compare.md``/``.csv`` (and ``compare_mmlu_pro.png``, ``compare_win_rate.png``) of the listed experiments'
    run lines, printed; returns the files and rows."""
    frame = compare_methods(lines, experiments)
    text = compare_markdown(frame, f"Selection methods compared ({', '.join(experiments)})")
    files = [atomic_write_text(out_dir / "compare.md", text),
             atomic_write_text(out_dir / "compare.csv", frame.to_csv(index=False))]
    if plots and not frame.empty:
        files += [plot_compare(frame, out_dir / f"compare_{m}.png", m) for m in ("mmlu_pro", "win_rate")
                  if frame[m].notna().any()]
    print(f"\n{text}\n(also in {out_dir / 'compare.md'})\n", flush=True)
    return {"files": [str(f) for f in files], "rows": frame.to_dict("records")}


def run_tables(cfg: dict[str, Any], run_dir: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run the tables stage from a resolved config dict; returns the summary."""
    tracker = tracker or Tracker()
    tables = cfg["tables"]
    out_dir, plots = Path(tables["out_dir"]), bool(tables.get("plots", True))
    lines, source = read_lines(tables)
    if tables.get("summary_of"):  # a compact table of the named experiments, printed (the demo)
        text = summary_table(lines, list(tables["summary_of"]))
        note = tables.get("note") or ""
        atomic_write_text(out_dir / "summary_table.md", text + (f"\n{note}\n" if note else ""))
        print(f"\n{text}\n{note}\n(also in {out_dir / 'summary_table.md'})\n", flush=True)
    result = write_tables(lines, tables["paper_dir"], tables["out_dir"], plots=plots, filters=tables.get("filters"),
                          baseline=str(tables.get("pairwise_baseline", "full")))
    # selection methods side by side over seeds, with their costs (make compare)
    compared = write_comparison(lines, list(tables["compare"]), out_dir, plots=plots) if tables.get("compare") else None
    paired = paired_comparisons(lines)  # THTB vs every other method on the same items, where samples remain
    paired_md = atomic_write_text(out_dir / "paired.md", paired_markdown(paired))
    atomic_write_text(out_dir / "paired.csv", paired.to_csv(index=False))
    if tables.get("summary_of") and not paired.empty:
        print(paired_markdown(paired), flush=True)
    summary = {"source": source, "n_run_lines": len(lines), "out_dir": str(tables["out_dir"]),
               "tables": {name: {k: [str(f) for f in v] if k == "files" else v for k, v in info.items() if k != "frame"}
                          for name, info in result.items()},
               "paired": {"file": str(paired_md), "comparisons": paired.to_dict("records")},
               "compare": compared, "thtb_version": __version__}
    atomic_write_text(Path(run_dir) / "tables" / "summary.json", json.dumps(summary, indent=2) + "\n")
    for name, info in result.items():
        tracker.log_table(f"tables/{name}", info["frame"])
        tracker.log_summary({f"tables/{name}/ours_cells": info["ours_cells"],
                             f"tables/{name}/smoke_cells": info["smoke_cells"]})
    charts = [f for info in result.values() for f in info["files"] if f.suffix == ".png"]
    if charts:
        tracker.log_images("tables/charts", charts)
    log.info("paper tables from %d run lines (%s) → %s", len(lines), source, tables["out_dir"])
    return summary
