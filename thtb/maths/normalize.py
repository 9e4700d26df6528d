"""Normalisations shared by the three stages (min–max, reward clip, Bloom).

Conventions, used everywhere in :mod:`thtb.maths`:

* every normalisation is taken over the array it is given — the caller passes the stage's own input
  (docs/METHOD.md "Selection mechanics");
* a constant array min–max normalises to **0.5** everywhere (no sample is better than another, and 0.5 is the
  midpoint of [0, 1]; the authors' IC count term uses 0.5 when all ``n`` are equal, and the same rule is applied
  to every min–max);
* NaN/inf inputs are rejected with :class:`ValueError`: a failed score must be removed (and counted) by the
  caller, never normalised into a number.
"""

from __future__ import annotations

import numpy as np

FIDELITIES: tuple[str, ...] = ("reference", "paper")
"""``reference`` reproduces the authors' code (released data, published numbers); ``paper`` follows the
paper's text. See docs/METHOD.md "Two readings: fidelity"."""

QUALITY_METHODS: tuple[str, ...] = ("reward_clip", "minmax")

BLOOM_SCORE_RANGE: tuple[int, int] = (1, 21)
"""The reference judge's Bloom score range (Remember 1–3 … Create 16–21)."""

BLOOM_N_LEVELS = 6
"""Remember, Understand, Apply, Analyze, Evaluate, Create."""


def check_fidelity(fidelity: str) -> str:
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    return fidelity


def as_float_vector(x, name: str, *, allow_negative: bool = True) -> np.ndarray:
    """``x`` as a 1-D float64 array; :class:`ValueError` on a wrong shape, NaN/inf or (optionally) < 0."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ValueError(f"{name} has {bad.size} NaN/inf value(s), first at position(s) {bad[:10].tolist()}")
    if not allow_negative and (arr < 0).any():
        bad = np.flatnonzero(arr < 0)
        raise ValueError(f"{name} must be >= 0; {bad.size} negative value(s), first at {bad[:10].tolist()}")
    return arr


def minmax(x) -> np.ndarray:
    """Min–max normalise over the given 1-D array of finite numbers (float64 values in [0, 1]).

    ``minmax(x)_i = (x_i − min x) / (max x − min x)``, and ``0.5`` for every element when
    ``max x = min x`` (constant input). An empty input gives an empty float64 array.
    """
    arr = as_float_vector(x, "x")
    if arr.size == 0:
        return arr.copy()
    lo, hi = arr.min(), arr.max()
    if hi == lo:
        return np.full(arr.shape, 0.5)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)  # guards the float rounding at the ends of the range


def quality_normalized(raw, method: str = "reward_clip") -> np.ndarray:
    """Normalise stage-1 quality (reward) scores to [0, 1].

    * ``"reward_clip"`` (reference, InternLM2-7B-Reward): ``clip((r + 5) / 10, 0, 1)``.
    * ``"minmax"``: :func:`minmax` over the given scores (heuristic scorers with no natural scale).

    Ranking is done on the raw reward (the clip creates ties); this value is only reported.
    """
    r = as_float_vector(raw, "raw")
    if method == "reward_clip":
        return np.clip((r + 5.0) / 10.0, 0.0, 1.0)
    if method == "minmax":
        return minmax(r)
    raise ValueError(f"quality normalisation method must be one of {QUALITY_METHODS}, got {method!r}")


def bloom_normalized(score=None, level_index=None, fidelity: str = "reference") -> np.ndarray:
    """Normalise Bloom judgements to [0, 1].

    * ``reference``: ``Bloom = (score − 1) / 20`` with ``score`` the judge's score in [1, 21] (bands Remember 1–3,
      Understand 4–6, Apply 7–9, Analyze 10–12, Evaluate 13–15, Create 16–21); a fractional score ("7.5") is taken
      as the authors' ``extract_final_score`` reads it.
    * ``paper``: level index ``i ∈ 1..6`` (Remember = 1 … Create = 6),
      ``Bloom = (i − min i) / (max i − min i)`` over the given input (0.5 when all levels are equal).

    Only the argument the chosen fidelity uses is required and validated; the other may be ``None``.
    """
    check_fidelity(fidelity)
    if fidelity == "reference":
        if score is None:
            raise ValueError("bloom_normalized(fidelity='reference') needs `score` (numbers in 1..21)")
        s = _as_range(score, "score", *BLOOM_SCORE_RANGE, integral=False)
        return (s - 1.0) / 20.0
    if level_index is None:
        raise ValueError("bloom_normalized(fidelity='paper') needs `level_index` (integers 1..6)")
    i = _as_range(level_index, "level_index", 1, BLOOM_N_LEVELS)
    return minmax(i)


def _as_range(x, name: str, lo: int, hi: int, *, integral: bool = True) -> np.ndarray:
    """1-D float64 array of values in ``[lo, hi]`` (integral ones when ``integral``), else :class:`ValueError`."""
    arr = as_float_vector(x, name)
    bad = (arr < lo) | (arr > hi)
    if integral:
        bad |= arr != np.round(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(f"{name} must be {'integers' if integral else 'numbers'} in {lo}..{hi}; {idx.size} invalid "
                         f"value(s), e.g. {arr[idx[:5]].tolist()} at {idx[:5].tolist()}")
    return arr
