"""Query-text preprocessing and TF-IDF for the stage-3 silhouette.

Preprocessing (METHOD.md, stage 3): a text with at least 80% ASCII characters is lowercased, its
punctuation and digits become spaces and runs of whitespace collapse to one space; any other text
is word-segmented with jieba (Chinese). The vectoriser is ``TfidfVectorizer(max_features=100)`` with
scikit-learn's defaults otherwise.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

ASCII_THRESHOLD = 0.8
"""A text is treated as English (ASCII path) when at least this fraction of its characters is ASCII."""

_ASCII_TABLE = str.maketrans({c: " " for c in string.punctuation + string.digits})
"""``str.translate`` table: ASCII punctuation (``string.punctuation``, underscore included) and ASCII
digits become spaces. Non-ASCII characters (at most 20% of an ASCII-path text) are kept as they
are; ``TfidfVectorizer``'s token pattern ``\\b\\w\\w+\\b`` splits on non-word characters anyway."""

_jieba = None


def _get_jieba():
    """Import jieba lazily (its dictionary load costs ~0.5–1 s) and silence its start-up log."""
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return _jieba


def ascii_ratio(text: str) -> float:
    """Fraction of the characters of ``text`` that are ASCII (1.0 for an empty text)."""
    if not text or text.isascii():
        return 1.0
    return sum(ch < "\x80" for ch in text) / len(text)


def is_ascii_text(text: str) -> bool:
    """True when at least :data:`ASCII_THRESHOLD` of the characters of ``text`` are ASCII."""
    return ascii_ratio(text) >= ASCII_THRESHOLD


def preprocess_query(text: str) -> str:
    """Normalise one query for TF-IDF.

    * ≥ 80% ASCII characters: ``lower()``, ASCII punctuation and digits → space, whitespace runs →
      one space, stripped: ``"Add 2+3, then DIVIDE!"`` → ``"add then divide"``.
    * otherwise: ``" ".join(jieba.lcut(text))`` (jieba imported on first use).
    """
    if not isinstance(text, str):
        raise ValueError(f"query text must be str, got {type(text).__name__}: {text!r}")
    if is_ascii_text(text):
        return " ".join(text.lower().translate(_ASCII_TABLE).split())
    return " ".join(_get_jieba().lcut(text))


def preprocess_queries(texts: Sequence[str]) -> list[str]:
    """:func:`preprocess_query` over a list; the ASCII path runs as one list comprehension with a
    single ``str.translate`` table (≈1 µs per short query), jieba is loaded only if needed."""
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{len(bad)} query text(s) are not str, first at position(s) {bad[:10]}")
    table = _ASCII_TABLE
    out = [" ".join(t.lower().translate(table).split()) if t.isascii() else None for t in texts]
    for i, t in enumerate(texts):
        if out[i] is None:
            out[i] = preprocess_query(t)
    return out


def tfidf_matrix(texts: Sequence[str], max_features: int = 100, *, preprocess: bool = True) -> sp.csr_matrix:
    """TF-IDF of the (preprocessed) query texts: ``TfidfVectorizer(max_features=max_features)``.

    scikit-learn defaults otherwise: lowercase, token pattern ``\\b\\w\\w+\\b``, smooth IDF
    ``idf = ln((1 + n) / (1 + df)) + 1``, sublinear TF off, rows L2-normalised. A row with none of the
    ``max_features`` most frequent terms is all-zero (see
    :func:`thtb.maths.silhouette.silhouette_samples_cosine` for how such rows are scored).

    Parameters
    ----------
    texts : sequence of str
    max_features : int, default 100
    preprocess : bool, default True
        Apply :func:`preprocess_queries` first (pass False if the texts are already preprocessed).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n_terms), float64, with n_terms ≤ max_features.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not isinstance(max_features, int | np.integer) or isinstance(max_features, bool) or max_features < 1:
        raise ValueError(f"max_features must be a positive integer, got {max_features!r}")
    docs = preprocess_queries(texts) if preprocess else list(texts)
    if not docs:
        raise ValueError("tfidf_matrix needs at least one text")
    try:
        X = TfidfVectorizer(max_features=int(max_features)).fit_transform(docs)
    except ValueError as exc:  # "empty vocabulary; perhaps the documents only contain stop words"
        raise ValueError(f"cannot build TF-IDF features from {len(docs)} text(s): {exc}") from exc
    return sp.csr_matrix(X, dtype=np.float64)
