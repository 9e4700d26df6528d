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
