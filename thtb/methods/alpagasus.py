"""AlpaGasus (``conf/selection/alpagasus.yaml``; Chen et al., 2024, "AlpaGasus: Training a Better Alpaca with Fewer
Data"): an LLM judge rates each pair's accuracy 0–5 with AlpaGasus's prompt
(:class:`~thtb.judge.JudgeAlpaGasusScorer`); the pairs rated ``>= threshold`` (4.5, the authors' cut) pass and, as
the authors did to compare at equal size, the ``n`` longest responses among them are kept (ties by row order).
Pairs below the threshold fall at ``alpagasus`` with their rating; unscorable pairs are failures. If fewer than
``n`` pass, all are kept and the summary warns."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext, SelectionMethod

THRESHOLD = 4.5
"""AlpaGasus keeps the pairs its judge rates at least 4.5 of 5."""


class AlpaGasus(SelectionMethod):
    """``alpagasus``: the judge scorer's config (``_target_``, its ``judge`` client) or a built scorer;
    ``threshold``: the lowest rating kept."""

    display_name = "AlpaGasus"
    roles = ("alpagasus",)
    score_columns = {"alpagasus_score": ("alpagasus", "AlpaGasus accuracy rating (0-5)")}

    def __init__(self, *, alpagasus: Mapping[str, Any] | Any, threshold: float = THRESHOLD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= float(threshold) <= 5:
            raise ValueError(f"the alpagasus threshold must lie in [0, 5], got {threshold}")
        self.alpagasus, self.threshold = alpagasus, float(threshold)

    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {"judge": cfg.get("judge")}

    def cache_inputs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        scorer = self.alpagasus if isinstance(self.alpagasus, Mapping) else type(self.alpagasus).__name__
        return {**super().cache_inputs(cfg), "alpagasus": scorer}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from thtb.judge import prompts
        from thtb.provenance import judge_identity

        return {"judge": judge_identity(dict(cfg.get("judge") or {}), [prompts.ALPAGASUS.name])}

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        from thtb.scorers.availability import judge_problem

        return judge_problem(cfg.get("judge") or {})

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        start = time.perf_counter()
        scorer = self.build_scorer("alpagasus", context.cfg)
        judge = getattr(scorer, "judge", None)
        rows = np.arange(len(pool))
        try:
            out = context.score("alpagasus", scorer, pool, rows, ["query", "response"])
        finally:
            if judge is not None:  # also when the run stops on its failure budget
                from thtb.executor import merge_judge_stats

                context.judge_stats = merge_judge_stats(judge.stats(), context.executor.judge_stats())
        rating = pd.to_numeric(out["alpagasus_score"], errors="coerce").to_numpy(np.float64)
        errors = np.array(out["error"].tolist(), dtype=object)
        errors[np.isnan(rating) & pd.isna(errors)] = "scorer returned no alpagasus_score"  # no score, no error: failed
        card, failures = self.card(pool), {}
        card["alpagasus_score"] = rating
        if "alpagasus_reason" in out:
            card["alpagasus_reason"] = out["alpagasus_reason"].to_numpy()
        failed = ~pd.isna(errors)
        self.fail(card, rows[failed], list(errors[failed]), failures)
        below = ~failed & (rating < self.threshold)
        card.loc[below, "why"] = [f"alpagasus score {v:g} below the threshold {self.threshold:g}"
                                  for v in rating[below]]
        lengths = pool.lengths(rows, "response").astype(np.float64)
        result = self.ranked(pool, n, "response_len", lengths, card=card, alive=rows[~failed & ~below],
                             failures=failures, timings={self.name: time.perf_counter() - start, **context.timings},
                             short=f"pairs score >= {self.threshold:g}")
        if judge is not None:
            result.scorer_stats["judge"] = context.judge_stats
        return result
