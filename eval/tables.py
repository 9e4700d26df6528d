"""Paper tables: our finished runs beside the published numbers (Tables 1–3 of arXiv 2510.13892).

Inputs
    *Run lines*: one JSON object per finished evaluation, appended by the evaluation stage to
    ``results/runs/<experiment>.jsonl`` (:func:`read_run_files`), or the same fields read from W&B runs
    (:func:`read_wandb_lines`). Required: ``method`` and ``model_size``; ``metrics`` holds any of the blocks
    ``mmlu_pro`` (Table 1), ``pairwise`` (Table 2), ``exam`` (+ ``thtb_score``, Table 3).
    *Published numbers*: ``results/paper/<table>.csv`` (one value per row, typos noted, never corrected).

Aggregation, per table
    Only lines carrying the table's metric block count (an MMLU-only rerun does not hide an older
    AlpacaEval result). Several lines for one ``(method, model_size, seed)``: a complete evaluation beats a
    smoke slice, then the latest ``finished_at`` (then the later line) wins. Several seeds: the mean, the
    sample std (ddof 1) and the number of seeds. A cell is a *smoke* cell when any of its seeds was
    evaluated on a slice (``limit`` set, or fewer items than the full benchmark); it is marked †.

Outputs (:func:`write_tables`)
    ``<table>.md`` / ``.tex``: the paper's layout (rows = method–size blocks, columns = categories or
    subsets + Overall), each cell ``ours / published (Δ)``; missing numbers are "—", never filled in.
    Provenance: runs whose selection or training differs from the paper's setup get their own row, labelled with
    the difference; runs evaluated otherwise stay beside the published number, marked § with a footnote
    (:func:`thtb.eval.provenance.deviations`). Runs of different provenance never share a cell.
    ``<table>.csv``: tidy, one row per cell (ours, ours_std, n_seeds, CI, smoke flag, published, delta).
    ``<table>.png``: ours vs published overall per method and size.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.cost import cost_text
from thtb.eval.length_control import paired_difference, read_samples
from thtb.eval.mmlu_pro_scoring import compare_pooled
from thtb.eval.provenance import describe, deviations
from thtb.eval.stats import t_interval
from thtb.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

MISSING, SMOKE, TYPO, DIFFERS = "—", "†", "‡", "§"
REQUIRED = ("method", "model_size")
MMLU_PRO_CATEGORIES = ("business", "law", "psychology", "biology", "chemistry", "history", "health", "economics",
                       "math", "physics", "philosophy", "engineering", "computer science", "other")
ALPACAEVAL_SUBSETS = ("helpful_base", "koala", "selfinstruct", "oasst", "vicuna")
TRAINING_DATA_NAMES = {
    "full": "Full", "random_released": "Random (released)", "alpagasus_released": "AlpaGasus (released)",
    "vanilla": "Vanilla", "tcm_simple": "Simple Instruction Dataset", "tcm_hard": "Hard Instruction Dataset",
}
"""Row names of training sets that no selection method made here (the whole data, the authors' released subsets,
no SFT); a selected subset's row is named by its method (``label`` in the run line's selection provenance), and the
paper's own rows keep the paper's labels."""
TIDY_COLUMNS = ("table", "model_size", "method", "label", "column", "header", "ours", "ours_std", "n_seeds", "seeds",
                "ours_ci_low", "ours_ci_high", "ci_over", "n", "smoke", "smoke_reason", "published", "delta",
                "published_note", "variant", "differs", "significant", "experiments", "provenance",
                "selection_device_hours", "training_device_hours", "judge_requests", "training_tokens", "cost",
                "overlap", "row_variant", "row_label")


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    block: str  # the run line's metrics block this table reads
    columns: tuple[tuple[str, str], ...]  # (key, header)
    full_n: int | None = None  # items in a complete evaluation; fewer → smoke
    chart_column: str = "overall"
    decimals: Mapping[str, int] = field(default_factory=dict)  # per column; default 2
    sized_labels: bool = True  # "Ours-1B" (Tables 1–2) or the method's name alone (Table 3)
    contamination_set: str | None = None  # the evaluation set whose overlap with the training subset a row shows


TABLES = {
    "table1_mmlu_pro": TableSpec(
        "table1_mmlu_pro", "Table 1 — MMLU-Pro accuracy (%)", "mmlu_pro",
        tuple((c, "Comp. Sci." if c == "computer science" else c.title()) for c in MMLU_PRO_CATEGORIES)
        + (("overall", "Overall"), ("overall_strict", "Overall, strict regex")), full_n=12032,
        contamination_set="mmlu_pro"),
    "table2_alpacaeval": TableSpec(
        "table2_alpacaeval", "Table 2 — AlpacaEval win rate (%) vs. the Full-data model of the same size",
        "pairwise", (("helpful_base", "Helpful Base"), ("koala", "Koala"), ("selfinstruct", "Self-instruct"),
                     ("oasst", "Oasst"), ("vicuna", "Vicuna"), ("overall", "Overall"),
                     ("lc_overall", "Overall, length-controlled")), full_n=805, contamination_set="alpaca_eval"),
    "table3_tcm": TableSpec(
        "table3_tcm", "Table 3 — TCM (Qwen3-8B)", "exam",
        (("exam", "TCM Exam Test (acc %)"), ("thtb_score", "THTB Score")), chart_column="exam",
        decimals={"thtb_score": 4}, sized_labels=False),
}


PAPER_EVAL = {
    "table1_mmlu_pro": "TIGER-AI-Lab's MMLU-Pro script (5-shot CoT in one user message, the answer-extraction chain "
                       "and a seeded random guess)",
    "table2_alpacaeval": "Qwen3-32B judging against the Full-data model, positions randomly swapped, ties 0",
    "table3_tcm": "the authors' unreleased TCM exam",
}
"""How the paper made each table's numbers (footnotes of cells evaluated otherwise)."""


class RunLineError(ValueError):
    """A run line that cannot be used; the message starts with ``<file>:<line>`` (or ``wandb:<run>``)."""


