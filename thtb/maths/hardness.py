"""Hardness formulas: IC and IHS (stage 2), IREI, the silhouette component and EHS (stage 3).

All functions are pure and vectorised, take 1-D arrays aligned on the stage's samples, and take their min–max
normalisations over the arrays they are given (the stage's own input). Formulas are in each docstring; where two
readings differ (docs/METHOD.md "Two readings: fidelity"), ``fidelity="reference"`` reproduces the authors' code
and ``fidelity="paper"`` the paper's text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from thtb.maths.normalize import as_float_vector, check_fidelity, minmax

GRAM_MAX_DISCIPLINES = 4096
"""Up to this many distinct disciplines, :func:`ic_scores` precomputes the full cosine Gram matrix
(≤ 128 MiB); above it, it computes the needed pairs row-wise in chunks."""

_PAIR_CHUNK = 65536  # (sample, pair) rows per chunk on the row-wise path


# --------------------------------------------------------------------------- IC (stage 2)
def _unit_rows(vectors: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN/inf")
    norms = np.linalg.norm(vectors, axis=1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)
        which = [names[i] for i in bad[:5]] if names is not None else bad[:5].tolist()
        raise ValueError(f"cosine is undefined for zero embedding vector(s): {which}")
    return vectors / norms[:, None]


def mean_pairwise_cosine_distance(vectors) -> float:
    """Mean cosine distance over the unordered pairs of the given vectors.

    ``mean_{i<j} (1 − cos(e_i, e_j))`` with ``cos(u, v) = u·v / (‖u‖ ‖v‖)`` (true cosine: the
    vectors need not be unit-norm) over the rows of an (n, d) array, and ``0.0`` when n < 2."""
    e = np.asarray(vectors, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {e.shape}")
    if e.shape[0] < 2:
        return 0.0
    u = _unit_rows(e)
    iu, ju = np.triu_indices(e.shape[0], k=1)
    cos = (u[iu] * u[ju]).sum(axis=1)
    return float(np.mean(1.0 - cos))


def interdisciplinary_complexity(counts, mean_distances, *, round_multi: bool = True) -> np.ndarray:
    """Combine discipline counts and mean pairwise distances into IC.

    ``IC = (n − n_min) / (n_max − n_min) + D`` where ``n`` is the sample's number of disciplines,
    ``n_min``/``n_max`` are taken over the given samples (the count term is 0.5 for every sample
    when all ``n`` are equal, see :func:`~thtb.maths.normalize.minmax`), and
    ``D = mean_{i<j} (1 − cos(e_i, e_j))`` must be 0 for samples with ``n ≤ 1``.

    ``round_multi``: IC is rounded to 2 decimals, with Python's ``round(x, 2)``, for samples with ``n ≥ 2``; single-
    and zero-discipline samples are left unrounded. This is the reference behaviour — an artefact of the authors'
    code (``IC/3_recalculate_subject_distances.py``: ``round(normalized_subject_count + avg_distance, 2)`` for rows
    with more than one subject, ``normalized_subject_count`` as is otherwise) — and is **off** under
    ``fidelity="paper"``, whose formula has no rounding (:class:`thtb.cascade.CascadeConfig` ``ic_round=None``
    resolves it by fidelity and passes it here).
    """
    n = as_float_vector(counts, "counts", allow_negative=False)
    dist = as_float_vector(mean_distances, "mean_distances")
    if n.shape != dist.shape:
        raise ValueError(f"counts and mean_distances differ in length: {n.shape[0]} vs {dist.shape[0]}")
    if (n != np.round(n)).any():
        raise ValueError("counts must be integers")
    single = n <= 1
    if (dist[single] != 0).any():
        raise ValueError("mean_distances must be 0 for samples with fewer than 2 disciplines")
    ic = minmax(n) + dist
    if round_multi:
        multi = np.flatnonzero(~single)
        ic[multi] = [round(float(v), 2) for v in ic[multi]]
    return ic


def ic_scores(discipline_lists: Sequence[Sequence[str]], embeddings: Mapping[str, np.ndarray], *,
              round_multi: bool = True) -> np.ndarray:
    """Interdisciplinary complexity of each sample from its disciplines and a shared embedding table.

    ``IC = (n − n_min) / (n_max − n_min) + mean_{i<j} (1 − cos(e_i, e_j))`` — see
    :func:`interdisciplinary_complexity` for the count term, its 0.5 convention and the rounding.
    ``e_i = embeddings[s_i]`` (every name must have one); cosine is computed exactly in float64 (vectors need not
    be unit-norm). Lists are used as given (the tagger de-duplicates them). Vectorised: samples are grouped by their
    number of disciplines and all their pairs are looked up at once in the cosine Gram matrix of the distinct
    disciplines (row-wise in chunks above :data:`GRAM_MAX_DISCIPLINES` distinct names).
    """
    counts, mean_dist = discipline_distance_means(discipline_lists, embeddings)
    return interdisciplinary_complexity(counts, mean_dist, round_multi=round_multi)


def discipline_distance_means(discipline_lists: Sequence[Sequence[str]], embeddings: Mapping[str, np.ndarray], *,
                              gram_max: int = GRAM_MAX_DISCIPLINES) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, its discipline count ``n`` (int64) and ``mean_{i<j} (1 − cos(e_i, e_j))`` (float64, 0 when
    n ≤ 1)."""
    lists = _check_lists(discipline_lists)
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    mean_dist = np.zeros(len(lists), dtype=np.float64)
    names = sorted({s for x in lists for s in x})
    if not names or counts.max(initial=0) < 2:
        return counts, mean_dist
    missing = [s for s in names if s not in embeddings]
    if missing:
        raise ValueError(f"{len(missing)} discipline(s) have no embedding: {missing[:10]}")
    table = [np.asarray(embeddings[s], dtype=np.float64) for s in names]
    dims = {v.shape for v in table}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ValueError(f"embeddings must be 1-D vectors of one dimension, got shapes {sorted(dims)}")
    unit = _unit_rows(np.stack(table), names)
    code = {s: i for i, s in enumerate(names)}
    gram = unit @ unit.T if len(names) <= gram_max else None
    for n in np.unique(counts[counts >= 2]):
        rows = np.flatnonzero(counts == n)
        idx = np.array([[code[s] for s in lists[r]] for r in rows], dtype=np.int64)
        iu, ju = np.triu_indices(int(n), k=1)
        a, b = idx[:, iu], idx[:, ju]  # (g, n_pairs) discipline codes of each pair
        if gram is not None:
            cos = gram[a, b]
        else:
            cos = np.empty(a.shape)
            flat_a, flat_b, flat_cos = a.ravel(), b.ravel(), cos.reshape(-1)
            for start in range(0, flat_a.size, _PAIR_CHUNK):
                sl = slice(start, start + _PAIR_CHUNK)
                flat_cos[sl] = np.einsum("ij,ij->i", unit[flat_a[sl]], unit[flat_b[sl]])
        mean_dist[rows] = (1.0 - cos).mean(axis=1)
    return counts, mean_dist


