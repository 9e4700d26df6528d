"""thtb.maths.normalize: min–max (constant → 0.5), reward clip, Bloom in both fidelities."""

import numpy as np
import pytest

from thtb import maths
from thtb.maths.normalize import as_float_vector


def test_minmax_hand_values():
    np.testing.assert_allclose(maths.minmax([1.0, 3.0, 5.0, 2.0]), [0.0, 0.5, 1.0, 0.25])
    np.testing.assert_allclose(maths.minmax([-2, 0, 2]), [0.0, 0.5, 1.0])


def test_minmax_constant_is_half():
    out = maths.minmax([7.0, 7.0, 7.0])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(maths.minmax([3]), [0.5])


def test_minmax_empty_and_does_not_mutate():
    assert maths.minmax([]).shape == (0,)
    x = np.array([4.0, 2.0])
    maths.minmax(x)
    np.testing.assert_array_equal(x, [4.0, 2.0])


@pytest.mark.parametrize("bad", [[1.0, np.nan], [np.inf, 0.0], [[1.0, 2.0]], ["a", "b"]])
def test_minmax_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        maths.minmax(bad)


def test_quality_reward_clip():
    r = [-7.0, -5.0, 0.0, 2.5, 5.0, 9.0]
    np.testing.assert_allclose(maths.quality_normalized(r, "reward_clip"), [0, 0, 0.5, 0.75, 1, 1])
    np.testing.assert_allclose(maths.quality_normalized(r), [0, 0, 0.5, 0.75, 1, 1])  # default method


def test_quality_minmax_and_errors():
    np.testing.assert_allclose(maths.quality_normalized([2.0, 4.0, 3.0], method="minmax"), [0, 1, 0.5])
    np.testing.assert_array_equal(maths.quality_normalized([2.0, 2.0], method="minmax"), [0.5, 0.5])
    with pytest.raises(ValueError, match="method"):
        maths.quality_normalized([1.0], method="softmax")
    with pytest.raises(ValueError, match="NaN"):
        maths.quality_normalized([1.0, np.nan])


def test_bloom_reference_score():
    np.testing.assert_allclose(maths.bloom_normalized(score=[1, 4, 11, 21]), [0.0, 0.15, 0.5, 1.0])
    # floats holding integers are accepted (pandas gives float64 columns)
    np.testing.assert_allclose(maths.bloom_normalized(score=np.array([16.0]), fidelity="reference"), [0.75])
    # a fractional judge score counts as the authors' extract_final_score reads it: (7.5 − 1) / 20
    np.testing.assert_allclose(maths.bloom_normalized(score=[7.5], fidelity="reference"), [0.325])


@pytest.mark.parametrize("bad", [[0], [22], [0.5], [21.5], [np.nan]])
def test_bloom_reference_rejects_out_of_band(bad):
    with pytest.raises(ValueError, match="score"):
        maths.bloom_normalized(score=bad, fidelity="reference")


def test_bloom_reference_needs_score():
    with pytest.raises(ValueError, match="needs `score`"):
        maths.bloom_normalized(level_index=[1, 2], fidelity="reference")


def test_bloom_paper_level_minmax_over_input():
    np.testing.assert_allclose(maths.bloom_normalized(level_index=[1, 3, 6], fidelity="paper"), [0, 0.4, 1])
    # min–max is over the stage input, not the fixed 1..6 range
    np.testing.assert_allclose(maths.bloom_normalized(level_index=[2, 4, 3], fidelity="paper"), [0, 1, 0.5])
    np.testing.assert_array_equal(maths.bloom_normalized(level_index=[5, 5], fidelity="paper"), [0.5, 0.5])
    # the reference score is ignored (and not validated) in paper mode
    out = maths.bloom_normalized(score=[99, 99], level_index=[1, 6], fidelity="paper")
    np.testing.assert_allclose(out, [0.0, 1.0])


def test_bloom_paper_errors():
    with pytest.raises(ValueError, match="level_index"):
        maths.bloom_normalized(level_index=[0, 7], fidelity="paper")
    with pytest.raises(ValueError, match="needs `level_index`"):
        maths.bloom_normalized(score=[3], fidelity="paper")
    with pytest.raises(ValueError, match="fidelity"):
        maths.bloom_normalized(score=[3], fidelity="exact")


def test_as_float_vector_negative():
    with pytest.raises(ValueError, match=">= 0"):
        as_float_vector([1, -1], "x", allow_negative=False)