# ---------------------------------------------------------------------------------------------- reading
def parse_line(obj: Any, where: str) -> dict[str, Any]:
    """Validate one run line; return it with ``model_size`` upper-cased (``1b`` → ``1B``) and
    ``_where`` / ``_finished`` added."""
    if not isinstance(obj, dict):
        raise RunLineError(f"{where}: a run line must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if obj.get(k) in (None, "")]
    if missing:
        raise RunLineError(f"{where}: missing required field(s) {', '.join(missing)} (has: {', '.join(sorted(obj))})")
    metrics = {} if obj.get("metrics") is None else obj["metrics"]
    if not isinstance(metrics, dict):
        raise RunLineError(f"{where}: `metrics` must be an object, got {type(metrics).__name__}")
    for block in ("mmlu_pro", "pairwise", "exam"):
        if block in metrics and not isinstance(metrics[block], dict):
            raise RunLineError(f"{where}: `metrics.{block}` must be an object")
    finished = None
    if obj.get("finished_at"):
        try:
            finished = pd.Timestamp(obj["finished_at"])
            finished = finished.tz_localize("UTC") if finished.tzinfo is None else finished.tz_convert("UTC")
        except (ValueError, TypeError) as err:
            raise RunLineError(f"{where}: bad finished_at {obj['finished_at']!r} ({err})") from None
    return {**obj, "method": str(obj["method"]), "model_size": str(obj["model_size"]).upper(), "metrics": metrics,
            "_where": where, "_finished": finished}


def read_run_files(runs_dir: str | Path, pattern: str = "*.jsonl") -> list[dict[str, Any]]:
    """Every line of ``runs_dir/*.jsonl`` (files in name order); a missing directory is zero lines."""
    root = Path(runs_dir)
    if not root.is_dir():
        log.warning("no run lines: %s is not a directory", root)
        return []
    lines = []
    for path in sorted(root.glob(pattern)):
        for lineno, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                raise RunLineError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
            lines.append(parse_line(obj, where))
    log.info("read %d run lines from %s", len(lines), root)
    return lines


def _dig(mapping: Mapping, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def line_from_wandb(config: Mapping, summary: Mapping, created_at: str | None = None) -> dict[str, Any]:
    """A run line from a W&B run's config and summary.

    A summary key ``run_line`` holding the whole line wins. Otherwise the fields come from the summary, then
    the (Hydra) config (``experiment_name``, ``selection.name``, ``model.size``, ``seed``…), and the metric
    blocks from ``summary["metrics"]`` or from flat keys ``[eval/|metrics/]<block>/<a>/<b>``."""
    if isinstance(summary.get("run_line"), Mapping):
        return dict(summary["run_line"])
    line = {
        "experiment": _first(summary.get("experiment"), config.get("experiment"), config.get("experiment_name")),
        "method": _first(summary.get("method"), config.get("method"), _dig(config, "train", "method"),
                         _dig(config, "selection", "name")),
        "data": _first(summary.get("data"), _dig(config, "data", "name"), config.get("data")),
        "model": _first(summary.get("model"), _dig(config, "model", "name"), config.get("model")),
        "model_size": _first(summary.get("model_size"), config.get("model_size"), _dig(config, "model", "size")),
        "seed": _first(summary.get("seed"), config.get("seed")),
        "finished_at": _first(summary.get("finished_at"), created_at),
    }
    line = {k: v for k, v in line.items() if not isinstance(v, Mapping)}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), Mapping) else {}
    metrics = json.loads(json.dumps(metrics, default=str))
    for key, value in summary.items():
        parts = key.split("/")
        if parts[0] in ("eval", "metrics"):
            parts = parts[1:]
        if parts and parts[0] in ("mmlu_pro", "pairwise", "exam", "thtb_score"):
            node = metrics
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            if isinstance(node, dict):
                node.setdefault(parts[-1], value)
    line["metrics"] = metrics
    return line


def read_wandb_lines(project: str, entity: str | None = None, filters: Mapping | None = None,
                     api: Any = None) -> list[dict[str, Any]]:
    """Run lines from the W&B public API (``wandb.Api().runs``); runs without metric blocks are skipped."""
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    lines = []
    for run in api.runs(path, filters=dict(filters or {})):
        line = line_from_wandb(run.config, run.summary_metrics, getattr(run, "created_at", None))
        if not set(line["metrics"]) & {"mmlu_pro", "pairwise", "exam"}:
            continue
        lines.append(parse_line(line, f"wandb:{'/'.join(run.path)}"))
    log.info("read %d run lines from W&B %s", len(lines), path)
    return lines


def read_published(paper_dir: str | Path, table: str) -> pd.DataFrame:
    frame = pd.read_csv(Path(paper_dir) / f"{table}.csv", dtype={"model_size": str, "note": str},
                        keep_default_na=False, na_values={"value": [""]})
    frame["model_size"] = frame["model_size"].str.upper()
    return frame


