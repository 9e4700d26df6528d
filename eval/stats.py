"""Statistics for evaluation results: binomial confidence intervals, bootstrap intervals and paired tests of two
systems scored on the same items, on scipy (``scipy.stats.binomtest``, ``bootstrap``, ``t``).

Every function takes plain numbers or 0/1 (or real-valued) arrays and returns plain Python numbers;
``tests/test_stats.py`` checks each against a direct reference computation. Conventions: ``confidence`` is
two-sided (0.95 → the 2.5 % and 97.5 % points); bootstrap intervals are the percentile intervals of ``n_boot``
resamples drawn with ``numpy.random.default_rng(seed)`` (reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

_BOOT_CHUNK = 256  # resamples drawn at once (memory: chunk × n indices)


def _check(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (no continuity correction):
    ``scipy.stats.binomtest(x, n).proportion_ci(confidence, method="wilson")``. None when ``n == 0``.

    ``successes`` may be fractional (an expected count: MMLU-Pro's random guesses counted 1/k,
    :mod:`thtb.eval.mmlu_pro_scoring`); ``binomtest`` takes integer counts only, so then the score formula is
    applied to ``p̂ = x/n`` directly (``z = Φ⁻¹(1 − α/2)``)::

        centre ± half = (p̂ + z²/(2n)) / (1 + z²/n)  ±  z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/(4n²))
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    _check(confidence)
    if n == 0:
        return None
    if float(successes).is_integer():
        ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
        return float(ci.low), float(ci.high)
    z, p = stats.norm.ppf(0.5 + confidence / 2.0), successes / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, (centre - half) / (1.0 + z * z / n)), min(1.0, (centre + half) / (1.0 + z * z / n))


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``n`` independent runs (e.g. one metric over seeds),
    ``mean ± t_{1 − α/2, n − 1} · s / sqrt(n)``: ``scipy.stats.t.interval(confidence, n − 1, loc=mean,
    scale=scipy.stats.sem(values))``. None for fewer than two values (one run has no spread to estimate); runs that
    all agree give ``(mean, mean)`` (scipy's t needs a positive scale)."""
    arr = _as_array(values, "values")
    _check(confidence)
    if len(arr) < 2:
        return None
    mean, sem = float(arr.mean()), float(stats.sem(arr))
    if sem == 0.0:
        return mean, mean
    lo, hi = stats.t.interval(confidence, len(arr) - 1, loc=mean, scale=sem)
    return float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 10_000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a mean: ``scipy.stats.bootstrap`` (``method="percentile"``, ``n_boot``
    resamples of size ``n`` drawn with replacement, ``rng=numpy.random.default_rng(seed)``): the ``α/2`` and
    ``1 − α/2`` quantiles of the resampled means. None for empty input; one value is its own interval (scipy needs
    two)."""
    x = _as_array(values, "values")
    _check(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if len(x) < 2:
        return (float(x[0]), float(x[0])) if len(x) else None
    ci = stats.bootstrap((x,), np.mean, n_resamples=n_boot, batch=_BOOT_CHUNK, confidence_level=confidence,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def paired_bootstrap_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int = 10_000,
                          seed: int = 0, confidence: float = 0.95) -> dict[str, Any] | None:
    """Paired bootstrap of the difference of two means on the same items: :func:`bootstrap_mean_ci` of
    ``d_i = a_i − b_i`` (each resample draws the same item indices for both systems, which keeps the pairing; the
    estimate is ``mean(a) − mean(b) = mean(d)``). Returns ``{"diff", "ci", "n", "n_boot", "seed",
    "confidence"}``, or None for empty input."""
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
    tail above). 1.0 when there is no discordant pair."""
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"discordant counts must be non-negative integers, got b={b}, c={c}")
    n = int(b) + int(c)
    return 1.0 if n == 0 else float(stats.binomtest(int(b), n, 0.5, alternative="two-sided").pvalue)


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int = 10_000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Two systems' 0/1 correctness on the same items, compared.

    Returns ``n``, both accuracies, ``diff = acc_a − acc_b`` with its paired-bootstrap percentile interval
    (:func:`paired_bootstrap_diff`), the discordant counts ``a_only`` (a right, b wrong) and ``b_only``,
    ``n_discordant = a_only + b_only`` and the exact McNemar p-value (:func:`mcnemar_exact`)."""
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired samples need equal lengths, got {len(x)} and {len(y)}")
    if not np.isin(x, (0.0, 1.0)).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("paired_comparison needs 0/1 correctness (McNemar); use paired_bootstrap_diff for scores")
    n = len(x)
    a_only = int(((x == 1) & (y == 0)).sum())
    b_only = int(((x == 0) & (y == 1)).sum())
    boot = paired_bootstrap_diff(x, y, n_boot=n_boot, seed=seed, confidence=confidence)
    return {"n": n, "accuracy_a": float(x.mean()) if n else None, "accuracy_b": float(y.mean()) if n else None,
            "diff": boot["diff"] if boot else None, "ci": boot["ci"] if boot else None,
            "ci_method": f"paired bootstrap, percentile, {n_boot} resamples, seed {seed}", "confidence": confidence,
            "a_only": a_only, "b_only": b_only, "n_discordant": a_only + b_only,
            "p_value": mcnemar_exact(a_only, b_only),
            "test": "exact McNemar (two-sided binomial test on the discordant pairs)"}
