"""Small, pure statistics for evaluation results: binomial confidence intervals, bootstrap intervals and paired
tests of two systems scored on the same items.

Every function takes plain numbers or 0/1 (or real-valued) arrays, returns plain Python numbers, and states its
formula in its docstring; ``tests/test_stats.py`` checks each against scipy or a direct reference computation.
Conventions: ``confidence`` is two-sided (0.95 → the 2.5 % and 97.5 % points); bootstrap intervals are the
percentile intervals of ``n_boot`` resamples drawn with ``numpy.random.default_rng(seed)`` (reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

_BOOT_CHUNK = 256  # resamples drawn at once (memory: chunk × n indices)


def _z(confidence: float) -> float:
    """The standard normal quantile ``Φ⁻¹(1 − (1 − confidence)/2)`` (1.959964 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from scipy.stats import norm

    return float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (no continuity correction).

    With ``p̂ = x/n`` and ``z = Φ⁻¹(1 − α/2)``::

        centre = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/(4n²))
        CI     = [centre − half, centre + half]

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0 and 1. ``successes``
    may be fractional (an expected count, e.g. random guesses counted 1/k): the formula is then applied to
    ``p̂`` as is. Returns None when ``n == 0``. Equals ``scipy.stats.binomtest(x, n).proportion_ci(confidence,
    method="wilson")`` for integer ``x``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding residue at 0 and n
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` bootstrap resamples (``n`` indices drawn uniformly with replacement per resample,
    drawn in chunks of resamples; the generator's stream is consumed resample by resample)."""
    n = len(values)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        k = min(_BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        out[start : start + k] = values[idx].mean(axis=1)
    return out


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    _z(confidence)  # validates
    alpha = 1.0 - confidence
    lo, hi = np.quantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``n`` independent runs (e.g. one metric over seeds)::

        mean ± t_{1 − α/2, n − 1} · s / sqrt(n)      (s: the sample standard deviation, ddof 1)

    None for fewer than two values (one run has no spread to estimate). Equals
    ``scipy.stats.t.interval(confidence, n − 1, loc=mean, scale=scipy.stats.sem(values))``."""
    arr = _as_array(values, "values")
    if len(arr) < 2:
        return None
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from scipy.stats import t

    mean, half = float(arr.mean()), float(t.ppf(1.0 - (1.0 - confidence) / 2.0, len(arr) - 1)) * float(
        arr.std(ddof=1)) / math.sqrt(len(arr))
    return mean - half, mean + half


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 10_000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a mean.

    Draw ``B = n_boot`` resamples ``x*_b`` of size ``n`` with replacement from ``x``; the interval is the
    ``α/2`` and ``1 − α/2`` quantiles (numpy's linear interpolation) of ``mean(x*_b)``. None for empty input.
    """
    x = _as_array(values, "values")
    if len(x) == 0:
        return None
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return _percentile_interval(_resampled_means(x, n_boot, np.random.default_rng(seed)), confidence)


def paired_bootstrap_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                          n_boot: int = 10_000, seed: int = 0,
                          confidence: float = 0.95) -> dict[str, Any] | None:
    """Paired bootstrap of the difference of two means on the same items.

    ``d_i = a_i − b_i``; the estimate is ``mean(a) − mean(b) = mean(d)``. Each of ``B`` resamples draws ``n``
    item indices with replacement (the same indices for both systems, which keeps the pairing), giving
    ``mean(d*_b)``; the interval is the percentile interval of those ``B`` means (as :func:`bootstrap_mean_ci`
    on ``d``, with the same seed and draws). Returns ``{"diff", "ci", "n", "n_boot", "seed", "confidence"}``,
    or None for empty input.
    """
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired samples need equal lengths, got {len(x)} and {len(y)}")
    if len(x) == 0:
        return None
    d = x - y
    ci = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed, confidence=confidence)
    return {"diff": float(d.mean()), "ci": ci, "n": int(len(d)), "n_boot": int(n_boot), "seed": int(seed),
            "confidence": confidence}


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test p-value, two-sided.

    ``b`` = items only the first system gets right, ``c`` = items only the second gets right (the discordant
    pairs; concordant pairs carry no information). Under H0 (equal accuracy) ``b ~ Binomial(b + c, 1/2)``::

        p = min(1, 2 · Σ_{i=0}^{min(b,c)} C(b+c, i) / 2^(b+c))

    computed as ``scipy.stats.binomtest(b, b + c, 0.5).pvalue`` (two-sided; for p = 1/2 it equals the doubled
    tail above). 1.0 when there is no discordant pair.
    """
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"discordant counts must be non-negative integers, got b={b}, c={c}")
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(b), n, 0.5, alternative="two-sided").pvalue)


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int = 10_000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Two systems' 0/1 correctness on the same items, compared.

    Returns ``n``, both accuracies, ``diff = acc_a − acc_b`` with its paired-bootstrap percentile interval
    (:func:`paired_bootstrap_diff`), the discordant counts ``a_only`` (a right, b wrong) and ``b_only``,
    ``n_discordant = a_only + b_only`` and the exact McNemar p-value (:func:`mcnemar_exact`).
    """
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired samples need equal lengths, got {len(x)} and {len(y)}")
    if not np.isin(x, (0.0, 1.0)).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("paired_comparison needs 0/1 correctness (McNemar); use paired_bootstrap_diff for scores")
    n = len(x)
    a_only = int(((x == 1) & (y == 0)).sum())
    b_only = int(((x == 0) & (y == 1)).sum())
    boot = paired_bootstrap_diff(x, y, n_boot=n_boot, seed=seed, confidence=confidence)
    return {
        "n": n,
        "accuracy_a": float(x.mean()) if n else None,
        "accuracy_b": float(y.mean()) if n else None,
        "diff": boot["diff"] if boot else None,
        "ci": boot["ci"] if boot else None,
        "ci_method": f"paired bootstrap, percentile, {n_boot} resamples, seed {seed}",
        "confidence": confidence,
        "a_only": a_only,
        "b_only": b_only,
        "n_discordant": a_only + b_only,
        "p_value": mcnemar_exact(a_only, b_only),
        "test": "exact McNemar (two-sided binomial test on the discordant pairs)",
    }
