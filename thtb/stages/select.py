"""The ``select`` stage: data → the selection method (THTB's cascade or a baseline, :mod:`thtb.methods`) → subset,
score card, summary, plots (+ W&B).

Outputs ``<run_dir>/selection/{subset.jsonl, subset_alpaca.json, subset_messages.jsonl, scores.parquet,
summary.json, hist_<score>.png}`` (the README's "What a run writes"), also published as a content-addressed
artifact (``<cache>/artifacts/select/<fingerprint>/``, :func:`selection_fingerprint`): a rerun or a sweep job with
the same fingerprint restores it instead of selecting again (``reuse=false`` forces a fresh selection).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from thtb import __version__, contamination
from thtb.artifacts import StageArtifact, copy_outputs
from thtb.cascade import SelectionError, SelectionResult
from thtb.cost import stage_cost
from thtb.data import load_records, resolve_data_path, write_alpaca_json, write_jsonl, write_messages_jsonl
from thtb.data.loaders import data_source_problem
from thtb.executor import build_executor, executor_problems
from thtb.fingerprint import fingerprint, records_digest
from thtb.io import atomic_write_text, atomic_path
from thtb.pool import ArrowPool, FramePool, store_pool
from thtb.methods import SelectionContext, SelectionMethod, build_method, check_scorers_available, selection_provenance
from thtb.provenance import code_digest, environment, stage_key_inputs
from thtb.report import build_summary, plot_histograms
from thtb.score_cache import ScoreCache
from thtb.scorers.availability import OFFLINE_HINT
from thtb.tracking import Tracker

log = logging.getLogger(__name__)

STAGE_VERSION = 2
"""Part of the fingerprint (with the stage's code digest, which changes on any code edit by itself)."""

LABEL_COLUMN = "bloom_level"
"""A data column of this name is taken as gold Bloom labels; the summary reports accuracy on it."""


def selection_fingerprint(cfg: dict[str, Any], data_ids: str, method: SelectionMethod | None = None) -> str:
    """Hash of everything that determines the subset: data ids, the selection's config, its method's scorer configs
    and the identity of their models (a local folder's content, a hub snapshot's commit, a shipped model's package
    version), and the stage's code (the method's module too, in the package or not), resource files and library
    versions (:func:`thtb.provenance.stage_key_inputs`)."""
    method = method or build_method(cfg)
    scorer_cfg = method.scorer_configs(cfg)
    selection = {k: v for k, v in cfg["selection"].items() if k != "plots"}
    return fingerprint({
        "version": STAGE_VERSION, "data": data_ids, "fidelity": cfg.get("fidelity"), "selection": selection,
        "seed": cfg.get("seed") if method.seeded else None,  # a scored ranking does not change with the seed
        "scorer_configs": scorer_cfg, "scorers": method.identities(cfg),
        **stage_key_inputs("select", {"selection": selection, **scorer_cfg}, extra_files=method.key_files())})


def score_cache_key(cfg: dict[str, Any], method: SelectionMethod) -> str:
    """What the raw scores of a scorer call depend on besides its texts: the method's scorers' configs and identities
    (:meth:`~thtb.methods.SelectionMethod.cache_inputs`), the select stage's code, resources and libraries — not its
    size settings (budget, fractions, stages) nor the data."""
    inputs = method.cache_inputs(cfg)
    return fingerprint({"version": STAGE_VERSION, "fidelity": cfg.get("fidelity"), **inputs,
                        **stage_key_inputs("select", inputs["configs"], extra_files=method.key_files())})


def run_select(cfg: dict[str, Any], run_dir: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run the select stage from a resolved config dict; returns the summary."""
    method = build_method(cfg)
    cache = ScoreCache(Path(cfg["paths"]["cache_dir"]) / "scores", score_cache_key(cfg, method)) \
        if cfg["reuse"] else None
    executor = build_executor(cfg, parts_dir=cache.root / "parts" / cache.key if cache is not None else None,
                              factory=method.build_scorer)
    try:
        executor.start()  # Ray: connect and check its resources before the data is read
        return _run_select(cfg, run_dir, tracker or Tracker(), executor, cache, method)
    finally:
        executor.close()


def _run_select(cfg: dict[str, Any], run_dir: Path, tracker: Tracker, executor: Any,
                cache: ScoreCache | None, method: SelectionMethod) -> dict[str, Any]:
    start = time.perf_counter()
    pool, report, data_fp = load_pool(cfg, executor)  # data_fp: the exact text every scorer sees, and the format
    load_s = time.perf_counter() - start
    log.info("loaded %d records from %s in %.1f s", len(pool), cfg["data"]["path"], load_s)

    fp = selection_fingerprint(cfg, data_fp, method)
    out = run_dir / "selection"
    artifact = StageArtifact(cfg["paths"]["cache_dir"], "select", fp)
    if cfg["reuse"] and artifact.is_complete():
        artifact.restore(out)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        subset = [json.loads(line)["id"] for line in (out / "subset.jsonl").read_text(encoding="utf-8").splitlines()]
        summary.update(reused=True, artifact=str(artifact.path),  # checked again: the sets or their files may differ
                       contamination=_contamination(cfg, pool, pd.Index(pool.ids).get_indexer(subset), data_fp))
        _write_summary(out / "summary.json", summary)
        tracker.log_summary({"select/n_selected": summary["n_selected"], "select/fingerprint": fp,
                             "select/reused": True, "select/provenance": summary.get("provenance")})
        log.info("select: reusing finished selection %s (%d of %d) → %s", fp, summary["n_selected"],
                 summary["n_input"], out)
        return summary
    check_scorers_available(cfg, method)  # the paper's models (or a judge server) missing: stop before any scoring
    result = select(pool, cfg, executor=executor, cache=cache, method=method)
    result.timings["load"] = load_s
    if not result.selected_ids:  # written for inspection (the score card says why), never published as a result
        summary, _ = _write_outputs(out, pool, report, result, cfg, fp, start, method, data_fp)
        summary.update(reused=False, artifact=None, error="nothing selected")
        _write_summary(out / "summary.json", summary)
        raise SelectionError(f"the selection kept 0 of {len(pool)} samples ("
                             f"{' → '.join(str(v) for v in result.counts.values())}; "
                             f"{sum(len(v) for v in result.failures.values())} failed): nothing to train on. The "
                             f"score card and summary are in {out} (not stored as a result)")

    work = artifact.staging()  # written by this process only, then published whole
    try:
        summary, plots = _write_outputs(work, pool, report, result, cfg, fp, start, method, data_fp)
        summary.update(reused=False, artifact=str(artifact.path))
        _write_summary(work / "summary.json", summary)
        copy_outputs(work, out)  # the run directory gets exactly what this process computed
        artifact.publish(work, {"n_input": summary["n_input"], "n_selected": summary["n_selected"],
                                "method": method.name, "thtb_version": __version__, "data": data_fp})
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone after a publish; removed after a failure
    _log_to_tracker(tracker, summary, result.card, [out / p.name for p in plots], pool)
    log.info("selected %d of %d (%s) in %.1f s → %s", summary["n_selected"], summary["n_input"],
             " → ".join(str(v) for v in result.counts.values()), summary["timings_s"]["total"], out)
    return summary


def _load(cfg: dict[str, Any]) -> tuple[pd.DataFrame, Any]:
    """``data.*`` → the records frame and its load report."""
    data = cfg["data"]
    return load_records(resolve_data_path(str(data["path"])), format=data.get("format"), fidelity=cfg["fidelity"],
                        split=data.get("split", "train"), drop_empty=bool(data.get("drop_empty", False)),
                        dedupe=bool(data.get("dedupe", False)), limit=data.get("limit"))


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
                   fp: str, start: float, method: SelectionMethod, data_fp: str) -> tuple[dict, list[Path]]:
    """The subset files, the score card and the plots written into ``out``; returns the summary and the plots."""
    rows = result.card["row"].to_numpy()[pd.Index(result.card["id"]).get_indexer(result.selected_ids)]
    subset = pool.frame(rows)
    write_jsonl(subset, out / "subset.jsonl")
    write_alpaca_json(subset, out / "subset_alpaca.json")
    write_messages_jsonl(subset, out / "subset_messages.jsonl")
    write_score_card(result, pool, out / "scores.parquet")
    report = dataclasses.asdict(report) if dataclasses.is_dataclass(report) else report
    summary = build_summary(result, fingerprint=fp, load_report=report, labels=pool.column(LABEL_COLUMN))
    summary["thtb_version"] = __version__
    summary["provenance"] = {"selection": selection_provenance(cfg, fp, method), **environment()}
    timings = summary["timings_s"]
    begin = time.perf_counter()
    summary["contamination"] = _contamination(cfg, pool, rows, data_fp)  # the pool's rate beside the subset's
    timings["contamination"] = round(time.perf_counter() - begin, 3)
    plots = plot_histograms(result, out) if method.plots else []
    timings["total"] = round(time.perf_counter() - start, 3)  # from reading the data to the last file written
    summary["cost"] = stage_cost(timings["total"], judge=(summary.get("scorers") or {}).get("judge"),
                                 executor=(cfg.get("executor") or {}).get("name", "local"))
    return summary, plots


def _contamination(cfg: dict[str, Any], pool: Any, rows: Any, data_fp: str) -> dict[str, Any]:
    """The subset's overlap with the evaluation sets of ``cfg.contamination`` (:mod:`thtb.contamination`); with
    ``reuse``, each set's scan of this pool (``data_fp``) is stored under ``<cache_dir>/contamination/``."""
    spec = cfg.get("contamination") or {}
    scans = contamination.PoolScans(Path(cfg["paths"]["cache_dir"]) / "contamination", {
        "version": 1, "pool": data_fp, "code": code_digest(["thtb.contamination"])}) if cfg["reuse"] else None
    return contamination.check(pool, rows, spec.get("sets") or {}, ngram=int(spec.get("ngram", 13)),
                               min_tokens=int(spec.get("min_tokens", 8)), scans=scans)


def select(pool: Any, cfg: dict[str, Any], executor: Any, cache: ScoreCache | None,
           method: SelectionMethod) -> SelectionResult:
    """The selection ``method`` over ``pool`` (:mod:`thtb.pool`), keeping ``method.n_select(len(pool))`` rows, its
    scorers run by ``executor`` (started by the caller), with the score ``cache`` (``None``: none)."""
    if unused := executor.unused_roles(method.roles):
        log.info("select: executor.scorers configures %s, which selection %s does not use (its scorer roles: %s)",
                 unused, method.name, list(method.roles) or "none")
    context = SelectionContext(cfg=cfg, seed=int(cfg["seed"]), fidelity=str(cfg["fidelity"]), executor=executor,
                               cache=cache)
    try:
        result = method.select(pool, method.n_select(len(pool)), context)
    finally:
        if context.judge_stats:  # also when the run stops on its failure budget
            log.info("judge: %s", {k: v for k, v in context.judge_stats.items() if k != "cache"})
    result.scorer_stats["executor"] = executor.describe()
    if context.judge_stats:
        result.scorer_stats.setdefault("judge", context.judge_stats)
    if cache is not None:
        result.scorer_stats["score_cache"] = cache.stats()
        if cache.hits:
            log.info("select: %d of %d scorer calls reused from the score cache (%s)", cache.hits,
                     cache.hits + cache.misses, cache.root)
    return result


def write_score_card(result: SelectionResult, pool: Any, path: Path) -> None:
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


def _log_to_tracker(tracker: Tracker, summary: dict, card: pd.DataFrame, plots: list[Path], pool: Any) -> None:
    tracker.log_metrics({f"count/{k}": v for k, v in summary["counts"].items()}, prefix="select/")
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
                         "select/provenance": summary.get("provenance"), "select/cost": summary.get("cost")})
    if summary.get("bloom_accuracy"):
        tracker.log_summary({"select/bloom_accuracy": summary["bloom_accuracy"]["accuracy"]})


