"""A dataset's THTB score (the paper's Table 3): THTB's three stages scored on every sample, no selection.

The paper reports, for its two TCM annotation sets, "the three-stage average normalized scores calculated
using THTB" (0.5518 for the 200 THTB-guided "higher-order" annotations, 0.3544 for the 10,000 "lower-order"
ones) and says nothing more about the formula. This module's reading (docs/METHOD.md "THTB score of a dataset"):

1. **Score every sample with THTB's three stages and keep every one.** The pooled records go through
   :class:`thtb.cascade.Cascade` with every stage fraction set to 1, so each stage scores the whole set with the
   cascade's own formulas (quality, IHS = (Bloom + IC) / 2, EHS = (IREI + SC') / 2), fidelity switch and failure
   budget; every min–max inside them is taken over the scored set, as a cascade stage takes it over its input.
2. **Normalise each stage score to [0, 1]** over the scored set (``normalize="minmax"``, default):
   ``q̂ = minmax(quality_raw)``, ``îhs = minmax(IHS)``, ``êhs = minmax(EHS)`` with
   :func:`thtb.maths.minmax` (constant → 0.5). The stage scores need it: IHS lies in [0, 1.5] (IC's two terms add
   up to at most 2), the ``paper`` fidelity's IREI and SC' are unbounded / in [−1, 1], and a reward model's raw
   scale is arbitrary. ``normalize="stage"`` instead uses the cascade's own values (``quality`` — the scorer's
   normalisation, e.g. the reward clip — ``ihs``, ``ehs``) unchanged, not guaranteed to lie in [0, 1].
3. **Per sample** ``t_i = (q̂_i + îhs_i + êhs_i) / 3``; **per dataset** ``THTB score = mean_i t_i`` over its
   successfully scored samples.

A THTB score is therefore comparable only with those of the datasets scored **together** with it: pool them
(:func:`score_datasets`, ``score.with``) and read each score from the same run, as Table 3's two numbers are
reproduced (``+experiment=tcm_2pct``). A dataset scored alone is normalised against itself only.

Chinese text (the TCM sets) is handled by the same scorers (Han characters count as words, Chinese Bloom
phrase rules, jieba for the silhouette), but the offline discipline tagger's MiniLM reads Chinese poorly: use
``scoring=authors`` (bilingual Qwen3 judge and InternLM2 reward) for numbers meant to be compared with the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from thtb import maths
from thtb.cascade import STAGES, Cascade, CascadeConfig, SelectionResult

NORMALIZATIONS = ("minmax", "stage")
STAGE_VALUE = {
    "minmax": {"quality": "quality_raw", "intrinsic": "ihs", "extrinsic": "ehs"},
    "stage": {"quality": "quality", "intrinsic": "ihs", "extrinsic": "ehs"},
}
"""The card column each stage's normalised score is taken from, per normalisation."""
NORM_COLUMNS = {"quality": "quality_n", "intrinsic": "ihs_n", "extrinsic": "ehs_n"}
"""Score-card columns of the normalised stage scores."""


@dataclass
class ScoreResult:
    card: pd.DataFrame
    """One row per pooled sample: ``dataset`` (index), ``id`` and ``row`` (the dataset's own), the cascade's scores,
    ``quality_n``/``ihs_n``/``ehs_n``, ``thtb_score`` (NaN for failed samples) and ``error``."""
    datasets: list[dict[str, Any]]
    """Per dataset: ``n``, ``n_scored``, ``n_failed``, ``thtb_score``, the mean of each normalised stage score
    (``means``) and of each raw stage score (``raw_means``)."""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def score_all(records: pd.DataFrame, config: CascadeConfig, **scorers: Any) -> SelectionResult:
    """Every stage of ``config`` over every record (fractions 1, no budget): the cascade's score card.
    ``scorers``: :class:`~thtb.cascade.Cascade`'s (``quality``, ``bloom``, ``disciplines``, ``embedder``)."""
    every = replace(config, stages=list(STAGES), fractions=dict.fromkeys(STAGES, 1.0), budget=None)
    return Cascade(every, **scorers).run(records)


def normalized_stage_scores(card: pd.DataFrame, normalize: str = "minmax") -> pd.DataFrame:
    """``quality_n``, ``ihs_n``, ``ehs_n`` and ``thtb_score`` (their mean) for the rows scored by every stage
    (NaN elsewhere); see the module docstring for the two normalisations."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"score.normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    columns = STAGE_VALUE[normalize]
    ok = np.ones(len(card), dtype=bool)
    for column in columns.values():
        ok &= card[column].notna().to_numpy() if column in card else False
    out = pd.DataFrame(index=card.index)
    for stage, column in columns.items():
        values = np.full(len(card), np.nan)
        if ok.any():
            raw = card.loc[ok, column].to_numpy(np.float64)
            values[ok] = maths.minmax(raw) if normalize == "minmax" else raw
        out[NORM_COLUMNS[stage]] = values
    out["thtb_score"] = out[list(NORM_COLUMNS.values())].mean(axis=1, skipna=False)
    return out


def score_datasets(datasets: Sequence[pd.DataFrame], config: CascadeConfig, *, normalize: str = "minmax",
                   **scorers: Any) -> ScoreResult:
    """Pool ``datasets`` (canonical records frames), score them together and report each one's THTB score.

    Ids are made unique across datasets by a ``<dataset index>:`` prefix for the cascade (a row shared by
    two datasets is scored once in each); the card keeps each dataset's own ``id``."""
    if not datasets:
        raise ValueError("score_datasets needs at least one dataset")
    pooled = pd.concat([pd.DataFrame({"id": [f"{k}:{i}" for i in d["id"]], "query": d["query"].to_numpy(),
                                      "response": d["response"].to_numpy()}) for k, d in enumerate(datasets)],
                       ignore_index=True)
    dataset_index = np.concatenate([np.full(len(d), k) for k, d in enumerate(datasets)])
    result = score_all(pooled, config, **scorers)
    card = result.card.drop(columns=["fell_at", "why", "selected", "rank"], errors="ignore")
    card = card.drop(columns=[c for c in card if c.endswith("_rank")])
    card.insert(0, "dataset", dataset_index)
    card["id"] = [i.split(":", 1)[1] for i in card["id"]]
    card["row"] = np.concatenate([d["row"].to_numpy() if "row" in d else np.arange(len(d)) for d in datasets])
    card = card.join(normalized_stage_scores(card, normalize))
    summaries = []
    for k, d in enumerate(datasets):
        rows = card[card["dataset"] == k]
        scored = rows[rows["thtb_score"].notna()]
        summaries.append({
            "n": len(d), "n_scored": len(scored), "n_failed": len(d) - len(scored),
            "thtb_score": _mean(scored["thtb_score"]),
            "means": {stage: _mean(scored[column]) for stage, column in NORM_COLUMNS.items()},
            "raw_means": {c: _mean(scored[c]) for c in ("quality_raw", "quality", "bloom", "ic", "ihs", "irei",
                                                         "sc", "ehs") if c in scored},
        })
    return ScoreResult(card=card, datasets=summaries, warnings=list(result.warnings), timings=dict(result.timings))


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None
