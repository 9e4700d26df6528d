"""thtb.maths.hardness: IC, IHS, IREI (both fidelities), SC', EHS — hand-computed fixtures."""

import math

import numpy as np
import pytest

from thtb import maths

R2 = 1 / math.sqrt(2)
TABLE = {
    "math": np.array([1.0, 0.0]),
    "physics": np.array([0.0, 3.0]),  # not unit-norm: cosine must still be exact
    "chemistry": np.array([2.0, 2.0]),
    "art": np.array([-1.0, 0.0], dtype=np.float32),
}


# --------------------------------------------------------------------------- IC
def test_mean_pairwise_cosine_distance_hand():
    e = [TABLE["math"], TABLE["physics"], TABLE["chemistry"]]
    # pairs: (math, physics) 1, (math, chemistry) 1 − 1/√2, (physics, chemistry) 1 − 1/√2
    expected = (1 + 2 * (1 - R2)) / 3
    assert maths.mean_pairwise_cosine_distance(e) == pytest.approx(expected, abs=1e-15)
    assert maths.mean_pairwise_cosine_distance([TABLE["math"], TABLE["art"]]) == pytest.approx(2.0)
    assert maths.mean_pairwise_cosine_distance([TABLE["math"]]) == 0.0
    assert maths.mean_pairwise_cosine_distance(np.zeros((0, 2))) == 0.0


