"""DEITA-style selection (``conf/selection/deita.yaml``; Liu et al., ICLR 2024, "What Makes Good Data for Alignment?
A Comprehensive Study of Automatic Data Selection in Instruction Tuning"): score first, then keep only rows that are
not too close to a row already kept.

1. **Score**: each row's complexity and quality on DEITA's 1–6 scale, multiplied (their ``evol score``). DEITA's
   own scorers are two fine-tuned LLaMA models; here complexity is the run's Bloom judge (role ``bloom``: the
   judge's normalised Bloom level, 0–1) and quality the run's reward model (role ``quality``: its normalised
   reward, 0–1), each mapped onto 1–6 as ``1 + 5x``, so the product keeps DEITA's shape (a poor answer to a hard
   question still counts its hardness). The provenance names both scorers.
2. **Diversity** (their ``Repr Filter``, ``src/deita/selection/filter/base.py`` with batch size 1): in the order of
   that score (ties by row order), a row is kept if its embedding's cosine similarity to every row kept so far is
   at most ``threshold`` (theirs: 0.9), until ``n`` are kept. DEITA embeds with the model being tuned; here the run's
   embedder (role ``embedding``).

Score card: ``deita_complexity``, ``deita_quality`` (both 1–6), ``deita_score`` (their product, the ranking column),
``deita_similarity`` (a row's highest similarity to the rows kept before it was reached; empty for rows never
reached). A row too close to a kept one falls with the row it duplicates named. Fewer than ``n`` rows diverse enough:
all are kept and the summary warns. A row either scorer fails on is a failure (the failure budget).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext
from thtb.methods.embedding import EmbeddingMethod, EmbeddingScorer
from thtb.scorers.base import BLOOM_LEVELS, check_result


def repr_filter(scores: np.ndarray, vectors: np.ndarray, n: int, threshold: float) -> tuple[np.ndarray, np.ndarray,
                                                                                           np.ndarray]:
    """DEITA's greedy filter over rows in descending ``scores`` (ties by row order): ``(kept rows in order, each
    reached row's highest cosine similarity to the rows kept before it (NaN if never reached), the kept row it was
    closest to (-1 if none))``."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    order = np.lexsort((np.arange(len(x)), -np.asarray(scores, dtype=np.float64)))
    similarity, nearest = np.full(len(x), np.nan), np.full(len(x), -1, dtype=np.int64)
    kept: list[int] = []
    best = np.full(len(x), -np.inf)  # each row's highest similarity to a kept row so far
    best_row = np.full(len(x), -1, dtype=np.int64)
    for row in order:
        if len(kept) == n:
            break
        if kept:
            similarity[row], nearest[row] = best[row], best_row[row]
        if best[row] <= threshold:
            kept.append(int(row))
            sims = x @ x[row]
            closer = sims > best
            best[closer], best_row[closer] = sims[closer], row
    return np.asarray(kept, dtype=np.int64), similarity, nearest


def deita_scale(x: np.ndarray) -> np.ndarray:
    """A 0–1 score on DEITA's 1–6 scale."""
    return 1.0 + 5.0 * np.asarray(x, dtype=np.float64)


