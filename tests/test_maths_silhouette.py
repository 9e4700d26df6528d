"""thtb.maths.text / silhouette: preprocessing, TF-IDF, K-Means and the exact cosine silhouette."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import silhouette_samples

from tests.helpers import TRICKY
from thtb import maths


def brute_silhouette(X, labels, zero_self=0.0):
    """O(n²) textbook silhouette with cosine distance (zero vector: distance 1 to all others)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    U = np.divide(X, norms[:, None], out=np.zeros_like(X), where=norms[:, None] > 0)
    D = 1.0 - U @ U.T
    np.fill_diagonal(D, np.where(norms > 0, 0.0, zero_self))
    labels = np.asarray(labels)
    s = np.zeros(len(labels))
    for i in range(len(labels)):
        own = labels == labels[i]
        if own.sum() == 1:
            continue
        a = D[i, own].sum() / (own.sum() - 1)
        b = min(D[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        s[i] = 0.0 if max(a, b) == 0 else (b - a) / max(a, b)
    return s


def random_case(seed, n=240, d=30, k=9, sparse=True):
    """Non-normalised non-negative rows, some all-zero, labels with two singleton clusters."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.12, random_state=seed, format="csr") * rng.uniform(0.5, 20)
    X = X.tolil()
    for r in rng.choice(n, size=8, replace=False):
        X[r, :] = 0
    X = X.tocsr()
    labels = rng.integers(0, k, size=n) * 10 + 3  # non-contiguous label values
    labels[rng.choice(n, size=2, replace=False)] = [-1, 999]  # two singleton clusters
    zero_rows = np.flatnonzero(np.diff(X.indptr) == 0)
    assert zero_rows.size >= 8
    return (X if sparse else X.toarray()), labels


# --------------------------------------------------------------------------- exact silhouette
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_silhouette_matches_sklearn(seed, sparse):
    X, labels = random_case(seed, sparse=sparse)
    assert maths.sklearn_zero_row_self_distance(X.shape[0]) == 0.0  # one block at this size
    ref = silhouette_samples(X, labels, metric="cosine")
    ours = maths.silhouette_samples_cosine(X, labels)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours, brute_silhouette(X.toarray() if sparse else X, labels), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sparse", [True, False])
def test_exact_silhouette_matches_chunked_sklearn(sparse):
    X, labels = random_case(7, sparse=sparse)
    with sklearn.config_context(working_memory=0.2), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert maths.sklearn_zero_row_self_distance(X.shape[0]) == 1.0
        ref = silhouette_samples(X, labels, metric="cosine")
    ours = maths.silhouette_samples_cosine(X, labels, zero_row_self_distance=1.0, chunk_rows=17)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_sklearn_zero_row_convention_threshold():
    assert maths.sklearn_zero_row_self_distance(11585) == 0.0  # default working_memory = 1024 MiB
    assert maths.sklearn_zero_row_self_distance(11586) == 1.0


def test_zero_row_conventions_by_hand():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [0.0, 0.0]])
    labels = [0, 0, 0, 1, 1, 1]
    s0 = maths.silhouette_samples_cosine(X, labels)
    s1 = maths.silhouette_samples_cosine(X, labels, zero_row_self_distance=1.0)
    assert s0[0] == 0.0 and s0[5] == 0.0  # a = b = 1
    assert s1[0] == pytest.approx(-1 / 3) and s1[5] == pytest.approx(-1 / 3)  # a = 3/2, b = 1
    np.testing.assert_allclose(s0[1:5], s1[1:5], atol=1e-15)
    np.testing.assert_allclose(s0, brute_silhouette(X, labels), atol=1e-12)
    np.testing.assert_allclose(s1, brute_silhouette(X, labels, zero_self=1.0), atol=1e-12)


def test_exact_silhouette_tiny_hand_fixture():
    # A = {(1,0), (0,1)}, B = {(1,1), (-1,0)}: for x = (1,0), a = 1, b = (1 − 1/√2 + 2)/2
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    s = maths.silhouette_samples_cosine(X, ["A", "A", "B", "B"])
    b = (3 - 1 / np.sqrt(2)) / 2
    assert s[0] == pytest.approx((b - 1) / b, abs=1e-15)


def test_exact_silhouette_both_distances_zero_and_singletons():
    X = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    labels = [0, 0, 1, 1, 2]  # every distance within {0..3} is 0; the last point is a singleton
    s = maths.silhouette_samples_cosine(X, labels)
    np.testing.assert_allclose(s, silhouette_samples(X, labels, metric="cosine"), atol=1e-12)
    assert s[4] == 0.0 and np.all(s[:4] == 0.0)


@pytest.mark.parametrize(
    ("X", "labels", "match"),
    [
        (np.eye(3), [0, 0, 0], "Number of labels is 1"),
        (np.eye(3), [0, 1, 2], "Number of labels is 3"),
        (np.eye(3), [0, 1], r"shape \(3,\)"),
        (np.array([[1.0, np.nan], [1, 0], [0, 1]]), [0, 0, 1], "NaN"),
    ],
)
def test_exact_silhouette_validation(X, labels, match):
    with pytest.raises(ValueError, match=match):
        maths.silhouette_samples_cosine(X, labels)


def test_exact_silhouette_rejects_other_conventions():
    with pytest.raises(ValueError, match="zero_row_self_distance"):
        maths.silhouette_samples_cosine(np.eye(3), [0, 0, 1], zero_row_self_distance=0.5)


# --------------------------------------------------------------------------- preprocessing, TF-IDF
def authors_rule(text: str) -> str:
    """docs/METHOD.md "Preprocessing the queries": the authors' ``preprocess_text``, written out plainly."""
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    if text and ascii_chars > len(text) * 0.8:
        text = re.sub(r"[^\w\s]|[\d]", " ", text.lower())
        return re.sub(r"\s+", " ", text).strip()
    import jieba

    return " ".join(jieba.cut(text))


@pytest.mark.parametrize("text", TRICKY)
def test_preprocess_matches_authors_rule(text):
    assert maths.preprocess_query(text) == authors_rule(text)
    assert maths.preprocess_queries([text]) == [authors_rule(text)]


def test_preprocess_every_character():
    """Every BMP character, 4 to a text padded with ASCII letters (English path), and every ASCII
    character alone (the fast path's translate table): same as the plain statement."""
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    texts = ["abcdefghijklmnopqrst" + "".join(chars[i : i + 4]) for i in range(0, len(chars), 4)]
    texts += [f"a{chr(c)}b {chr(c)}" for c in range(128)]
    assert maths.preprocess_queries(texts) == [authors_rule(t) for t in texts]


def test_preprocess_ascii():
    assert maths.preprocess_query("Add 2+3, then DIVIDE!\n\tby_7   (now)") == "add then divide by_ now"
    assert maths.preprocess_query("Explain X.\nnan") == "explain x nan"
    assert maths.preprocess_query("snake_case_name") == "snake_case_name"
    assert maths.preprocess_query("  ") == ""
    assert maths.preprocess_query("") == ""


def test_preprocess_mostly_ascii_drops_non_ascii_punctuation_and_digits():
    text = "Café “quoted” text here ３"  # 21 of 25 characters ASCII (0.84)
    assert maths.is_ascii_text(text)
    assert maths.preprocess_query(text) == "café quoted text here"
    assert maths.ascii_ratio("abcd中") == pytest.approx(0.8)
    assert not maths.is_ascii_text("abcd中")  # exactly 80%: the jieba path (strictly more is needed)
    assert maths.is_ascii_text("abcdefghi中")
    assert not maths.is_ascii_text("") and maths.ascii_ratio("") == 0.0


def test_preprocess_chinese_uses_jieba():
    import jieba

    text = "我爱北京天安门，请解释一下。"
    assert not maths.is_ascii_text(text)
    assert maths.preprocess_query(text) == " ".join(jieba.cut(text))
    assert maths.preprocess_query("我爱北京天安门") == "我 爱 北京 天安门"
    assert maths.preprocess_query("abc中文") == " ".join(jieba.cut("abc中文"))  # 60% ASCII
    assert maths.preprocess_query("abcd中") == " ".join(jieba.cut("abcd中"))  # 80% ASCII


def test_preprocess_queries_batch_equals_single():
    texts = ["Hello, World 42!", "我爱北京天安门", "Mostly English ü text here", "a-b_c"]
    assert maths.preprocess_queries(texts) == [maths.preprocess_query(t) for t in texts]
    with pytest.raises(ValueError, match="not str"):
        maths.preprocess_queries(["ok", None])
    with pytest.raises(ValueError, match="single string"):
        maths.preprocess_queries("text")


def test_tfidf_matrix_matches_sklearn_and_has_zero_rows():
    texts = [f"Explain topic {i % 7} of alpha beta gamma." for i in range(30)] + ["12345 !!!", "zebra"]
    X = maths.tfidf_matrix(texts, max_features=4)
    assert sp.isspmatrix_csr(X) and X.dtype == np.float64 and X.shape == (32, 4)
    ref = TfidfVectorizer(max_features=4).fit_transform(maths.preprocess_queries(texts))
    np.testing.assert_array_equal(X.toarray(), ref.toarray())
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[:30], 1.0)
    assert norms[30] == 0.0 and norms[31] == 0.0  # no known term → all-zero row


def test_tfidf_matrix_errors():
    with pytest.raises(ValueError, match="TF-IDF"):
        maths.tfidf_matrix(["1 2 3", "!!"])
    with pytest.raises(ValueError, match="max_features"):
        maths.tfidf_matrix(["a b"], max_features=0)


# --------------------------------------------------------------------------- K-Means, pipeline
TOPICS = ["apple banana fruit salad", "python code function bug", "ocean wave boat sailing",
          "violin music concert orchestra"]


def corpus(n_per=15, seed=0):
    rng = np.random.default_rng(seed)
    filler = "the a of and to in please describe explain write list".split()
    out = []
    for i in range(n_per):
        for t in TOPICS:
            words = t.split() + list(rng.choice(filler, size=3))
            rng.shuffle(words)
            out.append(" ".join(words) + f" {i}.")
    return out


@pytest.mark.parametrize("k", [1, 0, 60, 100, 2.5, True])
def test_kmeans_k_validation_names_config_key(k):
    X = maths.tfidf_matrix(corpus())
    with pytest.raises(ValueError, match="selection.extrinsic.k"):
        maths.kmeans_labels(X, k)
    with pytest.raises(ValueError, match="selection.extrinsic.k"):
        maths.silhouette_scores(corpus(), k)


def test_kmeans_deterministic():
    X = maths.tfidf_matrix(corpus())
    a, b = maths.kmeans_labels(X, 4), maths.kmeans_labels(X.copy(), 4)
    assert a.dtype == np.int64 and a.tobytes() == b.tobytes()
    assert len(np.unique(a)) == 4


def test_silhouette_scores_reference_and_paper():
    texts = corpus()
    ref = maths.silhouette_scores(texts, 4, fidelity="reference")
    pap = maths.silhouette_scores(texts, 4, fidelity="paper")
    assert ref.labels.tobytes() == pap.labels.tobytes()
    X = maths.tfidf_matrix(texts)
    np.testing.assert_allclose(ref.s, silhouette_samples(X, ref.labels, metric="cosine"), atol=1e-9)
    np.testing.assert_allclose(ref.sc, (ref.s + 1) / 2)
    np.testing.assert_array_equal(pap.sc, pap.s)
    assert ref.n_clusters == 4 and ref.cluster_sizes.sum() == len(texts) and ref.k == 4
    assert ref.singleton_policy == "zero_all" and pap.singleton_policy == "sklearn"
    assert ref.warnings == [] and ref.s.mean() > 0.3  # well-separated topics
    again = maths.silhouette_scores(list(texts), 4)
    assert again.labels.tobytes() == ref.labels.tobytes() and again.s.tobytes() == ref.s.tobytes()


def test_silhouette_scores_singleton_policies():
    texts = corpus() + ["zebra quantum"]
    with pytest.warns(UserWarning, match="singleton"):
        zero_all = maths.silhouette_scores(texts, 5, fidelity="reference")
    sizes = zero_all.cluster_sizes
    assert sorted(sizes.tolist())[0] == 1
    assert np.all(zero_all.s == 0.0) and np.all(zero_all.sc == 0.5)
    assert any("every silhouette set to 0" in w for w in zero_all.warnings)
    with pytest.warns(UserWarning, match="singleton"):
        skl = maths.silhouette_scores(texts, 5, fidelity="reference", singleton_policy="sklearn")
    lone = np.flatnonzero(sizes[skl.labels] == 1)
    assert lone.tolist() == [len(texts) - 1] and skl.s[lone[0]] == 0.0
    assert skl.s[:-1].mean() > 0.3
    with pytest.warns(UserWarning, match="singleton"):
        pap = maths.silhouette_scores(texts, 5, fidelity="paper")
    np.testing.assert_array_equal(pap.s, skl.s)


def test_silhouette_scores_errors():
    with pytest.raises(ValueError, match="singleton_policy"):
        maths.silhouette_scores(corpus(), 4, singleton_policy="drop")
    with pytest.raises(ValueError, match="fidelity"):
        maths.silhouette_scores(corpus(), 4, fidelity="exact")
    with pytest.raises(ValueError, match="distinct cluster"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maths.silhouette_scores(["same text here"] * 10, 3)


def test_silhouette_scores_zero_rows_by_fidelity():
    """Queries with no vocabulary term (all-zero TF-IDF rows): reference −1/|C| (the authors'
    self distance 1), paper 0 (the metric convention, = sklearn on one block); other rows agree."""
    texts = corpus() + ["12345 !!!", "?? 42 ::"]  # both preprocess to "": all-zero rows
    zero = np.zeros(len(texts), dtype=bool)
    zero[-2:] = True
    ref = maths.silhouette_scores(texts, 4, fidelity="reference")
    pap = maths.silhouette_scores(texts, 4, fidelity="paper")
    assert ref.n_zero_rows == pap.n_zero_rows == 2
    assert ref.labels.tobytes() == pap.labels.tobytes()
    size = ref.cluster_sizes[ref.labels]
    np.testing.assert_allclose(ref.s[zero], -1.0 / size[zero], rtol=0, atol=1e-15)
    assert np.all(pap.s[zero] == 0.0)
    np.testing.assert_array_equal(ref.s[~zero], pap.s[~zero])
    X = maths.tfidf_matrix(texts)
    assert (np.diff(X.indptr) == 0).tolist() == zero.tolist()
    np.testing.assert_allclose(pap.s, silhouette_samples(X, pap.labels, metric="cosine"), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ref.s, brute_silhouette(X.toarray(), ref.labels, zero_self=1.0), rtol=0, atol=1e-12)
    override = maths.silhouette_scores(texts, 4, fidelity="reference", zero_row_self_distance=0.0)
    np.testing.assert_array_equal(override.s, pap.s)
