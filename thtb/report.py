"""Summaries and plots of a selection run (``selection/summary.json`` and ``selection/*.png``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from thtb.cascade import SCORE_COLUMNS, SelectionResult
from thtb.data.formats import bloom_label
from thtb.scorers.base import BLOOM_LEVELS

log = logging.getLogger(__name__)


def score_statistics(card: pd.DataFrame, columns: Iterable[str] = SCORE_COLUMNS) -> dict[str, dict[str, float]]:
    """count/mean/std/min/quartiles/max of every score of ``columns`` over the samples that have it."""
    stats = {}
    for col in columns:
        if col not in card:
            continue
        x = pd.to_numeric(card[col], errors="coerce").dropna().to_numpy(np.float64)
        if len(x) == 0:
            continue
        q = np.quantile(x, [0.25, 0.5, 0.75])
        stats[col] = {"count": int(len(x)), "mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
                      "p25": float(q[0]), "median": float(q[1]), "p75": float(q[2]), "max": float(x.max())}
    return stats


def bloom_distribution(levels: pd.Series) -> dict[str, int]:
    counts = Counter(levels.dropna())
    return {lvl: int(counts.get(lvl, 0)) for lvl in BLOOM_LEVELS}


def discipline_distribution(lists: pd.Series, top: int = 30) -> dict[str, int]:
    counts = Counter(d for x in lists.dropna() for d in x)
    return dict(counts.most_common(top))


def bloom_accuracy(card: pd.DataFrame, labels: pd.Series) -> dict | None:
    """Accuracy of the predicted Bloom level against a label column (e.g. the demo's ``bloom_level``).

    Counted over the samples that were Bloom-scored and carry a valid label; also the share within one level
    (adjacent levels are easily confused, even by human annotators). No sample is left out silently, the block
    partitions them all: ``n + n_unscored + n_unlabelled + n_invalid_labels == n_samples``, where

    * ``n_unscored``: no Bloom prediction (fell before the Bloom stage, or its scoring failed);
    * ``n_unlabelled``: scored, but the label is empty/missing;
    * ``n_invalid_labels``: scored, but the label is not a Bloom level (``invalid_label_examples``
      lists up to 10 distinct ones). Labels are matched case-insensitively, as
      :func:`thtb.data.formats.bloom_label` does; ``load_records`` already rejects invalid ones.

    ``None`` when there is no prediction column or no sample carries any label. With labels but
    no valid scored one, ``accuracy`` and ``within_one_level`` are ``None``.
    """
    if "bloom_level" not in card:
        return None
    pred = card["bloom_level"].map(lambda x: BLOOM_LEVELS.index(x) if x in BLOOM_LEVELS else None).to_numpy()
    gold: list[int | None] = []
    invalid: list[object] = []  # the raw invalid labels, aligned with `gold` (None where valid/empty)
    for value in labels.to_numpy():
        try:
            label, wrong = bloom_label(value), None
        except ValueError:
            label, wrong = None, value
        gold.append(None if label is None else BLOOM_LEVELS.index(label))
        invalid.append(wrong)
    if all(g is None for g in gold) and all(v is None for v in invalid):
        return None
    n = n_unscored = n_unlabelled = hits = near = 0
    bad: list[object] = []
    for p, g, v in zip(pred, gold, invalid, strict=True):
        if p is None or (isinstance(p, float) and np.isnan(p)):
            n_unscored += 1
        elif v is not None:
            bad.append(v)
        elif g is None:
            n_unlabelled += 1
        else:
            n += 1
            hits += p == g
            near += abs(p - g) <= 1
    examples = list(dict.fromkeys(str(v) for v in bad))[:10]
    if bad:
        log.warning("bloom accuracy: %d scored samples carry a label that is not a Bloom level (e.g. %s)",
                    len(bad), ", ".join(map(repr, examples[:3])))
    return {"n": n, "accuracy": float(hits / n) if n else None, "within_one_level": float(near / n) if n else None,
            "n_samples": len(gold), "n_unscored": n_unscored, "n_unlabelled": n_unlabelled,
            "n_invalid_labels": len(bad), "invalid_label_examples": examples}


def build_summary(result: SelectionResult, *, fingerprint: str, load_report: dict, labels: pd.Series | None) -> dict:
    """The run's summary: counts that add up, score statistics, distributions, timings."""
    card = result.card
    n_failed = sum(len(v) for v in result.failures.values())
    dropped = {s: int(((card["fell_at"] == s) & card["error"].isna()).sum()) for s in result.counts if s != "input"}
    summary = {
        "fingerprint": fingerprint, "n_input": result.counts["input"], "counts": result.counts,
        "n_selected": len(result.selected_ids), "n_dropped_per_stage": dropped, "n_failed": n_failed,
        "failed_ids": result.failures,
        "cutoffs": {s: {"column": result.rank_columns[s], "value": v} for s, v in result.cutoffs.items()},
        "score_stats": score_statistics(card, result.score_columns),
        "score_stats_selected": score_statistics(card[card["selected"]], result.score_columns),
        "bloom_levels": {"scored": bloom_distribution(card.get("bloom_level", pd.Series(dtype=object))),
                         "selected": bloom_distribution(card.loc[card["selected"], "bloom_level"])
                         if "bloom_level" in card else {}},
        "disciplines": {"scored": discipline_distribution(card.get("disciplines", pd.Series(dtype=object))),
                        "selected": discipline_distribution(card.loc[card["selected"], "disciplines"])
                        if "disciplines" in card else {}},
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "scorers": result.scorer_stats, "warnings": result.warnings, "data": load_report,
    }
    if labels is not None:
        summary["bloom_accuracy"] = bloom_accuracy(card, labels)
    accounted = summary["n_selected"] + sum(dropped.values()) + n_failed
    if accounted != summary["n_input"]:  # an internal invariant: every sample is somewhere
        raise AssertionError(f"selection lost samples: {accounted} accounted for, {summary['n_input']} in")
    return summary


def plot_histograms(result: SelectionResult, out_dir: Path) -> list[Path]:
    """One PNG per score: the distribution over the stage input, the samples that stage kept, the final subset
    (outlined), and the cut-off — the stage's own on its ranking column, else the lowest value it kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    card, paths = result.card, []
    for col, (stage, label) in result.score_columns.items():
        if col not in card:
            continue
        x = pd.to_numeric(card[col], errors="coerce")
        if x.notna().sum() == 0:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        bins = np.histogram_bin_edges(x.dropna(), bins=min(50, max(10, int(np.sqrt(x.notna().sum())))))
        ax.hist(x.dropna(), bins=bins, color="#9db4d3", label=f"{stage} stage input (n={x.notna().sum():,})")
        reached = x.notna() & card["error"].isna()
        kept = x[reached & (card["fell_at"] != stage)] if stage in result.counts else x.iloc[0:0]
        if len(kept):
            ax.hist(kept, bins=bins, color="#edae49", alpha=0.85, label=f"kept by this stage (n={len(kept):,})")
        final = x[card["selected"]].dropna()
        if len(final):
            ax.hist(final, bins=bins, histtype="step", color="#d1495b", lw=1.6,
                    label=f"final subset (n={len(final):,})")
        rank_column = result.rank_columns.get(stage)
        if rank_column == col and stage in result.cutoffs:
            ax.axvline(result.cutoffs[stage], color="k", ls="--", lw=1.2, label=f"{stage} cut-off")
        elif len(kept) and stage in result.cutoffs:  # ranked on another column: where this one's kept values end
            ax.axvline(float(kept.min()), color="k", ls=":", lw=1.2,
                       label=f"lowest kept value (the stage ranks on {rank_column})")
        ax.set(xlabel=label, ylabel="samples")
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        paths.append(out_dir / f"hist_{col}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths
