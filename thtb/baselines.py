"""Single-score baselines, size-matched to the THTB subset: random, longest response, IFD, AlpaGasus.

Each returns a :class:`~thtb.cascade.SelectionResult`, so it writes the same subset, score card and
summary files as the cascade. Ranking follows the cascade's rules (score descending, ties by row
order); a sample whose score failed is recorded and counted against the failure budget.

- **random** — every sample draws ``u ~ U(0, 1)`` from ``numpy.random.default_rng(seed)``; the
  ``n`` highest draws are kept.
- **longest** — the ``n`` longest responses in characters: a strong simple baseline for
  instruction tuning (Zhao et al., 2024, "Long Is More for Alignment").
- **ifd** — the ``n`` highest Instruction-Following Difficulty scores (:mod:`thtb.scorers.ifd`)
  among the pairs with IFD < 1; pairs with IFD ≥ 1 (the instruction does not help predict the
  response) are excluded as misaligned, as in Cherry LLM. If fewer than ``n`` remain, all of them
  are kept and the summary warns that the subset is smaller than THTB's.
- **alpagasus** — an LLM judge rates each pair's accuracy 0–5 with AlpaGasus's prompt (Chen et al.,
  2024, "AlpaGasus: Training a Better Alpaca with Fewer Data"; :class:`~thtb.judge.JudgeAlpaGasusScorer`);
  the pairs rated ``>= threshold`` (4.5, the authors' cut) pass, and, as the authors did to compare
  at equal size, the ``n`` longest responses among them are kept (ties by row order). Pairs below
  the threshold fall at ``alpagasus``; unscorable pairs are failures. If fewer than ``n`` pass, all
  of them are kept and the summary warns.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from thtb.cascade import SelectionResult, _ranks, record_failures, top_k

log = logging.getLogger(__name__)

BASELINES = ("random", "longest", "ifd", "alpagasus")
ALPAGASUS_THRESHOLD = 4.5
"""AlpaGasus keeps the pairs its judge rates at least 4.5 of 5."""


def select_baseline(records: pd.DataFrame, method: str, n: int, *, seed: int = 42, scorer=None,
                    failure_budget: int = 0, threshold: float = ALPAGASUS_THRESHOLD) -> SelectionResult:
    """Keep ``n`` of ``records`` by ``method`` (``random`` | ``longest`` | ``ifd`` | ``alpagasus``;
    ``ifd`` needs ``scorer``, an :class:`~thtb.scorers.ifd.IFDScorer`; ``alpagasus`` a
    :class:`~thtb.judge.JudgeAlpaGasusScorer` and uses ``threshold``, the lowest rating kept)."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    if not 1 <= n <= len(records):
        raise ValueError(f"a {method} baseline of {n} samples needs 1 <= n <= {len(records)} input samples")
    card = pd.DataFrame({"id": records["id"].to_numpy(), "row": np.arange(len(records))})
    card["fell_at"], card["why"], card["error"] = method, None, None
    timings, failures, warnings = {}, {}, []
    start = time.perf_counter()
    alive = np.arange(len(records))
    if method == "random":
        column, scores = "random_draw", np.random.default_rng(seed).random(len(records))
    elif method == "longest":
        column, scores = "response_len", records["response"].str.len().to_numpy(np.float64)
    elif method == "alpagasus":
        if scorer is None:
            raise ValueError("the alpagasus baseline needs an AlpaGasus judge scorer (selection.alpagasus)")
        if not 0 <= threshold <= 5:
            raise ValueError(f"the alpagasus threshold must lie in [0, 5], got {threshold}")
        out = scorer.score(records["query"].tolist(), records["response"].tolist())
        rating = pd.to_numeric(out["alpagasus_score"], errors="coerce").to_numpy(np.float64)
        errors = np.array(out["error"].tolist(), dtype=object)
        unexplained = np.isnan(rating) & pd.isna(errors)  # no score and no error is still a failure
        errors[unexplained] = "scorer returned no alpagasus_score"
        card["alpagasus_score"] = rating
        if "alpagasus_reason" in out:
            card["alpagasus_reason"] = out["alpagasus_reason"].to_numpy()
        failed = ~pd.isna(errors)
        if failed.any():
            record_failures(card, alive[failed], list(errors[failed]), method, failures, failure_budget)
        below = ~failed & (rating < threshold)
        card.loc[below, "why"] = [f"alpagasus score {v:g} below the threshold {threshold:g}" for v in rating[below]]
        alive = alive[~failed & ~below]
        column, scores = "response_len", records["response"].str.len().to_numpy(np.float64)
        if len(alive) < n:
            warnings.append(f"alpagasus: only {len(alive)} pairs score >= {threshold:g}; "
                            f"the subset has {len(alive)} samples, not {n}")
            log.warning(warnings[-1])
            n = len(alive)
    else:
        if scorer is None:
            raise ValueError("the ifd baseline needs an IFD scorer (selection.ifd)")
        column = "ifd"
        out = scorer.score(records["query"].tolist(), records["response"].tolist())
        for col in out.columns.drop("error"):
            card[col] = out[col].to_numpy()
        failed = out["error"].notna().to_numpy()
        if failed.any():
            record_failures(card, alive[failed], out.loc[failed, "error"].tolist(), method, failures, failure_budget)
        misaligned = ~failed & (out["ifd"].to_numpy() >= 1)
        card.loc[misaligned, "why"] = "IFD >= 1: the instruction does not help predict the response (excluded)"
        alive = alive[~failed & ~misaligned]
        scores = out["ifd"].to_numpy(np.float64)
        if len(alive) < n:
            warnings.append(f"ifd: only {len(alive)} pairs have IFD < 1; the subset has {len(alive)} samples, not {n}")
            log.warning(warnings[-1])
            n = len(alive)
    timings[method] = time.perf_counter() - start
    card[column] = scores
    order = alive[top_k(scores[alive], len(alive))]
    card.loc[order, f"{method}_rank"] = _ranks(len(order), np.arange(len(order)))
    kept = order[:n]
    cutoff = float(scores[kept[-1]]) if n else float("nan")
    ranked_out = order[n:]
    card.loc[ranked_out, "why"] = [f"{column} {v:.4g} below the cut-off {cutoff:.4g}" for v in scores[ranked_out]]
    card["selected"] = False
    card.loc[kept, "selected"] = True
    card.loc[kept, "fell_at"] = "selected"
    card["rank"] = pd.array([pd.NA] * len(card), dtype="Int64")
    card.loc[kept, "rank"] = np.arange(1, n + 1)
    card[f"{method}_rank"] = card[f"{method}_rank"].astype("Int64")
    return SelectionResult(
        card=card,
        selected_ids=card.loc[kept, "id"].tolist(),
        counts={"input": len(records), method: n},
        cutoffs={method: cutoff},
        timings=timings,
        failures=failures,
        warnings=warnings,
        rank_columns={method: column},
    )
