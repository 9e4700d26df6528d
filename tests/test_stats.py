"""thtb.eval.stats against scipy and direct reference computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm

from thtb.eval import stats


@pytest.mark.parametrize("x,n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (5217, 12032), (1, 1000), (37, 40)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(x, n, confidence):
    ours = stats.wilson_interval(x, n, confidence)
    ref = binomtest(x, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ours == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize("x", [30, 30.5, 0.25])  # scipy's binomtest for counts; an expected count by the formula
def test_wilson_formula_by_hand_and_edges(x):
    n, z = 100, norm.ppf(0.975)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson_interval(x, n) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert stats.wilson_interval(0, 0) is None
    lo, hi = stats.wilson_interval(2.5, 10)  # a fractional (expected) count lies between its neighbours
    (lo2, hi2), (lo3, hi3) = stats.wilson_interval(2, 10), stats.wilson_interval(3, 10)
    assert lo2 < lo < lo3 and hi2 < hi < hi3 and lo < 0.25 < hi
    for bad in [(-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            stats.wilson_interval(*bad)
    with pytest.raises(ValueError):
        stats.wilson_interval(1, 2, confidence=1.0)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (3, 7), (10, 10), (0, 25), (40, 61), (200, 150)])
def test_mcnemar_exact_is_the_doubled_binomial_tail(b, c):
    n = b + c
    ref = 1.0 if n == 0 else min(1.0, 2 * binom.cdf(min(b, c), n, 0.5))
    direct = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)
    assert stats.mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9)
    assert stats.mcnemar_exact(b, c) == pytest.approx(direct, rel=1e-9)
    assert stats.mcnemar_exact(b, c) == stats.mcnemar_exact(c, b)
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def _reference_bootstrap(values, n_boot, seed, confidence):
    """The textbook loop: one resample at a time from the same generator."""
    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=float)
    means = [x[rng.integers(0, len(x), size=len(x))].mean() for _ in range(n_boot)]
    alpha = 1 - confidence
    return tuple(np.quantile(means, [alpha / 2, 1 - alpha / 2]))


def test_bootstrap_equals_the_textbook_loop():
    rng = np.random.default_rng(3)
    values = rng.random(57)
    assert stats.bootstrap_mean_ci(values, n_boot=700, seed=11) == pytest.approx(
        _reference_bootstrap(values, 700, 11, 0.95), abs=1e-12)
    assert stats.bootstrap_mean_ci([], n_boot=10) is None


def test_paired_bootstrap_keeps_the_pairs():
    rng = np.random.default_rng(5)
    a = (rng.random(400) < 0.6).astype(float)
    b = a.copy()
    flip = rng.choice(400, size=30, replace=False)
    b[flip] = 1 - b[flip]
    out = stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=1)
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert out["ci"] == pytest.approx(_reference_bootstrap(a - b, 2000, 1, 0.95), abs=1e-12)
    lo, hi = out["ci"]
    assert lo <= out["diff"] <= hi
    # pairing matters: the unpaired spread of the two means would be far wider than the paired one
    unpaired = math.sqrt(a.var() / 400 + b.var() / 400) * 2 * 1.96
    assert hi - lo < unpaired / 2
    same = stats.paired_bootstrap_diff(a, a, n_boot=100)
    assert same["diff"] == 0 and same["ci"] == (0.0, 0.0)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff([1, 0], [1])


def test_paired_comparison_counts_and_test():
    a = [1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 0, 0, 1, 0]
    out = stats.paired_comparison(a, b, n_boot=500, seed=2)
    assert (out["n"], out["a_only"], out["b_only"], out["n_discordant"]) == (10, 4, 1, 5)
    assert out["accuracy_a"] == 0.7 and out["accuracy_b"] == 0.4 and out["diff"] == pytest.approx(0.3)
    assert out["p_value"] == pytest.approx(binomtest(4, 5, 0.5).pvalue)
    assert out["ci"][0] <= 0.3 <= out["ci"][1]
    with pytest.raises(ValueError, match="0/1"):
        stats.paired_comparison([0.5], [1])


def test_wilson_coverage_is_close_to_nominal():
    """A quick simulation: the 95 % interval covers p in ~95 % of binomial draws (n=200, p=0.3)."""
    rng = np.random.default_rng(0)
    draws = rng.binomial(200, 0.3, size=4000)
    covered = np.mean([lo <= 0.3 <= hi for lo, hi in (stats.wilson_interval(int(x), 200) for x in draws)])
    assert 0.93 < covered < 0.97


@pytest.mark.parametrize("values", [[20.0, 21.0], [1.0, 2.5, 2.0, 7.0], [3.0, 3.0, 3.0]])
def test_t_interval_over_seeds_matches_scipy(values):
    from scipy.stats import sem, t

    ours = stats.t_interval(values)
    if np.std(values) == 0:
        assert ours == (3.0, 3.0)
        return
    assert ours == pytest.approx(t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem(values)))
    assert stats.t_interval([1.0]) is None
