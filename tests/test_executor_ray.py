"""`executor=ray`: the select stage's scorers on Ray Data give the subset `executor=local` gives, byte for byte —
for 1 and 7 blocks, on a local Ray (`ray.init(num_cpus=2)`) and on a simulated 2-node cluster
(`ray.cluster_utils.Cluster`); the offline quality scorers' pool TF-IDF gathered over blocks equals scikit-learn's
fit on the whole pool; Ray missing or unreachable is said before any scoring."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import compose_cfg, shared_file
from thtb.executor import ExecutorError, RayExecutor, address_problem, build_executor, executor_problems

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'thtb[ray]' (make install has it)")

RAY_NUM_CPUS = 2


@pytest.fixture()
def local_ray():
    """A local Ray with 2 CPUs, started once and kept for the tests that use it (the cluster test stops it)."""
    if not ray.is_initialized():
        ray.init(num_cpus=RAY_NUM_CPUS, include_dashboard=False, log_to_driver=False)
    yield ray


@pytest.fixture(scope="module", autouse=True)
def _stop_ray_after_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


def select_cfg(tmp_path: Path, name: str, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_cfg(["+experiment=demo", "stages=[select]", "logger=none", "reuse=false",
                       f"paths.run_dir={tmp_path / name}", f"paths.cache_dir={tmp_path / name / 'cache'}",
                       *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def subset_bytes(tmp_path: Path, name: str, *overrides: str) -> tuple[bytes, dict]:
    from thtb.stages.select import run_select

    run_dir = tmp_path / name
    summary = run_select(select_cfg(tmp_path, name, *overrides), run_dir)
    return (run_dir / "selection" / "subset.jsonl").read_bytes(), summary


RAY = ("executor=ray", "executor.scorers.quality.num_cpus=0.5", "executor.scorers.bloom.num_cpus=0.5",
       "executor.scorers.disciplines.num_cpus=0.5")


@pytest.mark.parametrize("blocks", [7, pytest.param(1, marks=pytest.mark.slow)])
def test_demo_subset_is_byte_identical_on_local_ray(local_ray, tmp_path, blocks):
    local, _ = subset_bytes(tmp_path, "local")
    on_ray, summary = subset_bytes(tmp_path, "ray", *RAY, f"executor.override_num_blocks={blocks}")
    assert on_ray == local and len(local.splitlines()) == 33
    executor = summary["scorers"]["executor"]
    assert executor["name"] == "ray" and executor["override_num_blocks"] == blocks
    assert [(c["role"], c["rows"], c["blocks"]) for c in executor["calls"]] == [
        ("quality", 264, blocks), ("bloom", 132, blocks), ("disciplines", 132, blocks)]
    assert executor["calls"][0]["pool_statistics"]  # the proxy quality's TF-IDF, gathered over the blocks
    # Bloom and disciplines ran in one actor pool: one embedding of each query, as in one process
    assert [c.get("actors_shared_by") for c in executor["calls"]] == [None, "bloom+disciplines", "bloom+disciplines"]
    assert [c["batch_size"] for c in executor["calls"]] == [66, 33, 33]  # at least 4 batches for the one replica
    # the driver read the pool through a pool file (written by a Ray task); the score card is the same, texts too
    assert len(list((tmp_path / "ray" / "cache" / "pools").glob("pool-*.arrow"))) == 1
    cards = [pd.read_parquet(tmp_path / name / "selection" / "scores.parquet") for name in ("local", "ray")]
    pd.testing.assert_frame_equal(*cards)
    assert cards[0]["response"].str.len().sum() > 0


def test_a_plugin_methods_scorer_runs_in_ray_actors(local_ray, tmp_path):
    """Any method's per-row scorers run on the Ray executor: the test-only method of tests/plugins/ (role
    ``query_length``, built in each actor by the method's ``build_scorer``) selects the subset it selects locally."""
    from thtb.stages.select import run_select

    plugin = {"_target_": "tests.plugins.shortest.ShortestQueries", "name": "shortest",
              "scorer": {"_target_": "tests.plugins.shortest.QueryLengthScorer"}}
    subsets, summaries = [], []
    for name, overrides in (("local", ()), ("ray", ("executor=ray", "+executor.scorers.query_length.num_cpus=0.5",
                                                  "executor.override_num_blocks=3"))):
        cfg = select_cfg(tmp_path, name, *overrides)
        cfg["selection"] = {**cfg["selection"], **plugin}
        summaries.append(run_select(cfg, tmp_path / name))
        subsets.append((tmp_path / name / "selection" / "subset.jsonl").read_bytes())
    assert subsets[0] == subsets[1] and len(subsets[0].splitlines()) == 33
    executor = summaries[1]["scorers"]["executor"]
    assert [(c["role"], c["rows"], c["blocks"]) for c in executor["calls"]] == [("query_length", 264, 3)]
    assert executor["scorers"]["query_length"] == {"num_cpus": 0.5}


