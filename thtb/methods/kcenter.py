"""k-center greedy (``conf/selection/kcenter.yaml``): a diversity baseline (Sener & Savarese, 2018, "Active Learning
for Convolutional Neural Networks: A Core-Set Approach"). Each row's text is embedded (role ``embedding``: the run's
``embedder``, unit-norm rows); the first pick is the row farthest from the mean embedding, and each next pick the row
farthest from everything picked so far (Euclidean distance of unit vectors, ties by row order), until ``n`` rows are
picked. The picks' pairwise distances are as large as a greedy cover can make them: the opposite of a hardness
ranking, the test of whether "hard" beats "spread out".

Score card: ``kcenter_distance`` is a pick's distance to the rows picked before it (2, the largest distance two unit
vectors can have, for the first pick) and an unpicked row's distance to the nearest pick; ranking on it (ties by row
order) keeps exactly the picks; ``kcenter_order`` is the pick order.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext
from thtb.methods.embedding import EmbeddingMethod


def farthest_first(vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center over unit-norm ``vectors``: the ``n`` picks in order and, per row, its distance score (module
    doc). Distances in float64; ``np.argmax`` breaks ties by the lowest row."""
    x = np.asarray(vectors, dtype=np.float64)
    picks = np.empty(n, dtype=np.int64)
    score = np.empty(len(x))
    first = int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    picks[0], score[first] = first, 2.0  # no row is farther from another than 2
    nearest = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (x @ x[first])))
    nearest[first] = -1.0
    for i in range(1, n):
        j = int(np.argmax(nearest))
        picks[i], score[j] = j, nearest[j]
        nearest = np.minimum(nearest, np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (x @ x[j]))))
        nearest[picks[: i + 1]] = -1.0
    unpicked = np.setdiff1d(np.arange(len(x)), picks)
    score[unpicked] = nearest[unpicked]
    return picks, score


class KCenterGreedy(EmbeddingMethod):
    display_name = "k-Center"
    score_columns = {"kcenter_distance": ("kcenter", "distance to the nearest earlier pick")}

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        start = time.perf_counter()
        picks, distance = farthest_first(self.embed(pool, context), min(n, len(pool)))
        card = self.card(pool)
        card["kcenter_order"] = pd.array([pd.NA] * len(card), dtype="Int64")
        card.loc[picks, "kcenter_order"] = np.arange(1, len(picks) + 1)
        timings = {**context.timings, self.name: time.perf_counter() - start}
        return self.ranked(pool, n, "kcenter_distance", distance, card=card, timings=timings)
