"""The ``score`` stage: a training dataset's THTB score (the paper's Table 3), every sample scored, none dropped.

The training dataset (``score.dataset``, else ``train.dataset``, else this run's ``selection/subset.jsonl``) is
scored with the datasets of ``score.with``, through the select stage's scorers (``reward=``, ``judge=``,
``embedder=``, ``scoring=``) and :class:`~thtb.cascade.Cascade` with every stage fraction set to 1;
:mod:`thtb.dataset_score` states the reading of the score and why only datasets pooled in one run compare.

Outputs, under ``<run_dir>/score/``:

- ``summary.json``   ``thtb_score`` of the training dataset, its three mean normalised stage scores
  (``means``), ``n``, the same for every pooled dataset (``datasets``), the normalisation, the cascade
  settings, the scorer config, warnings and wall times
- ``scores.parquet`` one row per pooled sample: ``dataset`` (index into ``summary.datasets``), ``source``,
  ``id``, query, response, every raw stage score, ``quality_n``/``ihs_n``/``ehs_n``, ``thtb_score``, ``error``
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from thtb import __version__
from thtb.cascade import STAGES
from thtb.data import load_records, resolve_data_path
from thtb.data.loaders import dataset_source
from thtb.fingerprint import fingerprint, ids_digest
from thtb.methods import selection_provenance
from thtb.methods.cascade import THTB
from thtb.provenance import environment, stage_key_inputs
from thtb.io import atomic_path, atomic_write_text
from thtb.scorers import build_scorers
from thtb.dataset_score import score_datasets
from thtb.tracking import Tracker

log = logging.getLogger(__name__)

STAGE_VERSION = 1


def score_sources(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    """The scored dataset first (``score.dataset`` / ``train.dataset`` / the run's subset), then ``score.with``."""
    sc = cfg.get("score") or {}
    main = resolve_data_path(str(sc["dataset"])) if sc.get("dataset") else dataset_source(cfg, run_dir)
    return [main, *(resolve_data_path(str(p)) for p in (sc.get("with") or []))]


def run_score(cfg: dict[str, Any], run_dir: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run the score stage from a resolved config dict; returns the summary."""
    tracker = tracker or Tracker()
    start = time.perf_counter()
    sc = cfg.get("score") or {}
    train = cfg.get("train") or {}
    sources = score_sources(cfg, run_dir)
    limit = sc.get("limit")
    frames, reports = [], []
    for i, source in enumerate(sources):
        fmt = train.get("dataset_format") if i == 0 and not sc.get("dataset") else None
        records, report = load_records(source, format=fmt, fidelity=cfg["fidelity"],
                                       split=train.get("dataset_split", "train"),
                                       limit=limit if limit is not None else (train.get("limit") if i == 0 else None))
        frames.append(records)
        reports.append(report)
    load_s = time.perf_counter() - start

    sel = cfg.get("selection") or {}
    method = THTB(name="thtb", fractions=sel.get("fractions"), failure_budget=sel.get("failure_budget", 0),
                  intrinsic=sel.get("intrinsic"), extrinsic=sel.get("extrinsic"))  # all three stages, whatever selects
    config = method.cascade_config(str(cfg["fidelity"]))
    if sc.get("k") is not None:
        config.k = int(sc["k"])
    scorers = build_scorers(cfg, list(STAGES))
    normalize = sc.get("normalize", "minmax")
    try:
        result = score_datasets(frames, config, normalize=normalize, quality=scorers.quality, bloom=scorers.bloom,
                                disciplines=scorers.disciplines, embedder=scorers.embedder)
    finally:
        if scorers.judge is not None:
            log.info("judge: %s", {k: v for k, v in scorers.judge.stats().items() if k != "cache"})

    out = run_dir / "score"
    out.mkdir(parents=True, exist_ok=True)
    card = result.card
    card.insert(1, "source", [sources[k] for k in card["dataset"]])
    card.insert(3, "query", [q for f in frames for q in f["query"]])
    card.insert(4, "response", [r for f in frames for r in f["response"]])
    with atomic_path(out / "scores.parquet") as tmp:
        card.to_parquet(tmp, index=False)

    datasets = [{"source": s, "role": "scored" if k == 0 else "with", "sha256": r.sha256, **d}
                for k, (s, r, d) in enumerate(zip(sources, reports, result.datasets, strict=True))]
    main = datasets[0]
    scorer_cfg = {"reward": cfg.get("reward"), "judge": cfg.get("judge"), "embedder": cfg.get("embedder")}
    cascade = {k: getattr(config, k) for k in ("fidelity", "k", "max_features", "random_state", "ic_round",
                                               "singleton_policy", "zero_row_self_distance", "failure_budget")}
    summary = {
        **{k: main[k] for k in ("thtb_score", "means", "n", "n_scored", "n_failed", "source")},
        "n_pooled": len(card), "normalize": normalize,
        "definition": "mean over samples of (q̂ + îhs + êhs) / 3, each stage score min-max normalised over the "
                      "pooled scored set (thtb.dataset_score)" if normalize == "minmax" else
                      "mean over samples of (quality + ihs + ehs) / 3, the cascade's values (thtb.dataset_score)",
        "datasets": datasets, "cascade": cascade, "scorers": scorer_cfg, "warnings": result.warnings,
        "fingerprint": fingerprint({"version": STAGE_VERSION, "data": [ids_digest(f["id"]) for f in frames],
                                    "cascade": cascade, "normalize": normalize, **scorer_cfg,
                                    **stage_key_inputs("score", scorer_cfg)}),
        "timings_s": {"load": round(load_s, 3), **{k: round(v, 3) for k, v in result.timings.items()},
                      "total": round(time.perf_counter() - start, 3)},
        "thtb_version": __version__,
        "provenance": {"selection": selection_provenance(cfg, method=method), **environment()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
    tracker.log_metrics({"thtb_score": main["thtb_score"], **{f"mean/{k}": v for k, v in main["means"].items()},
                         "n": main["n"]}, prefix="score/")
    tracker.log_summary({f"score/thtb_score/{Path(d['source']).stem}": d["thtb_score"] for d in datasets})
    for d in datasets:
        log.info("THTB score %.4f (n=%d, failed %d) %s", d["thtb_score"] or float("nan"), d["n"], d["n_failed"],
                 d["source"])
    return summary