def test_an_actor_builds_the_intrinsic_scorers_sharing_one_embedder(tmp_path):
    """In one process (a Ray actor scoring both intrinsic roles) THTB's factory builds the Bloom and disciplines
    scorers once per config: they share the embedder, so the disciplines pay nothing for queries Bloom embedded; a
    different config builds anew."""
    from thtb.methods import build_method

    cfg = select_cfg(tmp_path, "factory")
    method = build_method(cfg)
    bloom, disciplines = method.build_scorer("bloom", cfg), method.build_scorer("disciplines", cfg)
    assert bloom.embedder is disciplines.embedder
    other = {**cfg, "seed": cfg["seed"] + 1}
    assert method.build_scorer("bloom", other).embedder is not bloom.embedder


def test_bad_data_read_by_a_ray_task_is_the_same_data_error(local_ray, tmp_path):
    """With executor=ray the records are read in a Ray task: a malformed file stops the run with the data layer's
    own error (its class and its message naming the file and line), not a Ray traceback."""
    from thtb.data import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "input": "", "output": "b"}\n{"instruction": "c", "input": \n',
                   encoding="utf-8")
    with pytest.raises(DataError) as local:
        subset_bytes(tmp_path, "local", f"data.path={bad}", "data.format=null")
    with pytest.raises(DataError) as on_ray:
        subset_bytes(tmp_path, "ray", f"data.path={bad}", "data.format=null", *RAY)
    assert type(on_ray.value) is type(local.value) and str(on_ray.value) == str(local.value)
    assert "line 2" in str(on_ray.value) and "RayTaskError" not in str(on_ray.value)


@pytest.mark.slow
def test_demo_subset_is_byte_identical_on_a_simulated_two_node_cluster(tmp_path):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        local, _ = subset_bytes(tmp_path, "local")
        on_cluster, _ = subset_bytes(tmp_path, "cluster", *RAY, "executor.override_num_blocks=7",
                                     "executor.scorers.quality.concurrency=2",
                                     "executor.scorers.disciplines.concurrency=2")
        assert on_cluster == local
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_first_20000_alpaca_rows_byte_identical_for_1_and_7_blocks(local_ray, tmp_path):
    """The acceptance run: 20,000 real Alpaca rows, offline scorers (20,000 → 4,000 → 2,000 → 1,000)."""
    alpaca = shared_file("alpaca", "alpaca_data.json")
    data = ["data=alpaca", f"data.path={alpaca}", "data.limit=20000", "selection.extrinsic.k=31",
            "selection.fractions.quality=0.2"]
    local, summary = subset_bytes(tmp_path, "local", *data)
    assert summary["n_selected"] == 1000
    for blocks in (1, 7):
        on_ray, _ = subset_bytes(tmp_path, f"ray{blocks}", *data, *RAY, f"executor.override_num_blocks={blocks}",
                                 "executor.batch_size=1024")
        assert on_ray == local, f"{blocks} block(s)"


