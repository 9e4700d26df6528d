"""Where the select stage's per-row scorers run: in this process (``executor=local``, the default) or on Ray Data
(``executor=ray``): the same subset, byte for byte.

A selection method (:mod:`thtb.methods`) hands each scorer call to its executor as ``map(role, scorer, method, pool,
rows, columns)``: the role (one of the method's ``roles``: THTB's ``quality``, ``bloom``, ``disciplines``; IFD's
``ifd``…), the driver's scorer, the scorer's method to call, and which rows and text columns of the pool
(:mod:`thtb.pool`) it scores.

- :class:`LocalExecutor` calls ``scorer.method(*pool.texts(rows, columns))``.
- :class:`RayExecutor` makes the rows' positions and content keys a Ray Dataset (``override_num_blocks`` blocks)
  and maps it through a pool of actors (``Dataset.map_batches`` with ``executor.scorers.<role>``: ``concurrency``
  replicas, each with its ``num_cpus``/``num_gpus``), each holding its own copy of the role's scorer, built from
  the run's config by the selection method's ``build_scorer(role, cfg)`` (the executor's ``factory``), and
  reading its rows' texts from the pool file (an Arrow file every node sees, written by a Ray task that read the
  data: :meth:`RayExecutor.run`); the rows come back in order. Calls over the same rows can share one actor pool
  (``map_many``: THTB's Bloom and disciplines scorers, built in one process, embed each query once). A scorer is
  row-wise (a row's
  output depends on that row alone) or pool-dependent (:class:`~thtb.scorers.base.PoolDependent`: the offline
  quality scorers' TF-IDF is fitted on the pool): then a first pass gathers the pool's statistics (additive counts
  per block, merged on the driver) and the second scores every block with them, which gives each row what one call
  over the whole pool gives.

The global steps — the cuts and their tie-breaks, min–max normalisation, the discipline descriptions and their
embeddings, the TF-IDF/K-Means silhouettes of stage 3 — run on the driver, in :mod:`thtb.cascade`, whichever the
executor. With ``executor=ray`` the driver holds per row an id (keys and lengths it reads from the mapped file); it
reads texts only for stage 3's queries (a tenth of the pool with the paper's fractions) and the selected rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.io import atomic_write_text
from thtb.pool import open_table, read_texts
from thtb.scorers.base import PoolDependent

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'thtb[ray]'"

Call = tuple[str, Any, str, Sequence[str]]
"""One scorer call of :meth:`~RayExecutor.map_many`: ``(role, scorer, method, columns)``."""


def map_in_turn(executor: Any, calls: Sequence[Call], pool: Any, rows: np.ndarray
                ) -> tuple[list[pd.DataFrame], list[float]]:
    """``executor.map`` of each call in turn: the frames and each call's wall seconds."""
    frames, seconds = [], []
    for role, scorer, method, columns in calls:
        start = time.perf_counter()
        frames.append(executor.map(role, scorer, method, pool, rows, columns))
        seconds.append(time.perf_counter() - start)
    return frames, seconds


class ExecutorError(RuntimeError):
    """The executor cannot run here: Ray missing, its cluster unreachable, resources it does not have."""