# ---------------------------------------------------------------------------------------- aggregating
def _num(value: Any, where: str, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunLineError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def extract(line: Mapping, spec: TableSpec) -> tuple[dict[str, dict], str | None]:
    """``{column: {"value", "n", "ci"}}`` of one line for one table, and why it is a smoke slice (or None)."""
    block, where = line["metrics"][spec.block], line["_where"]
    cells: dict[str, dict] = {}

    def put(column, value, n=None, ci=None):
        value = _num(value, where, f"{spec.block}/{column}")
        if value is not None:
            cells[column] = {"value": value, "n": n, "ci": list(ci) if isinstance(ci, list | tuple) and len(ci) == 2
                             else None}

    if spec.block == "mmlu_pro":
        put("overall", block.get("overall"), block.get("n"), block.get("ci95"))
        strict = (block.get("schemes") or {}).get("strict") or {}
        if block.get("scheme") not in (None, "strict"):  # the protocol's sensitivity: lm-eval's regex alone
            put("overall_strict", strict.get("overall"), block.get("n"), strict.get("ci95"))
        for name, cat in (block.get("categories") or {}).items():
            if isinstance(cat, Mapping):
                put(name, cat.get("accuracy"), cat.get("n"), cat.get("ci95"))
        n = block.get("n")
    elif spec.block == "pairwise":
        overall = block.get("overall") or {}
        put("overall", overall.get("win_rate"), overall.get("n"), overall.get("win_rate_ci95"))
        put("lc_overall", overall.get("lc_win_rate"), overall.get("n"), overall.get("lc_win_rate_ci95"))
        for name, sub in (block.get("subsets") or {}).items():
            if isinstance(sub, Mapping):
                put(name, sub.get("win_rate"), sub.get("n"), sub.get("win_rate_ci95"))
        n = _first(overall.get("n"), block.get("n_prompts"))
    else:
        put("exam", block.get("accuracy"), block.get("n"))
        put("thtb_score", line["metrics"].get("thtb_score"))
        n = block.get("n")
    smoke = None
    if block.get("limit") is not None:
        smoke = f"limit={block['limit']}"
    elif spec.full_n and isinstance(n, int) and n < spec.full_n:
        smoke = f"n={n} of {spec.full_n:,}"
    return cells, smoke


def _matches(line: Mapping, rules: Mapping | None) -> bool:
    """Whether any ``field: [glob, …]`` rule matches the line."""
    return any(fnmatch.fnmatch(str(line.get(k)), str(p)) for k, pats in (rules or {}).items() for p in pats)


def select_lines(lines: Iterable[Mapping], spec: TableSpec, *, include: Mapping | None = None,
                 exclude: Mapping | None = None, baseline: str = "full") -> dict[tuple, list[dict]]:
    """The lines a table uses, one per ``(method, model_size, variant, seed)``, grouped by
    ``(method, model_size, variant)``: ``variant`` = ``(row deviations, eval deviations)`` from the paper's setup
    (:func:`thtb.eval.provenance.deviations`), so runs of different provenance never share a cell."""
    chosen: dict[tuple, tuple] = {}
    for order, line in enumerate(lines):
        if spec.block not in line["metrics"] or (include and not _matches(line, include)) or _matches(line, exclude):
            continue
        if spec.block == "pairwise":
            other = line["metrics"]["pairwise"].get("baseline", baseline)
            if other != baseline or line["method"] == baseline:
                if other != baseline:
                    log.warning("%s: pairwise baseline %r is not %r; left out of %s", line["_where"], other, baseline,
                                spec.name)
                continue
        cells, smoke = extract(line, spec)
        ts = line["_finished"]
        rank = (smoke is None, ts.value if ts is not None else -math.inf, order)
        differs = deviations(line, spec.block)
        variant = (tuple(differs["row"]), tuple(differs["eval"]))
        key = (line["method"], line["model_size"], variant, json.dumps(line.get("seed")))
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, {"line": line, "cells": cells, "smoke": smoke})
    groups: dict[tuple, list[dict]] = {}
    for (method, size, variant, _), (_, run) in sorted(chosen.items(), key=lambda kv: kv[0]):
        groups.setdefault((method, size, variant), []).append(run)
    return groups


def _size_key(size: str) -> tuple:
    unit = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    try:
        return (0, float(size[:-1]) * unit[size[-1]], size)
    except (KeyError, ValueError, IndexError):
        return (1, 0.0, size)


def _label(spec: TableSpec, method: str, size: str, runs: list[Mapping]) -> str:
    """A row the paper lacks: the selection method's own label (its run lines' provenance), else the training
    set's name, else the method as the run line spells it."""
    labels = {sel.get("label") for r in runs
              if (sel := (r["line"].get("provenance") or {}).get("selection") or {}).get("variant", method) == method}
    labels.discard(None)
    name = TRAINING_DATA_NAMES.get(method) or (labels.pop() if len(labels) == 1 else method)
    return f"{name}-{size}" if spec.sized_labels else f"{name} ({size})"


def _variant_label(label: str, *differences: str) -> str:
    """``Ours-1B`` → ``Ours-1B · offline scorers; lm-eval protocol`` (every difference from the paper)."""
    return f"{label} · {'; '.join(differences)}" if differences else label


