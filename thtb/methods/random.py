"""Random sampling (``conf/selection/random.yaml``): every row draws ``u ~ U(0, 1)`` from
``numpy.random.default_rng(seed)``; the ``n`` highest draws are kept. The seed is the run's ``seed``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext, SelectionMethod


class RandomSelection(SelectionMethod):
    display_name = "Random Sampling"
    seeded = True

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        start = time.perf_counter()
        draws = np.random.default_rng(int(context.seed)).random(len(pool))
        return self.ranked(pool, n, "random_draw", draws, timings={self.name: time.perf_counter() - start})