class LocalExecutor:
    """Scorer calls in this process."""

    name = "local"

    def start(self) -> None:
        pass

    def run(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    def map(self, role: str, scorer: Any, method: str, pool: Any, rows: np.ndarray,
            columns: Sequence[str]) -> pd.DataFrame:
        return getattr(scorer, method)(*pool.texts(rows, columns))

    def map_many(self, calls: Sequence[Call], pool: Any, rows: np.ndarray) -> tuple[list[pd.DataFrame], list[float]]:
        """Several calls ``(role, scorer, method, columns)`` over the same rows, one after the other: their frames
        and each one's wall seconds."""
        return map_in_turn(self, calls, pool, rows)

    def judge_stats(self) -> dict[str, Any]:
        return {}  # the judge ran in this process: its own stats() say everything

    def unused_roles(self, roles: Sequence[str]) -> list[str]:
        return []  # no per-role settings

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def close(self) -> None:
        pass


class RayExecutor:
    """Scorer calls mapped over Ray Data actor pools (module doc).

    Args:
        run_config: the run's resolved config (plain dict): each actor builds its role's scorer from it with
            ``factory``.
        factory: ``factory(role, run_config)`` builds a role's scorer (the selection method's ``build_scorer``;
            picklable: every actor calls it).
        address: ``local`` (start a Ray here with ``init``), ``auto`` (the running cluster: ``ray start``,
            ``RAY_ADDRESS``), ``host:port`` or ``ray://host:port``.
        init: more ``ray.init`` arguments (e.g. ``num_cpus`` for a local Ray).
        override_num_blocks: Ray Data blocks per scorer call (``None``: one per ``batch_size`` rows); the
            result does not depend on it.
        batch_size: rows per call of an actor (at most; a call's rows are cut into at least 4 batches per
            replica). Large batches embed faster: the embedder's canonical batching fills each token length's last
            forward pass with copies, and a small batch has few texts of each length (``--only scale`` in
            benchmarks/README.md).
        scorers: per role, ``map_batches`` arguments: ``concurrency`` (replicas), ``num_cpus``, ``num_gpus``, …
        parts_dir: where each scored batch is stored, keyed by its rows' content (:func:`thtb.pool.row_key`)
            under the scorer's role and name (and, for a pool-dependent scorer, the pool): a rerun after a killed driver
            scores only the rows not stored; a row stored with an error is scored again. On a cluster it must be
            a folder every node sees. ``None``: nothing stored.
    """

    name = "ray"

    def __init__(self, run_config: Mapping[str, Any], factory: Any = None, address: str = "local",
                 init: Mapping[str, Any] | None = None,
                 override_num_blocks: int | None = None, batch_size: int = 8192,
                 scorers: Mapping[str, Mapping[str, Any]] | None = None, parts_dir: str | Path | None = None) -> None:
        if batch_size < 1 or (override_num_blocks is not None and override_num_blocks < 1):
            raise ValueError(f"executor.batch_size and override_num_blocks must be >= 1, got {batch_size} and "
                             f"{override_num_blocks}")
        self.run_config = dict(run_config)
        self.factory = factory
        self.address = str(address)
        self.init_args = {k: v for k, v in (init or {}).items() if v is not None}
        self.override_num_blocks = override_num_blocks
        self.batch_size = int(batch_size)
        self.scorers = {role: {k: v for k, v in (args or {}).items() if v is not None}
                        for role, args in (scorers or {}).items()}
        self.parts_dir = Path(parts_dir) if parts_dir is not None else None
        self.calls: list[dict[str, Any]] = []
        self.judge_counts: dict[str, Any] = {}
        """The judge counters of the actors' own judges (calls, cache hits, tokens…), summed over every batch."""
        self._started_ray = False

    # ------------------------------------------------------------------ cluster
    def start(self) -> None:
        """Connect to (or start) Ray and check it has what the scorers ask for, before any scoring."""
        ray = _import_ray()
        problem = address_problem(self.address)
        if problem:
            raise ExecutorError(problem)
        if not ray.is_initialized():
            if self.address == "local":  # a Ray of this machine, for this run
                ray.init(**{"include_dashboard": False, "log_to_driver": False, **self.init_args})
            else:  # a running cluster has its own size: `init` only carries connection options
                ray.init(address=self.address, **{"log_to_driver": False, **self.init_args})
            self._started_ray = True
        resources = ray.cluster_resources()
        for role, args in self.scorers.items():
            for key, unit in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
                have = resources.get(unit, 0)
                if float(args.get(key) or 0) > have:
                    raise ExecutorError(f"executor.scorers.{role}.{key}={args[key]} but the Ray cluster at "
                                        f"{self.address} has {have:g} {unit}(s) in all")

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def judge_stats(self) -> dict[str, Any]:
        """The actors' judge counters, summed (empty where no judge-backed scorer ran here)."""
        return dict(self.judge_counts)

    def unused_roles(self, roles: Sequence[str]) -> list[str]:
        """The roles ``executor.scorers`` configures that a method with ``roles`` does not have (a typo, or another
        method's roles: the defaults name THTB's)."""
        return sorted(set(self.scorers) - set(roles))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "override_num_blocks": self.override_num_blocks,
                "batch_size": self.batch_size, "scorers": self.scorers, "calls": self.calls}

    # ------------------------------------------------------------------ scoring
    def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` as a Ray task (one CPU; a worker lost is retried by Ray, an exception is not), its own
        exception raised here as it is (a DataError stays one, without Ray's traceback wrapped around it)."""
        import ray

        try:
            return ray.get(ray.remote(num_cpus=1)(fn).remote(*args))
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def map(self, role: str, scorer: Any, method: str, pool: Any, rows: np.ndarray,
            columns: Sequence[str]) -> pd.DataFrame:
        return self.map_many([(role, scorer, method, columns)], pool, rows)[0][0]

    def map_many(self, calls: Sequence[Call], pool: Any, rows: np.ndarray) -> tuple[list[pd.DataFrame], list[float]]:
        """Several calls ``(role, scorer, method, columns)`` over the same rows in one actor pool (the first role's
        ``executor.scorers`` resources): each actor builds every call's scorer in one process, so THTB's Bloom and
        disciplines scorers share one embedder and embed each query once, as in one process. Returns each call's
        frame and its share of the wall time (split as the actors' own time per call). A pool-dependent scorer
        (two passes) is mapped on its own."""
        if self.factory is None:
            raise ExecutorError("the Ray executor has no scorer factory: build it with the selection method's "
                                "build_scorer (build_executor(cfg, factory=method.build_scorer))")
        n, started = len(rows), time.perf_counter()
        if n == 0:
            return [getattr(s, m)(*pool.texts(rows, cols)) for _, s, m, cols in calls], [0.0] * len(calls)
        if len(calls) > 1 and any(isinstance(scorer, PoolDependent) for _, scorer, _, _ in calls):
            return map_in_turn(self, calls, pool, rows)
        keys = [pool.keys(rows, cols) for _, _, _, cols in calls]
        first = calls[0][1]
        pool_dependent = isinstance(first, PoolDependent)
        parts: list[Path | None] = []
        for (role, scorer, _, _), call_keys in zip(calls, keys, strict=True):
            scope = hashlib.sha256("\0".join(call_keys).encode()).hexdigest()[:24] if pool_dependent else "rows"
            parts.append(self.parts_dir / f"{role}-{_safe(scorer.name)}" / scope if self.parts_dir else None)
        done = [read_parts(folder, set(k)) if folder is not None else {} for folder, k in zip(parts, keys, strict=True)]
        todo = np.array([i for i in range(n) if any(k[i] not in d for k, d in zip(keys, done, strict=True))],
                        dtype=np.int64)
        columns = list(dict.fromkeys(c for _, _, _, cols in calls for c in cols))
        rows_frame = pd.DataFrame({"pos": np.arange(n), **{f"key{c}": k for c, k in enumerate(keys)}})
        if pool.path is not None:  # the actors read the texts from the pool file
            rows_frame["row"] = np.asarray(rows, dtype=np.int64)
        else:  # a pool in this process's memory: its texts travel with the rows
            for i, text in enumerate(pool.texts(rows, columns)):
                rows_frame[f"c{i}"] = text
        args = {"batch_size": self.batch_size, "batch_format": "pandas", **self.scorers.get(calls[0][0], {})}
        replicas = args.get("concurrency") or 1  # an int, or a (min, max) autoscaling range
        replicas = max(replicas) if isinstance(replicas, list | tuple) else int(replicas)
        # at least 4 batches per replica, so every replica has work; large batches otherwise (module doc)
        args["batch_size"] = max(1, min(int(args["batch_size"]), -(-max(len(todo), 1) // (4 * replicas))))
        spec = {"run_config": self.run_config, "factory": self.factory, "columns": columns,
                "calls": [{"role": role, "method": method, "columns": list(cols)} for role, _, method, cols in calls],
                "pool": str(pool.path) if pool.path is not None else None}
        group = "+".join(role for role, _, _, _ in calls) if len(calls) > 1 else None
        records = [{"role": role, "method": method, "rows": n, "blocks": 0, "batches": 0,
                    "pool_statistics": pool_dependent, **({"actors_shared_by": group} if group else {})}
                   for role, _, method, _ in calls]
        frames: list[list[pd.DataFrame]] = [[] for _ in calls]
        actor_s = np.zeros(len(calls))
        if len(todo):
            statistics = None
            if pool_dependent:  # the whole call's statistics first: each block is scored against the pool
                counts = None
                for blob in self._dataset(rows_frame, n, args["batch_size"])[0].map_batches(
                        _PoolCounter, fn_constructor_kwargs={"spec": spec}, **args).to_pandas()["counts"]:
                    part = pickle.loads(blob)
                    counts = part if counts is None else first.merge_pool_counts(counts, part)
                statistics = first.pool(counts, n)
            ds, blocks = self._dataset(rows_frame.iloc[todo], len(todo), args["batch_size"])
            scored = ds.map_batches(_Scorer, fn_constructor_kwargs={
                "spec": spec, "pool": statistics, "parts": [str(p) if p else None for p in parts]}, **args).to_pandas()
            for blob in scored["judge"]:
                if blob is not None:
                    delta = pickle.loads(blob)
                    self.judge_counts = merge_judge_stats(self.judge_counts, delta)
                    records[0]["judge_calls"] = records[0].get("judge_calls", 0) + int(delta.get("calls", 0))
            for c, record in enumerate(records):
                record.update(blocks=blocks, batches=len(scored), batch_size=args["batch_size"])
                for blob in scored[f"frame{c}"]:  # rows stored for this call before are taken from the store
                    frame = pickle.loads(blob)
                    frames[c].append(frame[[keys[c][i] not in done[c] for i in frame["pos"]]])
            actor_s = np.array([sum(s[c] for s in scored["seconds"]) for c in range(len(calls))])
        wall = time.perf_counter() - started
        share = actor_s / actor_s.sum() if actor_s.sum() > 0 else np.full(len(calls), 1 / len(calls))
        out = []
        for c, record in enumerate(records):
            record["reused_rows"] = sum(k in done[c] for k in keys[c])
            if record["reused_rows"]:
                frames[c].append(_frame_of(done[c], keys[c]))
            self.calls.append(record)
            out.append(_in_order(frames[c], n))
        return out, [float(wall * s) for s in share]

    def _dataset(self, rows: pd.DataFrame, n: int, batch_size: int) -> tuple[Any, int]:
        import ray

        blocks = min(n, self.override_num_blocks or -(-n // batch_size))
        # split here: from_pandas(override_num_blocks=) splits with np.array_split, which gives arrays on pandas 3
        return ray.data.from_pandas([rows.iloc[part] for part in np.array_split(np.arange(n), blocks)]), blocks


# ------------------------------------------------------------------------------------- parts stored by content
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))


def write_part(folder: Path, frame: pd.DataFrame, keys: Sequence[str]) -> Path:
    """One scored batch as a JSON file named by its rows' keys, written atomically (a killed worker leaves none)."""
    from thtb.score_cache import _plain

    body = {"keys": list(keys),
            "columns": {c: [_plain(v) for v in frame[c].tolist()] for c in frame.columns if c != "pos"}}
    name = hashlib.sha256("\0".join(keys).encode()).hexdigest()[:32]
    return atomic_write_text(folder / f"{name}.json", json.dumps(body, ensure_ascii=False))


def read_parts(folder: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The stored rows of ``wanted`` keys scored without error: ``key → {column: value}``. An unreadable part is
    skipped with a warning (its rows are scored again)."""
    found: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            keys, columns = body["keys"], body["columns"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("stored scores: unreadable %s (%s); its rows are scored again", path, exc)
            continue
        for i, key in enumerate(keys):
            if key in wanted and key not in found and columns.get("error", [None] * len(keys))[i] is None:
                found[key] = {c: values[i] for c, values in columns.items()}
    return found


def _frame_of(done: dict[str, dict[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    """The stored rows among ``keys`` as a frame with their ``pos``."""
    pos = [i for i, k in enumerate(keys) if k in done]
    first = done[keys[pos[0]]]
    return pd.DataFrame({"pos": pos, **{c: [done[keys[i]][c] for i in pos] for c in first}})


def _in_order(frames: list[pd.DataFrame], n: int) -> pd.DataFrame:
    """The parts' frames (each with its rows' ``pos``) as one frame in row order, each column rebuilt from its
    values in order, as a scorer builds its frame from lists (so the dtypes are those one call gives)."""
    pos = np.concatenate([f["pos"].to_numpy() for f in frames])
    order = np.argsort(pos, kind="stable")
    if not np.array_equal(pos[order], np.arange(n)):
        raise RuntimeError(f"the Ray executor got {len(pos)} rows back for {n} sent")
    columns = [c for c in frames[0].columns if c != "pos"]
    values = {c: [v for f in frames for v in f[c].tolist()] for c in columns}
    return pd.DataFrame({c: pd.Series([values[c][i] for i in order]) for c in columns})


_JUDGE_MIN = frozenset({"concurrency_lowest"})
_JUDGE_MAX = frozenset({"stalled", "unreachable"})


def judge_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What one batch added to a judge's counters (:meth:`~thtb.judge.base.JudgeBackend.stats`): numbers and
    per-server dicts as differences, the lowest concurrency as it now is."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if key in _JUDGE_MIN or key in _JUDGE_MAX:
            out[key] = value
        elif isinstance(value, bool) or not isinstance(value, int | float | dict):
            continue
        elif isinstance(value, dict):
            out[key] = {k: v - before.get(key, {}).get(k, 0) for k, v in value.items()}
        else:
            out[key] = value - before.get(key, 0)
    return out


def merge_judge_stats(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Judge counters added up: sums (per-server dicts key by key), the lowest concurrency's minimum, the stop
    flags' maximum; ``base``'s other fields (backend, model, cache…) kept."""
    out = dict(base)
    for key, value in more.items():
        if key not in out:
            out[key] = dict(value) if isinstance(value, dict) else value
        elif key in _JUDGE_MIN:
            out[key] = min(out[key], value)
        elif key in _JUDGE_MAX:
            out[key] = max(out[key], value)
        elif isinstance(value, dict):
            out[key] = {k: out[key].get(k, 0) + value.get(k, 0) for k in {**out[key], **value}}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = out[key] + value
    if isinstance(out.get("wall_s"), float):
        out["wall_s"] = round(out["wall_s"], 3)
    return out


class _RoleScorer:
    """An actor's copies of its calls' scorers, built from the run's config in one process (a method's factory may
    let them share a model: THTB's Bloom and disciplines scorers share the embedder)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.calls = [(call["role"], call["method"], call["columns"]) for call in spec["calls"]]
        self.scorers = [spec["factory"](role, spec["run_config"]) for role, _, _ in self.calls]
        self.pool_path, self.text_columns = spec.get("pool"), spec["columns"]

    def texts(self, batch: pd.DataFrame) -> dict[str, list]:
        """The batch's texts by column: read from the pool file at the batch's ``row`` positions, or carried in
        ``c0, c1…``."""
        if self.pool_path is not None:
            values = read_texts(open_table(self.pool_path), batch["row"].to_numpy(), self.text_columns)
        else:
            values = [batch[f"c{i}"].tolist() for i in range(len(self.text_columns))]
        return dict(zip(self.text_columns, values, strict=True))


class _PoolCounter(_RoleScorer):
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = self.texts(batch)
        counts = self.scorers[0].pool_counts(*[texts[c] for c in self.calls[0][2][:2]], batch["pos"].tolist())
        return pd.DataFrame({"counts": [pickle.dumps(counts)]})


class _Scorer(_RoleScorer):
    def __init__(self, spec: Mapping[str, Any], pool: Any = None, parts: Sequence[str | None] = ()) -> None:
        super().__init__(spec)
        self.pool = pool
        self.parts = [Path(p) if p else None for p in parts]
        # judge-backed scorers (one judge may serve several): their counters go back to the driver
        self.judges = list({id(j): j for s in self.scorers if (j := getattr(s, "judge", None)) is not None}.values())

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        kwargs = {"pool": self.pool} if self.pool is not None else {}
        before = [judge.stats() for judge in self.judges]
        texts, out, seconds = self.texts(batch), {}, []
        for c, ((_, method, columns), scorer) in enumerate(zip(self.calls, self.scorers, strict=True)):
            start = time.perf_counter()
            frame = getattr(scorer, method)(*[texts[col] for col in columns], **kwargs).reset_index(drop=True)
            seconds.append(time.perf_counter() - start)
            if self.parts and self.parts[c] is not None:  # stored before it is returned: a killed driver's rerun
                write_part(self.parts[c], frame, batch[f"key{c}"].tolist())  # scores only the rest
            frame.insert(0, "pos", batch["pos"].to_numpy())
            out[f"frame{c}"] = [pickle.dumps(frame)]
        delta = {}
        for judge, stats in zip(self.judges, before, strict=True):
            delta = merge_judge_stats(delta, judge_delta(stats, judge.stats()))
        return pd.DataFrame({**out, "judge": [pickle.dumps(delta) if self.judges else None], "seconds": [seconds]})


# ---------------------------------------------------------------------------------------------- config, preflight
def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ExecutorError(f"executor=ray needs Ray Data, which is not installed ({exc}): {RAY_EXTRA}") from exc
    return ray


def address_problem(address: str, timeout_s: float = 3.0) -> str | None:
    """Why Ray at ``address`` cannot be reached (``None`` when it can, or when ``local`` starts one here): for
    ``host:port`` and ``ray://host:port``, a TCP connection within ``timeout_s``; for ``auto``, a running cluster
    on this machine or ``RAY_ADDRESS``."""
    import os

    if address == "local":
        return None
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS")
        if not target:
            from ray._private.services import find_gcs_addresses

            found = find_gcs_addresses()
            if not found:
                return ("executor.address=auto but no Ray cluster runs on this machine and RAY_ADDRESS is not set: "
                        "start one (`ray start --head`, or scripts/slurm_ray.sbatch on SLURM) or use "
                        "executor.address=local")
            return None
        address = target
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return f"executor.address={address!r} is not local, auto, host:port or ray://host:port"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"executor.address={address}: no Ray cluster answers at {host}:{port} ({exc})"


def executor_problems(cfg: Mapping[str, Any]) -> list[str]:
    """What would stop ``cfg.executor`` before any scoring, found without starting Ray (the preflight)."""
    ex = cfg.get("executor") or {}
    if ex.get("name", "local") != "ray":
        return []
    try:
        _import_ray()
    except ExecutorError as exc:
        return [str(exc)]
    problem = address_problem(str(ex.get("address", "local")))
    return [problem] if problem else []


def build_executor(cfg: Mapping[str, Any], parts_dir: str | Path | None = None,
                   factory: Any = None) -> LocalExecutor | RayExecutor:
    """The executor ``cfg.executor`` names (``local`` when there is none); ``parts_dir``: the Ray executor's
    stored parts, ``factory``: how its actors build a role's scorer (:class:`RayExecutor`)."""
    ex = dict(cfg.get("executor") or {})
    name = ex.pop("name", "local")
    if name == "local":
        return LocalExecutor()
    if name != "ray":
        raise ValueError(f"executor.name must be local or ray, got {name!r}")
    return RayExecutor(cfg, factory, **ex, parts_dir=parts_dir)
