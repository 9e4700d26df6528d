"""Offline stage-1 quality: a cheap, interpretable heuristic standing in for the reward model.

:class:`HeuristicQualityScorer` is the offline default of docs/METHOD.md "Stage 1 — quality". It uses no neural model
(the full 52,002-row Alpaca pool scores in a few seconds on two CPU cores) and is built so that **obviously broken
pairs rank last**.

Scale
-----
``quality_raw`` lies in **[−5, 5]**, the range of InternLM2-Reward, so it shares the reference normalisation
``clip((r + 5) / 10, 0, 1)`` (``normalization = "reward_clip"``). Two tiers:

* **ok tier, [−2, 5]** — ``raw = clip(base − penalties, −2, 5)`` with
  ``base = −1 + 4.5 · substance + 1.5 · relevance``

  - ``substance = 1 − exp(−words / substance_words)`` (saturating response length, 25 words → 0.63; Chinese text
    counts 1.5 Han characters as a word)
  - ``relevance = min(tfidf_cos / relevance_saturation, 1)``: lexical TF-IDF cosine of query and response (sklearn,
    fitted on the scored pool's queries + responses; lowercase word tokens reduced to their Snowball stems by
    :func:`thtb.scorers.stemming.stem`, English and instruction-boilerplate stop words stemmed alike; Han characters
    are single tokens so Chinese pairs get a character-overlap relevance)
  - mild penalties: ``no-final-punct`` (last prose line of ≥ 8 words ending in a lowercase letter after an earlier
    full sentence) 1.0, ``unbalanced-brackets`` 1.0, ``ai-disclaimer`` (an AI disclaimer after the opening) 1.5,
    ``repetitive`` ``5 · (dup − 0.4)`` for a duplicated-word-trigram share ``dup`` in [0.4, 0.7) (refrains, tables,
    schedules).

* **broken tier, [−5, −2.5]** — when any *broken* flag fires, ``raw = −5 + 2.5 · (b + 2) / 7`` with ``b`` the clipped
  ok-tier value, so broken pairs sort below every unbroken pair and, among themselves, by substance/relevance. Broken
  flags:

  - ``empty`` (empty response or query): exactly −5;
  - ``refusal``: a refusal / "cannot be done by a GPT model" / "No output" opening;
  - ``truncated``: ends with "..."/"…" (≥ 15 words), with a dangling article, conjunction, possessive or copula
    ("the", "and", "their", "is", …), with "," (last line ≥ 3 words) or ":", or an odd number of code fences;
  - ``off-topic``: TF-IDF cosine exactly 0 although the query has ≥ ``offtopic_min_terms`` content terms and the
    response ≥ ``offtopic_min_words`` words, and the query is not an open creative request (leading
    write/compose/invent…, or a story/poem/song/dialogue/… noun) or a URL, where no lexical overlap is expected;
  - ``repetitive``: duplicated-word-trigram share ≥ 0.7 over ≥ 20 words (degenerate loops).

``quality_reason`` names the flags that fired (comma-separated) or, for a clean pair, its dominant features
("substantive, relevant", "short", "low-overlap"). Deterministic: no sampling, and TF-IDF vocabulary order is sorted
by sklearn.

On the 52,002 Alpaca pairs (about 3 s on two CPU cores) the broken tier holds 181 pairs (0.35%): 57 refusals, 56
off-topic, 37 truncated, 28 empty, 4 degenerate repetitions. (The Snowball stemmer, which replaced a hand-written
suffix stripper, matches "tips"/"tip" and "dogs"/"dog": that cleared 15 false off-topic flags and added one, as it
keeps "players" apart from "play".) The lexical off-topic rule is the weakest: some of its hits are list answers that
paraphrase every query word ("Name five historical figures who influenced democracy" → a list of names).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer

from thtb.scorers.base import QualityScorer, check_result
from thtb.scorers.embedder import clean_query
from thtb.scorers.fitted import hand_built_calibration
from thtb.scorers.stemming import stem

log = logging.getLogger(__name__)

RAW_MIN, RAW_MAX = -5.0, 5.0
OK_FLOOR = -2.0
BROKEN_TOP = -2.5

_TOKEN = re.compile(r"(?u)\b[a-z][a-z]+\b|[\u3400-\u4dbf\u4e00-\u9fff]")  # English words, single Han characters
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
HAN_CHARS_PER_WORD = 1.5
# Instruction boilerplate that says nothing about topical relevance.
_BOILERPLATE = (
    "write generate create make give list describe explain provide compose suggest come name "
    "example following given sentence word text paragraph use using identify find output input "
    "new way short brief good best different type kind piece one two three four five six seven "
    "eight nine ten noinput nan tip thing idea please answer question response"
).split()

REFUSAL = re.compile(
    r"""^\W*(?:
        (?:i'?m\s+sorry|i\s+am\s+sorry|sorry|unfortunately|apologies)\b[^\n]{0,120}?
            \b(?:can\s?not|can't|unable|not\s+able|not\s+possible|won't|will\s+not)
      | no\s+output\b | <\s*no\s+output\s*>
      | as\s+an\s+ai\b | as\s+a\s+(?:large\s+)?language\s+model\b | i\s+am\s+an?\s+ai\b | i'm\s+an?\s+ai\b
      | (?:i|we)\s+(?:can\s?not|can't|am\s+unable\s+to|am\s+not\s+able\s+to|do\s+not\s+have\s+the\s+ability
            |don't\s+have\s+the\s+ability)\s+(?:to\s+)?(?:provide|answer|complete|perform|generate|create
            |draw|do|help|assist|access|browse|fulfil|fulfill|process|play|display|show|produce|make
            |see|view|read|open|watch|listen|hear)\b
      | (?:this|the)\s+(?:task|instruction|request|question)\s+(?:cannot|can\s+not|can't|is\s+not\s+possible
            |requires[^\n]{0,80}?\b(?:cannot|can't|not\s+possible|gpt))
      | (?:it\s+is|it's)\s+not\s+possible\s+(?:for\s+(?:me|a\s+gpt|the\s+model|an\s+ai))
      | [^\n]{0,60}?\b(?:gpt|language)\s+model\s+(?:cannot|can\s+not|can't|is\s+unable|is\s+not\s+able
            |will\s+not\s+be\s+able|does\s+not\s+have\s+the\s+ability)
      | [^\n]{0,40}?\b(?:this|it)\s+cannot\s+be\s+(?:done|completed|performed|fulfilled|generated|provided)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_DISCLAIMER = re.compile(
    r"\b(?:as an ai(?: language model)?|as a (?:large )?language model|i am an ai|i'm an ai)\b", re.I
)
# Words that cannot end a complete English sentence (prepositions can: "struggling with").
_DANGLING = frozenset(
    "the a an and or but nor of because their his its my your our whose which is are was were "
    "than if such these those".split()
)
CREATIVE = re.compile(
    r"^\W*(?:please\s+)?(?:write|compose|create|generate|invent|imagine|design|brainstorm|come\s+up|"
    r"tell|construct|produce|develop|make\s+up|draft|describe|simulate|pretend|role-?play)\b"
    r"|\b(?:story|stories|poem|poetry|song|lyrics|haiku|limerick|dialogue|conversation|tweet|slogan|joke|"
    r"riddle|rap|script|screenplay|character|password)\b|https?://",
    re.IGNORECASE,
)
_CODEISH = re.compile(r"[{};]\s*$|^\s*(?:def|class|import|for|if|while|return|print)\b|[=<>]{2}", re.M)
_LISTLINE = re.compile(r"^\s*(?:\d+[.)]|[-*•]|[A-Za-z][.)])\s")


def stemmed_tokens(text: str) -> list[str]:
    """The vectoriser's tokens of lowercased ``text``: English words (≥ 2 letters) as their stems, Han characters as
    they are."""
    return [stem(tok) if tok[0] < "\u3400" else tok for tok in _TOKEN.findall(text)]


def truncation_flags(response: str) -> tuple[bool, bool]:
    """``(strong, mild)`` truncation evidence for a stripped, non-empty response: the ``truncated`` flag and the
    ``no-final-punct`` penalty of the module doc (the last line is prose: not code, a list item, a hashtag or a name;
    the earlier full sentence keeps titles and single phrases unflagged)."""
    n_words = len(response.split())
    if response.count("```") % 2 == 1 or response.endswith(":"):
        return True, False
    if response.endswith(("...", "…")):
        return n_words >= 15, n_words < 15
    last_line = response.rsplit("\n", 1)[-1].strip()
    if response.endswith(","):
        return len(last_line.split()) >= 3, False
    if response[-1].isalpha():
        last_word = last_line.rsplit(None, 1)[-1] if last_line else ""
        if n_words >= 5 and last_word in _DANGLING:
            return True, False
        prose = not _CODEISH.search(last_line) and not _LISTLINE.match(last_line)
        sentences_before = re.search(r"[.!?]\s", response) is not None
        lowercase_word = last_word[:1].islower()  # not a hashtag, name ("- Helen Keller") or acronym
        if prose and sentences_before and lowercase_word and len(last_line.split()) >= 8:
            return False, True
    return False, False


def duplicate_trigram_share(words: list[str]) -> float:
    """Share of word trigrams that repeat an earlier trigram (0 for fewer than 20 words)."""
    if len(words) < 20:
        return 0.0
    trigrams = list(zip(words, words[1:], words[2:]))
    return 1.0 - len(set(trigrams)) / len(trigrams)


def _clean_query(query: object) -> str:
    return clean_query("" if query is None else str(query))


def _clean_response(response: object) -> str:
    return ("" if response is None else str(response)).strip()


def _vectorizer_args() -> dict:
    """The relevance vectoriser's analysis: lowercase, :func:`stemmed_tokens`, stemmed English and instruction
    boilerplate stop words."""
    stop = sorted({stem(w) for w in (*ENGLISH_STOP_WORDS, *_BOILERPLATE)})
    return {"lowercase": True, "tokenizer": stemmed_tokens, "token_pattern": None, "stop_words": stop}


def relevance_terms(queries: Sequence[str], responses: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """The relevance vectoriser's terms of each cleaned query and response (stop words removed), in order."""
    with warnings.catch_warnings():  # stop words are pre-stemmed; sklearn's consistency check is noisy
        warnings.simplefilter("ignore", UserWarning)
        analyze = CountVectorizer(**_vectorizer_args()).build_analyzer()
    return [analyze(q) for q in queries], [analyze(r) for r in responses]


def relevance_counts(queries: Sequence[str], responses: Sequence[str], rows: Sequence[int],
                     terms: tuple[list[list[str]], list[list[str]]] | None = None) -> dict:
    """``term → [document frequency, first appearance]`` over cleaned ``queries`` and ``responses`` (the documents of
    the relevance TF-IDF: every query, then every response), ``rows`` being the pairs' positions in the pool;
    ``terms``: their :func:`relevance_terms`, when already made. A first appearance is
    ``(0 query | 1 response, row, index among the document's distinct terms)``: scikit-learn numbers a fitted
    vocabulary in order of first appearance before sorting it, and that order is the order each document's terms are
    summed in (the last bits of a float32 cosine), so runs over parts keep it."""
    q_terms, r_terms = terms if terms is not None else relevance_terms(queries, responses)
    df: Counter[str] = Counter()
    first: dict[str, tuple[int, int, int]] = {}
    for kind, docs in ((0, q_terms), (1, r_terms)):
        for row, doc in sorted(zip((int(r) for r in rows), docs, strict=True), key=itemgetter(0)):
            distinct = dict.fromkeys(doc)  # the document's terms in order of first use
            df.update(distinct.keys())
            new = set(distinct).difference(first)  # rows in order: a term's first sighting here is its first
            if new:
                for i, term in enumerate(distinct):
                    if term in new:
                        first[term] = (kind, row, i)
    return {term: [df[term], key] for term, key in first.items()}


def merge_relevance_counts(a: dict, b: dict) -> dict:
    """Two parts' :func:`relevance_counts` as one (document frequencies add, the earlier first appearance wins)."""
    out = {term: list(entry) for term, entry in a.items()}
    for term, (df, first) in b.items():
        entry = out.setdefault(term, [0, first])
        entry[0] += df
        entry[1] = min(entry[1], first)
    return out


class RelevancePool:
    """The relevance TF-IDF of a whole pool (vocabulary and IDF), applied to any part of it: equal, byte for byte, to
    scikit-learn's ``TfidfVectorizer(sublinear_tf=True, dtype=float32).fit_transform`` over the pool's queries and
    responses (``idf = ln((1 + 2n) / (1 + df)) + 1`` in float32; tests/test_scorers_offline.py checks it)."""

    def __init__(self, terms_by_first_use: list[str], df: np.ndarray, n_rows: int) -> None:
        self.n_rows = int(n_rows)
        self._vocabulary = {term: i for i, term in enumerate(terms_by_first_use)}
        order = sorted(range(len(terms_by_first_use)), key=terms_by_first_use.__getitem__)  # first-use ids, sorted
        self._alphabetical = np.argsort(order).astype(np.int64)  # first-use id → sorted id
        df = np.asarray(df, dtype=np.float32)[order] + np.float32(1.0)
        self.idf = np.log(np.float32(2 * self.n_rows + 1) / df) + np.float32(1.0)

    @classmethod
    def from_counts(cls, counts: dict, n_rows: int) -> RelevancePool:
        terms = sorted(counts, key=lambda term: counts[term][1])
        return cls(terms, np.array([counts[t][0] for t in terms], dtype=np.int64), n_rows)

    def relevance(self, queries: list[str], responses: list[str],
                  terms: tuple[list[list[str]], list[list[str]]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """TF-IDF cosine per cleaned pair and the number of query content terms (``terms``: their
        :func:`relevance_terms`, when already made)."""
        n = len(queries)
        if not self._vocabulary or n == 0:  # empty vocabulary: nothing but stop words in the whole pool
            return np.zeros(n), np.zeros(n, dtype=int)
        q_terms, r_terms = terms if terms is not None else relevance_terms(queries, responses)
        counts = CountVectorizer(analyzer=lambda terms: terms, vocabulary=self._vocabulary, dtype=np.float32
                                 ).transform(q_terms + r_terms)
        counts.indices = self._alphabetical.take(counts.indices).astype(counts.indices.dtype)  # as sklearn's fit
        tfidf = TfidfTransformer(sublinear_tf=True)
        tfidf.idf_, tfidf.n_features_in_ = self.idf, len(self.idf)
        matrix = tfidf.transform(counts, copy=False)
        q, r = matrix[:n], matrix[n:]
        cosine = np.asarray(q.multiply(r).sum(axis=1), dtype=np.float64).ravel()
        return cosine, np.diff(q.indptr)


class HeuristicQualityScorer(QualityScorer):
    """Offline stage-1 quality heuristic; the module docstring gives the exact rules and weights (its
    ``substance_words``, ``relevance_saturation``, ``offtopic_min_words`` and ``offtopic_min_terms``)."""

    name = "heuristic_quality"
    normalization = "reward_clip"
    calibration = property(lambda self: hand_built_calibration("quality"))
    """Held-out agreement with the labels of ``calibration/`` (``python -m thtb.calibration evaluate --write``)."""

    def __init__(self, substance_words: float = 25.0, relevance_saturation: float = 0.3, offtopic_min_words: int = 60,
                 offtopic_min_terms: int = 4) -> None:
        self.substance_words = float(substance_words)
        self.relevance_saturation = float(relevance_saturation)
        self.offtopic_min_words = int(offtopic_min_words)
        self.offtopic_min_terms = int(offtopic_min_terms)

    # the pool's TF-IDF in two passes (thtb.scorers.base.PoolDependent): scored in parts (Ray blocks), every pair
    # gets the bytes one call over the pool gives
    def pool_counts(self, queries: Sequence[str], responses: Sequence[str], rows: Sequence[int]) -> dict:
        """:func:`relevance_counts` of a part of the pool (``rows``: the pairs' positions in it)."""
        return relevance_counts([_clean_query(q) for q in queries], [_clean_response(r) for r in responses], rows)

    merge_pool_counts = staticmethod(merge_relevance_counts)

    def pool(self, counts: dict, n_rows: int) -> RelevancePool:
        """The pool's vocabulary and IDF from its merged :meth:`pool_counts` (``n_rows`` pairs)."""
        return RelevancePool.from_counts(counts, n_rows)

    def score(self, queries: Sequence[str], responses: Sequence[str], pool: RelevancePool | None = None
              ) -> pd.DataFrame:
        """Columns ``quality_raw`` ([−5, 5]), ``quality_reason``, ``error`` (always ``None``). The TF-IDF is the
        ``pool``'s (:meth:`pool`, for pairs scored in parts), else fitted on these pairs."""
        if len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        start = time.perf_counter()
        qs = [_clean_query(q) for q in queries]
        rs = [_clean_response(r) for r in responses]
        terms = relevance_terms(qs, rs)
        if pool is None:
            pool = RelevancePool.from_counts(relevance_counts(qs, rs, range(len(qs)), terms), len(qs))
        cosine, q_terms = pool.relevance(qs, rs, terms)

        scored = [self._score_one(q, r, float(cos), int(n)) for q, r, cos, n in zip(qs, rs, cosine, q_terms)]
        frame = pd.DataFrame({"quality_raw": [raw for raw, _ in scored], "quality_reason": [why for _, why in scored],
                              "error": [None] * len(qs)})
        log.info("heuristic quality: %d pairs in %.2fs", len(qs), time.perf_counter() - start)
        return check_result(frame, len(qs), ("quality_raw", "quality_reason"), self.name)

    def _score_one(self, query: str, response: str, cosine: float, q_terms: int) -> tuple[float, str]:
        """Apply the tiered rules of the module docstring to one cleaned pair."""
        if not response or not query:
            return RAW_MIN, "empty response" if not response else "empty query"
        words = response.split()
        n_han = len(_HAN.findall(response))
        # Chinese has no spaces: count Han characters as words at ~1.5 characters per word.
        n_words = len(_HAN.sub(" ", response).split()) + int(n_han / HAN_CHARS_PER_WORD) if n_han else len(words)
        substance = 1.0 - np.exp(-n_words / self.substance_words)
        relevance = min(cosine / self.relevance_saturation, 1.0)
        base = -1.0 + 4.5 * substance + 1.5 * relevance

        broken: list[str] = []
        mild: list[str] = []
        penalty = 0.0
        if REFUSAL.match(response[:300]):
            broken.append("refusal")
        elif _DISCLAIMER.search(response):
            mild.append("ai-disclaimer")
            penalty += 1.5
        strong_trunc, mild_trunc = truncation_flags(response)
        if strong_trunc:
            broken.append("truncated")
        elif mild_trunc:
            mild.append("no-final-punct")
            penalty += 1.0
        opens = sum(response.count(c) for c in "([{（【")  # full-width forms count as their ASCII pair
        closes = sum(response.count(c) for c in ")]}）】")
        if opens > closes and not strong_trunc:
            mild.append("unbalanced-brackets")
            penalty += 1.0
        dup = duplicate_trigram_share([w.lower() for w in words])
        if dup >= 0.7:
            broken.append("repetitive")
        elif dup >= 0.4:
            mild.append("repetitive")
            penalty += 5.0 * (dup - 0.4)
        if cosine == 0.0 and n_words >= self.offtopic_min_words and q_terms >= self.offtopic_min_terms \
                and not CREATIVE.match(query):
            broken.append("off-topic")

        ok_value = float(np.clip(base - penalty, OK_FLOOR, RAW_MAX))
        if broken:
            raw = RAW_MIN + (BROKEN_TOP - RAW_MIN) * (ok_value - OK_FLOOR) / (RAW_MAX - OK_FLOOR)
            return raw, ", ".join(broken + mild)
        if not mild:
            mild.append("short" if n_words < 5 else "substantive" if n_words >= 50 else "brief")
            mild.append("relevant" if relevance >= 0.5 else "low-overlap" if cosine == 0.0 else "some-overlap")
        return ok_value, ", ".join(mild)
