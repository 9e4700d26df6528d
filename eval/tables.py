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
    Provenance: each line's ``provenance`` is compared with the paper's setup (:func:`thtb.provenance.deviations`).
    Runs whose selection or training differs (offline scorers, ``fidelity=paper``, another recipe, unknown
    provenance) get their own row, labelled with the difference, with no published number beside them; runs
    evaluated with another protocol stay beside the published number, marked § with a footnote saying what
    differs. Runs of different provenance never share a cell.
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

from thtb.io import atomic_path, atomic_write_text
from thtb.provenance import describe, deviations

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
                "ours_ci_low", "ours_ci_high", "n", "smoke", "smoke_reason", "published", "delta", "published_note",
                "variant", "differs", "significant", "experiments", "provenance")


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

    def digits(self, column: str) -> int:
        return self.decimals.get(column, 2)


TABLES = {
    "table1_mmlu_pro": TableSpec(
        "table1_mmlu_pro", "Table 1 — MMLU-Pro accuracy (%)", "mmlu_pro",
        tuple((c, "Comp. Sci." if c == "computer science" else c.title()) for c in MMLU_PRO_CATEGORIES)
        + (("overall", "Overall"), ("overall_strict", "Overall, strict regex")), full_n=12032),
    "table2_alpacaeval": TableSpec(
        "table2_alpacaeval", "Table 2 — AlpacaEval win rate (%) vs. the Full-data model of the same size",
        "pairwise", (("helpful_base", "Helpful Base"), ("koala", "Koala"), ("selfinstruct", "Self-instruct"),
                     ("oasst", "Oasst"), ("vicuna", "Vicuna"), ("overall", "Overall"),
                     ("lc_overall", "Overall, length-controlled")), full_n=805),
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
    blocks from ``summary["metrics"]`` or from flat keys ``[eval/|metrics/]<block>/<a>/<b>``.
    """
    if isinstance(summary.get("run_line"), Mapping):
        return dict(summary["run_line"])
    config = {k: v["value"] if isinstance(v, Mapping) and set(v) <= {"value", "desc"} and "value" in v else v
              for k, v in config.items()}  # older API: {"key": {"value": ...}}
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
    (:func:`thtb.provenance.deviations`), so runs of different provenance never share a cell."""
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


def _variant_label(label: str, variant: tuple) -> str:
    """``Ours-1B`` → ``Ours-1B · offline scorers; lm-eval protocol`` (every difference from the paper)."""
    parts = [*variant[0], *variant[1]]
    return f"{label} · {'; '.join(parts)}" if parts else label


def build_table(lines: Iterable[Mapping], published: pd.DataFrame, spec: TableSpec, **select_kw) -> pd.DataFrame:
    """The tidy frame of one table: one row per (row, column) in the paper's order, then ours-only rows."""
    groups = select_lines(lines, spec, **select_kw)
    pub = {(r.method, r.model_size, r.column): r for r in published.itertuples(index=False)}
    labels = dict(((r.method, r.model_size), r.label) for r in published.itertuples(index=False))
    sizes = list(dict.fromkeys(published["model_size"]))
    sizes += sorted({s for _, s, _ in groups} - set(sizes), key=_size_key)
    order = {m: i for i, m in enumerate(dict.fromkeys(published["method"]))}  # the paper's rows first, in its order
    none: tuple = ((), ())
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
        base = labels.get((method, size)) or _label(spec, method, size, runs)
        label = _variant_label(base, variant or none)
        beside = variant is None or not variant[0]  # the published number only beside runs made the paper's way
        for column, header in spec.columns:
            have = [r for r in runs if column in r["cells"]]
            values = [r["cells"][column]["value"] for r in have]
            p = pub.get((method, size, column)) if beside else None
            published_value = float(p.value) if p is not None and not pd.isna(p.value) else math.nan
            ours = float(np.mean(values)) if values else math.nan
            ci = have[0]["cells"][column]["ci"] if len(have) == 1 else None
            ns = {r["cells"][column]["n"] for r in have} - {None}
            smoke = sorted({r["smoke"] for r in have if r["smoke"]})
            records.append({
                "table": spec.name, "model_size": size, "method": method, "label": label, "column": column,
                "header": header, "ours": round(ours, 6),
                "ours_std": round(float(np.std(values, ddof=1)), 6) if len(values) > 1 else math.nan,
                "n_seeds": len(values), "seeds": ",".join(str(r["line"].get("seed")) for r in have),
                "ours_ci_low": ci[0] if ci else math.nan, "ours_ci_high": ci[1] if ci else math.nan,
                "n": min(ns) if ns else math.nan, "smoke": bool(smoke), "smoke_reason": "; ".join(smoke),
                "published": published_value, "delta": round(ours - published_value, 6),
                "published_note": p.note if p is not None else "",
                "variant": "; ".join([*(variant or none)[0], *(variant or none)[1]]),
                "differs": "; ".join((variant or none)[1]) if p is not None and values else "",
                "significant": (not ci[0] <= published_value <= ci[1])
                if ci and not math.isnan(published_value) else None,
                "experiments": ",".join(sorted({str(r["line"].get("experiment")) for r in have})),
                "provenance": " | ".join(sorted({describe(r["line"], spec.block) for r in have})),
            })
    return pd.DataFrame(records, columns=list(TIDY_COLUMNS))


# ------------------------------------------------------------------------------------------- rendering
_SYMBOLS = {
    "md": {"missing": MISSING, "pm": "±", "smoke": SMOKE, "typo": TYPO, "differs": DIFFERS},
    "tex": {"missing": "---", "pm": r"$\pm$", "smoke": r"$^\dagger$", "typo": r"$^\ddagger$", "differs": r"$^\S$"},
}


def _is_typo(note: Any) -> bool:
    return isinstance(note, str) and note.startswith("typo")


def cell_text(rec: Mapping, digits: int = 2, style: str = "md") -> str:
    """``ours / published (Δ)``; "—" for a missing side (never filled); ± std (n seeds) or a run's [95% CI];
    † smoke slice, ‡ published typo."""
    sym = _SYMBOLS[style]
    if pd.isna(rec["ours"]):
        ours = sym["missing"]
    else:
        ours = f"{rec['ours']:.{digits}f}"
        if rec["n_seeds"] > 1:
            ours += f" {sym['pm']} {rec['ours_std']:.{digits}f} (n={rec['n_seeds']})"
        elif not pd.isna(rec["ours_ci_low"]):
            ours += f" [{rec['ours_ci_low']:.{digits}f}, {rec['ours_ci_high']:.{digits}f}]"
        ours += sym["smoke"] if rec["smoke"] else ""
    pub = sym["missing"] if pd.isna(rec["published"]) else f"{rec['published']:.{digits}f}"
    pub += sym["typo"] if _is_typo(rec["published_note"]) else ""
    pub += sym["differs"] if rec.get("differs") else ""
    text = f"{ours} / {pub}"
    if pd.isna(rec["delta"]):
        return text
    ns = ", ns" if rec.get("significant") is False else ""  # the published number lies inside our 95% CI
    return f"{text} ({rec['delta']:+.{digits}f}{ns})"


def _rows(frame: pd.DataFrame) -> list[tuple[str, str, str, list[dict]]]:
    """``(model_size, method, label, cells)`` in the frame's order."""
    out: dict[tuple, list] = {}
    for rec in frame.to_dict("records"):
        out.setdefault((rec["model_size"], rec["method"], rec["label"]), []).append(rec)
    return [(*k, v) for k, v in out.items()]


def footnotes(frame: pd.DataFrame) -> list[str]:
    notes = ["Each cell: ours / published (Δ = ours − published). Ours is one run, or the mean ± std over n seeds; "
             "[a, b] is a single run's 95% CI. — : not run (ours) or not in the paper (published); never filled in."]
    if (frame["significant"] == False).any():  # noqa: E712 - a nullable column
        notes.append("ns: the published number lies inside our 95% CI — the difference is not significant at 5%.")
    for rec in frame[frame["smoke"]].drop_duplicates(["label", "smoke_reason"]).to_dict("records"):
        notes.append(f"{SMOKE} {rec['label']}: smoke slice ({rec['smoke_reason']}), not comparable to the paper.")
    for rec in frame[frame["published_note"].map(_is_typo)].to_dict("records"):
        notes.append(f"{TYPO} {rec['label']}, {rec['header']}: published {rec['published_note']}.")
    for rec in frame[frame["differs"].astype(bool)].drop_duplicates(["label", "differs"]).to_dict("records"):
        notes.append(f"{DIFFERS} {rec['label']}: evaluated differently from the paper ({rec['differs']}); the "
                     f"published number was made with {PAPER_EVAL[rec['table']]}.")
    variants = frame[frame["variant"].astype(bool) & frame["ours"].notna()]["label"].unique()
    if len(variants):
        notes.append("A label after · says how the run differs from the paper's setup (scorers, fidelity, training "
                     "recipe, evaluation); runs that differ in selection or training have no published number "
                     "beside them.")
    return notes


def to_markdown(frame: pd.DataFrame, spec: TableSpec) -> str:
    lines = [f"### {spec.title}", "", "| Method | " + " | ".join(h for _, h in spec.columns) + " |",
             "|---" * (len(spec.columns) + 1) + "|"]
    for _, _, label, cells in _rows(frame):
        lines.append(f"| {label} | " + " | ".join(cell_text(c, spec.digits(c["column"])) for c in cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in footnotes(frame)]) + "\n"


def _tex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "–": "--", "−": "$-$",
            "Δ": r"$\Delta$", "±": r"$\pm$", SMOKE: r"$^\dagger$", TYPO: r"$^\ddagger$", "≈": r"$\approx$"}
    return "".join(repl.get(ch, ch) for ch in text)