class Deita(EmbeddingMethod):
    """``threshold``: the highest cosine similarity to a kept row that a row may have and still be kept;
    ``embedder``, ``text``: as for :class:`~thtb.methods.embedding.EmbeddingMethod`. The quality and complexity
    scorers are the run's ``reward`` and ``judge``."""

    display_name = "DEITA"
    roles = ("quality", "bloom", "embedding")
    score_columns = {"deita_score": ("deita", "complexity × quality (1–36)"),
                     "deita_similarity": ("deita", "highest cosine similarity to an earlier pick")}

    def __init__(self, *, threshold: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"selection.threshold is a cosine similarity in [-1, 1], got {threshold}")
        self.threshold = float(threshold)

    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {"reward": cfg.get("reward"), "judge": cfg.get("judge"), **super().scorer_configs(cfg)}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from thtb.judge import prompts
        from thtb.provenance import judge_identity, reward_identity
        from thtb.scorers.fitted import fitted_params_identity

        bloom = prompts.BLOOM if cfg["fidelity"] == "reference" else prompts.BLOOM_LEVEL
        return {"reward": {**reward_identity(cfg.get("reward")), **fitted_params_identity(cfg.get("reward"))},
                "judge": {**judge_identity(cfg.get("judge"), [bloom.name]), **fitted_params_identity(cfg.get("judge"))},
                **super().identities(cfg)}

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        from thtb.scorers.availability import judge_problem, model_problem

        return (model_problem("reward model", (cfg.get("reward") or {}).get("model"))
                + judge_problem(cfg.get("judge") or {}) + super().problems(cfg))

    def build_scorer(self, role: str, cfg: Mapping[str, Any]) -> Any:
        from thtb.scorers import build_scorers

        if role == "quality":
            return build_scorers(cfg, ["quality"]).quality
        if role == "bloom":
            return build_scorers(cfg, ["intrinsic"]).bloom
        return super().build_scorer(role, cfg)

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        from thtb import maths

        start = time.perf_counter()
        rows = np.arange(len(pool))
        quality = self.build_scorer("quality", context.cfg)
        shared = None
        if type(self).build_scorer is Deita.build_scorer and self.embedder == context.cfg.get("embedder"):
            from thtb.scorers import build_scorers

            intrinsic = build_scorers(context.cfg, ["intrinsic"])  # one embedder for the Bloom judge and the filter
            bloom, shared = intrinsic.bloom, EmbeddingScorer(intrinsic.embedder)
        else:
            bloom = self.build_scorer("bloom", context.cfg)
        judge = getattr(bloom, "judge", None)
        try:
            q = check_result(context.score("quality", quality, pool, rows, ["query", "response"]), len(rows),
                             ("quality_raw",), quality.name)
            b = check_result(context.score("bloom", bloom, pool, rows, ["query", "response"]), len(rows),
                             ("bloom_level", "bloom_score"), bloom.name)
        finally:
            if judge is not None:  # the served judge's counters (its Ray actors' too), also when the budget stops it
                from thtb.executor import merge_judge_stats

                context.judge_stats = merge_judge_stats(judge.stats(), context.executor.judge_stats())
        errors = np.array(q["error"].tolist(), dtype=object)
        raw = pd.to_numeric(q["quality_raw"], errors="coerce").to_numpy(np.float64)
        errors[pd.isna(errors) & np.isnan(raw)] = "scorer returned NaN quality_raw"
        errors[pd.isna(errors)] = b["error"].to_numpy(dtype=object)[pd.isna(errors)]
        failed = ~pd.isna(errors)
        card, failures = self.card(pool), {}
        card["quality_raw"], card["bloom_level"], card["bloom_score"] = raw, b["bloom_level"], b["bloom_score"]
        ok = rows[~failed]
        complexity, qual = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        if len(ok):
            qual[ok] = deita_scale(maths.quality_normalized(raw[ok], method=quality.normalization))
            level = np.array([BLOOM_LEVELS.index(v) + 1 for v in b.loc[ok, "bloom_level"]])
            complexity[ok] = deita_scale(maths.bloom_normalized(
                score=b.loc[ok, "bloom_score"].to_numpy(np.float64), level_index=level,
                fidelity=context.fidelity))
        card["deita_complexity"], card["deita_quality"] = complexity, qual
        score = complexity * qual
        self.fail(card, rows[failed], list(errors[failed]), failures)
        vectors = self.embed(pool, context, shared)
        _, similarity, nearest = repr_filter(score[ok], vectors[ok], n, self.threshold)
        close = ~np.isnan(similarity) & (similarity > self.threshold)
        card["deita_similarity"] = np.nan
        card.loc[ok, "deita_similarity"] = similarity
        redundant = ok[close]
        card.loc[redundant, "why"] = [
            f"cosine similarity {s:.3f} to {pool.ids[ok[j]]} (kept, higher score) > {self.threshold:g}"
            for s, j in zip(similarity[close], nearest[close], strict=True)]
        alive = np.setdiff1d(ok, redundant)  # the kept rows lead their score order; the rest are below the cut-off
        result = self.ranked(pool, n, "deita_score", score, card=card, alive=alive, failures=failures,
                             timings={self.name: time.perf_counter() - start, **context.timings},
                             short=f"rows are at most {self.threshold:g} similar to a higher-scored kept row")
        if judge is not None:
            result.scorer_stats["judge"] = context.judge_stats
        return result
