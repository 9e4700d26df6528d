"""The ``select`` stage: data → THTB cascade → subset, score card, summary, plots (+ W&B).

Outputs, under ``<run_dir>/selection/``:

- ``subset.jsonl``      the selected samples ``{id, query, response}``, best first
- ``subset_alpaca.json`` / ``subset_messages.jsonl``  the same subset for Alpaca tooling and TRL
- ``scores.parquet``    one row per input sample: every raw and normalised score, Bloom level,
  disciplines, cluster, the stage it fell at and why, its rank per stage and overall
- ``summary.json``      counts per stage (they add up), score statistics, Bloom-level and
  discipline distributions, per-scorer wall time, the fingerprint
- ``hist_<score>.png``  each score's distribution with the stage cut-off marked

The folder is also published as a content-addressed artifact (``<cache>/artifacts/select/<fingerprint>/``,
the fingerprint of the data ids and every config that shapes the subset): a rerun or a sweep job with the
same fingerprint restores it instead of selecting again (``reuse=false`` forces a fresh selection).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from thtb import __version__
from thtb.artifacts import StageArtifact, copy_outputs
from thtb.baselines import ALPAGASUS_THRESHOLD, select_baseline
from thtb.cascade import Cascade, SelectionError, SelectionResult, cascade_config, n_selected, variant_name
from thtb.data import load_records, resolve_data_path, write_alpaca_json, write_jsonl, write_messages_jsonl
from thtb.executor import build_executor, executor_problems, merge_judge_stats
from thtb.fingerprint import fingerprint, records_digest
from thtb.io import atomic_write_text, atomic_path
from thtb.pool import ArrowPool, FramePool, store_pool
from thtb.provenance import environment, selection_provenance, stage_key_inputs
from thtb.report import build_summary, plot_histograms
from thtb.score_cache import ScoreCache
from thtb.scorers import build_scorers, check_scorers_available
from thtb.tracking import Tracker

log = logging.getLogger(__name__)

STAGE_VERSION = 2
"""Part of the fingerprint (with the stage's code digest, which changes on any code edit by itself)."""

LABEL_COLUMN = "bloom_level"
"""A data column of this name is taken as gold Bloom labels; the summary reports accuracy on it."""


def selection_fingerprint(cfg: dict[str, Any], data_ids: str) -> str:
    """Hash of everything that determines the subset: data ids, stage config, scorer configs and the identity
    of their models (a local folder's content, a hub snapshot's commit, a shipped model's package version),
    and the stage's code, resource files and library versions (:func:`thtb.provenance.stage_key_inputs`)."""
    method = cfg["selection"].get("method", "thtb")
    stages = cfg["selection"]["stages"] if method == "thtb" else []
    scorer_cfg = {
        "reward": cfg.get("reward") if "quality" in stages else None,
        "judge": cfg.get("judge") if "intrinsic" in stages or method == "alpagasus" else None,
        "embedder": cfg.get("embedder") if "intrinsic" in stages else None,
    }
    selection = {k: v for k, v in cfg["selection"].items() if k != "plots"}
    return fingerprint(
        {"version": STAGE_VERSION, "data": data_ids, "fidelity": cfg.get("fidelity"), "selection": selection,
         "seed": cfg.get("seed"), **scorer_cfg, "scorers": selection_provenance(cfg)["scorers"],
         **stage_key_inputs("select", {"selection": selection, **scorer_cfg})}
    )


def score_cache_key(cfg: dict[str, Any]) -> str:
    """What the raw scores of a scorer call depend on besides its texts: the scorers' configs and identities, the
    select stage's code, resources and libraries — not ``selection.*`` (budget, fractions, stages) nor the data."""
    scorer_cfg = {"reward": cfg.get("reward"), "judge": cfg.get("judge"), "embedder": cfg.get("embedder")}
    return fingerprint({"version": STAGE_VERSION, "fidelity": cfg.get("fidelity"), **scorer_cfg,
                        "scorers": selection_provenance({**cfg, "selection": {**cfg["selection"], "method": "thtb",
                                                         "stages": ["quality", "intrinsic", "extrinsic"]}})["scorers"],
                        **stage_key_inputs("select", scorer_cfg)})


def run_select(cfg: dict[str, Any], run_dir: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run the select stage from a resolved config dict; returns the summary."""
    cache = ScoreCache(Path(cfg["paths"]["cache_dir"]) / "scores", score_cache_key(cfg)) if cfg.get("reuse", True) \
        else None
    executor = build_executor(cfg, parts_dir=cache.root / "parts" / cache.key if cache is not None else None)
    try:
        executor.start()  # Ray: connect and check its resources before the data is read
        return _run_select(cfg, run_dir, tracker or Tracker(), executor, cache)
    finally:
        executor.close()


def _run_select(cfg: dict[str, Any], run_dir: Path, tracker: Tracker, executor: Any,
                cache: ScoreCache | None) -> dict[str, Any]:
    start = time.perf_counter()
    pool, report, data_fp = load_pool(cfg, executor)  # data_fp: the exact text every scorer sees, and the format
    load_s = time.perf_counter() - start
    log.info("loaded %d records from %s in %.1f s", len(pool), cfg["data"]["path"], load_s)

    fp = selection_fingerprint(cfg, data_fp)
    out = run_dir / "selection"
    artifact = StageArtifact(cfg["paths"]["cache_dir"], "select", fp)
    if cfg.get("reuse", True) and artifact.is_complete():
        artifact.restore(out)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        summary.update(reused=True, artifact=str(artifact.path))
        _write_summary(out / "summary.json", summary)
        tracker.log_summary({"select/n_selected": summary["n_selected"], "select/fingerprint": fp,
                             "select/reused": True, "select/provenance": summary.get("provenance")})
        log.info("select: reusing finished selection %s (%d of %d) → %s", fp, summary["n_selected"],
                 summary["n_input"], out)
        return summary
    check_scorers_available(cfg)  # the paper's models (or a judge server) missing: stop before any scoring
    result = select(pool, cfg, executor=executor, cache=cache)
    result.timings["load"] = load_s
    if not result.selected_ids:  # written for inspection (the score card says why), never published as a result
        summary, _, _ = _write_outputs(out, pool, report, result, cfg, fp, start)
        summary.update(reused=False, artifact=None, error="nothing selected")
        _write_summary(out / "summary.json", summary)
        raise SelectionError(
            f"the selection kept 0 of {len(pool)} samples ({' → '.join(str(v) for v in result.counts.values())}; "
            f"{sum(len(v) for v in result.failures.values())} failed): nothing to train on. The score card and "
            f"summary are in {out} (not stored as a result)"
        )

    work = artifact.staging()  # written by this process only, then published whole
    try:
        summary, card, plots = _write_outputs(work, pool, report, result, cfg, fp, start)
        summary.update(reused=False, artifact=str(artifact.path))
        _write_summary(work / "summary.json", summary)
        copy_outputs(work, out)  # the run directory gets exactly what this process computed
        artifact.publish(work, {"n_input": summary["n_input"], "n_selected": summary["n_selected"],
                                "method": cfg["selection"].get("method", "thtb"), "thtb_version": __version__,
                                "data": data_fp})
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone after a publish; removed after a failure
    plots = [out / p.name for p in plots]
    _log_to_tracker(tracker, summary, card, plots, pool)
    log.info(
        "selected %d of %d (%s) in %.1f s → %s",
        summary["n_selected"],
        summary["n_input"],
        " → ".join(str(v) for v in result.counts.values()),
        summary["timings_s"]["total"],
        out,
    )
    return summary


def _load(cfg: dict[str, Any]) -> tuple[pd.DataFrame, Any]:
    """``data.*`` → the records frame and its load report."""
    data = cfg["data"]
    return load_records(
        resolve_data_path(str(data["path"])),
        format=data.get("format"),
        fidelity=cfg.get("fidelity", "reference"),
        split=data.get("split", "train"),
        drop_empty=bool(data.get("drop_empty", False)),
        dedupe=bool(data.get("dedupe", False)),
        limit=data.get("limit"),
    )


def load_pool(cfg: dict[str, Any], executor: Any) -> tuple[Any, Any, str]:
    """The pool to select from, its load report and its data digest. ``executor=local`` reads the records here
    (:class:`~thtb.pool.FramePool`); ``executor=ray`` reads them in a Ray task that writes the pool file under
    ``<cache_dir>/pools/`` (a folder every node sees) and hands back its path: the driver maps the file and keeps
    only ids, content keys and lengths (:class:`~thtb.pool.ArrowPool`)."""
    if executor.name == "local":
        records, report = _load(cfg)
        return FramePool(records), report, records_digest(records, report.format)
    folder = Path(cfg["paths"]["cache_dir"]).expanduser().resolve() / "pools"
    path, report, digest = executor.run(_load_and_store, cfg, str(folder))
    return ArrowPool(path), report, digest


def _load_and_store(cfg: dict[str, Any], folder: str) -> tuple[str, Any, str]:
    """Read ``data.*`` and write it as a pool file named by its digest (a Ray task of :func:`load_pool`)."""
    records, report = _load(cfg)
    digest = records_digest(records, report.format)
    return str(store_pool(records, folder, digest)), report, digest


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")


def _write_outputs(out: Path, pool: Any, report: Any, result: SelectionResult, cfg: dict[str, Any],
                   fp: str, start: float) -> tuple[dict, pd.DataFrame, list[Path]]:
    """The subset files, the score card, the plots and the summary, written into ``out``; returns the score card
    without its texts."""
    positions = pd.Index(result.card["id"]).get_indexer(result.selected_ids)
    subset = pool.frame(result.card["row"].to_numpy()[positions])
    write_jsonl(subset, out / "subset.jsonl")
    write_alpaca_json(subset, out / "subset_alpaca.json")
    write_messages_jsonl(subset, out / "subset_messages.jsonl")
    write_score_card(result, pool, out / "scores.parquet")
    card = result.card
    labels = pool.column(LABEL_COLUMN)
    summary = build_summary(result, fingerprint=fp, load_report=_jsonable(report), labels=labels)
    summary["timings_s"]["total"] = round(time.perf_counter() - start, 3)
    summary["thtb_version"] = __version__
    summary["provenance"] = {"selection": selection_provenance(cfg, fp), **environment()}
    plots = plot_histograms(result, out) if cfg["selection"].get("plots", True) else []
    return summary, card, plots


def select(records: pd.DataFrame | Any, cfg: dict[str, Any], executor: Any = None,
           cache: ScoreCache | None = None) -> SelectionResult:
    """THTB's cascade, or a baseline (``selection.method``) size-matched to it, over ``records`` (a records frame
    or a pool, :mod:`thtb.pool`). ``executor``: where the cascade's scorers run (started by the caller; default:
    ``cfg.executor``, started and closed here); ``cache``: the score cache (default: none)."""
    pool = records if hasattr(records, "texts") else FramePool(records)
    if executor is None:
        executor = build_executor(cfg)
        executor.start()
        try:
            return select(pool, cfg, executor, cache)
        finally:
            executor.close()
    config = cascade_config(cfg)
    method = cfg["selection"].get("method", "thtb")
    if method == "thtb" and cfg["selection"].get("budget") is None and config.budget is not None:
        log.info("select: ablation %s keeps the full cascade's size, %g%% of the input (selection.budget=%g); "
                 "set selection.budget to choose another", variant_name(cfg["selection"]), 100 * config.budget,
                 config.budget)
    if method != "thtb":
        size = cfg["selection"].get("size") or n_selected(len(pool), config.fractions, config.stages, config.budget)
        scorer, extra = None, {}
        if method in ("ifd", "alpagasus"):  # model-scored baselines: selection.<method> builds the scorer
            from hydra.utils import instantiate

            scorer = instantiate(cfg["selection"][method])
        if method == "alpagasus":
            extra["threshold"] = float(cfg["selection"].get("threshold", ALPAGASUS_THRESHOLD))
        judge = getattr(scorer, "judge", None)
        try:
            result = select_baseline(pool.frame(), method, int(size), seed=int(cfg.get("seed", 42)), scorer=scorer,
                                     failure_budget=config.failure_budget, **extra)
        finally:
            if judge is not None:  # also when the run stops on its failure budget
                log.info("judge: %s", {k: v for k, v in judge.stats().items() if k != "cache"})
        if judge is not None:
            result.scorer_stats["judge"] = judge.stats()
        return result
    scorers = build_scorers(cfg, config.stages)
    cascade = Cascade(
        config,
        quality=scorers.quality,
        bloom=scorers.bloom,
        disciplines=scorers.disciplines,
        embedder=scorers.embedder,
        score_cache=cache,
        executor=executor,
    )
    try:
        result = cascade.run(pool)
        result.scorer_stats["executor"] = executor.describe()
        if scorers.judge is not None:  # with executor=ray the actors' judges did the asking: their counters added
            result.scorer_stats["judge"] = merge_judge_stats(scorers.judge.stats(), executor.judge_stats())
        calibration = {role: {"scorer": getattr(scorer, "name", type(scorer).__name__), **scorer.calibration}
                       for role, scorer in (("quality", scorers.quality), ("bloom", scorers.bloom),
                                            ("disciplines", scorers.disciplines))
                       if getattr(scorer, "calibration", None)}  # the offline scorers say it themselves
        if calibration:  # the offline scorers' agreement with the labels read in calibration/ (held-out split)
            result.scorer_stats["calibration"] = calibration
        if cache is not None:
            result.scorer_stats["score_cache"] = cache.stats()
            if cache.hits:
                log.info("select: %d of %d scorer calls reused from the score cache (%s)", cache.hits,
                         cache.hits + cache.misses, cache.root)
        return result
    finally:
        if scorers.judge is not None:  # also when the run stops on its failure budget
            stats = merge_judge_stats(scorers.judge.stats(), executor.judge_stats())
            log.info("judge: %s", {k: v for k, v in stats.items() if k != "cache"})


def write_score_card(result: SelectionResult, pool: Any, path: Path) -> Path:
    """``scores.parquet``: the score card with each sample's query and response beside its id (for inspection;
    list columns stay lists). The texts go from the pool to the file as Arrow arrays (a pool file's are views of
    the mapped file), never as Python strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(result.card, preserve_index=False)
    texts = pool.text_arrays()
    table = table.add_column(2, "query", texts["query"]).add_column(3, "response", texts["response"])
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _log_to_tracker(tracker: Tracker, summary: dict, card: pd.DataFrame, plots: list[Path], pool: Any) -> None:
    counts = summary["counts"]
    tracker.log_metrics({f"count/{k}": v for k, v in counts.items()}, prefix="select/")
    tracker.log_metrics({f"time/{k}": v for k, v in summary["timings_s"].items()}, prefix="select/")
    for col in ("quality_raw", "bloom", "ic", "ihs", "irei", "sc", "ehs"):
        if col in card:
            tracker.log_histogram(f"select/hist/{col}", card[col].dropna().to_numpy())
    if plots:
        tracker.log_images("select/histograms", plots)
    sample = card[card["selected"]].head(200) if card["selected"].any() else card.head(200)
    texts = pool.texts(sample["row"].to_numpy(), ["query", "response"])
    sample = sample.copy()
    sample.insert(2, "query", texts[0])
    sample.insert(3, "response", texts[1])
    tracker.log_table("select/score_card_sample", sample)
    tracker.log_summary({"select/n_selected": summary["n_selected"], "select/fingerprint": summary["fingerprint"],
                         "select/provenance": summary.get("provenance")})
    if summary.get("bloom_accuracy"):
        tracker.log_summary({"select/bloom_accuracy": summary["bloom_accuracy"]["accuracy"]})


