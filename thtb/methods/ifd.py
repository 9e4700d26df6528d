"""IFD (``conf/selection/ifd.yaml``; Instruction-Following Difficulty, Li et al., 2024, Cherry LLM): the ``n``
highest ``L(r|q) / L(r)`` from a causal LM (:class:`~thtb.scorers.ifd.IFDScorer`) among the pairs with IFD < 1;
pairs with IFD ≥ 1 (the instruction does not help predict the response) are excluded as misaligned. If fewer
than ``n`` remain, all are kept and the summary warns. Unscorable pairs (an empty response) are failures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext, SelectionMethod

MISALIGNED = "IFD >= 1: the instruction does not help predict the response (excluded)"


class IFD(SelectionMethod):
    """``ifd``: the scorer's config (``_target_`` and its arguments: the model, batch size…) or a built scorer."""

    display_name = "IFD"
    roles = ("ifd",)
    score_columns = {"ifd": ("ifd", "IFD = L(r|q) / L(r)")}
    scoring_model = "IFD scoring model"
    """What preflight calls the scorer's model."""

    def __init__(self, *, ifd: Mapping[str, Any] | Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ifd = ifd

    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {"ifd": self.ifd if isinstance(self.ifd, Mapping) else type(self.ifd).__name__}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from thtb.provenance import model_revision, short_target

        model = self.ifd.get("model") if isinstance(self.ifd, Mapping) else getattr(self.ifd, "model_name", None)
        return {"ifd_model": {"backend": short_target(self.ifd) if isinstance(self.ifd, Mapping) else
                              type(self.ifd).__name__, "model": model,
                              "revision": model_revision(str(model) if model else None)}}

    def scorer_setup(self, identities: Mapping[str, Mapping]) -> str:
        return "custom"  # a causal LM of the user's choosing: neither the authors' scorers nor the offline proxies

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        from thtb.scorers.availability import model_problem

        return model_problem(self.scoring_model, self.ifd.get("model")) if isinstance(self.ifd, Mapping) else []

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        start = time.perf_counter()
        rows = np.arange(len(pool))
        out = context.score("ifd", self.build_scorer("ifd", context.cfg), pool, rows, ["query", "response"])
        card, failures = self.card(pool), {}
        for col in out.columns.drop("error"):
            card[col] = out[col].to_numpy()
        failed = out["error"].notna().to_numpy()
        self.fail(card, rows[failed], out.loc[failed, "error"].tolist(), failures)
        scores = out["ifd"].to_numpy(np.float64)
        misaligned = ~failed & (scores >= 1)
        card.loc[misaligned, "why"] = MISALIGNED
        alive = rows[~failed & ~misaligned]
        return self.ranked(pool, n, "ifd", scores, card=card, alive=alive, failures=failures,
                           timings={self.name: time.perf_counter() - start, **context.timings},
                           short="pairs have IFD < 1")
