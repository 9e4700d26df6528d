"""The calibration set (``calibration/``): Alpaca pairs labelled by reading, and agreement with a scorer.

The set lives in the repository as ids, splits and labels (``calibration/sample.jsonl``,
``calibration/labels/*.jsonl``); the text comes from Alpaca (``../shared/data/alpaca/alpaca_data.json``) and is
checked against each row's digest, so a label is only ever compared with the pair that was read.

:func:`agreement` holds the figures the issue asks for, all on one split:

* Bloom: Spearman's ρ of the scorer's 1–21 score with the label's, level accuracy (exact) and within one level;
* disciplines: micro-F1 over (pair, discipline name) with exact names, and count agreement (same number of
  disciplines);
* quality: Spearman's ρ of ``quality_raw`` with the 1–10 rating.

The labels were written by AI assistant sessions reading each pair under ``calibration/README.md``'s guideline,
one reader per pair (no double annotation); nothing here writes or changes a label.

Fitting the proxies of :mod:`thtb.scorers.proxy` and measuring them are separate commands:

* ``python -m thtb.calibration fit`` (:func:`fit_proxies`) loads the ``train`` split only, chooses each proxy's
  hyper-parameters by cross-validation inside it, prints the cross-validated figures and writes the parameters
  (with those figures) to ``thtb/resources/proxies/{bloom,disciplines,quality}.json``. It never loads the
  ``test`` split.
* ``python -m thtb.calibration evaluate`` (:func:`evaluate_proxies`) scores the held-out ``test`` split with the
  shipped parameters and the hand-built scorers and prints the table; with ``--write`` it records the figures
  in ``thtb/resources/proxies/held_out.json`` with the sha256 of each parameter file they were measured with
  (:func:`thtb.scorers.fitted.params_digest`), which is what offline selection summaries report; a record whose
  digest no longer matches the parameters is reported as stale, not as the parameters' figures.
* ``python -m thtb.calibration report`` prints both recorded tables, computing nothing.
* ``python -m thtb.calibration fit --against <run> --out <dir>`` (:func:`fit_against`) fits the same proxies to
  the outputs of the real scorers a run recorded in its score card (``selection/scores.parquet``) instead of the
  labels, and measures them on rows held out by id hash. It never writes the packaged parameters unless asked
  (``--replace-shipped``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.scorers.base import BLOOM_BANDS, BLOOM_LEVELS
from thtb.scorers.fitted import (FORMAT, HELD_OUT_FORMAT, LABELS_PROVENANCE, PROXY_KINDS, cv_figures, cv_setting,
                                 held_out_path, labels_digest, load_held_out, load_params, params_digest, proxy_path)

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "calibration"
DEFAULT_ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"
SPLITS = ("train", "test")


class CalibrationError(ValueError):
    """The calibration files or the Alpaca text do not match (names the file, line and field)."""


def pair_digest(instruction: str, input_: str, output: str) -> str:
    """sha256 (first 16 hex) of the Alpaca fields joined by NUL (``calibration/sample.py``'s digest)."""
    return hashlib.sha256("\0".join((instruction, input_, output)).encode("utf-8")).hexdigest()[:16]


def _jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CalibrationError(f"{path}:{n}: not JSON ({exc})") from exc


def load_calibration(split: str | None = None, *, alpaca: str | Path = DEFAULT_ALPACA,
                     folder: str | Path = CALIBRATION) -> pd.DataFrame:
    """One row per labelled pair of ``split`` (``None``: both), sorted by Alpaca row: ``row``, ``id``, ``split``,
    ``stratum``, ``instruction``, ``input``, ``output``, ``query`` (instruction + input, as the authors' rows are
    read for the judge), ``response`` and the labels ``bloom_level``, ``bloom_score``, ``bloom_reason``,
    ``disciplines``, ``quality``."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    folder = Path(folder)
    sample = {item["row"]: item for _, item in _jsonl(folder / "sample.jsonl")}
    labels: dict[int, dict] = {}
    for path in sorted((folder / "labels").glob("*.jsonl")):
        for n, label in _jsonl(path):
            row = label.get("row")
            if row not in sample:
                raise CalibrationError(f"{path}:{n}: field row={row!r} is not in {folder / 'sample.jsonl'}")
            if label.get("id") != sample[row]["id"]:
                raise CalibrationError(f"{path}:{n}: field id={label.get('id')!r} is not row {row}'s id")
            if row in labels:
                raise CalibrationError(f"{path}:{n}: row {row} is labelled twice")
            labels[row] = label
    alpaca = Path(alpaca)
    if not alpaca.is_file():
        raise FileNotFoundError(f"{alpaca}: the Alpaca file the calibration set's text comes from is missing")
    rows = json.loads(alpaca.read_text(encoding="utf-8"))
    out = []
    for row in sorted(labels):
        item = sample[row]
        if split is not None and item["split"] != split:
            continue
        r = rows[row]
        instruction, input_, output = r.get("instruction", ""), r.get("input", ""), r.get("output", "")
        if pair_digest(instruction, input_, output) != item["digest"]:
            raise CalibrationError(f"{alpaca}: row {row}'s text differs from the digest in sample.jsonl")
        query = f"{instruction}\n{input_}" if input_.strip() else instruction
        out.append({"row": row, "id": item["id"], "split": item["split"], "stratum": item["stratum"],
                    "instruction": instruction, "input": input_, "output": output, "query": query,
                    "response": output, **{k: labels[row][k] for k in
                                           ("bloom_level", "bloom_score", "bloom_reason", "disciplines", "quality")}})
    return pd.DataFrame(out)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); ``None`` when either side is constant or fewer than 3 pairs."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return None
    return float(spearmanr(a[keep], b[keep]).statistic)


FIGURES = {"bloom": ("bloom_spearman", "bloom_level_exact", "bloom_level_within_one"),
           "disciplines": ("discipline_micro_f1", "discipline_count_agreement"),
           "quality": ("quality_spearman",)}
"""The agreement figures of each proxy (:func:`agreement`)."""


def bloom_agreement(labels: pd.DataFrame, levels: Sequence[str | None], scores: Sequence[float | None]) -> dict:
    ok = [i for i, (lv, sc) in enumerate(zip(levels, scores, strict=True)) if lv is not None and sc is not None]
    if not ok:
        return {}
    rank = {lv: i for i, lv in enumerate(BLOOM_LEVELS)}
    pred = np.array([rank[levels[i]] for i in ok])
    true = np.array([rank[labels["bloom_level"].iloc[i]] for i in ok])
    return {"bloom_spearman": spearman([scores[i] for i in ok], labels["bloom_score"].iloc[ok]),
            "bloom_level_exact": float((pred == true).mean()),
            "bloom_level_within_one": float((np.abs(pred - true) <= 1).mean())}


def discipline_agreement(labels: pd.DataFrame, predicted: Sequence[Sequence[str] | None]) -> dict:
    tp = fp = fn = same_count = n = 0
    for truth, pred in zip(labels["disciplines"], predicted, strict=True):
        if pred is None:
            continue
        truth, pred = set(truth), set(pred)
        tp += len(truth & pred)
        fp += len(pred - truth)
        fn += len(truth - pred)
        same_count += len(truth) == len(pred)
        n += 1
    if not n:
        return {}
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"discipline_micro_f1": f1, "discipline_count_agreement": same_count / n}


def agreement(labels: pd.DataFrame, *, bloom: pd.DataFrame | None = None, disciplines: pd.DataFrame | None = None,
              quality: pd.DataFrame | None = None) -> dict[str, Any]:
    """Agreement of scorer outputs (frames with the :mod:`thtb.scorers.base` columns, aligned with ``labels``) on
    one split: ``split``, ``n``, the figures of :data:`FIGURES` rounded to 4 places (``None`` where the scorer gave
    nothing to compare) and ``n_failed``."""
    figures: dict[str, Any] = dict.fromkeys(name for names in FIGURES.values() for name in names)
    if bloom is not None:
        figures.update(bloom_agreement(labels, bloom["bloom_level"].tolist(), bloom["bloom_score"].tolist()))
    if disciplines is not None:
        pairs = zip(disciplines["disciplines"], disciplines["error"], strict=True)
        figures.update(discipline_agreement(labels, [d if e is None else None for d, e in pairs]))
    if quality is not None:
        figures["quality_spearman"] = spearman(quality["quality_raw"], labels["quality"])
    failed = sum(int(frame["error"].notna().sum()) for frame in (bloom, disciplines, quality) if frame is not None)
    return {"split": "+".join(sorted(set(labels["split"]))), "n": len(labels),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}, "n_failed": failed}


# ------------------------------------------------------------------------------------------------ fitting
PROXY_DESCRIPTIONS = {
    "business": "Business studies how organisations create, sell and deliver products and services for profit. It "
                "covers strategy, operations, entrepreneurship, sales, customer service and the economics of firms. "
                "Typical questions ask for a business plan, a company description, ways to grow revenue or improve "
                "customer satisfaction, or an analysis of a market. It draws on management, marketing, finance and "
                "economics.",
    "engineering": "Engineering applies science and mathematics to design, build and maintain machines, structures, "
                   "devices and systems. It covers mechanical, civil, electrical and chemical engineering, materials "
                   "and manufacturing. Typical questions ask how a device works, how to design or improve a "
                   "component, or to compute loads, energy or efficiency. It relies on physics, mathematics and "
                   "materials science.",
    "art": "Art covers the making and study of visual and creative works: painting, drawing, sculpture, photography "
           "and design. It studies styles, movements, techniques, composition, colour and the meaning of artworks. "
           "Typical questions ask to describe or interpret a painting, name an artist's style, or suggest an idea "
           "for a creative piece. It connects with art history, design and the humanities.",
    "communication": "Communication studies how people exchange messages in speech, writing and media. It covers "
                     "interpersonal communication, public speaking, persuasion, professional writing such as emails "
                     "and letters, and audience and tone. Typical questions ask to write or improve a message, give "
                     "tips for communicating clearly, or explain how a message will be received. It draws on "
                     "linguistics, psychology and media studies.",
    "management": "Management studies how to plan, organise, lead and control people and resources to reach an "
                  "organisation's goals. It covers leadership, team building, project and time management, decision "
                  "making and human resources. Typical questions ask for tips to manage a team or a project, how to "
                  "motivate employees, or how to run a meeting. It is a core part of business administration.",
    "graphic_design": "Graphic design arranges type, images, colour and layout to communicate visually. It covers "
                      "logos, branding, posters, websites and user interfaces, typography and visual hierarchy. "
                      "Typical questions ask to design or describe a logo, choose a colour scheme or font, or lay "
                      "out a page. It combines art with communication and marketing.",
}
"""Descriptions (written for the project, like the catalogue's) of disciplines the labels name often that the
catalogue lacks; the discipline proxy stores those it uses beside its weights."""

FOLDS = 5
SEED = 0
BLOOM_C = (0.03, 0.1, 0.3, 1.0)
DISCIPLINE_C = (1.0, 4.0, 16.0)
DISCIPLINE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)
DISCIPLINE_MIN_COUNT = 5
DISCIPLINE_MAX = 3
QUALITY_ALPHA = (1.0, 10.0, 100.0)


def _train_only(rows: pd.DataFrame) -> pd.DataFrame:
    splits = set(rows["split"])
    if splits != {"train"}:
        raise ValueError(f"proxies are fitted on the train split only; got rows of {sorted(splits)}")
    return rows.reset_index(drop=True)


def _folds(y: np.ndarray, stratify: bool = True):
    """The cross-validation folds: stratified by ``y`` when asked and every class has at least :data:`FOLDS` rows
    (the calibration labels do; a small run's judge may name a level twice), else plain shuffled folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    stratify = stratify and np.unique(y, return_counts=True)[1].min() >= FOLDS
    splitter = (StratifiedKFold if stratify else KFold)(FOLDS, shuffle=True, random_state=SEED)
    return list(splitter.split(np.zeros(len(y)), y if stratify else None))


def _bloom_predict(probs: np.ndarray, level_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = probs.argmax(axis=1)
    bands = np.array([BLOOM_BANDS[lv] for lv in BLOOM_LEVELS])[k]
    return k, np.clip(probs @ level_scores, bands[:, 0], bands[:, 1])


def _params(kind: str, head: dict[str, Any], train: pd.DataFrame, columns: tuple[str, ...], fitted_on: str | None,
            body: dict[str, Any], cv: dict[str, Any], choose: str, table: str) -> dict[str, Any]:
    """A proxy's parameters in the resource's key order; ``cv`` (by setting) only where cross-validation ran.
    ``fitted_on``: what the labels are (default: the calibration readers')."""
    return {"format": FORMAT, "kind": kind, **head, "n_train": len(train),
            "train_labels_sha256": labels_digest(train, columns),
            "fitted_on": fitted_on or f"calibration/ train split ({LABELS_PROVENANCE})", **body,
            **({"cv": {"folds": FOLDS, "seed": SEED, "choose": f"max {choose}", table: cv}} if cv else {})}


def _space(embedder) -> dict[str, str]:
    """``{"embedder": …}``, the space of the vectors a proxy is fitted over (none where the embedder does not say)."""
    space = embedder.space()
    return {"embedder": space} if space else {}


def _r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _best(values: Sequence[float | None]) -> float:
    """A figure to maximise over settings (``None``, a constant prediction, ranks last)."""
    return -np.inf if values is None else values


def _level_means(score: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each level's mean score over the rows labelled with it (a level no row names: its band's midpoint, with
    probability 0 wherever it is used)."""
    return np.array([score[y == i].mean() if (y == i).any() else sum(BLOOM_BANDS[lv]) / 2
                     for i, lv in enumerate(BLOOM_LEVELS)])


def fit_bloom(train: pd.DataFrame, embedder, *, C: float | None = None, fitted_on: str | None = None
              ) -> dict[str, Any]:
    """Multinomial logistic head of :class:`~thtb.scorers.proxy.ProxyBloomScorer`; C by cross-validated ρ, or
    ``C`` as given (no cross-validation, no ``cv`` section: a refit with recorded hyper-parameters). Levels the
    labels never name get probability 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from thtb.scorers.bloom import LexiconBloomClassifier
    from thtb.scorers.proxy import BLOOM_FEATURES, bloom_features

    train = _train_only(train)
    x, _ = bloom_features(LexiconBloomClassifier(embedder), train["query"].tolist(), train["response"].tolist())
    y = train["bloom_level"].map(BLOOM_LEVELS.index).to_numpy()
    score = train["bloom_score"].to_numpy(dtype=float)
    if len(set(y)) < 2:
        raise ValueError(f"every Bloom label is {BLOOM_LEVELS[y[0]]!r}: a classifier needs two levels at least")
    cv = {}
    for c in (BLOOM_C if C is None else ()):
        k_pred, s_pred = np.zeros(len(y), int), np.zeros(len(y))
        for a, b in _folds(y):
            scaler = StandardScaler().fit(x[a])
            probs = np.zeros((len(b), len(BLOOM_LEVELS)))  # a level the fold never names: probability 0
            if len(set(y[a])) < 2:  # a tiny set's fold that saw one level: it predicts that level
                probs[:, y[a][0]] = 1.0
            else:
                model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x[a]), y[a])
                probs[:, model.classes_] = model.predict_proba(scaler.transform(x[b]))
            k_pred[b], s_pred[b] = _bloom_predict(probs, _level_means(score[a], y[a]))
        figures = bloom_agreement(train, [BLOOM_LEVELS[k] for k in k_pred], list(s_pred))
        cv[str(c)] = {k: _r4(v) for k, v in figures.items()}
    best = max(BLOOM_C, key=lambda c: (_best(cv[str(c)]["bloom_spearman"]), -c)) if C is None else float(C)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=best, max_iter=5000).fit(scaler.transform(x), y)
    coef, intercept = np.zeros((len(BLOOM_LEVELS), x.shape[1])), np.full(len(BLOOM_LEVELS), -1e6)
    if len(model.classes_) == 2:  # binary: sklearn keeps one row (class 1 against class 0)
        coef[model.classes_] = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
        intercept[model.classes_] = [-model.intercept_[0] / 2, model.intercept_[0] / 2]
    else:
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
    return _params("bloom", {"features": list(BLOOM_FEATURES), **_space(embedder)}, train,
                   ("bloom_level", "bloom_score"), fitted_on,
                   {"model": {"type": "sklearn LogisticRegression (multinomial, lbfgs)", "C": best,
                              "coef": coef.tolist(), "intercept": intercept.tolist()},
                    "scaler": {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()},
                    "level_mean_scores": _level_means(score, y).tolist()}, cv, "bloom_spearman", "by_C")


def fit_disciplines(train: pd.DataFrame, embedder, *, C: float | None = None, threshold: float | None = None,
                    fitted_on: str | None = None, name_undescribed: bool = False) -> dict[str, Any]:
    """Per-discipline logistic heads of :class:`~thtb.scorers.proxy.ProxyDisciplineTagger`; C and the threshold
    by cross-validated micro-F1, or both as given (no cross-validation, no ``cv`` section). A discipline named
    neither by the catalogue nor by :data:`PROXY_DESCRIPTIONS` is an error, or with ``name_undescribed`` (a judge's
    free names, whose own descriptions the score card does not hold) described by its name, listed under
    ``described_by_name``."""
    from collections import Counter

    from sklearn.linear_model import LogisticRegression

    from thtb.scorers.disciplines import load_catalogue, top_labels
    from thtb.scorers.proxy import split_query

    train = _train_only(train)
    counts = Counter(d for ds in train["disciplines"] for d in ds)
    labels = sorted(d for d, c in counts.items() if c >= DISCIPLINE_MIN_COUNT)
    catalogue = load_catalogue()
    if not labels:
        raise ValueError(f"no discipline is named {DISCIPLINE_MIN_COUNT} times or more in {len(train)} rows: "
                         "nothing to fit a head on")
    undescribed = [d for d in labels if d not in catalogue and d not in PROXY_DESCRIPTIONS]
    if undescribed and not name_undescribed:
        raise ValueError(f"disciplines {undescribed} need a description (PROXY_DESCRIPTIONS) before fitting")
    own = {**PROXY_DESCRIPTIONS, **{d: f"{d.replace('_', ' ').capitalize()}." for d in undescribed}}
    x = embedder.encode([split_query(q)[0] for q in train["query"]])
    y = np.array([[d in ds for d in labels] for ds in train["disciplines"]], dtype=int)
    truth = train["disciplines"].tolist()

    def heads(c, rows):
        coef, intercept = np.zeros((len(labels), x.shape[1])), np.full(len(labels), -20.0)
        for j in range(len(labels)):
            if 0 < y[rows, j].sum() < len(rows):
                model = LogisticRegression(C=c, max_iter=5000).fit(x[rows], y[rows, j])
                coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
        return coef, intercept

    cv: dict[str, dict[str, Any]] = {}
    first = np.array([labels.index(ds[0]) if ds[0] in labels else -1 for ds in truth])
    if (C is None) != (threshold is None):
        raise ValueError("give both C and threshold, or neither")
    for c in (DISCIPLINE_C if C is None else ()):
        probs = np.zeros(y.shape)
        for a, b in _folds(first, stratify=False):
            coef, intercept = heads(c, a)
            probs[b] = 1 / (1 + np.exp(-(x[b] @ coef.T + intercept)))
        for t in DISCIPLINE_THRESHOLDS:
            pred = [top_labels(p, labels, t, DISCIPLINE_MAX) for p in probs]
            cv[f"C={c},threshold={t}"] = {k: _r4(v) for k, v in discipline_agreement(train, pred).items()}
    if C is None:
        best = max(cv, key=lambda k: (cv[k]["discipline_micro_f1"], cv[k]["discipline_count_agreement"]))
        c, t = (float(part.split("=")[1]) for part in best.split(","))
    else:
        c, t = float(C), float(threshold)
    coef, intercept = heads(c, np.arange(len(train)))
    head = {"labels": labels, **_space(embedder), "descriptions": {d: own[d] for d in labels if d not in catalogue},
            **({"described_by_name": undescribed} if undescribed else {})}
    return _params("disciplines", head, train, ("disciplines",), fitted_on,
                   {"model": {"type": "sklearn LogisticRegression per discipline (one-vs-rest) on the MiniLM query "
                                      "embedding", "C": c, "min_count": DISCIPLINE_MIN_COUNT,
                              "coef": coef.tolist(), "intercept": intercept.tolist()},
                    "threshold": t, "max_disciplines": DISCIPLINE_MAX}, cv, "discipline_micro_f1", "by_setting")


def fit_quality(train: pd.DataFrame, *, alpha: float | None = None, fitted_on: str | None = None
                ) -> dict[str, Any]:
    """Ridge head of :class:`~thtb.scorers.proxy.ProxyQualityScorer`; alpha by cross-validated ρ, or ``alpha`` as
    given (no cross-validation, no ``cv`` section). ``quality``: the calibration readers' 1–10 rating, or for
    ``fit --against`` a reward model's raw score."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from thtb.scorers.proxy import QUALITY_FEATURES, quality_features

    train = _train_only(train)
    x = quality_features(train["query"].tolist(), train["response"].tolist())
    y = train["quality"].to_numpy(dtype=float)
    cv = {}
    for value in (QUALITY_ALPHA if alpha is None else ()):
        pred = np.zeros(len(y))
        for a, b in _folds(y, stratify=False):
            scaler = StandardScaler().fit(x[a])
            pred[b] = Ridge(alpha=value).fit(scaler.transform(x[a]), y[a]).predict(scaler.transform(x[b]))
        cv[str(value)] = {"quality_spearman": _r4(spearman(pred, y))}
    best = max(QUALITY_ALPHA, key=lambda a: (_best(cv[str(a)]["quality_spearman"]), a)) if alpha is None \
        else float(alpha)
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = Ridge(alpha=best).fit((x - scaler.mean_) / scale, y)
    return _params("quality", {"features": list(QUALITY_FEATURES)}, train, ("quality",), fitted_on,
                   {"model": {"type": "sklearn Ridge", "alpha": best, "coef": model.coef_.tolist(),
                              "intercept": float(model.intercept_)},
                    "scaler": {"mean": scaler.mean_.tolist(), "scale": scale.tolist()}}, cv, "quality_spearman",
                   "by_alpha")


# ------------------------------------------------------------------------------------- fit, measure, report
def _embedder():
    from thtb.scorers.embedder import SentenceTransformerEmbedder

    # the embedder the offline cascade runs (conf/embedder/minilm_offline.yaml): fitted and measured as applied
    return SentenceTransformerEmbedder(model="minilm_offline", max_seq_length=128)


def _scorer(kind: str, embedder, path: Path | None, *, proxy: bool = True):
    """The proxy of ``kind`` (parameters at ``path``; ``None``: the shipped reader-calibrated ones), or the
    hand-built scorer of that kind."""
    from thtb.scorers.bloom import LexiconBloomClassifier
    from thtb.scorers.disciplines import CatalogueDisciplineTagger
    from thtb.scorers.proxy import ProxyBloomScorer, ProxyDisciplineTagger, ProxyQualityScorer
    from thtb.scorers.quality import HeuristicQualityScorer

    if kind == "quality":
        return ProxyQualityScorer(path) if proxy else HeuristicQualityScorer()
    if kind == "bloom":
        return ProxyBloomScorer(embedder, path) if proxy else LexiconBloomClassifier(embedder)
    return ProxyDisciplineTagger(embedder, path) if proxy else CatalogueDisciplineTagger(embedder)


def score_split(rows: pd.DataFrame, *, proxies: bool, embedder=None, params_dir: Path | None = None
                ) -> dict[str, Any]:
    """Agreement on ``rows`` of the trained proxies (``proxies=True``) or the hand-built offline scorers."""
    embedder = embedder or _embedder()
    queries, responses = rows["query"].tolist(), rows["response"].tolist()
    bloom, tagger, quality = (_scorer(kind, embedder, Path(params_dir) / f"{kind}.json" if params_dir else None,
                                      proxy=proxies) for kind in ("bloom", "disciplines", "quality"))
    return agreement(rows, bloom=bloom.score(queries, responses), disciplines=tagger.tag(queries),
                     quality=quality.score(queries, responses))


LABEL_COLUMNS = ("bloom_level", "bloom_score", "disciplines", "quality")


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def fit_proxies(*, alpaca: str | Path = DEFAULT_ALPACA, out_dir: str | Path | None = None,
                embedder=None) -> dict[str, dict[str, Any]]:
    """Fit the three proxies on the train split (hyper-parameters by cross-validation inside it) and write
    ``<out_dir>/{bloom,disciplines,quality}.json`` (default: the packaged resources). Loads the train split only:
    the held-out test split is :func:`evaluate_proxies`' alone. Returns the parameters written."""
    out = Path(out_dir) if out_dir else proxy_path("bloom").parent
    embedder = embedder or _embedder()
    train = load_calibration("train", alpaca=alpaca)
    params = {"bloom": fit_bloom(train, embedder), "disciplines": fit_disciplines(train, embedder),
              "quality": fit_quality(train)}
    for name, body in params.items():
        _write_json(out / f"{name}.json", body)
    return params


def _load_proxies(params_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    return {name: load_params(Path(params_dir) / f"{name}.json" if params_dir else proxy_path(name), name)
            for name in PROXY_KINDS}


def cv_table(params: dict[str, dict[str, Any]] | None = None, params_dir: str | Path | None = None) -> pd.DataFrame:
    """The cross-validated (train split) figures of each proxy's chosen setting, one row per figure: what `fit`
    prints and records."""
    params = params or _load_proxies(params_dir)
    return pd.DataFrame([{"proxy": name, "setting": cv_setting(body)[1], "figure": figure, "n_train": body["n_train"],
                          "folds": (body.get("cv") or {}).get("folds"),
                          "cv_value": (cv_figures(body) or {}).get(figure)}
                         for name, body in params.items() for figure in FIGURES[name]])


def evaluate_proxies(*, alpaca: str | Path = DEFAULT_ALPACA, params_dir: str | Path | None = None,
                     embedder=None) -> dict[str, Any]:
    """Score the held-out test split with the proxies' parameters (default: the shipped ones) and with the
    hand-built scorers: the held-out record (format :data:`~thtb.scorers.fitted.HELD_OUT_FORMAT`), each proxy's
    figures beside the sha256 of the parameters they were measured with."""
    params = _load_proxies(params_dir)
    embedder = embedder or _embedder()
    test = load_calibration("test", alpaca=alpaca)
    proxy = score_split(test, proxies=True, embedder=embedder, params_dir=params_dir)
    hand = score_split(test, proxies=False, embedder=embedder)
    if proxy["n_failed"] or hand["n_failed"]:
        raise RuntimeError(f"scoring the held-out split failed for {proxy['n_failed']} (proxies) / "
                           f"{hand['n_failed']} (hand-built) pairs")
    return {"format": HELD_OUT_FORMAT, "split": "test", "n": proxy["n"],
            "test_labels_sha256": labels_digest(test, LABEL_COLUMNS),
            "labels": f"calibration/ test split ({LABELS_PROVENANCE})",
            "measured_by": "python -m thtb.calibration evaluate --write",
            "proxies": {name: {"params_sha256": params_digest(body),
                               "proxy": {k: proxy[k] for k in FIGURES[name]},
                               "hand_built": {k: hand[k] for k in FIGURES[name]}}
                        for name, body in params.items()}}


def held_out_table(params_dir: str | Path | None = None, record: dict[str, Any] | None = None) -> pd.DataFrame:
    """A held-out record (default: the packaged one, ``held_out.json``) as one row per figure, proxy vs
    hand-built; ``current`` says whether it was measured with the parameters in ``params_dir`` (default: the
    packaged ones) — a refit since makes it ``False``."""
    record = record or load_held_out()
    if record is None:
        raise FileNotFoundError("no held-out record; measure one with `python -m thtb.calibration evaluate --write`")
    params = _load_proxies(params_dir)
    return pd.DataFrame([{"proxy": name, "figure": figure, "n": record["n"], "proxy_value": value,
                          "hand_built_value": entry["hand_built"][figure],
                          "current": name in params and entry["params_sha256"] == params_digest(params[name])}
                         for name, entry in record["proxies"].items() for figure, value in entry["proxy"].items()])


# ------------------------------------------------------------------------- fitting against a run's scorers
HOLD_OUT = 0.25
"""Share of a run's scored rows ``fit --against`` holds out to measure agreement (chosen by id hash)."""
MIN_FIT_ROWS = 20
MIN_HELD_OUT_ROWS = 8
KIND_COLUMNS = {"quality": ("quality_raw",), "bloom": ("bloom_level", "bloom_score"), "disciplines": ("disciplines",)}
"""The score card's columns each proxy is fitted to: the real scorer's raw outputs."""
FRAME_COLUMNS = {"quality": ("quality",), "bloom": ("bloom_level", "bloom_score"), "disciplines": ("disciplines",)}
"""The same in the frames the fit functions read (the reward's raw score is their ``quality``)."""
OFFLINE_REWARDS = ("ProxyQualityScorer", "HeuristicQualityScorer")
"""Reward backends that are offline stand-ins, not a reward model: nothing to imitate."""
KIND_PROMPTS = {"bloom": ("bloom", "bloom_level"), "disciplines": ("disciplines",)}
"""The judge prompts (:mod:`thtb.judge.prompts` names) whose answers a kind's columns hold."""


@dataclass(frozen=True)
class RunScores:
    """A run's score card and the summary that says which scorers wrote it."""

    run: Path
    card_path: Path
    summary_path: Path
    card: pd.DataFrame
    summary: dict[str, Any]
    card_sha256: str

    @property
    def provenance(self) -> dict[str, Any]:
        return self.summary["provenance"]["selection"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_run_scores(against: str | Path) -> RunScores:
    """A run directory (``<run>/selection/scores.parquet``), its ``selection/`` folder or a score card, with the
    ``summary.json`` beside the card (the scorers' provenance); errors name the missing file or field."""
    path = Path(against).expanduser()
    if path.is_dir():
        card_path = path / "selection" / "scores.parquet" if (path / "selection").is_dir() else path / "scores.parquet"
    else:
        card_path = path
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path}: no score card (fit --against reads a run's selection/scores.parquet)")
    summary_path = card_path.with_name("summary.json")
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: missing; fit --against reads which scorers wrote {card_path} "
                                "from the selection summary beside it")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if not isinstance((summary.get("provenance") or {}).get("selection", {}).get("scorers"), dict):
        raise CalibrationError(f"{summary_path}: no provenance.selection.scorers (which reward model and judge "
                               "scored the run); a summary of thtb 0.2 or later has it")
    card = pd.read_parquet(card_path)
    missing = [c for c in ("id", "query", "response") if c not in card]
    if missing:
        raise CalibrationError(f"{card_path}: no column {', '.join(map(repr, missing))} (a score card of thtb 0.2 "
                               "or later has each row's id, query and response)")
    if card["id"].duplicated().any():
        raise CalibrationError(f"{card_path}: column 'id' repeats {card['id'][card['id'].duplicated()].iloc[0]!r}")
    run = card_path.parent.parent if card_path.parent.name == "selection" else card_path.parent
    return RunScores(run=run.resolve(), card_path=card_path.resolve(), summary_path=summary_path.resolve(),
                     card=card, summary=summary, card_sha256=_sha256(card_path))


def real_scorers(provenance: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``({kind: the scorer to imitate}, {kind: why it is skipped})`` from a selection's provenance: a kind is
    fitted only when a real scorer produced it (a reward model, not an offline stand-in; an LLM judge that
    answered that kind's prompt)."""
    scorers = provenance["scorers"]
    imitate: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    reward = scorers.get("reward")
    if reward is None:
        skipped["quality"] = "the run scored no quality (no reward in its scorers)"
    elif reward.get("backend") in OFFLINE_REWARDS:
        skipped["quality"] = f"the run's reward is the offline {reward.get('backend')}, not a reward model"
    else:
        imitate["quality"] = {"role": "reward", **reward}
    judge = scorers.get("judge")
    for kind in ("bloom", "disciplines"):
        if judge is None:
            skipped[kind] = "the run asked no judge (no judge in its scorers)"
        elif judge.get("model") is None:
            skipped[kind] = (f"the run's judge is the offline `{judge.get('backend')}` ({judge.get(kind)}): no LLM "
                             "answered")
        elif judge.get("prompts") is not None and not set(KIND_PROMPTS[kind]) & set(judge["prompts"]):
            skipped[kind] = f"the run's judge answered no {kind} prompt (its prompts: {sorted(judge['prompts'])})"
        else:
            imitate[kind] = {"role": "judge", **judge}
    return imitate, skipped


def describe_scorer(scorer: dict[str, Any]) -> str:
    """A scorer identity in words: ``the reward model M (Backend)``, ``the LLM judge M (backend; prompts …)``."""
    if scorer["role"] == "reward":
        return f"the reward model {scorer['model']} ({scorer['backend']})" if scorer.get("model") else \
            f"the reward scorer {scorer['backend']}"
    prompts = ", ".join((scorer.get("prompts") or {}).values())
    return f"the LLM judge {scorer.get('model')} ({scorer.get('backend')}{'; prompts ' + prompts if prompts else ''})"


def held_out_mask(ids: Sequence[str], fraction: float = HOLD_OUT) -> np.ndarray:
    """Which rows are held out: the first 8 bytes of ``sha256("thtb-hold-out:" + id)`` read as a fraction of 2⁶⁴,
    below ``fraction`` — the same rows for the same ids, whatever their order or the other rows."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out share must lie in (0, 1), got {fraction}")
    draws = [int.from_bytes(hashlib.sha256(f"thtb-hold-out:{i}".encode()).digest()[:8], "big") / 2 ** 64
             for i in ids]
    return np.asarray(draws) < fraction


def ids_digest(ids: Iterable[str]) -> str:
    """sha256 of the sorted ids, one a line (which rows were held out)."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(map(str, ids))).encode()).hexdigest()


def _scored_rows(card: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows the real scorer of ``kind`` scored, in the calibration frame's columns (``quality`` = the reward's
    raw score)."""
    rows = card["row"].to_numpy() if "row" in card else np.arange(len(card))
    frame = pd.DataFrame({"row": rows, "id": card["id"].astype(str), "split": "train",
                          "query": card["query"].fillna("").astype(str),
                          "response": card["response"].fillna("").astype(str)})
    if kind == "quality":
        raw = pd.to_numeric(card["quality_raw"], errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(raw)
        frame["quality"] = raw
    elif kind == "bloom":
        score = pd.to_numeric(card["bloom_score"], errors="coerce").to_numpy(dtype=float)
        keep = card["bloom_level"].isin(BLOOM_LEVELS).to_numpy() & np.isfinite(score)
        frame["bloom_level"], frame["bloom_score"] = card["bloom_level"].to_numpy(), score
    else:
        lists = [[str(d) for d in v] if isinstance(v, list | tuple | np.ndarray) else None for v in card["disciplines"]]
        keep = np.array([bool(v) for v in lists], dtype=bool)
        frame["disciplines"] = pd.Series(lists, dtype=object)
    return frame[keep].reset_index(drop=True)


def _measure(kind: str, rows: pd.DataFrame, scorer) -> dict[str, Any]:
    """Agreement of one scorer of ``kind`` with the run's scorer on ``rows`` (figures of :data:`FIGURES`)."""
    queries, responses = rows["query"].tolist(), rows["response"].tolist()
    frame = scorer.tag(queries) if kind == "disciplines" else scorer.score(queries, responses)
    out = agreement(rows, **{kind: frame})
    return {k: out[k] for k in FIGURES[kind]}


def fit_against(against: str | Path, out_dir: str | Path, *, fraction: float = HOLD_OUT, embedder=None,
                replace_shipped: bool = False) -> dict[str, Any]:
    """Fit the proxies to the outputs of the real scorers recorded in a run's score card
    (``python -m thtb.calibration fit --against``).

    For each kind a real scorer produced (:func:`real_scorers`; the others are skipped, and said so) the rows it
    scored are split by id hash (:func:`held_out_mask`: ``fraction`` held out); the proxy is fitted on the rest
    with the calibration fit's cross-validation (:func:`fit_quality` on the reward's raw score,
    :func:`fit_bloom` on the judge's level and score, :func:`fit_disciplines` on its disciplines), written to
    ``<out_dir>/<kind>.json`` with what it imitates and its source (the run, its summary's scorer provenance,
    the score card's sha256, the held-out rule), then measured on the held-out rows beside the hand-built scorer
    and the shipped reader-calibrated proxy: ``<out_dir>/held_out.json``, keyed by the parameters' digest as
    ``evaluate --write`` keys its record (entries of other kinds already there are kept). ``out_dir`` may not be
    the packaged ``thtb/resources/proxies/`` unless ``replace_shipped``. Returns ``{run, score_card,
    score_card_sha256, fitted: {kind: params}, skipped: {kind: why}, held_out: record, written: [paths]}``."""
    out = Path(out_dir).expanduser().resolve()
    if out == proxy_path("quality").parent.resolve() and not replace_shipped:
        raise ValueError(f"{out} holds the shipped reader-calibrated proxies; fit --against writes them only when "
                         "asked explicitly (--replace-shipped): give another --out")
    source = load_run_scores(against)
    imitate, skipped = real_scorers(source.provenance)
    if not imitate:
        raise CalibrationError(f"{source.summary_path}: no real scorer to imitate: "
                               + "; ".join(f"{k}: {why}" for k, why in skipped.items()))
    splits: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for kind in imitate:  # every check before any fitting
        missing = [c for c in KIND_COLUMNS[kind] if c not in source.card]
        if missing:
            raise CalibrationError(f"{source.card_path}: no column {', '.join(map(repr, missing))}, though the run's "
                                   f"{describe_scorer(imitate[kind])} scored {kind}")
        rows = _scored_rows(source.card, kind)
        held = held_out_mask(rows["id"].tolist(), fraction)
        n_held, n_fit = int(held.sum()), int((~held).sum())
        if n_held < MIN_HELD_OUT_ROWS or n_fit < MIN_FIT_ROWS:
            raise CalibrationError(
                f"{source.card_path}: {len(rows)} rows have {'/'.join(KIND_COLUMNS[kind])} from the run's "
                f"{describe_scorer(imitate[kind])}; holding out {fraction:.0%} by id hash leaves {n_held} to measure "
                f"(at least {MIN_HELD_OUT_ROWS}) and {n_fit} to fit (at least {MIN_FIT_ROWS})")
        splits[kind] = rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)
    if embedder is None and {"bloom", "disciplines"} & set(imitate):
        embedder = _embedder()
    prov = source.provenance
    origin = {"run": str(source.run), "score_card": str(source.card_path), "score_card_sha256": source.card_sha256,
              "summary": str(source.summary_path), "summary_sha256": _sha256(source.summary_path),
              "fingerprint": source.summary.get("fingerprint"),
              "provenance": {"selection": prov, "thtb": source.summary["provenance"].get("thtb")}}
    fitted: dict[str, dict[str, Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for kind, scorer in imitate.items():
        fit, held = splits[kind]
        fitted_on = f"the outputs of {describe_scorer(scorer)} in run {source.run}"
        try:
            if kind == "quality":
                params = fit_quality(fit, fitted_on=fitted_on)
            elif kind == "bloom":
                params = fit_bloom(fit, embedder, fitted_on=fitted_on)
            else:
                params = fit_disciplines(fit, embedder, fitted_on=fitted_on, name_undescribed=True)
        except ValueError as exc:
            raise CalibrationError(f"{source.card_path}: column {'/'.join(KIND_COLUMNS[kind])}: {exc}") from exc
        params["imitates"] = {**scorer, "columns": list(KIND_COLUMNS[kind]), "fidelity": prov.get("fidelity")}
        params["source"] = {**origin, "hold_out": {
            "rule": "sha256('thtb-hold-out:' + id), first 8 bytes as a fraction of 2^64, below the share",
            "fraction": fraction, "n_fit": len(fit), "n_held_out": len(held),
            "held_out_ids_sha256": ids_digest(held["id"])}}
        path = out / f"{kind}.json"
        _write_json(path, params)
        fitted[kind] = params
        entries[kind] = {"params_sha256": params_digest(params), "split": f"held out by id hash ({fraction:g})",
                         "n": len(held), "labels_sha256": labels_digest(held, FRAME_COLUMNS[kind]),
                         "imitates": fitted_on, "proxy": _measure(kind, held, _scorer(kind, embedder, path)),
                         "hand_built": _measure(kind, held, _scorer(kind, embedder, None, proxy=False)),
                         "reader_proxy": _measure(kind, held, _scorer(kind, embedder, None))}
    previous = load_held_out(out / "held_out.json") if (out / "held_out.json").is_file() else None
    for kind, entry in ((previous or {}).get("proxies") or {}).items():
        if kind not in entries:  # another kind's record stays, with its own rows
            entries[kind] = {"split": previous["split"], "n": previous["n"],
                             "labels_sha256": previous.get("test_labels_sha256"), **entry}
    record = {"format": HELD_OUT_FORMAT, "split": f"held out by id hash ({fraction:g})",
              "n": int(held_out_mask(source.card["id"].astype(str).tolist(), fraction).sum()),
              "labels": f"the outputs of the real scorers in run {source.run}",
              "measured_by": f"python -m thtb.calibration fit --against {source.card_path}",
              "source": {k: origin[k] for k in ("run", "score_card", "score_card_sha256", "fingerprint")},
              "proxies": {k: entries[k] for k in sorted(entries)}}
    _write_json(out / "held_out.json", record)
    return {"run": str(source.run), "score_card": str(source.card_path), "score_card_sha256": source.card_sha256,
            "fitted": fitted, "skipped": skipped, "held_out": record,
            "written": [out / f"{kind}.json" for kind in fitted] + [out / "held_out.json"]}


def against_table(record: dict[str, Any], kinds: Iterable[str] | None = None) -> pd.DataFrame:
    """A ``fit --against`` held-out record as one row per figure: the fitted proxy, the hand-built scorer and the
    shipped reader-calibrated proxy, each against the run's scorer on the same held-out rows."""
    return pd.DataFrame([{"proxy": kind, "figure": figure, "n": entry.get("n", record["n"]), "proxy_value": value,
                          "hand_built_value": entry["hand_built"].get(figure),
                          "reader_proxy_value": (entry.get("reader_proxy") or {}).get(figure)}
                         for kind, entry in record["proxies"].items() if kinds is None or kind in kinds
                         for figure, value in entry["proxy"].items()])


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m thtb.calibration",
        description="Fit the offline proxies on calibration/'s train split; measure them on its held-out split. "
                    "fit --against RUN fits them to the real scorers a run recorded instead.")
    parser.add_argument("command", choices=["fit", "evaluate", "report"],
                        help="fit: cross-validate and refit on the train split, rewrite the parameters and print "
                             "the cross-validated figures (never reads the test split); evaluate: score the held-out "
                             "test split with the shipped parameters and print proxy vs hand-built (--write records "
                             "it); report: print the recorded figures")
    parser.add_argument("--alpaca", type=Path, default=DEFAULT_ALPACA)
    parser.add_argument("--params-dir", type=Path, default=None,
                        help="the proxies' parameter folder (default: thtb/resources/proxies/); fit writes there")
    parser.add_argument("--against", type=Path, default=None,
                        help="fit: a run directory (or its selection/scores.parquet): fit each proxy whose real "
                             "scorer ran there to that scorer's outputs, hold out a share of its rows by id hash "
                             "and print the agreement on them; writes --out (or --params-dir)")
    parser.add_argument("--out", type=Path, default=None, help="fit --against: the new parameter folder")
    parser.add_argument("--hold-out", type=float, default=HOLD_OUT,
                        help=f"fit --against: share of the scored rows held out (default {HOLD_OUT})")
    parser.add_argument("--replace-shipped", action="store_true",
                        help="fit --against: allow --out to be the packaged thtb/resources/proxies/")
    parser.add_argument("--write", action="store_true",
                        help="evaluate: record the figures in the held-out record (default: "
                             "thtb/resources/proxies/held_out.json, or --held-out)")
    parser.add_argument("--held-out", type=Path, default=None, help="the held-out record to write or report")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    if args.against is not None or args.out is not None:
        if args.command != "fit" or args.against is None:
            parser.error("--against and --out go together, with the fit command: fit --against RUN --out DIR")
        out = args.out or args.params_dir
        if out is None:
            parser.error("fit --against writes a new parameter folder: give --out DIR")
        try:
            result = fit_against(args.against, out, fraction=args.hold_out, replace_shipped=args.replace_shipped)
        except (CalibrationError, FileNotFoundError, ValueError) as exc:  # names the file, the column, the fix
            print(f"fit --against: {exc}", file=sys.stderr)
            return 2
        print(f"fitted against run {result['run']}: score card {result['score_card']} "
              f"(sha256 {result['score_card_sha256']})")
        for kind, params in result["fitted"].items():
            hold = params["source"]["hold_out"]
            print(f"  {kind}: {params['fitted_on']} — {hold['n_fit']} rows fitted, {hold['n_held_out']} held out")
        for kind, why in result["skipped"].items():
            print(f"  {kind}: skipped — {why}")
        print(f"held-out agreement with the run's scorers (rows held out by id hash, share {args.hold_out:g}; "
              "hand_built: the rules, reader_proxy: the shipped reader-calibrated proxy, on the same rows):")
        print(against_table(result["held_out"], result["fitted"]).to_string(
            index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
        print("written: " + ", ".join(str(p) for p in result["written"]))
        return 0
    if args.command == "fit":
        params = fit_proxies(alpaca=args.alpaca, out_dir=args.params_dir)
        print(f"cross-validated on the train split ({FOLDS} folds, seed {SEED}; the test split was not read):")
        print(cv_table(params).to_string(index=False))
        print("parameters written; their held-out figures are measured by `python -m thtb.calibration evaluate`")
        return 0
    if args.command == "evaluate":
        record = evaluate_proxies(alpaca=args.alpaca, params_dir=args.params_dir)
        print(f"held-out split: {record['n']} pairs")
        print(held_out_table(args.params_dir, record).drop(columns="current").to_string(index=False))
        if args.write:
            path = args.held_out or held_out_path()
            _write_json(path, record)
            print(f"recorded in {path}")
        return 0
    print("cross-validated on the train split (recorded by `fit`):")
    print(cv_table(params_dir=args.params_dir).to_string(index=False))
    record = load_held_out(args.held_out)
    if record is None:
        print("held-out: no record; measure one with `python -m thtb.calibration evaluate --write`")
        return 0
    table = held_out_table(args.params_dir, record)
    print(f"held-out split, {record['n']} pairs (recorded by `evaluate --write`; current = measured with these "
          "parameters):")
    print(table.to_string(index=False))
    return 0 if table["current"].all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
