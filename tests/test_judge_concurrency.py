"""Judge requests in flight are shared across processes on one cache file (leases, :mod:`thtb.judge.cache`).

Worker processes (``python -c``, this module's :func:`worker_main`) run a judge on a shared cache file
against the counting fake OpenAI-compatible server of ``tests/helpers.py`` (127.0.0.1, in the
test process) or, for the in-process backends, a scripted :class:`LocalJudge` that logs each answer it
generates to a file. Every wait here is bounded in count and time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import FakeServer
from thtb.judge import BLOOM, DISCIPLINES, OpenAIJudge, RequestCache
from thtb.judge.cache import CACHED, CLAIMED, HELD
from thtb.judge.local import LocalJudge

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0  # the longest any worker may take here


def items(n: int, dups: int = 0) -> list[dict]:
    distinct = [{"query": f"Name fact number {i}.", "response": str(i)} for i in range(n)]
    return distinct + distinct[:dups]


def numbered_answer(n: int) -> str:
    """A valid Bloom answer unique to the server's ``n``-th request: two processes that both sent one request
    would disagree."""
    return json.dumps({"level": "Remember", "score": 2, "reasoning": f"answer #{n}"})


class LoggingLocalJudge(LocalJudge):
    """A LocalJudge whose chunks take ``delay_s`` and whose every generated answer is one line in ``log_path``."""

    backend = "logging"

    def __init__(self, log_path: str, delay_s: float, **kwargs):
        super().__init__("logging-model", **kwargs)
        self.log_path = log_path
        self.delay_s = delay_s

    def _generate(self, conversations, params, template):
        time.sleep(self.delay_s)
        lines = []
        answers = []
        for conv in conversations:
            tag = f"{os.getpid()}-{time.monotonic_ns()}-{len(lines)}"
            lines.append(hashlib.sha256(json.dumps(conv, sort_keys=True).encode()).hexdigest() + "\n")
            answers.append((json.dumps({"level": "Remember", "score": 2, "reasoning": tag}), 1, 1))
        with open(self.log_path, "a") as fh:  # O_APPEND: whole lines from concurrent processes
            fh.write("".join(lines))
        return answers


# ------------------------------------------------------------------------------ worker process
def worker_main(spec_json: str) -> None:
    """One run in its own process: build the judge, say ready, wait (bounded) for go, judge, write results."""
    spec = json.loads(spec_json)
    cache = RequestCache(spec["cache"], lease_ttl_s=spec.get("lease_ttl_s", 60.0))
    common = dict(cache=cache, progress=False, max_attempts=1, lease_wait_s=spec.get("lease_wait_s"))
    if spec["backend"] == "openai":
        judge = OpenAIJudge("fake-judge", base_url=spec["base_url"], concurrency=spec["concurrency"], timeout_s=30.0,
                            max_retries=0, **common)
    else:
        judge = LoggingLocalJudge(spec["log"], spec["delay_s"], batch_size=spec["batch_size"], **common)
    Path(spec["ready"]).touch()
    t0 = time.monotonic()
    while not Path(spec["go"]).exists() and time.monotonic() - t0 < DEADLINE_S:
        time.sleep(0.01)
    out = judge.run(BLOOM, items(spec["n"], spec.get("dups", 0)))
    payload = {"results": [{"value": r.value, "error": r.error, "from_cache": r.from_cache} for r in out],
               "stats": judge.stats(), "pid": os.getpid()}
    cache.close()
    Path(spec["out"]).write_text(json.dumps(payload))


def start_worker(tmp_path: Path, name: str, api_key: str = "EMPTY", **spec) -> tuple[subprocess.Popen, dict]:
    spec = {"cache": str(tmp_path / "judge.sqlite"), "ready": str(tmp_path / f"{name}.ready"),
            "go": str(tmp_path / "go"), "out": str(tmp_path / f"{name}.json"), **spec}
    env = {**os.environ, "OPENAI_API_KEY": api_key, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    code = "import sys; from tests.test_judge_concurrency import worker_main; worker_main(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, spec


def wait_until(condition, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen, spec: dict) -> dict:
    try:
        _, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"worker ran past {DEADLINE_S} s: {err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return json.loads(Path(spec["out"]).read_text())


@pytest.fixture
def server():
    srv = FakeServer()
    yield srv
    srv.close()


def run_pair(tmp_path: Path, **spec) -> tuple[dict, dict, float]:
    procs = [start_worker(tmp_path, name, **spec) for name in ("a", "b")]
    try:
        wait_until(lambda: all(Path(s["ready"]).exists() for _, s in procs), DEADLINE_S, "both workers ready")
        t0 = time.monotonic()
        Path(procs[0][1]["go"]).touch()
        a, b = (finish(p, s) for p, s in procs)
        return a, b, time.monotonic() - t0
    finally:
        for p, _ in procs:
            stop(p)


def stop(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        proc.kill()
        proc.communicate(timeout=10)


# ------------------------------------------------------------------------------ two processes
def test_two_processes_send_each_distinct_request_once(server, tmp_path):
    server.script = lambda n, body: (200, numbered_answer(n), 0.3)
    n = 32  # one run alone would take 8 × 0.3 s: both start within that, so they overlap
    a, b, wall = run_pair(tmp_path, backend="openai", base_url=server.base_url, concurrency=4, n=n, dups=6)
    assert server.count == n  # 544 for 272 before leases: each process sent every request
    for out in (a, b):
        assert len(out["results"]) == n + 6 and all(r["error"] is None for r in out["results"])
        assert out["results"][n:] == out["results"][:6]  # duplicates: the same answer
    assert [r["value"] for r in a["results"]] == [r["value"] for r in b["results"]]  # one answer per request
    assert len({r["value"]["reasoning"] for r in a["results"]}) == n
    sa, sb = a["stats"], b["stats"]
    assert sa["calls"] + sb["calls"] == n and sa["transport_failures"] == sb["transport_failures"] == 0
    assert sa["shared_in_flight"] + sb["shared_in_flight"] + sa["cache_hits"] + sb["cache_hits"] == n
    assert sa["calls"] > 0 and sb["calls"] > 0  # the runs overlapped and split the work
    assert server.max_in_flight <= 8
    # a third run answers everything from the cache
    again = OpenAIJudge("fake-judge", base_url=server.base_url, cache=tmp_path / "judge.sqlite", progress=False,
                        max_attempts=1)
    assert [r.value for r in again.run(BLOOM, items(n))] == [r["value"] for r in a["results"][:n]]
    assert server.count == n and again.stats()["cache_hits"] == n
    print(f"\nopenai: {server.count} requests for {n} distinct ({n + 6} items × 2 runs), {wall:.2f} s; "
          f"calls a={sa['calls']} b={sb['calls']}, shared a={sa['shared_in_flight']} b={sb['shared_in_flight']}")


def test_two_processes_with_the_in_process_judge_generate_each_request_once(tmp_path):
    log = tmp_path / "generated.log"
    n = 20
    a, b, wall = run_pair(tmp_path, backend="local", log=str(log), delay_s=0.3, batch_size=3, n=n, dups=4)
    lines = log.read_text().splitlines()
    assert len(lines) == n and len(set(lines)) == n
    for out in (a, b):
        assert len(out["results"]) == n + 4 and all(r["error"] is None for r in out["results"])
    assert [r["value"] for r in a["results"]] == [r["value"] for r in b["results"]]
    sa, sb = a["stats"], b["stats"]
    assert sa["calls"] + sb["calls"] == n and sa["calls"] > 0 and sb["calls"] > 0
    assert sa["shared_in_flight"] + sb["shared_in_flight"] + sa["cache_hits"] + sb["cache_hits"] == n
    print(f"\nlocal: {len(lines)} generated for {n} distinct, {wall:.2f} s; calls a={sa['calls']} b={sb['calls']}")


def test_a_killed_owner_does_not_block_the_other_process(server, tmp_path):
    """A holds leases on requests the server never answers in time; it is killed with SIGKILL (and left a
    zombie: not reaped). B, which waits for A's requests, sees A is gone, takes them over and finishes — long
    before the leases would expire."""
    hang_s = 6.0

    def script(n, body):
        held = server.headers[n].get("Authorization") == "Bearer worker-a"
        return 200, numbered_answer(n), hang_s if held else 0.2

    server.script = script
    n, conc = 10, 4
    spec = dict(backend="openai", base_url=server.base_url, concurrency=conc, n=n, lease_ttl_s=120.0,
                lease_wait_s=120.0)

    def from_a() -> int:
        return sum(h.get("Authorization") == "Bearer worker-a" for h in list(server.headers))

    pa, sa = start_worker(tmp_path, "a", api_key="worker-a", go=str(tmp_path / "go-a"), **spec)
    pb, sb = start_worker(tmp_path, "b", api_key="worker-b", go=str(tmp_path / "go-b"), **spec)
    try:
        wait_until(lambda: Path(sa["ready"]).exists() and Path(sb["ready"]).exists(), DEADLINE_S, "workers ready")
        Path(sa["go"]).touch()
        wait_until(lambda: from_a() == conc, 20, "A's requests in flight")
        cache = RequestCache(tmp_path / "judge.sqlite")
        keys = [OpenAIJudge("fake-judge", base_url=server.base_url).key(BLOOM, it) for it in items(n)]
        assert sum(s == HELD for s in cache.lease_states(keys).values()) == conc  # A holds its leases
        Path(sb["go"]).touch()  # B sends the requests A does not hold and waits for A's — then A dies
        wait_until(lambda: server.count - from_a() >= n - conc, 20, "B's own requests")
        assert sum(s == HELD for s in cache.lease_states(keys).values()) >= conc
        t_kill = time.monotonic()
        os.kill(pa.pid, signal.SIGKILL)  # not reaped until B is done: a zombie while B looks
        out = finish(pb, sb)
        took = time.monotonic() - t_kill
        pa.wait(timeout=10)
        assert pa.returncode == -signal.SIGKILL
        assert all(r["error"] is None for r in out["results"]) and len(out["results"]) == n
        assert took < 15.0, took  # not the 120 s lease expiry, not A's hung requests
        assert out["stats"]["calls"] == n and out["stats"]["shared_in_flight"] == 0
        assert server.count == n + conc  # A's lost requests, then B's: bounded by one set of leases
        assert all(s == CACHED for s in cache.lease_states(keys).values())
        assert cache._conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # B took A's over, then ended them
        print(f"\nkilled owner: B took over {conc} requests {took:.2f} s after the kill; {server.count} requests "
              f"for {n} distinct")
        cache.close()
    finally:
        for p in (pa, pb):
            stop(p)


# ------------------------------------------------------------------------------ one process, two caches
def make_judge(server, path, **kw) -> OpenAIJudge:
    args = dict(model="fake-judge", base_url=server.base_url, cache=RequestCache(path), concurrency=4, timeout_s=5.0,
                max_retries=0, max_attempts=1, progress=False)
    args.update(kw)
    return OpenAIJudge(**args)


def test_owner_failure_hands_the_request_to_the_waiter(server, tmp_path):
    """A transport failure is not cached: the owner releases its lease and the waiting judge asks itself."""
    def script(n, body):
        return (500, {"error": {"message": "down"}}, 0.4) if n == 0 else (200, numbered_answer(n), 0.1)

    server.script = script
    first, second = make_judge(server, tmp_path / "j.sqlite"), make_judge(server, tmp_path / "j.sqlite")
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("first", first.run(BLOOM, items(1))))
    thread.start()
    wait_until(lambda: server.count == 1, 10, "the first request")
    out = second.run(BLOOM, items(1))[0]
    thread.join(10)
    assert box["first"][0].error.startswith("transport: HTTP 500")
    assert out.ok and out.value["reasoning"] == "answer #1" and server.count == 2
    assert second.stats()["calls"] == 1 and second.stats()["shared_in_flight"] == 0
    assert first.cache.held == frozenset() and second.cache.held == frozenset()


def test_a_live_owner_is_waited_for_at_most_lease_wait_s(server, tmp_path):
    path = tmp_path / "j.sqlite"
    server.script = lambda n, body: (200, numbered_answer(n), 0.0)
    stuck = RequestCache(path)  # a live owner (this process) that never finishes
    judge = make_judge(server, path, lease_wait_s=1.0)
    key = judge.key(BLOOM, items(1)[0])
    assert stuck.claim([key]) == {key: CLAIMED}
    t0 = time.monotonic()
    out = judge.run(BLOOM, items(1))[0]
    assert out.ok and server.count == 1 and 0.9 <= time.monotonic() - t0 < 5.0
    stuck.close()


def test_expired_lease_of_another_host_is_taken_over(server, tmp_path):
    path = tmp_path / "j.sqlite"
    server.script = lambda n, body: (200, numbered_answer(n), 0.0)
    judge = make_judge(server, path)
    key = judge.key(BLOOM, items(1)[0])
    judge.cache._conn.execute("INSERT INTO leases VALUES (?,?,?,?,?,?)",
                              (key, "elsewhere:1:x", "elsewhere", 1, None, time.time() + 1.0))
    judge.cache._conn.commit()
    assert judge.cache.lease_states([key]) == {key: HELD}  # another host: alive until it expires
    t0 = time.monotonic()
    out = judge.run(BLOOM, items(1))[0]
    assert out.ok and server.count == 1 and 0.8 <= time.monotonic() - t0 < 5.0


def test_shared_answer_parsed_by_other_parser_code_is_reparsed(server, tmp_path):
    """A row another process wrote is used like a cache hit — re-parsed when its parser digest differs."""
    path = tmp_path / "j.sqlite"
    server.script = lambda n, body: (200, numbered_answer(n), 0.0)
    owner = RequestCache(path)
    judge = make_judge(server, path)
    key = judge.key(BLOOM, items(1)[0])
    assert owner.claim([key]) == {key: CLAIMED}

    def write_later():
        time.sleep(0.5)
        from thtb.judge.cache import CacheRecord
        owner.put(key, CacheRecord(raw='{"level": "Apply", "score": 8, "reasoning": "x"}', parsed={"stale": True},
                                   parser="old-parser", model="fake-judge", template=BLOOM.id))

    thread = threading.Thread(target=write_later)
    thread.start()
    out = judge.run(BLOOM, items(1))[0]
    thread.join(10)
    assert out.ok and out.from_cache and out.value["level"] == "Apply" and server.count == 0
    s = judge.stats()
    assert s["shared_in_flight"] == 1 and s["reparsed"] == 1 and s["calls"] == 0 and s["cache_hits"] == 0
    assert owner.held == frozenset()
    owner.close()


def test_local_judge_waits_for_a_chunk_held_elsewhere(tmp_path):
    """The in-process judge skips requests another owner holds, generates the rest, then picks the held ones up
    from the cache when their rows appear."""
    path = tmp_path / "j.sqlite"
    log = tmp_path / "gen.log"
    owner = LoggingLocalJudge(str(log), 0.0, batch_size=2, cache=RequestCache(path), progress=False)
    judge = LoggingLocalJudge(str(log), 0.0, batch_size=2, cache=RequestCache(path), progress=False)
    qs = [{"query": f"Question {i}?"} for i in range(6)]
    held = [judge.key(DISCIPLINES, q) for q in qs[:2]]
    assert set(owner.cache.claim(held).values()) == {CLAIMED}

    def answer_later():
        time.sleep(0.6)
        owner.run(DISCIPLINES, qs[:2])  # holds the leases already (its own): generates, writes, releases

    thread = threading.Thread(target=answer_later)
    thread.start()
    out = judge.run(DISCIPLINES, qs)
    thread.join(10)
    assert all(r.ok for r in out) and len(log.read_text().splitlines()) == 6
    s = judge.stats()
    assert s["calls"] == 4 and s["shared_in_flight"] == 2
    assert owner.cache.held == frozenset() and judge.cache.held == frozenset()
