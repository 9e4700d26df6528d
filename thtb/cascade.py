"""THTB's cascade: quality → intrinsic hardness → extrinsic hardness.

Every stage scores only the survivors of the previous one, and every min–max normalisation is
taken over the stage's own input. Selection mechanics are the same in all stages
(:func:`top_k`): ``n_keep = max(1, floor(n * fraction))``, sort by score descending, ties broken by
the original row order. A sample whose scorer failed is never kept or dropped silently: it is
recorded in the score card with its error and counted against ``failure_budget``; past the budget
the run stops with :class:`SelectionError` listing the failed ids.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from thtb import maths
from thtb.executor import LocalExecutor
from thtb.pool import FramePool
from thtb.scorers.base import (
    BLOOM_LEVELS,
    BloomScorer,
    DescriptionError,
    DisciplineTagger,
    Embedder,
    QualityScorer,
    check_result,
)

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("quality", "intrinsic", "extrinsic")
STAGE_SCORE = {"quality": "quality_raw", "intrinsic": "ihs", "extrinsic": "ehs"}
"""The column each stage ranks on (quality ranks on the raw reward so the clip creates no ties)."""
SCORE_COLUMNS: dict[str, tuple[str, str]] = {
    # column: (stage it belongs to, human label)
    "quality_raw": ("quality", "quality (raw reward)"),
    "quality": ("quality", "quality (normalised)"),
    "bloom": ("intrinsic", "Bloom (normalised)"),
    "ic": ("intrinsic", "interdisciplinary complexity IC"),
    "ihs": ("intrinsic", "IHS = (Bloom + IC) / 2"),
    "irei": ("extrinsic", "IREI"),
    "silhouette": ("extrinsic", "silhouette s"),
    "sc": ("extrinsic", "SC'"),
    "ehs": ("extrinsic", "EHS = (IREI + SC') / 2"),
}
"""The cascade's scores the summary describes and plots."""


class SelectionError(RuntimeError):
    """The run exceeded its failure budget (or was configured inconsistently)."""

    def __init__(self, message: str, failed_ids: Sequence[str] = ()):
        super().__init__(message)
        self.failed_ids = list(failed_ids)


def n_keep(n: int, fraction: float) -> int:
    """``max(1, floor(n · fraction))`` (a tiny epsilon absorbs float error, e.g. 0.29 · 100)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a stage fraction must be in (0, 1], got {fraction}")
    if n == 0:
        return 0
    return max(1, math.floor(n * fraction + 1e-9))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first; ties keep the input order (stable)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("cannot rank NaN scores; failed samples must be removed first")
    return np.argsort(-scores, kind="stable")[:k]


@dataclass
class CascadeConfig:
    """Knobs of :class:`Cascade` (mirrors ``conf/selection/thtb.yaml``)."""

    stages: Sequence[str] = STAGES
    fractions: dict[str, float] = field(
        default_factory=lambda: {"quality": 0.2, "intrinsic": 0.5, "extrinsic": 0.5}
    )
    budget: float | None = None
    failure_budget: int = 0
    fidelity: str = "reference"
    ic_round: bool | None = None
    """Round multi-discipline IC to 2 decimals; ``None`` = by fidelity (reference: on, the authors' code;
    paper: off)."""
    k: int = 161
    max_features: int = 100
    random_state: int = 42
    singleton_policy: str | None = None
    zero_row_self_distance: float | None = None
    """Self distance of an all-zero TF-IDF row in the silhouette; ``None`` = by fidelity (reference: 1.0,
    the authors' batched distances, ``s = −1/|C|``; paper: 0.0, the metric convention, ``s = 0``)."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ValueError(f"selection.stages must be a non-empty subset of {STAGES}, got {list(self.stages)}")
        self.stages = [s for s in STAGES if s in self.stages]  # always cascade in THTB's order
        if self.fidelity not in ("reference", "paper"):
            raise ValueError(f"fidelity must be 'reference' or 'paper', got {self.fidelity!r}")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"selection.budget must be in (0, 1], got {self.budget}")
        if self.failure_budget < 0:
            raise ValueError("selection.failure_budget must be >= 0")
        if self.ic_round is None:
            self.ic_round = self.fidelity == "reference"
        if self.zero_row_self_distance is None:
            self.zero_row_self_distance = 1.0 if self.fidelity == "reference" else 0.0
        if self.zero_row_self_distance not in (0.0, 1.0):
            raise ValueError(
                "selection.extrinsic.zero_row_self_distance must be 0.0, 1.0 or null (by fidelity), "
                f"got {self.zero_row_self_distance!r}"
            )
        self.zero_row_self_distance = float(self.zero_row_self_distance)