def preflight(cfg: dict[str, Any], run_dir: Path, stages: list[str]) -> list[str]:
    """Every problem the select stage would hit, found before the run's first stage without loading a model: its
    data source (:func:`~thtb.data.loaders.data_source_problem`), every scorer its selection uses that cannot run
    here (:meth:`~thtb.methods.SelectionMethod.problems`), Ray's (:func:`~thtb.executor.executor_problems`).
    Missing scorers are no problem when a finished selection of this very config and data is there to reuse
    (``reuse=true``); only then is the data read here."""
    problems: list[str] = []
    path = cfg["data"]["path"]
    if data_why := data_source_problem(resolve_data_path(str(path))):
        problems.append(f"select: data.path={path} {data_why}")
    try:
        method = build_method(cfg)
    except Exception as exc:  # a method that cannot be built: the stage would stop on it first thing
        return [*problems, f"select: selection {cfg['selection'].get('name')!r}: {exc}"]
    scorers = method.problems(cfg)
    if scorers and not data_why and cfg["reuse"]:
        try:
            reusable = _finished_selection(cfg, method)
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


def _finished_selection(cfg: dict[str, Any], method: SelectionMethod) -> Path | None:
    """The stored selection ``run_select`` would reuse (its artifact folder), or ``None``. Reads the data only
    when some finished selection is stored at all."""
    root = Path(cfg["paths"]["cache_dir"]).expanduser() / "artifacts" / "select"
    if not root.is_dir() or not any((entry / "manifest.json").is_file() for entry in root.iterdir()):
        return None
    records, report = _load(cfg)
    artifact = StageArtifact(cfg["paths"]["cache_dir"], "select",
                             selection_fingerprint(cfg, records_digest(records, report.format), method))
    return artifact.path if artifact.is_complete() else None
