"""The longest responses (``conf/selection/longest.yaml``): the ``n`` longest responses in characters, a strong
simple baseline for instruction tuning (Zhao et al., 2024, "Long Is More for Alignment")."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext, SelectionMethod


class LongestResponses(SelectionMethod):
    display_name = "Longest"

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        start = time.perf_counter()
        lengths = pool.lengths(np.arange(len(pool)), "response").astype("float64")
        return self.ranked(pool, n, "response_len", lengths, timings={self.name: time.perf_counter() - start})