def test_mean_pairwise_cosine_distance_errors():
    with pytest.raises(ValueError, match="zero"):
        maths.mean_pairwise_cosine_distance([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="2-D"):
        maths.mean_pairwise_cosine_distance([1.0, 0.0])


def test_ic_scores_count_term_and_rounding():
    lists = [[], ["math"], ["math", "physics"], ["math", "physics", "chemistry"]]
    d3 = (1 + 2 * (1 - R2)) / 3
    raw = [0.0, 1 / 3, 2 / 3 + 1.0, 1.0 + d3]
    np.testing.assert_allclose(maths.ic_scores(lists, TABLE, round_multi=False), raw, atol=1e-15)
    rounded = maths.ic_scores(lists, TABLE)  # reference default: round multi-discipline rows only
    np.testing.assert_allclose(rounded, [0.0, 1 / 3, 1.67, 1.53], atol=1e-15)
    assert rounded[1] == 1 / 3  # n = 1 is not rounded


def test_ic_rounding_is_reference_only():
    """2-dp IC rounding is the authors' code: on under fidelity=reference, off under paper, both as
    resolved by CascadeConfig and as run by the cascade's intrinsic stage."""
    import pandas as pd

    from thtb.cascade import Cascade, CascadeConfig
    from thtb.scorers.base import BloomScorer, DisciplineTagger, Embedder

    assert CascadeConfig(fidelity="reference").ic_round is True
    assert CascadeConfig(fidelity="paper").ic_round is False
    assert CascadeConfig(fidelity="paper", ic_round=True).ic_round is True  # explicit override wins

    lists = [["math"], ["math", "chemistry"], ["math", "physics", "chemistry"], ["physics", "chemistry"]]

    class Bloom(BloomScorer):
        def score(self, queries, responses):
            return pd.DataFrame({"bloom_level": "Apply", "bloom_score": 8, "bloom_reason": "", "error": None},
                                index=range(len(queries)))

    class Tagger(DisciplineTagger):
        def tag(self, queries):
            return pd.DataFrame({"disciplines": [lists[int(q)] for q in queries], "error": None})

        def describe(self, disciplines):
            return {d: d for d in disciplines}

    class Table(Embedder):
        def encode(self, texts):
            return np.stack([TABLE[t] for t in texts]).astype(np.float64)

    records = pd.DataFrame({"id": [f"r{i}" for i in range(4)], "query": ["0", "1", "2", "3"], "response": "x"})
    unrounded = maths.ic_scores(lists, TABLE, round_multi=False)
    rounded = maths.ic_scores(lists, TABLE, round_multi=True)
    assert (unrounded[1:] != rounded[1:]).all()  # every multi-discipline IC has more than 2 decimals
    for fidelity, expected in (("paper", unrounded), ("reference", rounded)):
        cfg = CascadeConfig(stages=["intrinsic"], fidelity=fidelity, fractions={"intrinsic": 1.0})
        card = Cascade(cfg, bloom=Bloom(), disciplines=Tagger(), embedder=Table()).run(records).card
        np.testing.assert_array_equal(card["ic"].to_numpy(np.float64), expected)


def test_ic_scores_all_counts_equal_gives_half():
    lists = [["math", "physics"], ["math", "art"], ["physics", "chemistry"]]
    out = maths.ic_scores(lists, TABLE, round_multi=False)
    np.testing.assert_allclose(out, [0.5 + 1.0, 0.5 + 2.0, 0.5 + (1 - R2)], atol=1e-15)
    np.testing.assert_allclose(maths.ic_scores([["art"], ["math"]], TABLE), [0.5, 0.5])


def test_ic_scores_gram_and_rowwise_paths_match_bruteforce():
    rng = np.random.default_rng(3)
    names = [f"d{i}" for i in range(40)]
    table = {s: rng.normal(size=16) * rng.uniform(0.1, 5) for s in names}
    lists = [list(rng.choice(names, size=rng.integers(0, 7), replace=False)) for _ in range(300)]
    brute = np.array([maths.mean_pairwise_cosine_distance([table[s] for s in x]) if x else 0.0 for x in lists])
    counts, gram = maths.discipline_distance_means(lists, table)
    _, rowwise = maths.discipline_distance_means(lists, table, gram_max=0)
    np.testing.assert_array_equal(counts, [len(x) for x in lists])
    np.testing.assert_allclose(gram, brute, atol=1e-12)
    np.testing.assert_allclose(rowwise, brute, atol=1e-12)
    expected = maths.minmax(counts) + brute
    np.testing.assert_allclose(maths.ic_scores(lists, table, round_multi=False), expected, atol=1e-12)


def test_ic_scores_errors():
    with pytest.raises(ValueError, match="no embedding"):
        maths.ic_scores([["math", "poetry"]], TABLE)
    with pytest.raises(ValueError, match="list of names"):
        maths.ic_scores(["math"], TABLE)
    with pytest.raises(ValueError, match="zero"):
        maths.ic_scores([["a", "b"]], {"a": np.ones(2), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="one dimension"):
        maths.ic_scores([["a", "b"]], {"a": np.ones(2), "b": np.ones(3)})


def test_interdisciplinary_complexity_validation():
    np.testing.assert_allclose(
        maths.interdisciplinary_complexity([1, 3, 2], [0.0, 0.456, 0.2], round_multi=True), [0.0, 1.46, 0.7]
    )
    with pytest.raises(ValueError, match="fewer than 2"):
        maths.interdisciplinary_complexity([1, 2], [0.3, 0.2])
    with pytest.raises(ValueError, match=">= 0"):
        maths.interdisciplinary_complexity([-1, 2], [0.0, 0.2])
    with pytest.raises(ValueError, match="integers"):
        maths.interdisciplinary_complexity([1.5, 2], [0.0, 0.2])
    with pytest.raises(ValueError, match="length"):
        maths.interdisciplinary_complexity([1, 2], [0.0])


def test_ihs():
    np.testing.assert_allclose(maths.ihs([0.2, 1.0], [0.6, 1.5]), [0.4, 1.25])
    with pytest.raises(ValueError, match="length"):
        maths.ihs([0.2], [0.1, 0.3])


# --------------------------------------------------------------------------- IREI
LQ = [10, 20, 0, 5]
LR = [30, 20, 10, 45]
# T = [40, 40, 10, 50] → minmax [0.75, 0.75, 0, 1]; ρ = [3, 1, 0 (Lq = 0), 9] → minmax [1/3, 1/9, 0, 1]


def test_irei_reference_hand():
    expected = [(0.75 + 1 / 3) / 2, (0.75 + 1 / 9) / 2, 0.0, 1.0]
    np.testing.assert_allclose(maths.irei(LQ, LR, fidelity="reference"), expected, atol=1e-15)
    np.testing.assert_allclose(maths.irei(LQ, LR), expected, atol=1e-15)


def test_irei_paper_hand():
    np.testing.assert_allclose(maths.irei(LQ, LR, fidelity="paper"), [3.75, 1.75, 0.0, 10.0], atol=1e-15)


def test_irei_constant_lengths():
    np.testing.assert_array_equal(maths.irei([5, 5], [10, 10]), [0.5, 0.5])
    np.testing.assert_array_equal(maths.irei([5, 5], [10, 10], fidelity="paper"), [2.5, 2.5])


@pytest.mark.parametrize(
    ("lq", "lr", "match"),
    [([1, -2], [3, 4], ">= 0"), ([1, 2], [3, np.nan], "NaN"), ([1, 2], [3], "length"), ([[1]], [[2]], "1-D")],
)
def test_irei_errors(lq, lr, match):
    with pytest.raises(ValueError, match=match):
        maths.irei(lq, lr)


def test_irei_bad_fidelity():
    with pytest.raises(ValueError, match="fidelity"):
        maths.irei([1], [1], fidelity="authors")


# --------------------------------------------------------------------------- SC', EHS
def test_silhouette_component_both_fidelities():
    s = np.array([-1.0, -0.2, 0.0, 1.0])
    np.testing.assert_allclose(maths.silhouette_component(s, "reference"), [0.0, 0.4, 0.5, 1.0])
    np.testing.assert_array_equal(maths.silhouette_component(s, "paper"), s)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        maths.silhouette_component([1.5])


def test_ehs():
    irei = maths.irei(LQ, LR)
    sc = maths.silhouette_component([0.2, -0.4, 0.0, 1.0])
    np.testing.assert_allclose(maths.ehs(irei, sc), (irei + np.array([0.6, 0.3, 0.5, 1.0])) / 2)
    with pytest.raises(ValueError, match="length"):
        maths.ehs([0.1, 0.2], [0.3])
