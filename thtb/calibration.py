"""The calibration set (``calibration/``): Alpaca pairs annotated by reading, and agreement with a scorer.

The set lives in the repository as ids, splits and labels (``calibration/sample.jsonl``,
``calibration/labels/*.jsonl``); the text comes from Alpaca (``../shared/data/alpaca/alpaca_data.json``) and is
checked against each row's digest, so a label is only ever compared with the pair that was read.

:func:`agreement` holds the figures the issue asks for, all on one split:

* Bloom: Spearman's ρ of the scorer's 1–21 score with the label's, level accuracy (exact) and within one level;
* disciplines: micro-F1 over (pair, discipline name) with exact names, and count agreement (same number of
  disciplines);
* quality: Spearman's ρ of ``quality_raw`` with the 1–10 rating.

Nothing here fits or labels anything: fitting is :mod:`thtb.scorers.proxy`, which only ever receives the
``train`` split (:func:`load_calibration` with ``split="train"``).
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

from thtb.scorers.base import BLOOM_LEVELS

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


@dataclass(frozen=True)
class Agreement:
    """A scorer's agreement with the labels on one split (``None`` where the scorer gave nothing to compare)."""

    split: str
    n: int
    bloom_spearman: float | None = None
    bloom_level_exact: float | None = None
    bloom_level_within_one: float | None = None
    discipline_micro_f1: float | None = None
    discipline_count_agreement: float | None = None
    quality_spearman: float | None = None
    n_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


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
              quality: pd.DataFrame | None = None) -> Agreement:
    """Agreement of scorer outputs (frames with the :mod:`thtb.scorers.base` columns, aligned with ``labels``)."""
    splits = sorted(set(labels["split"]))
    figures: dict[str, Any] = {}
    failed = 0
    if bloom is not None:
        figures.update(bloom_agreement(labels, bloom["bloom_level"].tolist(), bloom["bloom_score"].tolist()))
        failed += int(bloom["error"].notna().sum())
    if disciplines is not None:
        figures.update(discipline_agreement(
            labels, [d if e is None else None for d, e in zip(disciplines["disciplines"], disciplines["error"],
                                                               strict=True)]))
        failed += int(disciplines["error"].notna().sum())
    if quality is not None:
        figures["quality_spearman"] = spearman(quality["quality_raw"], labels["quality"])
        failed += int(quality["error"].notna().sum())
    return Agreement(split="+".join(splits), n=len(labels), n_failed=failed, **figures)


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
"""Descriptions (written for the project, like the catalogue's) of disciplines the annotators named often that the
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
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED) if stratify else \
        KFold(FOLDS, shuffle=True, random_state=SEED)
    return list(splitter.split(np.zeros(len(y)), y if stratify else None))


def _bloom_predict(probs: np.ndarray, level_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from thtb.scorers.base import BLOOM_BANDS

    k = probs.argmax(axis=1)
    expected = probs @ level_scores
    lo = np.array([BLOOM_BANDS[BLOOM_LEVELS[i]][0] for i in k])
    hi = np.array([BLOOM_BANDS[BLOOM_LEVELS[i]][1] for i in k])
    return k, np.clip(expected, lo, hi)


def fit_bloom(train: pd.DataFrame, embedder) -> dict[str, Any]:
    """Multinomial logistic head of :class:`~thtb.scorers.proxy.ProxyBloomScorer`; C by cross-validated ρ."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from thtb.scorers.bloom import LexiconBloomClassifier
    from thtb.scorers.proxy import BLOOM_FEATURES, FORMAT, bloom_features, labels_digest

    train = _train_only(train)
    x, _ = bloom_features(LexiconBloomClassifier(embedder), train["query"].tolist(), train["response"].tolist())
    y = train["bloom_level"].map(BLOOM_LEVELS.index).to_numpy()
    score = train["bloom_score"].to_numpy(dtype=float)
    cv = {}
    for c in BLOOM_C:
        k_pred, s_pred = np.zeros(len(y), int), np.zeros(len(y))
        for a, b in _folds(y):
            scaler = StandardScaler().fit(x[a])
            model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x[a]), y[a])
            means = np.array([score[a][y[a] == i].mean() for i in range(len(BLOOM_LEVELS))])
            k_pred[b], s_pred[b] = _bloom_predict(model.predict_proba(scaler.transform(x[b])), means)
        cv[str(c)] = {"bloom_spearman": round(spearman(s_pred, score), 4),
                      "bloom_level_exact": round(float((k_pred == y).mean()), 4),
                      "bloom_level_within_one": round(float((np.abs(k_pred - y) <= 1).mean()), 4)}
    best = max(BLOOM_C, key=lambda c: (cv[str(c)]["bloom_spearman"], -c))
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=best, max_iter=5000).fit(scaler.transform(x), y)
    return {"format": FORMAT, "kind": "bloom", "features": list(BLOOM_FEATURES),
            "n_train": len(train), "train_labels_sha256": labels_digest(train, ("bloom_level", "bloom_score")),
            "fitted_on": "calibration/ train split (labels read by the maintainers, calibration/README.md)",
            "model": {"type": "sklearn LogisticRegression (multinomial, lbfgs)", "C": best,
                      "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()},
            "scaler": {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()},
            "level_mean_scores": [float(score[y == i].mean()) for i in range(len(BLOOM_LEVELS))],
            "cv": {"folds": FOLDS, "seed": SEED, "choose": "max bloom_spearman", "by_C": cv}}


def fit_disciplines(train: pd.DataFrame, embedder) -> dict[str, Any]:
    """Per-discipline logistic heads of :class:`~thtb.scorers.proxy.ProxyDisciplineTagger`; C and the threshold
    by cross-validated micro-F1."""
    from collections import Counter

    from sklearn.linear_model import LogisticRegression

    from thtb.scorers.disciplines import load_catalogue
    from thtb.scorers.proxy import FORMAT, labels_digest, split_query

    train = _train_only(train)
    counts = Counter(d for ds in train["disciplines"] for d in ds)
    labels = sorted(d for d, c in counts.items() if c >= DISCIPLINE_MIN_COUNT)
    catalogue = load_catalogue()
    undescribed = [d for d in labels if d not in catalogue and d not in PROXY_DESCRIPTIONS]
    if undescribed:
        raise ValueError(f"disciplines {undescribed} need a description (PROXY_DESCRIPTIONS) before fitting")
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

    def choose(probs, threshold):
        order = np.argsort(-probs, kind="stable")
        keep = [order[0]] + [j for j in order[1:] if probs[j] >= threshold]
        return [labels[j] for j in keep[:DISCIPLINE_MAX]]

    cv: dict[str, dict[str, Any]] = {}
    first = np.array([labels.index(ds[0]) if ds[0] in labels else -1 for ds in truth])
    for c in DISCIPLINE_C:
        probs = np.zeros(y.shape)
        for a, b in _folds(first, stratify=False):
            coef, intercept = heads(c, a)
            probs[b] = 1 / (1 + np.exp(-(x[b] @ coef.T + intercept)))
        for t in DISCIPLINE_THRESHOLDS:
            pred = [choose(p, t) for p in probs]
            cv[f"C={c},threshold={t}"] = {k: round(v, 4) for k, v in discipline_agreement(train, pred).items()}
    best = max(cv, key=lambda k: (cv[k]["discipline_micro_f1"], cv[k]["discipline_count_agreement"]))
    c, t = (float(part.split("=")[1]) for part in best.split(","))
    coef, intercept = heads(c, np.arange(len(train)))
    return {"format": FORMAT, "kind": "disciplines", "labels": labels,
            "descriptions": {d: PROXY_DESCRIPTIONS[d] for d in labels if d not in catalogue},
            "n_train": len(train), "train_labels_sha256": labels_digest(train, ("disciplines",)),
            "fitted_on": "calibration/ train split (labels read by the maintainers, calibration/README.md)",
            "model": {"type": "sklearn LogisticRegression per discipline (one-vs-rest) on the MiniLM query "
                              "embedding", "C": c, "min_count": DISCIPLINE_MIN_COUNT,
                      "coef": coef.tolist(), "intercept": intercept.tolist()},
            "threshold": t, "max_disciplines": DISCIPLINE_MAX,
            "cv": {"folds": FOLDS, "seed": SEED, "choose": "max discipline_micro_f1", "by_setting": cv}}


def fit_quality(train: pd.DataFrame) -> dict[str, Any]:
    """Ridge head of :class:`~thtb.scorers.proxy.ProxyQualityScorer`; alpha by cross-validated ρ."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from thtb.scorers.proxy import FORMAT, QUALITY_FEATURES, labels_digest, quality_features

    train = _train_only(train)
    x = quality_features(train["query"].tolist(), train["response"].tolist())
    y = train["quality"].to_numpy(dtype=float)
    cv = {}
    for alpha in QUALITY_ALPHA:
        pred = np.zeros(len(y))
        for a, b in _folds(y, stratify=False):
            scaler = StandardScaler().fit(x[a])
            pred[b] = Ridge(alpha=alpha).fit(scaler.transform(x[a]), y[a]).predict(scaler.transform(x[b]))
        cv[str(alpha)] = {"quality_spearman": round(spearman(pred, y), 4)}
    best = max(QUALITY_ALPHA, key=lambda a: (cv[str(a)]["quality_spearman"], a))
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = Ridge(alpha=best).fit((x - scaler.mean_) / scale, y)
    return {"format": FORMAT, "kind": "quality", "features": list(QUALITY_FEATURES),
            "n_train": len(train), "train_labels_sha256": labels_digest(train, ("quality",)),
            "fitted_on": "calibration/ train split (labels read by the maintainers, calibration/README.md)",
            "model": {"type": "sklearn Ridge", "alpha": best, "coef": model.coef_.tolist(),
                      "intercept": float(model.intercept_)},
            "scaler": {"mean": scaler.mean_.tolist(), "scale": scale.tolist()},
            "cv": {"folds": FOLDS, "seed": SEED, "choose": "max quality_spearman", "by_alpha": cv}}


# ------------------------------------------------------------------------------------- fit, measure, report
PROXY_NAMES = ("bloom", "disciplines", "quality")


def _embedder():
    from thtb.scorers.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model="minilm_offline")


def score_split(rows: pd.DataFrame, *, proxies: bool, embedder=None, params_dir: Path | None = None) -> Agreement:
    """Agreement on ``rows`` of the trained proxies (``proxies=True``) or the hand-built offline scorers."""
    from thtb.scorers.bloom import LexiconBloomClassifier
    from thtb.scorers.disciplines import CatalogueDisciplineTagger
    from thtb.scorers.proxy import ProxyBloomScorer, ProxyDisciplineTagger, ProxyQualityScorer
    from thtb.scorers.quality import HeuristicQualityScorer

    embedder = embedder or _embedder()
    queries, responses = rows["query"].tolist(), rows["response"].tolist()
    if proxies:
        path = (lambda name: Path(params_dir) / f"{name}.json") if params_dir else (lambda name: None)
        bloom = ProxyBloomScorer(embedder, path("bloom"))
        tagger = ProxyDisciplineTagger(embedder, path("disciplines"))
        quality = ProxyQualityScorer(path("quality"))
    else:
        bloom, tagger, quality = LexiconBloomClassifier(embedder), CatalogueDisciplineTagger(embedder), \
            HeuristicQualityScorer()
    return agreement(rows, bloom=bloom.score(queries, responses), disciplines=tagger.tag(queries),
                     quality=quality.score(queries, responses))


def fit_proxies(*, alpaca: str | Path = DEFAULT_ALPACA, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Fit the three proxies on the train split, measure them and the hand-built scorers on the held-out test
    split, and write ``<out_dir>/{bloom,disciplines,quality}.json`` (default: the packaged resources)."""
    from thtb.scorers.proxy import proxy_path

    out = Path(out_dir) if out_dir else proxy_path("bloom").parent
    out.mkdir(parents=True, exist_ok=True)
    embedder = _embedder()
    train = load_calibration("train", alpaca=alpaca)
    params = {"bloom": fit_bloom(train, embedder), "disciplines": fit_disciplines(train, embedder),
              "quality": fit_quality(train)}
    for name, body in params.items():
        (out / f"{name}.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    test = load_calibration("test", alpaca=alpaca)  # read only now, after every fit
    proxy = score_split(test, proxies=True, embedder=embedder, params_dir=out).as_dict()
    baseline = score_split(test, proxies=False, embedder=embedder).as_dict()
    figures = {"bloom": ("bloom_spearman", "bloom_level_exact", "bloom_level_within_one"),
               "disciplines": ("discipline_micro_f1", "discipline_count_agreement"),
               "quality": ("quality_spearman",)}
    for name, body in params.items():
        body["held_out"] = {"split": "test", "n": proxy["n"],
                            "proxy": {k: proxy[k] for k in figures[name]},
                            "hand_built": {k: baseline[k] for k in figures[name]}}
        (out / f"{name}.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return {"proxy": proxy, "hand_built": baseline}


def held_out_table(params_dir: str | Path | None = None) -> pd.DataFrame:
    """The held-out agreement recorded in the packaged proxies: one row per figure, proxy vs hand-built."""
    from thtb.scorers.proxy import load_params, proxy_path

    rows = []
    for name in PROXY_NAMES:
        params = load_params(Path(params_dir) / f"{name}.json" if params_dir else proxy_path(name), name)
        held = params["held_out"]
        for figure, value in held["proxy"].items():
            rows.append({"proxy": name, "figure": figure, "n": held["n"], "proxy_value": value,
                         "hand_built_value": held["hand_built"][figure]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m thtb.calibration",
                                     description="Fit the offline proxies on calibration/ and report agreement.")
    parser.add_argument("command", choices=["fit", "report", "measure"],
                        help="fit: refit and rewrite thtb/resources/proxies/; report: the recorded held-out "
                             "figures; measure: recompute them from the labels and the packaged proxies")
    parser.add_argument("--alpaca", type=Path, default=DEFAULT_ALPACA)
    args = parser.parse_args(argv)
    if args.command == "fit":
        result = fit_proxies(alpaca=args.alpaca)
        print(json.dumps(result, indent=1))
        return 0
    if args.command == "measure":
        test = load_calibration("test", alpaca=args.alpaca)
        embedder = _embedder()
        print(json.dumps({"proxy": score_split(test, proxies=True, embedder=embedder).as_dict(),
                          "hand_built": score_split(test, proxies=False, embedder=embedder).as_dict()}, indent=1))
        return 0
    print(held_out_table().to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
