"""Model-free baselines, size-matched to the THTB subset: random (seeded) and longest response.

Both return a :class:`~thtb.cascade.SelectionResult`, so they write the same subset, score card
and summary files as the cascade.

- **random** — every sample draws ``u ~ U(0, 1)`` from ``numpy.random.default_rng(seed)``; the
  ``n`` highest draws are kept (ties, which have probability zero, by row order).
- **longest** — the ``n`` longest responses in characters (ties by row order): a strong simple
  baseline for instruction tuning (Zhao et al., 2024, "Long Is More for Alignment").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thtb.cascade import SelectionResult, _ranks, top_k

BASELINES = ("random", "longest")


def select_baseline(records: pd.DataFrame, method: str, n: int, *, seed: int = 42) -> SelectionResult:
    """Keep ``n`` of ``records`` by ``method`` (``random`` | ``longest``)."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    if not 1 <= n <= len(records):
        raise ValueError(f"a {method} baseline of {n} samples needs 1 <= n <= {len(records)} input samples")
    if method == "random":
        column, scores = "random_draw", np.random.default_rng(seed).random(len(records))
    else:
        column, scores = "response_len", records["response"].str.len().to_numpy(np.float64)
    order = top_k(scores, len(records))
    kept = order[:n]
    card = pd.DataFrame({"id": records["id"].to_numpy(), "row": np.arange(len(records)), column: scores})
    card[f"{method}_rank"] = _ranks(len(records), order)
    cutoff = float(scores[kept[-1]])
    card["fell_at"] = method
    card["why"] = [f"{column} {v:.4g} below the cut-off {cutoff:.4g}" for v in scores]
    card["error"] = None
    card["selected"] = False
    card.loc[kept, ["fell_at", "why", "selected"]] = ["selected", None, True]
    card["rank"] = pd.array([pd.NA] * len(card), dtype="Int64")
    card.loc[kept, "rank"] = np.arange(1, n + 1)
    return SelectionResult(
        card=card,
        selected_ids=card.loc[kept, "id"].tolist(),
        counts={"input": len(records), method: n},
        cutoffs={method: cutoff},
        timings={},
        failures={},
        warnings=[],
        rank_columns={method: column},
    )
