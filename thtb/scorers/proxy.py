"""Offline proxies fitted on the calibration set: small trained heads over named features.

The hand-built offline scorers (:mod:`~thtb.scorers.bloom`, :mod:`~thtb.scorers.disciplines`,
:mod:`~thtb.scorers.quality`) were written from reading; these heads are fitted to the labels of 1,002 Alpaca
pairs (``calibration/``, the ``train`` split; the 538 ``test`` pairs are held out), written by AI assistant
sessions reading each pair under ``calibration/README.md``'s guideline, and stay CPU-fast and download-free.
Each one's parameters are a versioned JSON resource (``thtb/resources/proxies/{bloom,disciplines,quality}.json``:
weights, feature names, the hyper-parameters cross-validation inside the train split chose and its figures, the
digest of the training labels; for the Bloom and discipline heads, the embedder space their features come from,
:meth:`~thtb.scorers.base.Embedder.space`, and a proxy given an embedder of another space refuses it).
:mod:`thtb.calibration` fits them (``fit``, never reading the test split; or
``fit --against <run>``, to the outputs of a run's real scorers, into a parameter folder of its own used by
``reward.params_path=<dir>/quality.json``, ``judge.bloom.params_path=…``, ``judge.disciplines.params_path=…``) and
measures them apart (``evaluate --write``: figures keyed by :func:`thtb.scorers.fitted.params_digest`, so a record
left behind by a refit is detected, not reported). The selection cache keys cover these resources like any other (a
``params_path`` outside the package by its sha256, :func:`thtb.scorers.fitted.fitted_params_identity`), and
:attr:`calibration` puts what the proxy imitates and the figures into every selection summary next to the
scorer's name.

* :class:`ProxyBloomScorer` — multinomial logistic regression over the named features in
  :data:`BLOOM_FEATURES`: the Bloom lexicon's logits for the six levels
  (:meth:`LexiconBloomClassifier.lexical_evidence`, rules 1–4 there), the query's best cosine to each level's
  descriptions (rule 5), log word counts of query and response, and whether the query has an input.
  ``bloom_level`` = the most probable level; ``bloom_score`` = the probability-weighted mean of the levels' mean
  labelled scores, clipped into the chosen level's band. The reason names the lexicon evidence and the level's
  probability.
* :class:`ProxyDisciplineTagger` — one logistic head per discipline the labels name at least ``min_count`` times
  in the train split, over the query's MiniLM embedding (the same vector the Bloom features use); keeps the most
  probable discipline and every other one with probability ≥ ``threshold``, at most ``max_disciplines``.
  Descriptions come from the discipline catalogue (``disciplines.yaml``), or, for the few names the labels use
  that it lacks (``business``, ``engineering``…), from the resource itself.
* :class:`ProxyQualityScorer` — ridge regression over the named features of the pair in
  :data:`QUALITY_FEATURES` (the hand-built heuristic's raw score, lengths, digit shares, truncation / refusal /
  repetition flags, whether the query is creative or asks for a computation); ``quality_raw`` is the predicted
  1–10 rating, normalised by min–max over the stage input. The reason names the two largest contributions. Pairs
  the hand-built rules call broken (empty, refusal, truncated, off-topic, degenerate repetition: 0.35% of Alpaca,
  too rare in the calibration sample to fit) keep the rules' broken-tier value in [−5, −2.5], below every
  predicted rating, as the rubric's 1–3 would put them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from thtb.scorers import quality as heuristic
from thtb.scorers.base import (BLOOM_BANDS, BLOOM_LEVELS, BloomScorer, DisciplineTagger, Embedder, QualityScorer,
                               check_result)
from thtb.scorers.bloom import LexiconBloomClassifier
from thtb.scorers.disciplines import load_catalogue, tag_rows, top_labels
from thtb.scorers.embedder import clean_query
from thtb.scorers.fitted import (LABELS_PROVENANCE, cv_figures, held_out_figures, held_out_record_for,
                                 is_fitted_against, load_params, proxy_path)

BLOOM_FEATURES = (*(f"lexicon_{lv.lower()}" for lv in BLOOM_LEVELS),
                  *(f"similarity_{lv.lower()}" for lv in BLOOM_LEVELS),
                  "log_query_words", "log_response_words", "has_input")
QUALITY_FEATURES = ("heuristic_raw", "log_response_words", "log_query_words", "query_has_input",
                    "response_digit_share", "query_digit_share", "response_lines", "truncated", "no_final_punct",
                    "repetition", "refusal", "creative_query", "empty_response", "computation_query",
                    "query_has_numbers")
_COMPUTATION = re.compile(r"\b(?:calculate|compute|solve|convert|how many|what is the (?:sum|product|value|"
                          r"result)|find the)\b", re.IGNORECASE)
_NUMBERS = re.compile(r"[=+*/^]|\d")


def _words(text: str) -> int:
    return len(text.split())


def split_query(query: str) -> tuple[str, bool]:
    """The cleaned query and whether it carries an input (a second line after the instruction)."""
    text = clean_query("" if query is None else str(query))
    return text, "\n" in text.strip()


class _Calibrated:
    """Shared by the proxies: the parameters (the head's weights and any feature scaler as arrays) and the figures
    a summary shows."""

    params: dict[str, Any]
    params_path: Path

    def _load(self, params_path: str | Path | None, kind: str) -> None:
        self.params_path = Path(params_path) if params_path else proxy_path(kind)
        self.params = load_params(self.params_path, kind)
        self.coef, self.intercept = (np.asarray(self.params["model"][k]) for k in ("coef", "intercept"))
        if "scaler" in self.params:
            self.mean, self.scale = (np.asarray(self.params["scaler"][k]) for k in ("mean", "scale"))

    def _check_embedder(self, embedder: Embedder) -> None:
        """Refuse an embedder whose vectors are not the ones the head was fitted over (its weights would read
        another model's coordinates: wrong scores with no error, or a shape error far from the cause)."""
        fitted, given = self.params.get("embedder"), embedder.space()
        if fitted and given and fitted != given:
            raise ValueError(f"{self.params_path}: the {self.params['kind']} proxy was fitted over the embedder "
                             f"{fitted!r}, this run's is {given!r}; run it with that embedder (the shipped proxies: "
                             "embedder=minilm_offline, as scoring=offline sets)")

    @property
    def calibration(self) -> dict[str, Any]:
        """What the selection summary records beside the scorer's name: what the proxy imitates (the calibration
        readers, or a run's real scorer with that run and its score card's digest), the fit's provenance (model type
        and chosen hyper-parameters, not the weights), the cross-validated figures of the chosen setting, and
        :func:`~thtb.scorers.fitted.held_out_figures` for exactly these parameters."""
        keys = ("kind", "fitted_on", "n_train", "train_labels_sha256")
        model = {k: v for k, v in self.params["model"].items() if k not in ("coef", "intercept")}
        cv = self.params.get("cv") or {}
        if is_fitted_against(self.params):
            source = self.params["source"]
            imitates = {**self.params["imitates"], "run": source["run"],
                        "score_card_sha256": source["score_card_sha256"]}
        else:
            imitates = {"role": "readers", "labels": LABELS_PROVENANCE}
        return {**{k: self.params.get(k) for k in keys}, "imitates": imitates,
                "params": None if self.params_path == proxy_path(self.params["kind"]) else str(self.params_path),
                "model": model,
                "cv": {**{k: cv.get(k) for k in ("folds", "seed", "choose")}, "figures": cv_figures(self.params)},
                **held_out_figures(self.params["kind"], self.params,
                                   held_out_record_for(self.params_path, self.params) or {})}


# --------------------------------------------------------------------------------------------------- Bloom
def bloom_features(lexicon: LexiconBloomClassifier, queries: Sequence[str], responses: Sequence[str]
                   ) -> tuple[np.ndarray, list[list[str]]]:
    """``(n, len(BLOOM_FEATURES))`` features in :data:`BLOOM_FEATURES` order for non-empty cleaned queries, and
    each query's fired lexicon evidence (strongest first, for the reason)."""
    texts = [split_query(q) for q in queries]
    sims = lexicon.level_similarity(lexicon.embedder.encode([t for t, _ in texts]))
    evidence = [lexicon.lexical_evidence(t.split("\n", 1)[0]) for t, _ in texts]
    lex = np.array([logits for logits, _ in evidence]).reshape(len(texts), 6)
    extra = np.array([[np.log1p(_words(t)), np.log1p(_words(str(r or ""))), float(has_input)]
                      for (t, has_input), r in zip(texts, responses, strict=True)]).reshape(len(texts), 3)
    return np.hstack([lex, sims, extra]), [fired for _, fired in evidence]


class ProxyBloomScorer(_Calibrated, BloomScorer):
    """Bloom level and 1–21 score from a logistic head fitted on the calibration set (module doc)."""

    name = "proxy_bloom"

    def __init__(self, embedder: Embedder, params_path: str | Path | None = None) -> None:
        self._load(params_path, "bloom")
        if tuple(self.params["features"]) != BLOOM_FEATURES:
            raise ValueError(f"bloom proxy features {self.params['features']} are not {list(BLOOM_FEATURES)}")
        self._check_embedder(embedder)
        self.lexicon = LexiconBloomClassifier(embedder)
        self.embedder = embedder
        self.level_scores = np.asarray(self.params["level_mean_scores"])

    def predict_proba(self, queries: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, list[list[str]]]:
        """Level probabilities ``(n, 6)`` and each query's fired lexicon evidence."""
        features, evidence = bloom_features(self.lexicon, queries, responses)
        return softmax((features - self.mean) / self.scale @ self.coef.T + self.intercept, axis=1), evidence

    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        if len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        n = len(queries)
        ok = [i for i, q in enumerate(queries) if split_query(q)[0]]
        levels: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        reasons: list[str | None] = [None] * n
        errors: list[str | None] = ["empty query"] * n
        if ok:
            probs, evidence = self.predict_proba([queries[i] for i in ok], [responses[i] for i in ok])
            for row, i in enumerate(ok):
                k = int(np.argmax(probs[row]))
                level = BLOOM_LEVELS[k]
                lo, hi = BLOOM_BANDS[level]
                expected = float(probs[row] @ self.level_scores)
                levels[i], errors[i] = level, None
                scores[i] = round(min(max(expected, lo), hi), 3)
                cue = "; ".join(evidence[row][:2]) if evidence[row] else "no lexicon cue"
                reasons[i] = f"{level} p={probs[row][k]:.2f} (calibrated head; {cue})"
        frame = pd.DataFrame({"bloom_level": levels, "bloom_score": scores, "bloom_reason": reasons,
                              "error": errors})
        return check_result(frame, n, ("bloom_level", "bloom_score", "bloom_reason"), self.name)


# --------------------------------------------------------------------------------------------- disciplines
class ProxyDisciplineTagger(_Calibrated, DisciplineTagger):
    """Disciplines from per-discipline logistic heads over the query embedding (module doc)."""

    name = "proxy_disciplines"

    def __init__(self, embedder: Embedder, params_path: str | Path | None = None,
                 catalogue_path: str | Path | None = None) -> None:
        self._load(params_path, "disciplines")
        self._check_embedder(embedder)
        self.embedder = embedder
        self.labels: tuple[str, ...] = tuple(self.params["labels"])
        self.threshold = float(self.params["threshold"])
        self.max_disciplines = int(self.params["max_disciplines"])
        catalogue = load_catalogue(catalogue_path)
        self.descriptions = {**{d: e["description"] for d, e in catalogue.items()}, **self.params["descriptions"]}
        missing = [d for d in self.labels if d not in self.descriptions]
        if missing:
            raise ValueError(f"the discipline proxy names {missing}, which neither the catalogue nor its own "
                             "descriptions describe")

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray:
        vectors = self.embedder.encode([split_query(q)[0] for q in queries])
        return 1.0 / (1.0 + np.exp(-(vectors @ self.coef.T + self.intercept)))

    def select(self, probs: np.ndarray) -> list[str]:
        return top_labels(probs, self.labels, self.threshold, self.max_disciplines)

    def tag(self, queries: Sequence[str]) -> pd.DataFrame:
        return tag_rows(self, queries, lambda ok: self.predict_proba([queries[i] for i in ok]))

    def describe(self, disciplines: Sequence[str]) -> dict[str, str]:
        """The catalogue's description of each discipline, or the proxy's own for the few the catalogue lacks."""
        unknown = [d for d in disciplines if d not in self.descriptions]
        if unknown:
            raise KeyError(f"discipline(s) with no description: {', '.join(map(repr, unknown))}")
        return {d: self.descriptions[d] for d in disciplines}


# ------------------------------------------------------------------------------------------------- quality
def quality_features(queries: Sequence[str], responses: Sequence[str],
                     heuristic_raw: Sequence[float] | None = None) -> np.ndarray:
    """``(n, len(QUALITY_FEATURES))`` features in :data:`QUALITY_FEATURES` order (no model: the 52k Alpaca pool
    in seconds); ``heuristic_raw``: the hand-built scorer's ``quality_raw`` for these pairs when already computed."""
    raw = heuristic_raw if heuristic_raw is not None else \
        heuristic.HeuristicQualityScorer().score(list(queries), list(responses))["quality_raw"].to_numpy()
    rows = []
    for q, r, h in zip(queries, responses, raw, strict=True):
        text, has_input = split_query(q)
        resp = ("" if r is None else str(r)).strip()
        words = resp.split()
        strong, mild = heuristic.truncation_flags(resp) if resp else (False, False)
        rows.append([
            h, np.log1p(len(words)), np.log1p(_words(text)), float(has_input),
            sum(c.isdigit() for c in resp) / max(len(resp), 1), sum(c.isdigit() for c in text) / max(len(text), 1),
            float(resp.count("\n")), float(strong), float(mild),
            heuristic.duplicate_trigram_share([w.lower() for w in words]),
            float(bool(heuristic.REFUSAL.match(resp[:300]))), float(bool(heuristic.CREATIVE.match(text))),
            float(not resp), float(bool(_COMPUTATION.search(text))), float(bool(_NUMBERS.search(text))),
        ])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(QUALITY_FEATURES))


class ProxyQualityScorer(_Calibrated, QualityScorer):
    """A 1–10 quality rating predicted by ridge regression on named pair features (module doc)."""

    name = "proxy_quality"
    normalization = "minmax"

    def __init__(self, params_path: str | Path | None = None) -> None:
        self._load(params_path, "quality")
        if tuple(self.params["features"]) != QUALITY_FEATURES:
            raise ValueError(f"quality proxy features {self.params['features']} are not {list(QUALITY_FEATURES)}")

    # the hand-built scorer's TF-IDF relevance (a feature) is fitted on the pool: scored in parts, the pool's
    # statistics come first (thtb.scorers.base.PoolDependent)
    pool_counts = heuristic.HeuristicQualityScorer.pool_counts
    merge_pool_counts = staticmethod(heuristic.merge_relevance_counts)
    pool = heuristic.HeuristicQualityScorer.pool

    def score(self, queries: Sequence[str], responses: Sequence[str], pool: Any = None) -> pd.DataFrame:
        if len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        rules = heuristic.HeuristicQualityScorer().score(list(queries), list(responses), pool=pool)
        features = quality_features(queries, responses, rules["quality_raw"].to_numpy())
        contributions = (features - self.mean) / self.scale * self.coef
        predicted = contributions.sum(axis=1) + self.intercept
        reasons = []
        for row in contributions:
            top = np.argsort(-np.abs(row))[:2]
            reasons.append("predicted rating: " + ", ".join(f"{QUALITY_FEATURES[j]} {row[j]:+.2f}" for j in top))
        # broken pairs (empty, refusal, truncated, off-topic, degenerate repetition) are too rare in the calibration
        # sample for the head to learn (the rubric rates them 1–3): the hand-built rules place them below every
        # predicted rating, at their own broken-tier value in [−5, −2.5]
        for i in np.flatnonzero(features[:, 0] <= heuristic.BROKEN_TOP):
            predicted[i], reasons[i] = features[i, 0], f"broken: {rules['quality_reason'].iloc[i]}"
        frame = pd.DataFrame({"quality_raw": predicted, "quality_reason": reasons, "error": [None] * len(predicted)})
        return check_result(frame, len(predicted), ("quality_raw", "quality_reason"), self.name)


__all__ = ["BLOOM_FEATURES", "QUALITY_FEATURES", "ProxyBloomScorer", "ProxyDisciplineTagger", "ProxyQualityScorer",
           "bloom_features", "quality_features", "split_query"]
