"""OpenAIJudge and the judge scorers against the REAL ``transformers serve`` server (SmolLM2-135M).

SmolLM2-135M is a weak judge: parse failures are expected. The tests assert the invariants that
hold whatever it answers — a row is a valid value or carries an ``error`` with ``None`` fields
(never a default), failures are counted, finished requests are cached and never repeated,
transport failures are never cached — plus resumption after a killed client and a dead server,
faults injected by a reverse proxy in front of the real server, and no API-key leak.

Rows: a handful of short demo rows; answers kept short with ``decoding={"max_tokens": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from thtb.judge import (
    DISCIPLINE_DESCRIPTION,
    DISCIPLINES,
    JudgeBloomScorer,
    JudgeDisciplineTagger,
    OpenAIJudge,
    RequestCache,
)
from thtb.scorers.base import BLOOM_BANDS, BLOOM_LEVELS
from tests.helpers import completion

# a real `transformers serve` generating with SmolLM2: the slow tier (make test-slow; CI runs it)
pytestmark = pytest.mark.slow

SECRET = "sk-served-secret"
SNAKE = re.compile(r"^[0-9a-z]+(?:_[0-9a-z]+)*$")
DEMO = Path(__file__).resolve().parents[1] / "thtb" / "resources" / "demo.jsonl"
DESCRIBED = ["physics", "computer_science", "economics"]


def demo_rows(n: int, max_query: int = 220, max_response: int = 450) -> pd.DataFrame:
    """The first ``n`` demo rows with a short, non-empty query and response (fast prompts)."""
    from thtb.data import load_records

    frame, _ = load_records(DEMO)
    keep = frame[
        frame["query"].str.strip().str.len().between(1, max_query)
        & frame["response"].str.strip().str.len().between(1, max_response)
    ]
    assert len(keep) >= n
    return keep.head(n).reset_index(drop=True)


def make_judge(base_url: str, model: str, cache, **kw) -> OpenAIJudge:
    args = dict(
        # concurrency 1: `transformers serve` answers one request at a time; queued sends would spend their timeout
        # waiting, and with max_attempts=1 a timed-out send is not sent again (the run's send budget)
        model=model, base_url=base_url, cache=cache, concurrency=1, timeout_s=120.0, max_retries=2,
        max_attempts=2, backoff_initial_s=0.05, backoff_max_s=0.2, progress=False,
    )
    args.update(kw)
    return OpenAIJudge(**args)


def cache_rows(path: Path) -> int:
    """Committed rows, read through a separate SQLite connection (as another process would)."""
    if not path.exists():
        return 0
    con = sqlite3.connect(str(path), timeout=5)
    try:
        return int(con.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    except sqlite3.OperationalError:  # table not created yet
        return 0
    finally:
        con.close()


def assert_bloom_invariant(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["bloom_level", "bloom_score", "bloom_reason", "error"]
    for row in frame.itertuples():
        if row.error is None:
            assert row.bloom_level in BLOOM_LEVELS, row
            lo, hi = BLOOM_BANDS[row.bloom_level]
            assert isinstance(row.bloom_score, int) and lo <= row.bloom_score <= hi, row
            assert isinstance(row.bloom_reason, str), row
        else:
            assert isinstance(row.error, str) and row.error, row
            assert row.bloom_level is None and row.bloom_score is None and row.bloom_reason is None, row


def assert_discipline_invariant(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["disciplines", "error"]
    for row in frame.itertuples():
        if row.error is None:
            assert isinstance(row.disciplines, list) and row.disciplines, row
            assert all(isinstance(d, str) and SNAKE.match(d) for d in row.disciplines), row
        else:
            assert isinstance(row.error, str) and row.error and row.disciplines is None, row


def outcome(results) -> list[tuple]:
    return [(r.value, r.error, r.raw) for r in results]


# ------------------------------------------------------------ 1 + 2: three judges, then a rerun
N_ROWS = 6
BLOOM_DECODING = {"max_tokens": 48}
TAG_DECODING = {"max_tokens": 16}
DESC_DECODING = {"max_tokens": 32}


def _three_judges(server, cache: Path) -> dict:
    rows = demo_rows(N_ROWS)
    judges = {  # one answer per item (re-asks are exercised through the fault proxy)
        name: make_judge(server.base_url, server.model, RequestCache(cache), decoding=dec, max_attempts=1)
        for name, dec in (("bloom", BLOOM_DECODING), ("tag", TAG_DECODING), ("desc", DESC_DECODING))
    }
    bloom = JudgeBloomScorer(judges["bloom"]).score(rows["query"].tolist(), rows["response"].tolist())
    tags = JudgeDisciplineTagger(judges["tag"]).tag(rows["query"].tolist())
    desc_results = judges["desc"].run(DISCIPLINE_DESCRIPTION, [{"discipline": d} for d in DESCRIBED])
    desc = pd.DataFrame(
        {
            "discipline": DESCRIBED,
            "description": pd.Series([r.value for r in desc_results], dtype=object),
            "error": pd.Series([r.error for r in desc_results], dtype=object),
        }
    )
    return {"bloom": bloom, "tags": tags, "desc": desc, "judges": judges,
            "stats": {k: j.stats() for k, j in judges.items()}}


@pytest.fixture(scope="module")
def first_pass(smollm2_server, tmp_path_factory):
    cache = tmp_path_factory.mktemp("served_judge") / "judge.sqlite"
    t0 = time.perf_counter()
    out = _three_judges(smollm2_server, cache)
    out["cache"] = cache
    out["wall_s"] = time.perf_counter() - t0
    return out


def test_three_judges_valid_or_error_never_default(first_pass):
    bloom, tags, desc, stats = first_pass["bloom"], first_pass["tags"], first_pass["desc"], first_pass["stats"]
    assert len(bloom) == len(tags) == N_ROWS and len(desc) == len(DESCRIBED)
    assert_bloom_invariant(bloom)
    assert_discipline_invariant(tags)
    for row in desc.itertuples():
        if row.error is None:
            assert isinstance(row.description, str) and row.description.strip(), row
        else:
            assert isinstance(row.error, str) and row.error and row.description is None, row
    # every error is a judge failure (no empty queries here), and counted as one
    assert stats["bloom"]["failures"] == int(bloom["error"].notna().sum())
    assert stats["tag"]["failures"] == int(tags["error"].notna().sum())
    assert stats["desc"]["failures"] == int(desc["error"].notna().sum())
    for key, s in stats.items():
        assert s["cache_hits"] == 0 and s["calls"] == s["items"] and s["transport_failures"] == 0, (key, s)
        assert s["parse_failures"] == s["failures"], (key, s)
        assert s["completion_tokens"] > 0 and s["prompt_tokens"] > 0
    # the failures are parse failures
    for err in [*bloom["error"].dropna(), *tags["error"].dropna(), *desc["error"].dropna()]:
        assert err.startswith("parse:") and "(after 1 answers)" in err, err
    # every request finished: one cache row per distinct request
    assert cache_rows(first_pass["cache"]) == 2 * N_ROWS + len(DESCRIBED)
    # describe() agrees with the run (through the cache: no call)
    tagger = JudgeDisciplineTagger(first_pass["judges"]["desc"])
    calls = first_pass["judges"]["desc"].stats()["calls"]
    if desc["error"].isna().all():
        assert tagger.describe(DESCRIBED) == dict(zip(DESCRIBED, desc["description"], strict=True))
    else:
        with pytest.raises(RuntimeError, match=f"could not describe {int(desc['error'].notna().sum())}"):
            tagger.describe(DESCRIBED)
    assert first_pass["judges"]["desc"].stats()["calls"] == calls
    print(f"first pass {first_pass['wall_s']:.1f}s; failures bloom {stats['bloom']['failures']}/{N_ROWS}, "
          f"tags {stats['tag']['failures']}/{N_ROWS}, desc {stats['desc']['failures']}/{len(DESCRIBED)}")


def test_rerun_on_same_cache_makes_zero_calls(first_pass, smollm2_server):
    again = _three_judges(smollm2_server, first_pass["cache"])
    for key, s in again["stats"].items():
        first = first_pass["stats"][key]
        assert s["calls"] == 0 and s["retries"] == 0 and s["reasks"] == 0, (key, s)
        assert s["cache_hits"] == s["items"] == first["items"], (key, s)  # all requests distinct here
        assert s["failures"] == first["failures"], (key, s)
    pd.testing.assert_frame_equal(again["bloom"], first_pass["bloom"])
    pd.testing.assert_frame_equal(again["tags"], first_pass["tags"])
    pd.testing.assert_frame_equal(again["desc"], first_pass["desc"])
    assert cache_rows(first_pass["cache"]) == 2 * N_ROWS + len(DESCRIBED)


# ------------------------------------------------------------------- 3: client killed mid-run
KILL_ITEMS = 6
KILL_DECODING = {"max_tokens": 16}
_CHILD = """
import json, sys
from thtb.judge import DISCIPLINES, OpenAIJudge
base_url, model, cache, items = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
judge = OpenAIJudge(model=model, base_url=base_url, cache=cache, concurrency=1, max_attempts=1,
                    max_retries=0, timeout_s=120, decoding=json.loads(sys.argv[5]), progress=False)