def to_latex(frame: pd.DataFrame, spec: TableSpec) -> str:
    out = [r"% generated by thtb.eval.tables (needs \usepackage{booktabs,graphicx})", r"\begin{table}[t]", r"\centering",
           rf"\caption{{{_tex_escape(spec.title)}: ours / published ($\Delta$)}}", rf"\label{{tab:{spec.name}}}",
           r"\resizebox{\textwidth}{!}{%", rf"\begin{{tabular}}{{l{'c' * len(spec.columns)}}}", r"\toprule",
           "Method & " + " & ".join(_tex_escape(h) for _, h in spec.columns) + r" \\", r"\midrule"]
    previous = None
    for size, _, label, cells in _rows(frame):
        if previous is not None and size != previous:
            out.append(r"\midrule")
        previous = size
        out.append(_tex_escape(label) + " & " + " & ".join(cell_text(c, spec.digits(c["column"]), "tex")
                                                           for c in cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip\footnotesize"]
    out += [_tex_escape(n) + r"\\" for n in footnotes(frame)]
    return "\n".join(out + [r"\end{table}"]) + "\n"


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
    for i in np.flatnonzero(~ours.to_numpy()):
        ax.text(x[i] + width / 2, 0, "not run", ha="center", va="bottom", rotation=90, fontsize=7, color="#555555")
    for i in np.flatnonzero(~pub.to_numpy()):
        ax.text(x[i] - width / 2, 0, "not published", ha="center", va="bottom", rotation=90, fontsize=7,
                color="#555555")
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
                 atomic_write_text(out / f"{name}.tex", to_latex(frame, spec))]
        with atomic_path(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        files.append(out / f"{name}.csv")
        if plots:
            files.append(plot_overall(frame, spec, out / f"{name}.png"))
        result[name] = {"frame": frame, "files": files, "rows": frame["label"].nunique(),
                        "cells": len(frame), "ours_cells": int(frame["ours"].notna().sum()),
                        "published_cells": int(frame["published"].notna().sum()),
                        "smoke_cells": int(frame["smoke"].sum())}
        log.info("%s: %d rows, %d/%d cells of ours → %s", name, result[name]["rows"], result[name]["ours_cells"],
                 len(frame), out / f"{name}.md")
    return result


# ------------------------------------------------------------------------------------ paired comparisons
PAIRED_COLUMNS = ("task", "model_size", "model", "method_a", "method_b", "metric", "n", "diff", "ci_low", "ci_high",
                  "p_value", "test", "significant", "experiment_a", "experiment_b")


def _samples(line: Mapping, name: str) -> Path | None:
    run_dir = line.get("run_dir")
    path = Path(run_dir) / "eval" / name if run_dir else None
    return path if path is not None and path.is_file() else None


def paired_comparisons(lines: Iterable[Mapping], reference: str = "thtb", n_boot: int = 2000) -> pd.DataFrame:
    """Every method against ``reference`` (THTB) on the same questions / prompts, per model size and model, for
    runs evaluated the same way (same evaluation deviations from the paper) whose per-item samples are still on
    disk (``<run_dir>/eval/*_samples.jsonl``): MMLU-Pro by the exact McNemar test with a paired-bootstrap CI of
    the accuracy difference (under the run's primary scoring scheme), the pairwise win rate (vs the same
    baseline) by a paired bootstrap. The latest line of each (method, size, model) is used."""
    from thtb.eval.length_control import paired_difference
    from thtb.eval.mmlu_pro_scoring import compare

    latest: dict[tuple, Mapping] = {}
    for line in lines:
        for block in ("mmlu_pro", "pairwise"):
            if block in line["metrics"] and _samples(line, f"{block}_samples.jsonl"):
                key = (block, line["model_size"], line.get("model"), tuple(deviations(line, block)["eval"]),
                       line["method"])
                latest[key] = line
    records = []
    for (block, size, model, evals, method), line in sorted(latest.items(), key=lambda kv: str(kv[0])):
        ref = latest.get((block, size, model, evals, reference))
        if method == reference or ref is None:
            continue
        base = {"task": block, "model_size": size, "model": model, "method_a": reference, "method_b": method,
                "experiment_a": ref.get("experiment"), "experiment_b": line.get("experiment")}
        if block == "mmlu_pro":
            scheme = ref["metrics"]["mmlu_pro"].get("scheme", "strict")
            out = compare(_samples(ref, "mmlu_pro_samples.jsonl"), _samples(line, "mmlu_pro_samples.jsonl"),
                          scheme=scheme, n_boot=n_boot)["overall"]
            if not out or out.get("diff") is None:
                continue
            records.append({**base, "metric": f"accuracy ({scheme})", "n": out.get("n"),
                            "diff": 100 * out["diff"], "ci_low": 100 * out["ci"][0], "ci_high": 100 * out["ci"][1],
                            "p_value": out["p_value"], "test": "exact McNemar", "significant": out["p_value"] < 0.05})
        else:
            if ref["metrics"]["pairwise"].get("baseline") != line["metrics"]["pairwise"].get("baseline"):
                continue
            try:
                out = paired_difference(_samples(ref, "pairwise_samples.jsonl"),
                                        _samples(line, "pairwise_samples.jsonl"), n_boot=n_boot)
            except ValueError as err:  # no common judged prompt, or other baselines
                log.warning("paired win rate %s vs %s (%s): %s", reference, method, size, err)
                continue
            if out.get("difference") is None:
                continue
            ci = out.get("difference_ci95") or [math.nan, math.nan]
            records.append({**base, "metric": "win rate (ties 0)", "n": out.get("n"), "diff": out["difference"],
                            "ci_low": ci[0], "ci_high": ci[1], "p_value": out["p_value"],
                            "test": "paired bootstrap", "significant": out["p_value"] < 0.05})
    return pd.DataFrame(records, columns=list(PAIRED_COLUMNS))


def paired_markdown(frame: pd.DataFrame) -> str:
    """The paired comparisons as a markdown table (``*`` marks p < 0.05)."""
    rows = ["### Paired comparisons (same questions / prompts)", "",
            "| task | size | model | A − B | metric | n | Δ (pp) [95% CI] | p | test |", "|---|---|---|---|---|---|---|---|---|"]
    for r in frame.to_dict("records"):
        mark = "*" if r["significant"] else " (ns)"
        rows.append(f"| {r['task']} | {r['model_size']} | {r['model']} | {r['method_a']} − {r['method_b']} | "
                    f"{r['metric']} | {r['n']} | {r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]{mark} | "
                    f"{r['p_value']:.3g} | {r['test']} |")
    if frame.empty:
        rows.append("| — | — | — | — | — | — | — | — | — |")
    return "\n".join(rows + ["", "- ns: not significant at 5%; * p < 0.05. Only runs evaluated the same way, with their "
                                "per-item samples on disk, are compared."]) + "\n"