def _jsonable(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    return obj


def preflight(cfg: dict[str, Any], run_dir: Path, stages: list[str]) -> list[str]:
    """Every problem the select stage would hit, found before the run's first stage without loading a model:
    its data source (:func:`~thtb.data.loaders.data_source_problem`: a missing file, a hub dataset that cannot
    be downloaded and is not cached) and every scorer its selection uses that cannot run here
    (:func:`~thtb.scorers.availability.scorer_problems`: a model neither local nor cached when offline, a judge
    server that does not answer within a few seconds) and ``executor=ray`` without Ray or with an address nobody
    answers at (:func:`~thtb.executor.executor_problems`). Missing scorers are no problem when a finished selection
    of this very config and data is there to reuse (``reuse=true``); only then is the data read here."""
    from thtb.data.loaders import data_source_problem
    from thtb.scorers.availability import OFFLINE_HINT, scorer_problems

    problems: list[str] = []
    path = cfg["data"]["path"]
    data_why = data_source_problem(resolve_data_path(str(path)))
    if data_why:
        problems.append(f"select: data.path={path} {data_why}")
    scorers = scorer_problems(cfg)
    if scorers and not data_why and cfg.get("reuse", True):
        try:
            reusable = _finished_selection(cfg)
        except (ValueError, OSError) as exc:  # DataError &c.: the stage would stop on it first thing; say it now
            problems.append(f"select: {exc}")
            reusable = None
        if reusable is not None:
            log.info("select: a finished selection of this config and data will be reused (%s); its scorers "
                     "are not needed", reusable)
            scorers = []
    problems += [f"select: {what}; {fix}" for what, fix in scorers]
    if scorers:
        problems[-1] += f"\n    Make the select stage's scorers available, {OFFLINE_HINT}."
    problems += [f"select: {problem}" for problem in executor_problems(cfg)]  # Ray missing or unreachable
    return problems


def _finished_selection(cfg: dict[str, Any]) -> Path | None:
    """The stored selection ``run_select`` would reuse (its artifact folder), or ``None``. Reads the data only
    when some finished selection is stored at all."""
    root = Path(cfg["paths"]["cache_dir"]).expanduser() / "artifacts" / "select"
    if not root.is_dir() or not any((entry / "manifest.json").is_file() for entry in root.iterdir()):
        return None
    records, report = _load(cfg)
    artifact = StageArtifact(cfg["paths"]["cache_dir"], "select",
                             selection_fingerprint(cfg, records_digest(records, report.format)))
    return artifact.path if artifact.is_complete() else None