def test_pool_tfidf_gathered_over_blocks_equals_sklearn_fit_on_the_whole_pool():
    """The offline quality scorers' relevance: scikit-learn's TfidfVectorizer(sublinear_tf, float32) fitted on
    5,000 real Alpaca pairs, against the same pool's statistics gathered from 7 shuffled parts and merged."""
    import warnings

    from sklearn.feature_extraction.text import TfidfVectorizer

    from thtb.scorers import quality as q

    rows = json.loads(shared_file("alpaca", "alpaca_data.json").read_text(encoding="utf-8"))[:5000]
    queries = [q._clean_query(r["instruction"] + "\n" + r["input"]) for r in rows]
    responses = [q._clean_response(r["output"]) for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        matrix = TfidfVectorizer(**q._vectorizer_args(), sublinear_tf=True, dtype=np.float32
                                 ).fit_transform(queries + responses)
    n = len(queries)
    expected = np.asarray(matrix[:n].multiply(matrix[n:]).sum(axis=1), dtype=np.float64).ravel()

    parts = np.array_split(np.random.default_rng(0).permutation(n), 7)
    counts: dict = {}
    for part in parts:
        counts = q.merge_relevance_counts(counts, q.relevance_counts([queries[i] for i in part],
                                                                     [responses[i] for i in part], part))
    pool = q.RelevancePool.from_counts(counts, n)
    got = np.zeros(n)
    for part in parts:
        got[part] = pool.relevance([queries[i] for i in part], [responses[i] for i in part])[0]
    assert got.tobytes() == expected.tobytes()
    whole = q.HeuristicQualityScorer().score(queries, responses)
    scored = q.HeuristicQualityScorer().score(queries[:100], responses[:100], pool=pool)
    assert whole["quality_raw"].iloc[:100].tolist() == scored["quality_raw"].tolist()


def test_ray_is_checked_before_any_scoring(monkeypatch):
    cfg = {"executor": {"name": "ray", "address": "127.0.0.1:9"}}  # the discard port: nothing listens
    start = time.monotonic()
    problems = executor_problems(cfg)
    assert time.monotonic() - start < 5
    assert len(problems) == 1 and "no Ray cluster answers at 127.0.0.1:9" in problems[0]
    assert "not local, auto, host:port" in address_problem("nowhere")
    assert executor_problems({"executor": {"name": "local"}}) == []

    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    problems = executor_problems({"executor": {"name": "ray", "address": "local"}})
    assert problems == ["executor=ray needs Ray Data, which is not installed (No module named 'ray'): "
                        "pip install 'thtb[ray]'"]


def test_a_scorer_asking_for_gpus_the_cluster_lacks_is_named(local_ray):
    executor = RayExecutor({}, scorers={"quality": {"num_gpus": 1, "concurrency": 1}})
    with pytest.raises(ExecutorError, match=r"executor.scorers.quality.num_gpus=1 but the Ray cluster at local "
                                            r"has 0 GPU\(s\) in all"):
        executor.start()
    assert RayExecutor({}, scorers={"reward": {}, "quality": {}}).unused_roles(("quality", "bloom")) == ["reward"]
    assert build_executor({}).name == "local"


def _parts(cache: Path, role: str) -> list[Path]:
    return sorted(cache.glob(f"scores/parts/*/{role}-*/*/*.json"))


def _stored_rows(parts: list[Path]) -> int:
    return sum(len(json.loads(p.read_text(encoding="utf-8"))["keys"]) for p in parts)


@pytest.mark.slow
def test_a_killed_driver_reruns_scoring_only_the_rows_not_stored(tmp_path):
    """SIGKILL the driver (and the local Ray it started) once the Bloom stage has stored its first scored batch:
    the rerun reuses every stored row (keyed by content, not by block), scores the rest, and selects the subset
    `executor=local` selects."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT

    cache = tmp_path / "cache"
    args = [sys.executable, "run.py", "+experiment=demo", "stages=[select]", "logger=none", *RAY,
            "executor.init.num_cpus=2", "executor.batch_size=4", f"paths.cache_dir={cache}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    first = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not _parts(cache, "bloom") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the run ended before its Bloom stage stored a batch"
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started, as a lost head node
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    at_kill = _stored_rows(_parts(cache, "bloom"))
    assert 0 < at_kill < 132 and not (tmp_path / "a" / "selection" / "subset.jsonl").exists()
    stored, quiet_since = at_kill, time.monotonic()
    while time.monotonic() - quiet_since < 5:  # Ray's own processes may finish a batch before they notice
        time.sleep(0.5)
        now = _stored_rows(_parts(cache, "bloom"))
        if now != stored:
            stored, quiet_since = now, time.monotonic()

    rerun = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'b'}"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((tmp_path / "b" / "selection" / "summary.json").read_text(encoding="utf-8"))
    calls = {c["role"]: c for c in summary["scorers"]["executor"]["calls"]}
    assert calls["bloom"]["reused_rows"] == stored >= at_kill and calls["bloom"]["rows"] == 132
    assert summary["scorers"]["score_cache"]["calls"]["quality:heuristic_quality"] == "cached"  # finished before
    local, _ = subset_bytes(tmp_path, "local")
    assert (tmp_path / "b" / "selection" / "subset.jsonl").read_bytes() == local


@pytest.mark.slow
def test_a_killed_scoring_actor_is_restarted_by_ray_and_the_subset_is_the_same(local_ray, tmp_path):
    """SIGKILL the Bloom stage's actor mid-stage: Ray restarts it and retries its batch; the run finishes with the
    subset `executor=local` selects."""
    import os
    import signal
    import threading

    import psutil

    from thtb.stages.select import run_select

    cfg = select_cfg(tmp_path, "ray", *RAY, "executor.batch_size=4", "reuse=true")
    cache = Path(cfg["paths"]["cache_dir"])
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = run_select(cfg, tmp_path / "ray")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if _parts(cache, "bloom"):
            for proc in psutil.process_iter(["cmdline"]):
                if any("_Scorer" in part for part in proc.info["cmdline"] or []):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = proc.pid
                    break
        time.sleep(0.01)
    thread.join(900)
    assert killed is not None, "no scoring actor was found to kill"
    assert "error" not in outcome, outcome.get("error")
    local, _ = subset_bytes(tmp_path, "local")
    assert (tmp_path / "ray" / "selection" / "subset.jsonl").read_bytes() == local


def test_run_py_names_an_unreachable_ray_before_any_work(tmp_path):
    from tests.helpers import run_py

    start = time.monotonic()
    proc = run_py("+experiment=demo", "stages=[select]", "executor=ray", "executor.address=127.0.0.1:9",
                  f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and time.monotonic() - start < 60
    assert "select: executor.address=127.0.0.1:9: no Ray cluster answers at 127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "selection").exists()


def test_stored_parts_serve_error_free_rows_and_skip_an_unreadable_file(tmp_path, caplog):
    """What a rerun reuses: rows stored without an error, found by content key; a row stored with an error is
    scored again, and a torn or foreign file is skipped with a warning naming it (its rows are scored again)."""
    import pandas as pd

    from thtb.executor import read_parts, write_part
    from thtb.pool import row_key

    keys = [row_key(["q1", "r1"]), row_key(["q2", "r2"])]
    assert keys[0] != keys[1] and keys[0] == row_key(["q1", "r1"])
    frame = pd.DataFrame({"pos": [0, 1], "quality_raw": [1.5, float("nan")], "error": [None, "timed out"]})
    write_part(tmp_path, frame, keys)
    (tmp_path / "torn.json").write_text('{"keys": ["', encoding="utf-8")
    found = read_parts(tmp_path, set(keys) | {"absent"})
    assert found == {keys[0]: {"quality_raw": 1.5, "error": None}}
    assert "unreadable" in caplog.text and "torn.json" in caplog.text
    assert read_parts(tmp_path / "missing", set(keys)) == {}


# ------------------------------------------------------------------ a judge-backed selection on Ray
def _tagged(content: str) -> str:
    """A request's tag: the first 12 hex digits of its last message's SHA-256, as letters (g–v)."""
    import hashlib

    return "".join(chr(ord("g") + int(c, 16)) for c in hashlib.sha256(content.encode()).hexdigest()[:12])


def _judge_script(n, body):
    """Answers that name the request they answer (its tag), so the judge cache tells which requests finished."""
    from tests.helpers import completion
    from thtb.scorers.base import BLOOM_BANDS

    content = body["messages"][-1]["content"]
    tag = _tagged(content)
    if "discipline names" in content:
        return 200, completion(f"biology, tag_{tag}"), 0.02
    level = list(BLOOM_BANDS)[sum(map(ord, tag)) % len(BLOOM_BANDS)]
    return 200, completion(json.dumps({"level": level, "score": BLOOM_BANDS[level][0], "reasoning": tag})), 0.02


@pytest.mark.slow
def test_a_killed_judge_backed_ray_run_resumes_without_repeating_a_finished_request(tmp_path):
    """The demo with an HTTP judge (``scoring=served``; a real aiohttp server answering every request with its own
    tag) on Ray: SIGKILL the driver once the Bloom stage stored a batch. The rerun sends no request whose answer
    is in the judge cache, its summary counts the requests the actors sent (the server's own count), and it
    selects the subset `executor=local` selects against the same answers."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.helpers import ROOT, FakeServer

    server = FakeServer()
    server.script = _judge_script
    try:
        cache = tmp_path / "cache"
        served = ["scoring=served", f"judge.base_url={server.base_url}", "judge.model=fake-judge",
                  "judge.tokenizer=null", "judge.failure_budget=1000"]
        args = [sys.executable, "run.py", "+experiment=demo", "stages=[select]", "logger=none", *served, *RAY,
                "executor.init.num_cpus=2", "executor.batch_size=4", f"paths.cache_dir={cache}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
        first = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT, env=env,
                                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while not _parts(cache, "bloom") and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert first.poll() is None, "the run ended before its Bloom stage stored a batch"
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
        time.sleep(5)  # Ray's own processes may finish a request before they notice
        with sqlite3.connect(cache / "judge.sqlite") as db:
            finished = {row[0] for row in db.execute("SELECT raw FROM requests")}
        finished_tags = {raw.rsplit("_", 1)[-1] if "tag_" in raw else json.loads(raw)["reasoning"] for raw in finished}
        assert finished_tags and len(finished_tags) == len(finished)
        sent_before = server.count

        rerun = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'b'}"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        again = [_tagged(body["messages"][-1]["content"]) for body in server.requests[sent_before:]]
        assert again and not set(again) & finished_tags, "a finished request was sent again"
        summary = json.loads((tmp_path / "b" / "selection" / "summary.json").read_text(encoding="utf-8"))
        judge = summary["scorers"]["judge"]
        # the actors' counters reach the summary; finished rows come from a stored batch or the judge cache
        assert judge["calls"] == len(again) and judge["failures"] == 0, judge
        reused = {c["role"]: c["reused_rows"] for c in summary["scorers"]["executor"]["calls"]}
        # (Bloom and the disciplines share the actors: a stored batch holds both roles' answers)
        assert reused["bloom"] + reused["disciplines"] + judge["cache_hits"] >= len(finished_tags), (reused, judge)

        local, _ = subset_bytes(tmp_path, "local", *served, f"judge.cache={tmp_path / 'local-judge.sqlite'}")
        assert (tmp_path / "b" / "selection" / "subset.jsonl").read_bytes() == local
    finally:
        server.close()


def test_the_actors_judge_counters_add_up():
    """A batch's judge counters are the difference of the judge's ``stats()`` around it; summed over batches, the
    lowest concurrency is the minimum, the stop flags the maximum, per-server counts add key by key."""
    from thtb.executor import judge_delta, merge_judge_stats

    before = {"calls": 2, "cache_hits": 1, "wall_s": 0.5, "concurrency_lowest": 8, "stalled": 0, "model": "m",
              "guided_json": True, "server_calls": {"a": 1, "b": 1}}
    after = {**before, "calls": 5, "wall_s": 1.0, "concurrency_lowest": 4, "server_calls": {"a": 3, "b": 2}}
    delta = judge_delta(before, after)
    assert delta == {"calls": 3, "cache_hits": 0, "wall_s": 0.5, "concurrency_lowest": 4, "stalled": 0,
                     "server_calls": {"a": 2, "b": 1}}
    driver = {"calls": 0, "cache_hits": 0, "wall_s": 0.0, "concurrency_lowest": 8, "stalled": 0, "model": "m"}
    total = merge_judge_stats(merge_judge_stats(driver, delta), {**delta, "stalled": 1, "concurrency_lowest": 2})
    assert total == {"calls": 6, "cache_hits": 0, "wall_s": 1.0, "concurrency_lowest": 2, "stalled": 1, "model": "m",
                     "server_calls": {"a": 4, "b": 2}}