def _check_lists(discipline_lists) -> list[Sequence[str]]:
    if isinstance(discipline_lists, str):
        raise ValueError("discipline_lists must be a sequence of sequences of names, not a string")
    lists = list(discipline_lists)
    for i, x in enumerate(lists):
        if isinstance(x, str) or not isinstance(x, Sequence | np.ndarray):
            raise ValueError(f"discipline_lists[{i}] must be a list of names, got {type(x).__name__}: {x!r}")
        if not all(isinstance(s, str) for s in x):
            raise ValueError(f"discipline_lists[{i}] must contain only strings, got {x!r}")
    return lists


def ihs(bloom, ic) -> np.ndarray:
    """Intrinsic hardness ``IHS = (Bloom + IC) / 2`` (both fidelities)."""
    b, c = _pair(bloom, ic, "bloom", "ic")
    return (b + c) / 2.0


# --------------------------------------------------------------------------- stage 3
def irei(query_len, response_len, fidelity: str = "reference") -> np.ndarray:
    """Instruction–response expansion index from lengths in characters.

    With ``T = Lq + Lr`` and ``ρ = Lr / Lq`` (``ρ = 0`` when ``Lq = 0``):

    * ``reference``: ``IREI = (minmax(T) + minmax(ρ)) / 2``  — in [0, 1];
    * ``paper``:     ``IREI = minmax(T) + ρ``                 — unbounded above.

    min–max over the given samples (0.5 for a constant array); lengths must be non-negative.
    """
    check_fidelity(fidelity)
    lq = as_float_vector(query_len, "query_len", allow_negative=False)
    lr = as_float_vector(response_len, "response_len", allow_negative=False)
    if lq.shape != lr.shape:
        raise ValueError(f"query_len and response_len differ in length: {lq.shape[0]} vs {lr.shape[0]}")
    ratio = np.divide(lr, lq, out=np.zeros_like(lr), where=lq > 0)
    total = minmax(lq + lr)
    if fidelity == "reference":
        return (total + minmax(ratio)) / 2.0
    return total + ratio


def silhouette_component(s, fidelity: str = "reference") -> np.ndarray:
    """Silhouette component SC' of EHS from silhouettes ``s`` in [−1, 1]: ``reference`` ``(s + 1) / 2`` (in
    [0, 1]); ``paper`` ``s``."""
    check_fidelity(fidelity)
    arr = as_float_vector(s, "s")
    if ((arr < -1.0) | (arr > 1.0)).any():
        raise ValueError("silhouette values must lie in [-1, 1]")
    return (arr + 1.0) / 2.0 if fidelity == "reference" else arr.copy()


def ehs(irei_values, sc) -> np.ndarray:
    """Extrinsic hardness ``EHS = (IREI + SC') / 2`` (both fidelities; the variants live in the terms)."""
    a, b = _pair(irei_values, sc, "irei", "sc")
    return (a + b) / 2.0


def _pair(x, y, nx: str, ny: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float_vector(x, nx), as_float_vector(y, ny)
    if a.shape != b.shape:
        raise ValueError(f"{nx} and {ny} differ in length: {a.shape[0]} vs {b.shape[0]}")
    return a, b
