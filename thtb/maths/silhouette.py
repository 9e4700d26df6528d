"""Stage-3 silhouette: K-Means on query TF-IDF and an exact O(n·k·d) cosine silhouette.

Exact silhouette without the n×n distance matrix
------------------------------------------------
Rows are L2-normalised first (``x̂ = x / ‖x‖``, an all-zero row stays zero), as scikit-learn's cosine distance
does. With ``S_C = Σ_{y∈C} ŷ`` the sum of the normalised rows of cluster ``C``, the cosine distance summed over a
cluster is ``Σ_{y∈C} (1 − x̂·ŷ) = |C| − x̂·S_C``, so all n×k cluster sums come from one (sparse n×d) @ (dense
d×k) product. Then

* ``b(x) = min_{C ∌ x} (|C| − x̂·S_C) / |C|`` (mean distance to the nearest other cluster),
* ``a(x) = (|C_x| − x̂·S_{C_x} − δ) / (|C_x| − 1)`` where ``δ`` removes the self term ``1 − x̂·x̂`` (already 0
  for a non-zero row: ``x̂·x̂ = 1``, ``δ = 0``),
* ``s = (b − a) / max(a, b)``, 0 when both are 0, and 0 for members of a singleton cluster.

Zero rows (a query with none of the TF-IDF terms; docs/METHOD.md "All-zero rows")
---------------------------------------------------------------------------------
A zero vector is at cosine distance 1 from every *other* vector; its distance to *itself* is a convention on which
the implementations disagree. The authors' code (``calculate_silhouette_all`` in ``silhouette_Coefficient.py``)
computes ``pairwise_distances(X_batch, X, metric="cosine")`` against a copy of ``X``, so the diagonal is never
zeroed (distance **1**); the metric convention is ``d(x, x) = 0``; scikit-learn's
``silhouette_samples(metric="cosine")`` zeroes the diagonal only when the n×n matrix fits ``working_memory`` in one
block (default 1024 MiB, i.e. n ≤ 11,585 in float64; :func:`sklearn_zero_row_self_distance`). Hence, for a zero
row in a cluster ``C`` (``|C| ≥ 2``), every other distance being 1:

* ``zero_row_self_distance=1.0`` — ``fidelity="reference"`` (the authors' code, which produced the released
  data): ``a = |C| / (|C| − 1)``, ``b = 1``, so ``s = −1/|C|``;
* ``zero_row_self_distance=0.0`` — ``fidelity="paper"`` (the metric convention, and sklearn on one block):
  ``a = 1``, ``b = 1``, so ``s = 0``.

The other rows' silhouettes do not depend on the convention (a zero row is at distance 1 from each of them).
:func:`silhouette_scores` picks it by fidelity unless told; :func:`silhouette_samples_cosine` defaults to 0.0
(sklearn's one-block result).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from thtb.maths.hardness import silhouette_component
from thtb.maths.normalize import check_fidelity
from thtb.maths.text import tfidf_matrix

log = logging.getLogger(__name__)

SINGLETON_POLICIES: tuple[str, ...] = ("zero_all", "sklearn")
"""``zero_all`` (reference default): if any cluster has fewer than 2 members, every silhouette is 0.
``sklearn`` (paper default): members of singleton clusters get 0, the others are computed."""

K_CONFIG_KEY = "selection.extrinsic.k"

_CHUNK_ROWS = 65536  # rows per block of the n×k product (65,536 × 161 float64 ≈ 84 MB)


def _check_k(k, n_samples: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer (config key `{K_CONFIG_KEY}`), got {k!r}")
    if not 2 <= k <= n_samples - 1:
        raise ValueError(f"K-Means needs 2 <= k <= n_samples - 1 for a silhouette, got k={k} for {n_samples} samples; "
                         f"set `{K_CONFIG_KEY}` to a value in [2, {max(n_samples - 1, 2)}]"
                         + (" (the stage input is too small for a silhouette)" if n_samples < 3 else ""))
    return int(k)


def kmeans_labels(X, k: int, random_state: int = 42, *, max_iter: int = 300, algorithm: str = "lloyd") -> np.ndarray:
    """Cluster rows with ``KMeans(n_clusters=k, random_state=random_state, n_init="auto")``: int64 labels in 0..k−1.

    ``max_iter`` and ``algorithm`` default to scikit-learn's (300, ``"lloyd"``), which the reference
    uses. ``2 ≤ k ≤ n − 1`` is required (change ``selection.extrinsic.k`` otherwise).
    """
    from sklearn.cluster import KMeans

    k = _check_k(k, X.shape[0])
    model = KMeans(n_clusters=k, random_state=random_state, n_init="auto", max_iter=max_iter, algorithm=algorithm)
    labels = model.fit_predict(X).astype(np.int64)
    log.debug("KMeans k=%d on %s: %d iterations, inertia %.6g", k, X.shape, model.n_iter_, model.inertia_)
    return labels


def sklearn_zero_row_self_distance(n_samples: int) -> float:
    """The self distance scikit-learn's ``silhouette_samples(metric="cosine")`` gives an all-zero row
    for ``n_samples`` rows under the current ``working_memory``: 0.0 if it computes the distance
    matrix in one block, 1.0 if it chunks it (see the module docstring)."""
    import sklearn

    # sklearn.utils._chunking.get_chunk_n_rows: rows per chunk = working_memory MiB // (8 · n) bytes
    rows = int(sklearn.get_config()["working_memory"] * 2**20) // (8 * max(int(n_samples), 1))
    return 0.0 if rows >= n_samples else 1.0


def silhouette_samples_cosine(X, labels, *, zero_row_self_distance: float = 0.0,
                              chunk_rows: int = _CHUNK_ROWS) -> np.ndarray:
    """Exact per-sample silhouette with cosine distance, in O(n·k·d) time and O(n·k) memory per chunk.

    ``s(x) = (b − a) / max(a, b)`` (0 if both are 0, and for members of singleton clusters) from cluster sums
    (module docstring). Equals ``sklearn.metrics.silhouette_samples(X, labels, metric="cosine")`` to ~1e-15 for
    sparse and dense input, all-zero rows scored by ``zero_row_self_distance``. ``X`` (n × d, dense or sparse, no
    NaN/inf) is L2-normalised in float64 first; ``labels``: any sortable labels, ``2 ≤ n_labels ≤ n − 1``;
    ``chunk_rows`` bounds the memory of the n×k product.
    """
    from sklearn.preprocessing import normalize
    from sklearn.utils import check_array

    if zero_row_self_distance not in (0.0, 1.0):
        raise ValueError(f"zero_row_self_distance must be 0.0 or 1.0, got {zero_row_self_distance!r}")
    X = check_array(X, accept_sparse="csr", dtype=np.float64)  # rejects NaN/inf, 1-D and empty input
    n = X.shape[0]
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    sizes = np.bincount(codes).astype(np.float64)
    k = sizes.size
    if not 2 <= k <= n - 1:
        raise ValueError(f"Number of labels is {k}. Valid values are 2 to n_samples - 1 (inclusive)")

    Xn = normalize(X, norm="l2", copy=True)
    zero = (np.asarray(abs(Xn).sum(axis=1)).ravel() if sp.issparse(Xn) else np.abs(Xn).sum(axis=1)) == 0
    member = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(k, n))
    sums = member @ Xn  # (k, d): S_C
    sums_t = np.ascontiguousarray((sums.toarray() if sp.issparse(sums) else np.asarray(sums)).T)

    s = np.empty(n, dtype=np.float64)
    for start in range(0, n, max(int(chunk_rows), 1)):
        sl = slice(start, min(start + chunk_rows, n))
        own = codes[sl]
        rows = np.arange(own.size)
        dist_sum = sizes - np.asarray(Xn[sl] @ sums_t)  # (c, k): Σ_{y∈C} (1 − x̂·ŷ), self included
        intra = dist_sum[rows, own]
        intra[zero[sl]] -= 1.0 - zero_row_self_distance  # a zero row's formula self term is 1
        own_size = sizes[own]
        singleton = own_size < 2
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(singleton, 0.0, intra / (own_size - 1.0))
        mean = dist_sum / sizes
        mean[rows, own] = np.inf
        b = mean.min(axis=1)
        a = np.maximum(a, 0.0)  # sklearn clips each distance to [0, 2]; undo float cancellation
        b = np.maximum(b, 0.0)
        denom = np.maximum(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            block = np.where(denom > 0, (b - a) / denom, 0.0)
        block[singleton] = 0.0
        s[sl] = block
    return s


@dataclass
class SilhouetteResult:
    """Per-sample silhouettes of the stage-3 query clustering."""

    s: np.ndarray  # (n,) float64: silhouette after the singleton policy, in [−1, 1]
    sc: np.ndarray  # (n,) float64: SC' component, ``(s + 1) / 2`` (reference) or ``s`` (paper)
    labels: np.ndarray  # (n,) int64: K-Means labels in 0..k−1
    n_clusters: int  # distinct labels K-Means produced (≤ k)
    cluster_sizes: np.ndarray  # (k,) int64: members per label 0..k−1 (0 for a label K-Means left empty)
    k: int  # requested number of clusters
    singleton_policy: str  # the policy applied
    n_zero_rows: int = 0  # queries with an all-zero TF-IDF row (none of the ``max_features`` terms)
    warnings: list[str] = field(default_factory=list)  # messages also emitted with :func:`warnings.warn`


def silhouette_scores(texts: Sequence[str], k: int, *, fidelity: str = "reference", random_state: int = 42,
                      max_features: int = 100, singleton_policy: str | None = None,
                      zero_row_self_distance: float | None = None) -> SilhouetteResult:
    """Stage-3 silhouette of each query: preprocess → TF-IDF → K-Means → exact cosine silhouette.

    ``X = TfidfVectorizer(max_features).fit_transform(preprocess(texts))``,
    ``labels = KMeans(k, random_state, n_init="auto").fit_predict(X)``,
    ``s = silhouette_samples_cosine(X, labels)``, ``SC' = (s + 1) / 2`` (reference) or ``s`` (paper).

    ``zero_row_self_distance``: the self distance of an all-zero TF-IDF row (module docstring); ``None`` = by
    fidelity (reference ``1.0``, paper ``0.0``). ``singleton_policy`` (``None`` = by fidelity: reference
    ``"zero_all"``, paper ``"sklearn"``): ``"zero_all"`` sets *every* s to 0 when a cluster has fewer than 2 members
    (the authors' code), ``"sklearn"`` gives 0 to singleton members only. Clusters are the labels K-Means actually
    used; both cases are warned about with the cluster sizes.

    :class:`ValueError` if ``k`` is not in ``[2, n − 1]`` (config ``selection.extrinsic.k``), if the texts yield
    no TF-IDF term, or if K-Means finds fewer than 2 distinct clusters (e.g. all texts identical).
    """
    check_fidelity(fidelity)
    if singleton_policy is None:
        singleton_policy = "zero_all" if fidelity == "reference" else "sklearn"
    if singleton_policy not in SINGLETON_POLICIES:
        raise ValueError(f"singleton_policy must be one of {SINGLETON_POLICIES} or None, got {singleton_policy!r}")
    texts = list(texts)
    if zero_row_self_distance is None:
        zero_row_self_distance = 1.0 if fidelity == "reference" else 0.0
    k = _check_k(k, len(texts))
    X = tfidf_matrix(texts, max_features=max_features)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = kmeans_labels(X, k, random_state=random_state)
    notes = [f"KMeans: {w.message}" for w in caught]
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    present = sizes[sizes > 0]
    n_clusters = int(present.size)
    if n_clusters < 2:
        raise ValueError(f"K-Means found {n_clusters} distinct cluster(s) among {len(texts)} queries (identical "
                         "texts?); the silhouette is undefined")
    if n_clusters < k:
        notes.append(f"K-Means used {n_clusters} of k={k} clusters ({k - n_clusters} empty)")
    s = silhouette_samples_cosine(X, labels, zero_row_self_distance=zero_row_self_distance)
    small = np.flatnonzero(sizes == 1)
    if small.size:
        detail = (f"{small.size} singleton cluster(s) (labels {small[:20].tolist()}); cluster sizes "
                  f"smallest {np.sort(present)[:10].tolist()}, max {present.max()}, n={len(texts)}, k={k}")
        if singleton_policy == "zero_all":
            s = np.zeros_like(s)
            notes.append(f"{detail}: every silhouette set to 0 (singleton_policy='zero_all', reference)")
        else:
            notes.append(f"{detail}: their members get silhouette 0 (singleton_policy='sklearn')")
    for msg in notes:
        warnings.warn(f"silhouette: {msg}", stacklevel=2)
    return SilhouetteResult(s=s, sc=silhouette_component(s, fidelity), labels=labels, n_clusters=n_clusters,
                            cluster_sizes=sizes, k=k, singleton_policy=singleton_policy,
                            n_zero_rows=int((np.diff(X.indptr) == 0).sum()), warnings=notes)