@dataclass
class SelectionResult:
    """What a cascade run produced."""

    card: pd.DataFrame
    """One row per input sample: every score, the stage it reached, why it fell, its rank."""
    selected_ids: list[str]
    """Ids of the selected samples, best first."""
    counts: dict[str, int]
    """``input`` and the number of survivors after each stage."""
    cutoffs: dict[str, float]
    """The lowest kept score of each stage (on the stage's ranking column)."""
    timings: dict[str, float]
    """Wall seconds per scorer / computation."""
    failures: dict[str, list[str]]
    """Failed ids per stage (within the failure budget)."""
    warnings: list[str]
    rank_columns: dict[str, str] = field(default_factory=lambda: dict(STAGE_SCORE))
    """The column each stage ranked on."""
    scorer_stats: dict[str, dict] = field(default_factory=dict)
    """Counters of model-backed scorers (judge calls, cache hits, failures, tokens, wall time)."""
    score_columns: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(SCORE_COLUMNS))
    """The scores the summary describes and plots: column → (stage it belongs to, label)."""


def n_selected(n_input: int, fractions: dict[str, float], stages: Sequence[str] = STAGES,
               budget: float | None = None) -> int:
    """How many samples the cascade keeps from ``n_input`` (to size-match baselines to THTB)."""
    n = n_input
    stages = [s for s in STAGES if s in stages]
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        n = max(1, math.floor(n_input * budget + 1e-9)) if last and budget is not None else n_keep(n, fractions[stage])
    return n