def build_table(lines: Iterable[Mapping], published: pd.DataFrame, spec: TableSpec, **select_kw) -> pd.DataFrame:
    """The tidy frame of one table: one row per (row, column) in the paper's order, then ours-only rows."""
    groups = select_lines(lines, spec, **select_kw)
    pub = {(r.method, r.model_size, r.column): r for r in published.itertuples(index=False)}
    labels = dict(((r.method, r.model_size), r.label) for r in published.itertuples(index=False))
    sizes = list(dict.fromkeys(published["model_size"]))
    sizes += sorted({s for _, s, _ in groups} - set(sizes), key=_size_key)
    order = {m: i for i, m in enumerate(dict.fromkeys(published["method"]))}  # the paper's rows first, in its order
    rows: list[tuple] = []  # (method, size, variant); variant None: a paper row with no comparable run
    for size in sizes:
        for key in (k for k in labels if k[1] == size):
            comparable = sorted(v for m, s, v in groups if (m, s) == key and not v[0])
            rows += [(*key, v) for v in comparable] or [(*key, None)]
        ours = {(m, s, v) for m, s, v in groups if s == size and (v[0] or (m, s) not in labels)}
        rows += sorted(ours, key=lambda k: (order.get(k[0], len(order)), k[0], k[2]))
    records = []
    for method, size, variant in rows:
        runs = groups.get((method, size, variant), [])
        price = row_cost(runs)
        overlap = row_overlap(runs, spec.contamination_set)
        base = labels.get((method, size)) or _label(spec, method, size, runs)
        differs_row, differs_eval = variant or ((), ())
        label = _variant_label(base, *differs_row, *differs_eval)
        beside = not differs_row  # the published number only beside runs made the paper's way
        for column, header in spec.columns:
            have = [r for r in runs if column in r["cells"]]
            values = [r["cells"][column]["value"] for r in have]
            p = pub.get((method, size, column)) if beside else None
            published_value = float(p.value) if p is not None and not pd.isna(p.value) else math.nan
            ours = float(np.mean(values)) if values else math.nan
            # one run: its own CI over the items; several seeds: the t-interval of their mean (the spread between
            # seeds, which a single run's item CI does not show)
            ci = have[0]["cells"][column]["ci"] if len(have) == 1 else t_interval(values)
            ns = {r["cells"][column]["n"] for r in have} - {None}
            smoke = sorted({r["smoke"] for r in have if r["smoke"]})
            records.append({
                "table": spec.name, "model_size": size, "method": method, "label": label, "column": column,
                "header": header, "ours": round(ours, 6),
                "ours_std": round(float(np.std(values, ddof=1)), 6) if len(values) > 1 else math.nan,
                "n_seeds": len(values), "seeds": ",".join(str(r["line"].get("seed")) for r in have),
                "ours_ci_low": ci[0] if ci else math.nan, "ours_ci_high": ci[1] if ci else math.nan,
                "ci_over": ("seeds" if len(have) > 1 else "items") if ci else "",
                "n": min(ns) if ns else math.nan, "smoke": bool(smoke), "smoke_reason": "; ".join(smoke),
                "published": published_value, "delta": round(ours - published_value, 6),
                "published_note": p.note if p is not None else "",
                "variant": "; ".join([*differs_row, *differs_eval]),
                "differs": "; ".join(differs_eval) if p is not None and values else "",
                "significant": (not ci[0] <= published_value <= ci[1])
                if ci and not math.isnan(published_value) else None,
                "experiments": ",".join(sorted({str(r["line"].get("experiment")) for r in have})),
                "provenance": " | ".join(sorted({describe(r["line"], spec.block) for r in have})),
                **price, "overlap": overlap, "row_variant": "; ".join(differs_row),
                "row_label": _variant_label(base, *differs_row),
            })
    return pd.DataFrame(records, columns=list(TIDY_COLUMNS))


def row_cost(runs: list[Mapping]) -> dict[str, Any]:
    """A row's cost (:mod:`thtb.cost`), the mean over its seeds' run lines of each stage's device-hours, the
    selection's judge requests and the tokens trained; ``cost``: the same as text ("—" where no line records it)."""
    costs = [r["line"].get("cost") or {} for r in runs]
    names = {"selection.device_hours": "selection_device_hours", "training.device_hours": "training_device_hours",
             "selection.judge_requests": "judge_requests", "training.tokens": "training_tokens"}
    # the mean of the lines that record each value; NaN where none does
    out = pd.json_normalize(costs).reindex(columns=list(names)).astype(float).mean().rename(names).to_dict()
    sel, train, requests, tokens = (None if math.isnan(v) else v for v in out.values())
    text = cost_text({"selection": {"device_hours": sel, "judge_requests": round(requests or 0)},
                      "training": {"device_hours": train, "tokens": tokens and round(tokens)}})
    return {**out, "cost": text if any(costs) else MISSING}


def row_overlap(runs: list[Mapping], name: str | None) -> str:
    """``flagged/selected`` rows of the row's training subset sharing an n-gram with the evaluation set ``name``
    (the select stage's contamination check; "—" where none was made, "not checked" where the set was unreadable);
    seeds with different subsets are listed."""
    if not name:
        return ""
    checks = [(r["line"].get("contamination") or {}).get(name) for r in runs]
    texts = [MISSING if s is None else
             "not checked" if not s.get("checked") else f"{s.get('n_flagged')}/{s.get('n_selected')}" for s in checks]
    return ", ".join(dict.fromkeys(texts)) or MISSING


# ------------------------------------------------------------------------------------------- rendering
TEX_SYMBOLS = str.maketrans({"—": "---", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "±": r"$\pm$",
                             "·": r"$\cdot$", "≈": r"$\approx$", SMOKE: r"$^\dagger$", TYPO: r"$^\ddagger$",
                             DIFFERS: r"$^\S$"})
"""The symbols of the markdown cells and notes, in TeX (pandas' LaTeX escaping leaves Unicode as it is)."""


def tex(text: str) -> str:
    """``text`` for LaTeX: pandas' LaTeX escaping (the one ``Styler.format(escape="latex")`` applies; imported
    because pandas has no public name for it and the notes and caption are no table cells), then
    :data:`TEX_SYMBOLS`."""
    from pandas.io.formats.style_render import _escape_latex

    return _escape_latex(str(text)).translate(TEX_SYMBOLS)


def _is_typo(note: Any) -> bool:
    return isinstance(note, str) and note.startswith("typo")


def cell_text(rec: Mapping, digits: int = 2) -> str:
    """``ours / published (Δ)``; "—" for a missing side (never filled); ± std (n seeds) or a run's [95% CI];
    † smoke slice, ‡ published typo, § evaluated otherwise than the paper (LaTeX: :func:`tex` of it)."""
    if pd.isna(rec["ours"]):
        ours = MISSING
    else:
        ours = f"{rec['ours']:.{digits}f}"
        if rec["n_seeds"] > 1:
            ours += (f" ± {rec['ours_std']:.{digits}f} [{rec['ours_ci_low']:.{digits}f}, "
                     f"{rec['ours_ci_high']:.{digits}f}] (n={rec['n_seeds']} seeds)")
        elif not pd.isna(rec["ours_ci_low"]):
            ours += f" [{rec['ours_ci_low']:.{digits}f}, {rec['ours_ci_high']:.{digits}f}]"
        ours += SMOKE if rec["smoke"] else ""
    pub = MISSING if pd.isna(rec["published"]) else f"{rec['published']:.{digits}f}"
    pub += (TYPO if _is_typo(rec["published_note"]) else "") + (DIFFERS if rec.get("differs") else "")
    if pd.isna(rec["delta"]):
        return f"{ours} / {pub}"
    ns = ", ns" if rec.get("significant") is False else ""  # the published number lies inside our 95% CI
    return f"{ours} / {pub} ({rec['delta']:+.{digits}f}{ns})"