judge.run(DISCIPLINES, items)
print("FINISHED", flush=True)
"""


def _kill_items() -> list[dict]:
    return [{"query": q} for q in demo_rows(KILL_ITEMS)["query"]]


def test_killed_client_resumes_without_repeating_finished_requests(smollm2_server, tmp_path):
    items = _kill_items()
    kw = dict(concurrency=1, max_attempts=1, max_retries=0, decoding=KILL_DECODING)
    # the uninterrupted reference run, on its own fresh cache (greedy, one request at a time)
    reference = make_judge(smollm2_server.base_url, smollm2_server.model, tmp_path / "fresh.sqlite", **kw)
    expected = reference.run(DISCIPLINES, items)
    assert reference.stats()["calls"] == KILL_ITEMS

    cache = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, smollm2_server.base_url, smollm2_server.model, str(cache),
         json.dumps(items), json.dumps(KILL_DECODING)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 90
        while cache_rows(cache) < 2:
            assert proc.poll() is None, f"child exited early: {proc.communicate()[1].decode()[-2000:]}"
            assert time.monotonic() < deadline, "child committed < 2 rows in 90 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL and b"FINISHED" not in out
    rows_before = cache_rows(cache)
    assert 2 <= rows_before < KILL_ITEMS, rows_before
    time.sleep(1.0)  # let the server finish the killed client's orphaned request (if any)

    resumed = make_judge(smollm2_server.base_url, smollm2_server.model, cache, **kw)
    got = resumed.run(DISCIPLINES, items)
    stats = resumed.stats()
    assert stats["calls"] == KILL_ITEMS - rows_before, (stats, rows_before)
    assert stats["cache_hits"] == rows_before and stats["retries"] == 0
    assert sum(r.from_cache for r in got) == rows_before
    assert [r.from_cache for r in got] == [True] * rows_before + [False] * (KILL_ITEMS - rows_before)
    assert outcome(got) == outcome(expected)
    assert cache_rows(cache) == KILL_ITEMS


# ------------------------------------------------------------------- 4: server dies mid-run
def _transport_error(err: str | None) -> bool:
    return bool(err) and err.startswith("transport: ") and any(
        name in err for name in ("connection error", "timeout", "HTTP 5")
    )


def test_server_dies_mid_run_then_resume_completes_the_rest(smollm2_model_path, tmp_path):
    from thtb.serve import ServedModel

    items = _kill_items()
    cache = tmp_path / "judge.sqlite"
    kw = dict(concurrency=1, max_attempts=1, max_retries=1, backoff_initial_s=0.05, backoff_max_s=0.1,
              timeout_s=60.0, decoding=KILL_DECODING)
    server = ServedModel(smollm2_model_path, engine="transformers", log_path=tmp_path / "server1.log", grace_period=5,
                         startup_timeout=120)
    server.start()
    try:
        judge = make_judge(server.base_url, server.model, RequestCache(cache), **kw)
        box: dict = {}
        worker = threading.Thread(target=lambda: box.update(out=judge.run(DISCIPLINES, items)))
        worker.start()
        deadline = time.monotonic() + 90
        while cache_rows(cache) < 1:
            assert worker.is_alive() and time.monotonic() < deadline, "no row cached"
            time.sleep(0.02)
        server.stop()
        worker.join(60)
        assert not worker.is_alive()
    finally:
        server.stop()
    results = box["out"]
    finished = [i for i, r in enumerate(results) if not _transport_error(r.error)]
    unfinished = [i for i, r in enumerate(results) if _transport_error(r.error)]
    assert len(finished) >= 1 and len(unfinished) >= 1, [r.error for r in results]
    assert finished == list(range(len(finished)))  # concurrency 1: a prefix finished
    for i in unfinished:
        assert results[i].value is None and results[i].raw is None and not results[i].from_cache
        assert "after 2 tries" in results[i].error, results[i].error
    stats = judge.stats()
    assert stats["transport_failures"] == len(unfinished) and stats["failures"] >= len(unfinished)
    # nothing unfinished is cached; everything finished is
    assert cache_rows(cache) == len(finished)
    for i, item in enumerate(items):
        assert (judge.key(DISCIPLINES, item) in judge.cache) == (i in finished)

    with ServedModel(smollm2_model_path, engine="transformers", log_path=tmp_path / "server2.log", grace_period=5,
                     startup_timeout=120) as again:
        assert again.model == server.model  # the same cache keys
        resumed = make_judge(again.base_url, again.model, RequestCache(cache), **kw)
        out = resumed.run(DISCIPLINES, items)
    s = resumed.stats()
    assert s["calls"] == len(unfinished) and s["cache_hits"] == len(finished) and s["transport_failures"] == 0
    assert [r.from_cache for r in out] == [i in finished for i in range(len(items))]
    for i in finished:
        assert outcome([out[i]]) == outcome([results[i]])
    for r in out:
        assert not _transport_error(r.error)
        assert (r.error is None) != (r.value is None)
    assert cache_rows(cache) == len(items)


# ------------------------------------------------------- 5: faults in front of the real server
GARBAGE = "Well, I am honestly not sure which fields of study this question is really about."


class FaultProxy:
    """aiohttp reverse proxy on 127.0.0.1 (own thread and loop) forwarding POST /v1/chat/completions
    to ``upstream``, unless ``schedule[(item, k)]`` injects a fault into the ``k``-th request of
    item ``item`` (found by its query in the prompt): ``("status", code)``, ``("hang", seconds)`` (no
    answer until the client gives up and closes the connection, or ``seconds`` pass) or ``("garbage", text)``.
    ``log`` lists ``(item, k, kind)`` per request."""

    def __init__(self, upstream: str, queries: list[str], schedule: dict[tuple[int, int], tuple]) -> None:
        self.upstream = upstream.rstrip("/")
        self.queries = queries
        self.schedule = schedule
        self.log: list[tuple[int, int, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kinds(self, item: int) -> list[str]:
        return [kind for i, _, kind in self.log if i == item]

    async def _start(self) -> int:
        from aiohttp import ClientSession, ClientTimeout, web

        self.session = ClientSession(timeout=ClientTimeout(total=300))
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def _handle(self, request):
        from aiohttp import web

        body = await request.read()
        prompt = json.loads(body)["messages"][1]["content"]
        item = next(i for i, q in enumerate(self.queries) if f"### Question\n{q}\n" in prompt)
        k = sum(1 for i, _, _ in self.log if i == item)
        kind, arg = self.schedule.get((item, k), ("forward", None))
        self.log.append((item, k, kind))
        if kind == "status":
            return web.json_response({"error": {"message": f"injected {arg}"}}, status=arg)
        if kind == "hang":
            deadline = self.loop.time() + arg
            while self.loop.time() < deadline and not (request.transport is None or request.transport.is_closing()):
                await asyncio.sleep(0.05)
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if kind == "garbage":
            return web.json_response(completion(arg))
        async with self.session.post(
            f"{self.upstream}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")

    async def _close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_faults_in_front_of_real_server(smollm2_server, tmp_path):
    # a timeout no real answer reaches on a busy machine: only the injected hang times out (it lasts until the
    # client gives up), so the counts below do not depend on how fast SmolLM2 answers
    timeout = 45.0
    # item 0: 500, 429, a hang past the client timeout (each retried), then the real answer;
    # item 1: garbage, re-ask -> garbage again -> a counted parse failure;
    # item 2: garbage, re-ask -> the real server answers the re-ask; item 3: untouched.
    schedule = {(0, 0): ("status", 500), (0, 1): ("status", 429), (0, 2): ("hang", 10 * timeout),
                (1, 0): ("garbage", GARBAGE), (1, 1): ("garbage", GARBAGE), (2, 0): ("garbage", GARBAGE)}
    items = _kill_items()[:4]
    proxy = FaultProxy(smollm2_server.base_url, [it["query"] for it in items], schedule)
    try:
        judge = make_judge(proxy.base_url, smollm2_server.model, RequestCache(tmp_path / "judge.sqlite"),
                           concurrency=2, max_retries=3, max_attempts=2, timeout_s=timeout,
                           decoding=KILL_DECODING)
        out = judge.run(DISCIPLINES, items)
    finally:
        proxy.close()
    assert proxy.kinds(0)[:4] == ["status", "status", "hang", "forward"]
    assert proxy.kinds(1) == ["garbage", "garbage"]
    assert proxy.kinds(2) == ["garbage", "forward"]
    assert set(proxy.kinds(3)) == {"forward"}
    stats = judge.stats()
    assert stats["calls"] == len(proxy.log)
    assert stats["retries"] == 3 and stats["transport_failures"] == 0
    # transport faults survived by retries: item 0 got the real server's answer
    assert out[0].raw != GARBAGE and not (out[0].error or "").startswith("transport")
    # garbage twice: a parse failure, counted, never a default
    assert out[1].value is None and out[1].raw == GARBAGE and out[1].attempts == 2
    assert out[1].error.startswith("parse:") and "(after 2 answers)" in out[1].error
    # garbage once: re-asked with the bad answer and the stricter follow-up; the real server answered
    assert out[2].attempts == 2 and out[2].raw != GARBAGE
    assert stats["reasks"] >= 2 and stats["parse_failures"] >= 1
    assert stats["failures"] == sum(r.error is not None for r in out) == stats["parse_failures"]
    for r in out:
        assert (r.error is None) != (r.value is None)
        if r.error is None:
            assert r.value and all(SNAKE.match(d) for d in r.value)
        else:
            assert r.error.startswith("parse:")
    assert len(judge.cache) == len(items)  # every item finished (parse failures included)


# ---------------------------------------------------------------------- 6: no API-key leak
def test_api_key_never_leaks_to_cache_server_log_or_logs(smollm2_server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    log_before = smollm2_server.log_path.stat().st_size
    cache = tmp_path / "judge.sqlite"
    judge = make_judge(smollm2_server.base_url, smollm2_server.model, RequestCache(cache), decoding=TAG_DECODING)
    out = JudgeDisciplineTagger(judge).tag([q for q in demo_rows(3)["query"]])
    assert len(out) == 3 and judge.stats()["calls"] >= 3
    assert SECRET not in repr(judge) and SECRET not in str(judge.stats())
    assert caplog.text and SECRET not in caplog.text
    judge.cache.close()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert cache in files
    for p in files:  # the database and any -wal/-shm beside it
        assert SECRET.encode() not in p.read_bytes(), p
    dump = "\n".join(sqlite3.connect(str(cache)).iterdump())
    assert SECRET not in dump and smollm2_server.model in dump
    time.sleep(0.2)  # let the server flush its access-log lines
    log = smollm2_server.log_path.read_bytes()
    assert len(log) > log_before and b"/v1/chat/completions" in log[log_before:]
    assert SECRET.encode() not in log