class Cascade:
    """Run THTB's stages over canonical records (columns ``id``, ``query``, ``response``).

    The scorers are the seams: any :class:`QualityScorer`, :class:`BloomScorer`,
    :class:`DisciplineTagger` and :class:`Embedder` (offline, LLM judge, reward model) plug in.
    """

    def __init__(
        self,
        config: CascadeConfig,
        *,
        quality: QualityScorer | None = None,
        bloom: BloomScorer | None = None,
        disciplines: DisciplineTagger | None = None,
        embedder: Embedder | None = None,
        score_cache: Any = None,
        executor: Any = None,
    ):
        self.config = config
        self.quality, self.bloom, self.disciplines, self.embedder = quality, bloom, disciplines, embedder
        self.score_cache = score_cache
        """A :class:`thtb.score_cache.ScoreCache` (or ``None``): scorer outputs reused across runs whose scorers
        and stage inputs are the same, so a budget sweep re-cuts without re-scoring."""
        self.executor = executor if executor is not None else LocalExecutor()
        """Where the per-row scorer calls run (:mod:`thtb.executor`; default: in this process)."""
        if "quality" in config.stages and quality is None:
            raise ValueError("the quality stage needs a quality scorer (reward=...)")
        if "intrinsic" in config.stages and None in (bloom, disciplines, embedder):
            raise ValueError("the intrinsic stage needs a Bloom scorer, a discipline tagger and an embedder")

    # ------------------------------------------------------------------ driver
    def run(self, records: pd.DataFrame | Any) -> SelectionResult:
        """Select from ``records``: a records frame, or a pool (:mod:`thtb.pool`) that keeps the texts elsewhere."""
        cfg = self.config
        pool = records if hasattr(records, "texts") else FramePool(records)
        card = pd.DataFrame({"id": pool.ids, "row": np.arange(len(pool))})
        card["fell_at"] = None
        card["why"] = None
        card["error"] = None
        self._timings: dict[str, float] = {}
        self._failures: dict[str, list[str]] = {}
        self._warnings: list[str] = []
        counts = {"input": len(pool)}
        cutoffs: dict[str, float] = {}
        alive = np.arange(len(pool))
        for i, stage in enumerate(cfg.stages):
            if len(alive) == 0:
                break
            last = i == len(cfg.stages) - 1
            scored = getattr(self, f"_score_{stage}")(pool, card, alive)
            alive = self._remove_failures(card, alive, scored, stage)
            if len(alive) == 0:  # every sample failed (within the budget): nothing left to rank
                counts[stage] = 0
                break
            self._check_degenerate(stage, card, alive)
            keep = self._n_keep(stage, len(alive), counts["input"], last)
            column = STAGE_SCORE[stage]
            order = top_k(card.loc[alive, column].to_numpy(), len(alive))  # full ranking, best first
            card.loc[alive, f"{stage}_rank"] = _ranks(len(alive), order)
            kept = alive[order[:keep]]
            cutoffs[stage] = float(card.loc[kept[-1], column]) if len(kept) else math.nan
            dropped = np.setdiff1d(alive, kept)
            card.loc[dropped, "fell_at"] = stage
            card.loc[dropped, "why"] = [
                f"{column} {card.at[j, column]:.4g} below the cut-off {cutoffs[stage]:.4g} "
                f"(rank {int(card.at[j, f'{stage}_rank'])} of {len(alive)}, kept {keep})"
                for j in dropped
            ]
            log.info("stage %s: kept %d of %d", stage, len(kept), len(alive))
            alive = kept
            counts[stage] = len(alive)
        card["selected"] = False
        card.loc[alive, "selected"] = True
        card.loc[alive, "fell_at"] = "selected"
        card["rank"] = pd.array([pd.NA] * len(card), dtype="Int64")
        card.loc[alive, "rank"] = np.arange(1, len(alive) + 1)
        for stage in cfg.stages:
            if f"{stage}_rank" in card:
                card[f"{stage}_rank"] = card[f"{stage}_rank"].astype("Int64")
        return SelectionResult(
            card=card,
            selected_ids=card.loc[alive, "id"].tolist(),
            counts=counts,
            cutoffs=cutoffs,
            timings=self._timings,
            failures=self._failures,
            warnings=self._warnings,
        )

    DEGENERATE_COMPONENTS = {"intrinsic": ("bloom", "ic"), "extrinsic": ("irei", "sc")}
    """The parts of each stage score that can go flat on their own (Bloom, IC; IREI, SC')."""

    def _check_degenerate(self, stage: str, card: pd.DataFrame, alive: np.ndarray) -> None:
        """Warn — in the summary's ``warnings`` and on the console — when a stage's ranking carries no signal:
        a constant stage score or component, a normalisation that produced NaN, every silhouette 0."""
        found = []
        column = STAGE_SCORE[stage]
        values = card.loc[alive, column].to_numpy(np.float64)
        if np.isnan(values).any():
            found.append(f"stage {stage}: {int(np.isnan(values).sum())} of {len(values)} {column} values are NaN "
                         "after normalisation; those samples rank last")
        elif len(values) > 1 and np.ptp(values) == 0:
            found.append(f"stage {stage}: every one of the {len(values)} samples has {column} = {values[0]:.4g}; the "
                         "cut keeps them in input order (the stage selects nothing); check the scorer")
        for part in self.DEGENERATE_COMPONENTS.get(stage, ()):
            if part not in card:
                continue
            comp = card.loc[alive, part].to_numpy(np.float64)
            comp = comp[~np.isnan(comp)]
            if len(comp) > 1 and np.ptp(comp) == 0:
                hint = ""
                if part == "sc" and "silhouette" in card and not card.loc[alive, "silhouette"].abs().gt(0).any():
                    n = len(alive)
                    hint = (f": every silhouette is 0 — K-Means with k={self.config.k} on {n} queries leaves singleton "
                            "clusters, and the reference rule sets every silhouette to 0 when any cluster is a "
                            f"singleton; use a smaller selection.extrinsic.k (e.g. {max(2, n // 32)}: the authors' k=161 for 5,200 "
                            "queries is ~32 per cluster) or more data")
                found.append(f"stage {stage}: {part} is constant ({comp[0]:.4g}) over all {len(comp)} samples, so "
                             f"{column} ranks on the other term alone{hint}")
        for message in found:
            log.warning("%s", message)
        self._warnings.extend(found)

    def _n_keep(self, stage: str, n: int, n_input: int, last: bool) -> int:
        cfg = self.config
        if last and cfg.budget is not None:
            keep = max(1, math.floor(n_input * cfg.budget + 1e-9))
            if keep > n:
                raise SelectionError(
                    f"selection.budget={cfg.budget} asks for {keep} samples but only {n} reach the "
                    f"{stage} stage; raise the earlier stages' fractions"
                )
            return keep
        return n_keep(n, cfg.fractions[stage])

    def _remove_failures(self, card: pd.DataFrame, alive: np.ndarray, scored: pd.DataFrame, stage: str) -> np.ndarray:
        """Record failed samples (error set) and stop when the failure budget is exceeded."""
        failed = scored["error"].notna().to_numpy()
        if failed.any():
            record_failures(card, alive[failed], scored.loc[failed, "error"].tolist(), stage, self._failures,
                            self.config.failure_budget)
        return alive[~failed]

    def _timed(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self._timings[name] = self._timings.get(name, 0.0) + time.perf_counter() - start
        return out

    def _scored(self, role: str, scorer: Any, method: str, pool: Any, rows: np.ndarray,
                *columns: str) -> pd.DataFrame:
        """``scorer.method`` on the texts ``columns`` of the pool's ``rows``, on the executor, timed as
        ``<role>:<scorer name>``, through the score cache (keyed by the rows' content keys) when there is one."""
        name = f"{role}:{scorer.name}"

        def compute() -> pd.DataFrame:
            return self._timed(name, self.executor.map, role, scorer, method, pool, rows, columns)

        if self.score_cache is None:
            return compute()
        return self.score_cache.get_or_compute(name, [pool.keys(rows, columns)], compute)

    def _scored_together(self, pool: Any, rows: np.ndarray, calls: list[tuple[str, Any, str, tuple[str, ...]]]
                         ) -> list[pd.DataFrame]:
        """:meth:`_scored` of several calls ``(role, scorer, method, columns)`` over the same rows; those the score
        cache lacks go to the executor together (``map_many``: one Ray actor pool, where the intrinsic scorers share
        their embedding), each timed as its share of the wall time."""
        names = [f"{role}:{scorer.name}" for role, scorer, _, _ in calls]
        texts = [[pool.keys(rows, columns)] for _, _, _, columns in calls]
        missing = [i for i, (name, t) in enumerate(zip(names, texts, strict=True))
                   if self.score_cache is None or not self.score_cache.has(name, t)]
        fresh: dict[int, pd.DataFrame] = {}
        if len(missing) > 1:
            frames, seconds = self.executor.map_many([calls[i] for i in missing], pool, rows)
            for i, frame, took in zip(missing, frames, seconds, strict=True):
                fresh[i] = frame
                self._timings[names[i]] = self._timings.get(names[i], 0.0) + took
        out = []
        for i, (role, scorer, method, columns) in enumerate(calls):
            if i in fresh and self.score_cache is not None:
                out.append(self.score_cache.get_or_compute(names[i], texts[i], lambda i=i: fresh[i]))
            elif i in fresh:
                out.append(fresh[i])
            else:
                out.append(self._scored(role, scorer, method, pool, rows, *columns))
        return out

    # ------------------------------------------------------------------ stages
    def _score_quality(self, pool: Any, card: pd.DataFrame, alive: np.ndarray) -> pd.DataFrame:
        scorer = self.quality
        out = self._scored("quality", scorer, "score", pool, alive, "query", "response")
        out = check_result(out, len(alive), ("quality_raw", "quality_reason"), scorer.name)
        out = _nan_is_error(out, "quality_raw")
        ok = out["error"].isna().to_numpy()
        card.loc[alive, "quality_raw"] = out["quality_raw"].to_numpy(dtype=np.float64)
        card.loc[alive, "quality_reason"] = out["quality_reason"].to_numpy()
        norm = np.full(len(out), np.nan)
        norm[ok] = maths.quality_normalized(out.loc[ok, "quality_raw"].to_numpy(np.float64), method=scorer.normalization)
        card.loc[alive, "quality"] = norm
        return out

    def _score_intrinsic(self, pool: Any, card: pd.DataFrame, alive: np.ndarray) -> pd.DataFrame:
        cfg = self.config
        b, d = self._scored_together(pool, alive, [("bloom", self.bloom, "score", ("query", "response")),
                                                   ("disciplines", self.disciplines, "tag", ("query",))])
        b = check_result(b, len(alive), ("bloom_level", "bloom_score", "bloom_reason"), self.bloom.name)
        d = check_result(d, len(alive), ("disciplines",), self.disciplines.name)
        error = b["error"].where(b["error"].notna(), d["error"])
        card.loc[alive, "bloom_level"] = b["bloom_level"].to_numpy()
        card.loc[alive, "bloom_score"] = b["bloom_score"].to_numpy()
        card.loc[alive, "bloom_reason"] = b["bloom_reason"].to_numpy()
        if "disciplines" not in card:
            card["disciplines"] = pd.Series([None] * len(card), dtype=object)
        disc = pd.Series(list(d["disciplines"]), dtype=object)
        card.loc[alive, "disciplines"] = disc.to_numpy()
        card.loc[alive, "n_disciplines"] = [len(x) if isinstance(x, list | tuple) else np.nan for x in disc]
        ok = error.isna().to_numpy()
        names = sorted({n for x in disc[ok] for n in x})
        descriptions = self._describe(names, disc, error) if names else {}
        ok = error.isna().to_numpy()
        good = alive[ok]
        lists = [list(x) for x in disc[ok]]
        if ok.any():
            levels = b.loc[ok, "bloom_level"].tolist()
            level_index = np.array([BLOOM_LEVELS.index(v) + 1 for v in levels])
            bloom = maths.bloom_normalized(
                score=b.loc[ok, "bloom_score"].to_numpy(np.float64), level_index=level_index, fidelity=cfg.fidelity
            )
            names = sorted({n for x in lists for n in x})
            vectors = self._timed(
                f"embed:{self.embedder.name}", self.embedder.encode, [descriptions[n] for n in names]
            )
            table = dict(zip(names, vectors, strict=True))
            ic = self._timed("ic", maths.ic_scores, lists, table, round_multi=cfg.ic_round)
            card.loc[good, "bloom"] = bloom
            card.loc[good, "ic"] = ic
            card.loc[good, "ihs"] = maths.ihs(bloom, ic)
        return pd.DataFrame({"error": error.to_numpy()})

    def _describe(self, names: list[str], disc: pd.Series, error: pd.Series) -> dict[str, str]:
        """Descriptions of ``names``; a sample tagged with a discipline that could not be described gets an
        error (in ``error``, in place), so it fails against the budget instead of stopping the run."""
        try:
            return self._timed("disciplines:describe", self.disciplines.describe, names)
        except DescriptionError as exc:
            log.warning("%s; the samples tagged with them fail", exc)
            for i, tags in disc.items():
                if pd.isna(error[i]):
                    missing = [t for t in tags if t in exc.errors]
                    if missing:
                        error[i] = f"discipline description failed: {missing[0]} ({exc.errors[missing[0]]})"
            return exc.described

    def _score_extrinsic(self, pool: Any, card: pd.DataFrame, alive: np.ndarray) -> pd.DataFrame:
        cfg = self.config
        qlen = pool.lengths(alive, "query")
        rlen = pool.lengths(alive, "response")
        card.loc[alive, "query_len"] = qlen
        card.loc[alive, "response_len"] = rlen
        irei = self._timed("irei", maths.irei, qlen, rlen, fidelity=cfg.fidelity)
        sil = self._timed(
            "silhouette",
            maths.silhouette_scores,
            pool.texts(alive, ["query"])[0],  # on the driver: stage 3's vocabulary, K-Means and silhouettes
            cfg.k,
            fidelity=cfg.fidelity,
            random_state=cfg.random_state,
            max_features=cfg.max_features,
            singleton_policy=cfg.singleton_policy,
            zero_row_self_distance=cfg.zero_row_self_distance,
        )
        self._warnings.extend(sil.warnings)
        card.loc[alive, "irei"] = irei
        card.loc[alive, "cluster"] = sil.labels
        card.loc[alive, "silhouette"] = sil.s
        card.loc[alive, "sc"] = sil.sc
        card.loc[alive, "ehs"] = maths.ehs(irei, sil.sc)
        return pd.DataFrame({"error": [None] * len(alive)}, dtype=object)


def record_failures(card: pd.DataFrame, idx: np.ndarray, errors: list[str], stage: str,
                    failures: dict[str, list[str]], failure_budget: int) -> None:
    """Mark card rows ``idx`` as failed at ``stage`` with their errors, add their ids to
    ``failures``, and raise :class:`SelectionError` (listing every failed id) past the budget."""
    ids = card.loc[idx, "id"].tolist()
    card.loc[idx, "error"] = errors
    card.loc[idx, "fell_at"] = stage
    card.loc[idx, "why"] = [f"failed: {e}" for e in errors]
    failures.setdefault(stage, []).extend(ids)
    total = sum(len(v) for v in failures.values())
    if total > failure_budget:
        shown = ", ".join(ids[:20]) + (" …" if len(ids) > 20 else "")
        raise SelectionError(
            f"{total} sample(s) failed scoring (failure budget {failure_budget}); "
            f"stage {stage}: {len(ids)} failed, first error: {errors[0]}; ids: {shown}",
            failed_ids=[i for v in failures.values() for i in v],
        )
    log.warning("stage %s: %d sample(s) failed and are excluded (within the failure budget)", stage, len(ids))


def _nan_is_error(out: pd.DataFrame, column: str) -> pd.DataFrame:
    """A scorer that returns NaN without an error message has still failed: say so."""
    bad = out[column].isna() & out["error"].isna()
    if bad.any():
        out = out.copy()
        out.loc[bad, "error"] = f"scorer returned NaN {column}"
    return out


def _ranks(n: int, order: np.ndarray) -> np.ndarray:
    """1-based rank of each position given the descending order."""
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(1, n + 1)
    return ranks