def footnotes(frame: pd.DataFrame, spec: TableSpec | None = None) -> list[str]:
    notes = ["Each cell: ours / published (Δ = ours − published). Ours is one run with its 95% CI over the items "
             "[a, b], or over n seeds the mean ± std with the 95% t-interval of the mean [a, b] (n seeds). — : not "
             "run (ours) or not in the paper (published); never filled in.",
             "Cost: device-hours (devices × wall time) of the selection (sel; with its judge requests) and of "
             "the training (train; with the tokens trained), the mean over a row's seeds, as the stages recorded "
             "them (a cached result keeps the cost of the run that computed it). — : not recorded."]
    if spec is not None and spec.contamination_set:
        notes.append("Eval-set overlap: rows of the training subset sharing a 13-word n-gram with "
                     f"{spec.contamination_set} (the select stage's check, thtb/contamination.py) / rows in the "
                     "subset.")
    if (frame["significant"] == False).any():  # noqa: E712 - a nullable column
        notes.append("ns: the published number lies inside our 95% CI — the difference is not significant at 5%.")
    for rec in frame[frame["smoke"]].drop_duplicates(["label", "smoke_reason"]).to_dict("records"):
        notes.append(f"{SMOKE} {rec['label']}: smoke slice ({rec['smoke_reason']}), not comparable to the paper.")
    for rec in frame[frame["published_note"].map(_is_typo)].to_dict("records"):
        notes.append(f"{TYPO} {rec['label']}, {rec['header']}: published {rec['published_note']}.")
    for rec in frame[frame["differs"].astype(bool)].drop_duplicates(["label", "differs"]).to_dict("records"):
        notes.append(f"{DIFFERS} {rec['label']}: evaluated differently from the paper ({rec['differs']}); the "
                     f"published number was made with {PAPER_EVAL[rec['table']]}.")
    if (frame["variant"].astype(bool) & frame["ours"].notna()).any():
        notes.append("A label after · says how the run differs from the paper's setup (scorers, fidelity, training "
                     "recipe, evaluation); runs that differ in selection or training have no published number "
                     "beside them.")
    return notes


ROW = ["model_size", "method", "label"]  # a table row of the tidy frame


