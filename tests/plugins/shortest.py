"""A selection method that lives only here and in ``conf/selection/shortest.yaml`` beside it: the rows with the
shortest queries, scored by a per-row scorer (role ``query_length``) so it runs on any executor. The tests check
that run.py, the preflight, the provenance, the run line and the tables know it with no other file touched."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate

from thtb.methods import SelectionContext, SelectionMethod


class QueryLengthScorer:
    """Each query's length in characters (or in whitespace tokens)."""

    name = "query_length"

    def __init__(self, unit: str = "chars") -> None:
        self.unit = unit

    def score(self, queries: list[str]) -> pd.DataFrame:
        sizes = [len(q) if self.unit == "chars" else len(q.split()) for q in queries]
        return pd.DataFrame({"query_len": np.asarray(sizes, dtype=np.float64), "error": None})


class ShortestQueries(SelectionMethod):
    display_name = "Shortest queries (plugin)"
    roles = ("query_length",)
    score_columns = {"query_len": ("shortest", "query length (characters)")}

    def __init__(self, *, scorer: Mapping[str, Any], vocabulary: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scorer, self.vocabulary = scorer, vocabulary

    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {"query_length": self.scorer}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {"query_length": {"backend": "QueryLengthScorer", "model": self.vocabulary}}

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        if self.vocabulary and not os.path.exists(self.vocabulary):
            return [(f"the query-length vocabulary {self.vocabulary}: no such file",
                     "create it or set selection.vocabulary=null")]
        return []

    def build_scorer(self, role: str, cfg: Mapping[str, Any]) -> Any:
        return instantiate(self.scorer) if role == "query_length" else super().build_scorer(role, cfg)

    def select(self, pool: Any, n: int, context: SelectionContext):
        rows = np.arange(len(pool))
        out = context.score("query_length", self.build_scorer("query_length", context.cfg), pool, rows, ["query"])
        card = self.card(pool)
        card["query_len"] = out["query_len"].to_numpy()
        return self.ranked(pool, n, "shortness", -out["query_len"].to_numpy(np.float64), card=card,
                           timings=dict(context.timings))
