"""Scorer interfaces: the seams every backend (offline, LLM judge, reward model) plugs into.

Each scorer takes aligned lists of ``queries`` and ``responses`` and returns a
:class:`pandas.DataFrame` with one row per input, in input order, holding its columns plus an
``error`` column (``None`` when the sample was scored, otherwise a short message). A scorer never
invents a default value for a sample it could not score: it reports the error and the cascade
counts it against the run's failure budget.

Column contracts
----------------
=====================  =====================================================================
scorer                 columns (besides ``error``)
=====================  =====================================================================
QualityScorer          ``quality_raw`` (float, higher is better), ``quality_reason`` (str)
BloomScorer            ``bloom_level`` (one of :data:`BLOOM_LEVELS`), ``bloom_score`` (1–21 within the level's
                       band; an LLM judge may answer a fraction such as 7.5), ``bloom_reason`` (str)
DisciplineTagger       ``disciplines`` (list[str], ``lower_snake_case``, de-duplicated, in order)
=====================  =====================================================================

Row-wise or pool-dependent
--------------------------
A scorer's row depends on that row alone (and the scorer), never on the other rows of the call: the executors
(:mod:`thtb.executor`) split a call into parts freely. A scorer whose rows also depend on statistics of the whole
pool it scores implements :class:`PoolDependent`, and the Ray executor gathers the pool's statistics first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

BLOOM_LEVELS: tuple[str, ...] = ("Remember", "Understand", "Apply", "Analyze", "Evaluate", "Create")
"""Bloom's revised taxonomy, lowest to highest cognitive level."""

BLOOM_BANDS: Mapping[str, tuple[int, int]] = {"Remember": (1, 3), "Understand": (4, 6), "Apply": (7, 9),
                                               "Analyze": (10, 12), "Evaluate": (13, 15), "Create": (16, 21)}
"""Score bands of the authors' Bloom prompt: ``score`` 1–21, ``Bloom = (score − 1) / 20``."""


class Embedder(ABC):
    """Maps texts to L2-normalised float32 vectors (rows of unit norm)."""

    name: str = "embedder"

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array with unit-norm rows."""

    def space(self) -> str | None:
        """What the vectors are — the model and the settings that change them — or ``None`` where unknown. A proxy
        fitted over these vectors records it and refuses an embedder of another space."""
        return None


class QualityScorer(ABC):
    """Stage 1: how good is the response to this query (a reward model or a proxy for one)?"""

    name: str = "quality"
    normalization: str = "minmax"
    """How ``quality_raw`` maps to [0, 1]: ``reward_clip`` = clip((r + 5) / 10, 0, 1) (the
    reference for InternLM2-Reward) or ``minmax`` over the stage input."""

    @abstractmethod
    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        """Columns ``quality_raw``, ``quality_reason``, ``error``."""


class BloomScorer(ABC):
    """Stage 2a: the Bloom-taxonomy cognitive level the sample demands."""

    name: str = "bloom"

    @abstractmethod
    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        """Columns ``bloom_level``, ``bloom_score``, ``bloom_reason``, ``error``."""


class DisciplineTagger(ABC):
    """Stage 2b: which academic disciplines a query draws on, and what each discipline is."""

    name: str = "disciplines"

    @abstractmethod
    def tag(self, queries: Sequence[str]) -> pd.DataFrame:
        """Columns ``disciplines`` (list[str]) and ``error``. Sees the query only."""

    @abstractmethod
    def describe(self, disciplines: Sequence[str]) -> dict[str, str]:
        """A 3–5 sentence description of each discipline (embedded for the IC distance term).

        Raises :class:`DescriptionError` (carrying the descriptions it did get) when some could not be
        made; the cascade then fails the samples tagged with those disciplines, against the failure budget.
        """


@runtime_checkable
class PoolDependent(Protocol):
    """A scorer whose rows also depend on statistics of the whole pool it scores (the offline quality scorers'
    TF-IDF relevance, fitted on the pool). Scored in parts, the pool's statistics come first: ``pool_counts`` of
    each part (``rows``: the rows' positions in the pool), merged with ``merge_pool_counts`` (commutative), made
    into ``pool(counts, n_rows)``; then every part is scored with ``score(..., pool=...)``, which gives each row
    exactly what one call over the whole pool gives."""

    def pool_counts(self, queries: Sequence[str], responses: Sequence[str], rows: Sequence[int]) -> Any: ...

    def merge_pool_counts(self, a: Any, b: Any) -> Any: ...

    def pool(self, counts: Any, n_rows: int) -> Any: ...


class DescriptionError(RuntimeError):
    """Some disciplines could not be described: ``errors`` maps each to its error; ``described`` holds the
    descriptions that were made."""

    def __init__(self, errors: dict[str, str], described: dict[str, str]) -> None:
        listed = "; ".join(f"{d}: {e}" for d, e in list(errors.items())[:10])
        super().__init__(f"could not describe {len(errors)} discipline(s): {listed}")
        self.errors = dict(errors)
        self.described = dict(described)


def check_result(frame: pd.DataFrame, n: int, columns: Sequence[str], scorer: str) -> pd.DataFrame:
    """Validate a scorer's output frame: ``n`` rows, the contract columns and ``error`` present."""
    missing = [c for c in (*columns, "error") if c not in frame.columns]
    if missing:
        raise TypeError(f"scorer {scorer!r} returned no column(s) {missing}")
    if len(frame) != n:
        raise ValueError(f"scorer {scorer!r} returned {len(frame)} rows for {n} inputs")
    return frame.reset_index(drop=True)