def _grid(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The table as shown: per row (in the frame's order) its label, one :func:`cell_text` per column, its cost and
    eval-set overlap; indexed by model size."""
    rows = frame.drop_duplicates(ROW)
    cells = frame.assign(text=[cell_text(r, spec.decimals.get(r["column"], 2)) for r in frame.to_dict("records")])
    grid = cells.pivot(index=ROW, columns="header", values="text").reindex(
        index=pd.MultiIndex.from_frame(rows[ROW]), columns=[h for _, h in spec.columns])
    grid.insert(0, "Method", rows["label"].to_numpy())
    grid["Cost (device-hours)"] = rows["cost"].to_numpy()
    if spec.contamination_set:
        grid["Eval-set overlap"] = rows["overlap"].to_numpy()
    return grid.set_axis(rows["model_size"], axis=0)


def markdown(table: pd.DataFrame, title: str, notes: Iterable[str]) -> str:
    """``### title``, the table (pandas' ``to_markdown``: tabulate's pipe format, cells as they are) and the notes."""
    body = table.to_markdown(index=False, disable_numparse=True)
    return "\n".join([f"### {title}", "", body, ""] + [f"- {n}" for n in notes]) + "\n"


def to_markdown(frame: pd.DataFrame, spec: TableSpec) -> str:
    return markdown(_grid(frame, spec), spec.title, footnotes(frame, spec))


def to_latex(frame: pd.DataFrame, spec: TableSpec) -> str:
    """The markdown table's content for LaTeX (pandas' ``Styler.to_latex``, booktabs rules): the same cells, cost and
    eval-set overlap columns and notes, a rule between the model sizes' blocks."""
    grid = _grid(frame, spec)
    tabular = grid.style.hide(axis="index").format(tex).format_index(tex, axis=1).to_latex(
        hrules=True, column_format="l" + "c" * (grid.shape[1] - 1)).splitlines()
    body = tabular.index(r"\midrule") + 1
    for i in reversed([i for i in range(1, len(grid)) if grid.index[i] != grid.index[i - 1]]):
        tabular.insert(body + i, r"\midrule")
    out = [r"% generated by thtb.eval.tables (needs \usepackage{booktabs,graphicx})", r"\begin{table}[t]",
           r"\centering", rf"\caption{{{tex(spec.title)}: ours / published ($\Delta$)}}", rf"\label{{tab:{spec.name}}}",
           r"\resizebox{\textwidth}{!}{%", *tabular[:-1], tabular[-1] + "}", r"\par\smallskip\footnotesize",
           *(tex(n) + r"\\" for n in footnotes(frame, spec)), r"\end{table}"]
    return "\n".join(out) + "\n"


def plot_overall(frame: pd.DataFrame, spec: TableSpec, path: str | Path) -> Path:
    """Grouped bars: published (grey) and ours (± std; hatched when a smoke slice) of the chart column."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sub = frame[frame["column"] == spec.chart_column].reset_index(drop=True)
    fig = Figure(figsize=(max(6.0, 0.55 * len(sub) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    x, width = np.arange(len(sub)), 0.4
    pub = sub["published"].notna()
    ax.bar(x[pub] - width / 2, sub.loc[pub, "published"], width, color="#9e9e9e")
    ours = sub["ours"].notna()
    yerr = sub.loc[ours, "ours_std"].fillna(0).to_numpy()
    bars = ax.bar(x[ours] + width / 2, sub.loc[ours, "ours"], width, yerr=yerr if yerr.any() else None, capsize=2,
                  color="#1f77b4")
    for bar, smoke in zip(bars, sub.loc[ours, "smoke"], strict=True):
        if smoke:
            bar.set_hatch("//")
            bar.set_alpha(0.6)
    # a missing value is drawn as missing — a word where its bar would stand, never a bar of height 0
    for drawn, dx, word in ((ours, width / 2, "not run"), (pub, -width / 2, "not published")):
        for i in np.flatnonzero(~drawn.to_numpy()):
            ax.text(x[i] + dx, 0, word, ha="center", va="bottom", rotation=90, fontsize=7, color="#555555")
    header = dict(spec.columns)[spec.chart_column]
    ax.set_ylabel(header)
    ax.set_title(f"{spec.title} — {header}: ours vs published", fontsize=9)
    ax.set_xticks(x, sub["label"], rotation=45, ha="right", fontsize=8)
    handles = [Patch(color="#9e9e9e", label="published"), Patch(color="#1f77b4", label="ours")]
    if sub["smoke"].any():
        handles.append(Patch(facecolor="#1f77b4", alpha=0.6, hatch="//", label=f"ours {SMOKE} smoke slice"))
    top = np.nanmax([sub["published"].max(), (sub["ours"] + sub["ours_std"].fillna(0)).max(), 1.0])
    ax.set_ylim(0, top * 1.2)
    ax.set_xlim(-0.7, len(sub) - 0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper left", ncols=len(handles))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def write_tables(lines: list[Mapping], paper_dir: str | Path, out_dir: str | Path, *, plots: bool = True,
                 filters: Mapping[str, Mapping] | None = None, baseline: str = "full") -> dict[str, dict]:
    """Build, render and write every table; return per table its tidy frame, files and counts."""
    out = Path(out_dir)
    result = {}
    for name, spec in TABLES.items():
        rules = (filters or {}).get(name) or {}
        frame = build_table(lines, read_published(paper_dir, name), spec, include=rules.get("include"),
                            exclude=rules.get("exclude"), baseline=baseline)
        files = [atomic_write_text(out / f"{name}.md", to_markdown(frame, spec)),
                 atomic_write_text(out / f"{name}.tex", to_latex(frame, spec)),
                 atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))]
        if plots:
            files.append(plot_overall(frame, spec, out / f"{name}.png"))
        result[name] = {"frame": frame, "files": files, "rows": frame["label"].nunique(),
                        "cells": len(frame), "ours_cells": int(frame["ours"].notna().sum()),
                        "published_cells": int(frame["published"].notna().sum()),
                        "smoke_cells": int(frame["smoke"].sum())}
        log.info("%s: %d rows, %d/%d cells of ours → %s", name, result[name]["rows"], result[name]["ours_cells"],
                 len(frame), out / f"{name}.md")
    return result


# ------------------------------------------------------------------------------------ method comparison
COMPARE_COLUMNS = ("model_size", "method", "label", "variant", "n_seeds", "seeds", "mmlu_pro", "mmlu_pro_std",
                   "mmlu_pro_ci_low", "mmlu_pro_ci_high", "mmlu_pro_n", "win_rate", "win_rate_std", "win_rate_ci_low",
                   "win_rate_ci_high", "win_rate_n", "pairwise_baseline", "smoke", "selection_device_hours",
                   "training_device_hours", "judge_requests", "training_tokens", "cost", "overlap_mmlu_pro",
                   "overlap_alpaca_eval", "provenance")


def compare_methods(lines: Iterable[Mapping], experiments: Iterable[str] | None = None) -> pd.DataFrame:
    """Selection methods side by side, one row per method, model size and provenance variant (runs that differ are
    never merged): MMLU-Pro overall and the pairwise win rate, each the mean ± std and the 95% t-interval over the
    row's seeds (a single run: its CI over the items), with how many seeds stand behind them, the cost and the
    eval-set overlap. ``experiments``: only their run lines (default: all). The pairwise baseline is the one the
    lines share (a line judged against another baseline is left out, with a warning)."""
    lines = [ln for ln in lines if experiments is None or ln.get("experiment") in set(experiments)]
    baselines = [ln["metrics"]["pairwise"].get("baseline") for ln in lines if "pairwise" in ln["metrics"]]
    baseline = max(set(baselines), key=baselines.count) if baselines else "full"
    empty = pd.DataFrame(columns=["method", "model_size", "column", "value", "label", "note"])
    specs = {"mmlu_pro": ("mmlu_pro", TABLES["table1_mmlu_pro"]), "pairwise": ("win_rate", TABLES["table2_alpacaeval"])}
    frames = {block: build_table(lines, empty, spec, baseline=baseline) for block, (_, spec) in specs.items()}
    # a row is a method, size and the way its subset and model were made (row_variant); each metric's evaluation
    # differences (e.g. another judge) are named in its own cell's provenance, not in the row
    keys = list(dict.fromkeys(k for frame in frames.values()
                              for k in zip(frame["model_size"], frame["method"], frame["row_variant"], strict=True)))
    records = []
    for size, method, variant in keys:
        rec: dict[str, Any] = {"model_size": size, "method": method, "variant": variant,
                               "pairwise_baseline": baseline if baselines else None}
        seeds: set[str] = set()
        for block, (col, spec) in specs.items():
            frame = frames[block]
            row = frame[(frame["model_size"] == size) & (frame["method"] == method)
                        & (frame["row_variant"] == variant) & (frame["column"] == "overall") & frame["ours"].notna()]
            if len(row) > 1:
                log.warning("compare: %s %s has %d %s evaluations made differently (%s); the table shows the first",
                            method, size, len(row), block, ", ".join(map(str, row["variant"])))
            have = len(row) > 0  # the row holds only cells with a value of ours
            cell = row.iloc[0] if have else None
            rec.update({f"{col}{suffix}": cell[key] if have else math.nan for suffix, key in
                        (("", "ours"), ("_std", "ours_std"), ("_ci_low", "ours_ci_low"), ("_ci_high", "ours_ci_high"),
                         ("_n", "n"))})
            if have:
                seeds |= set(str(cell["seeds"]).split(","))
                rec["smoke"] = bool(rec.get("smoke")) or bool(cell["smoke"])
                rec.setdefault("label", cell["row_label"])
                for key in ("selection_device_hours", "training_device_hours", "judge_requests", "training_tokens",
                            "cost"):
                    rec.setdefault(key, cell[key])
                rec["provenance"] = " | ".join(filter(None, [rec.get("provenance"), cell["provenance"]]))
                rec[f"overlap_{spec.contamination_set}"] = cell["overlap"]
        if not seeds:
            continue
        rec.update(n_seeds=len(seeds), seeds=",".join(sorted(seeds, key=lambda x: (len(x), x))))
        records.append(rec)
    return pd.DataFrame(records, columns=list(COMPARE_COLUMNS))


def _metric_text(rec: Mapping, col: str) -> str:
    if pd.isna(rec[col]):
        return MISSING
    text = f"{rec[col]:.2f}"
    if not pd.isna(rec[f"{col}_std"]):
        text += f" ± {rec[f'{col}_std']:.2f}"
    if not pd.isna(rec[f"{col}_ci_low"]):
        text += f" [{rec[f'{col}_ci_low']:.2f}, {rec[f'{col}_ci_high']:.2f}]"
    return text


def compare_markdown(frame: pd.DataFrame, title: str = "Selection methods compared") -> str:
    """The comparison as markdown: one row per method, its seeds, both metrics with their intervals, cost, overlap."""
    baseline = next((b for b in frame["pairwise_baseline"] if isinstance(b, str)), "the baseline")
    headers = ["Method", "seeds", "MMLU-Pro (%)", f"win rate vs {baseline} (%, ties 0)", "cost (device-hours)",
               "overlap MMLU-Pro / AlpacaEval"]
    rows = [[r["label"], f"{r['n_seeds']} ({r['seeds']})",
             *(_metric_text(r, c) + (SMOKE if r["smoke"] and not pd.isna(r[c]) else "")
               for c in ("mmlu_pro", "win_rate")),
             r["cost"], " / ".join(r[c] if isinstance(r[c], str) and r[c] else MISSING
                                   for c in ("overlap_mmlu_pro", "overlap_alpaca_eval"))]
            for r in frame.to_dict("records")]
    notes = ["Each metric: the mean ± std over the row's seeds and the 95% t-interval of that mean [a, b] (one seed: "
             "its 95% CI over the items). Rows that differ in provenance (scorers, fidelity, recipe, evaluation) are "
             "never merged: the label says how a row differs from the paper's setup.",
             "Cost: device-hours (devices × wall time) of the selection (with its judge requests) and of the "
             "training (with the tokens trained), the mean over the seeds.",
             "Overlap: subset rows sharing a 13-word n-gram with the evaluation set / rows in the subset."]
    if frame["smoke"].any():
        notes.append(f"{SMOKE} evaluated on a slice: differences of a few points are within noise (see the intervals).")
    return markdown(pd.DataFrame(rows or [[MISSING] * len(headers)], columns=headers), title, notes)


def plot_compare(frame: pd.DataFrame, path: str | Path, metric: str = "mmlu_pro") -> Path:
    """The metric (mean, with its 95% interval) against the total device-hours of selection and training, one
    point per method: what each method buys at what price."""
    from matplotlib.figure import Figure

    name = {"mmlu_pro": "MMLU-Pro accuracy (%)", "win_rate": "win rate (%)"}[metric]
    priced = frame["selection_device_hours"].notna() | frame["training_device_hours"].notna()
    sub = frame[frame[metric].notna() & priced].reset_index(drop=True)
    unpriced = frame.loc[frame[metric].notna() & ~priced, "label"].tolist()  # drawn as missing, never at cost 0
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if unpriced:
        ax.text(0.01, 0.01, "no cost recorded, not drawn: " + ", ".join(unpriced), transform=ax.transAxes, fontsize=7,
                color="#555555", va="bottom")
    cost = (sub["selection_device_hours"].fillna(0) + sub["training_device_hours"].fillna(0)).to_numpy()
    y = sub[metric].to_numpy(dtype=float)
    low = np.where(sub[f"{metric}_ci_low"].notna(), y - sub[f"{metric}_ci_low"].to_numpy(dtype=float), 0.0)
    high = np.where(sub[f"{metric}_ci_high"].notna(), sub[f"{metric}_ci_high"].to_numpy(dtype=float) - y, 0.0)
    markers = "osD^vP*Xhp<>"
    for k, (xi, yi, lo, hi, label, n) in enumerate(zip(cost, y, low, high, sub["label"], sub["n_seeds"],
                                                       strict=True)):
        # one colour and marker per method, named in the legend (its provenance is in the table): methods with
        # equal scores and costs stay apart
        ax.errorbar([xi], [yi], yerr=[[lo], [hi]], fmt=markers[k % len(markers)], capsize=3, color=f"C{k % 10}",
                    label=f"{label.split(' · ')[0]} (n={n})")
    if len(cost) and cost.min() > 0 and cost.max() / cost.min() > 100:
        ax.set_xscale("log")  # costs that span orders of magnitude (random's draw vs an LM's IFD)
    if len(cost):
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("selection + training cost (device-hours)")
    ax.set_ylabel(f"{name}, mean [95% CI]")
    ax.set_title(f"{name} vs cost, per selection method", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


# ------------------------------------------------------------------------------------ paired comparisons
PAIRED_COLUMNS = ("task", "model_size", "model", "method_a", "method_b", "seeds", "metric", "n", "diff", "ci_low",
                  "ci_high", "p_value", "test", "significant", "decision", "experiment_a", "experiment_b")


def _samples(line: Mapping, name: str) -> Path | None:
    path = Path(line["run_dir"]) / "eval" / name if line.get("run_dir") else None
    return path if path and path.is_file() else None


def _seeded_pairwise(line: Mapping, tag: str) -> list[dict]:
    """A run's pairwise samples with its seed in each prompt's key, so several seeds' prompts pool without clashing."""
    records = read_samples(_samples(line, "pairwise_samples.jsonl"))
    return [{**r, "dataset": f"{r.get('dataset', '')}#{tag}"} for r in records]


def _paired(block: str, pairs: list[tuple[Mapping, Mapping]], n_boot: int) -> dict[str, Any] | None:
    """One paired test of A vs B over ``pairs`` of (A's run line, B's run line): one pair, or several pooled (each
    pair's items counted once per pair). None when nothing is comparable."""
    if block == "mmlu_pro":
        scheme = pairs[0][0]["metrics"]["mmlu_pro"].get("scheme", "strict")
        out = compare_pooled([(_samples(a, "mmlu_pro_samples.jsonl"), _samples(b, "mmlu_pro_samples.jsonl"))
                              for a, b in pairs], scheme=scheme, n_boot=n_boot)
        if not out or out.get("diff") is None:
            return None
        return {"metric": f"accuracy ({scheme})", "n": out.get("n"), "diff": 100 * out["diff"],
                "ci_low": 100 * out["ci"][0], "ci_high": 100 * out["ci"][1], "p_value": out["p_value"],
                "test": "exact McNemar", "significant": out["p_value"] < 0.05}
    if any(a["metrics"]["pairwise"].get("baseline") != b["metrics"]["pairwise"].get("baseline") for a, b in pairs):
        return None
    tags = [f"pair{k}" for k in range(len(pairs))]
    try:
        out = paired_difference([r for (a, _), t in zip(pairs, tags) for r in _seeded_pairwise(a, t)],
                                [r for (_, b), t in zip(pairs, tags) for r in _seeded_pairwise(b, t)], n_boot=n_boot)
    except ValueError as err:  # no common judged prompt, or other baselines
        log.warning("paired win rate %s vs %s: %s", pairs[0][0]["method"], pairs[0][1]["method"], err)
        return None
    if out.get("difference") is None:
        return None
    ci = out.get("difference_ci95") or [math.nan, math.nan]
    return {"metric": "win rate (ties 0)", "n": out.get("n"), "diff": out["difference"], "ci_low": ci[0],
            "ci_high": ci[1], "p_value": out["p_value"], "test": "paired bootstrap",
            "significant": out["p_value"] < 0.05}


def paired_comparisons(lines: Iterable[Mapping], reference: str = "thtb", n_boot: int = 2000) -> pd.DataFrame:
    """Every method against ``reference`` (THTB) on the same questions / prompts, per model size and model, for
    runs evaluated the same way (same evaluation deviations from the paper) whose per-item samples are still on
    disk (``<run_dir>/eval/*_samples.jsonl``): MMLU-Pro by the exact McNemar test with a paired-bootstrap CI of
    the accuracy difference (under the run's primary scoring scheme), the pairwise win rate (vs the same
    baseline) by a paired bootstrap.

    Seeds: runs of the two methods with the same seed are a pair (the latest line of each method, size, model and
    seed is used); each pair gets a row, and with two pairs or more a ``pooled`` row tests all their items at once
    (each pair's items counted once per pair) and carries the *decision*: in how many seed pairs A is ahead. Two
    methods with no seed in common: their latest runs are compared once (``seeds`` says which)."""
    runs: dict[tuple, dict[str, dict[Any, Mapping]]] = {}
    for line in lines:
        for block in ("mmlu_pro", "pairwise"):
            if block in line["metrics"] and _samples(line, f"{block}_samples.jsonl"):
                cell = (block, line["model_size"], line.get("model"), tuple(deviations(line, block)["eval"]))
                runs.setdefault(cell, {}).setdefault(line["method"], {})[line.get("seed")] = line
    records = []
    for (block, size, model, _), methods in sorted(runs.items(), key=lambda kv: str(kv[0])):
        ref = methods.get(reference)
        if ref is None:
            continue
        for method, by_seed in sorted(methods.items()):
            if method == reference:
                continue
            common = sorted(set(ref) & set(by_seed), key=str)
            pairs = ([(str(s), ref[s], by_seed[s]) for s in common] if common else
                     [(f"{list(ref)[-1]}/{list(by_seed)[-1]}", list(ref.values())[-1], list(by_seed.values())[-1])])
            rows = []
            for seeds, a, b in pairs:
                out = _paired(block, [(a, b)], n_boot)
                if out is not None:
                    rows.append({"task": block, "model_size": size, "model": model, "method_a": reference,
                                 "method_b": method, "seeds": seeds, **out, "decision": "",
                                 "experiment_a": a.get("experiment"), "experiment_b": b.get("experiment")})
            if len(rows) > 1:
                out = _paired(block, [(a, b) for _, a, b in pairs], n_boot)
                if out is not None:
                    ahead = sum(r["diff"] > 0 for r in rows)
                    rows.append({**rows[0], "seeds": f"pooled ({len(rows)} pairs)", **out,
                                 "decision": f"{reference} ahead in {ahead} of {len(rows)} seed pairs"})
            records += rows
    return pd.DataFrame(records, columns=list(PAIRED_COLUMNS))


def paired_markdown(frame: pd.DataFrame) -> str:
    """The paired comparisons as a markdown table (``*`` marks p < 0.05)."""
    headers = ["task", "size", "model", "A − B", "seeds", "metric", "n", "Δ (pp) [95% CI]", "p", "test", "decision"]
    rows = [[r["task"], r["model_size"], r["model"], f"{r['method_a']} − {r['method_b']}", r["seeds"], r["metric"],
             r["n"], f"{r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
             + ("*" if r["significant"] else " (ns)"),
             f"{r['p_value']:.3g}", r["test"], r["decision"] or ""] for r in frame.to_dict("records")]
    note = ("ns: not significant at 5%; * p < 0.05. Only runs evaluated the same way, with their per-item samples "
            "on disk, are compared. Runs with the same seed are a pair; the pooled row tests every pair's items at "
            "once, and its decision counts the pairs A leads.")
    return markdown(pd.DataFrame(rows or [[MISSING] * len(headers)], columns=headers),
                    "Paired comparisons (same questions / prompts)", [note])
