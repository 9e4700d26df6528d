"""OpenAIJudge against an in-process fake OpenAI-compatible server used as a fault injector.

The fake (:class:`tests.helpers.FakeServer`: aiohttp, 127.0.0.1, free port, own thread) serves POST /v1/chat/completions from a
per-test script ``script(n, body) -> (status, text | dict, delay_s)`` and records every request,
the maximum number in flight and the headers it saw.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time

import pytest

from tests.helpers import FakeServer, bloom_answer, make_judge
from thtb.judge import (
    BLOOM,
    BLOOM_LEVEL,
    DISCIPLINES,
    JudgeBloomScorer,
    JudgeDisciplineTagger,
    OpenAIJudge,
    RequestCache,
)
from thtb.scorers.base import DescriptionError

SECRET = "sk-test-secret"


@pytest.fixture
def server():
    srv = FakeServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


ITEMS = [
    {"query": "Name the capital of France.", "response": "Paris."},
    {"query": "Write a poem about the sea.", "response": "Waves..."},
    {"query": "List three colours.", "response": "Red, green, blue."},
]


def test_run_order_cache_and_zero_calls_on_rerun(server, tmp_path):
    judge = make_judge(server, tmp_path)
    out = judge.run(BLOOM, ITEMS)
    assert [r.value["level"] for r in out] == ["Remember", "Create", "Remember"]
    assert out[1].value["score"] == 18 and not any(r.from_cache for r in out)
    assert server.count == 3
    assert server.requests[0]["model"] == "fake-judge" and server.requests[0]["temperature"] == 0
    assert server.headers[0]["Authorization"] == f"Bearer {SECRET}"  # the key does reach the server
    stats = judge.stats()
    assert stats["calls"] == 3 and stats["cache_hits"] == 0 and stats["prompt_tokens"] == 33
    assert stats["completion_tokens"] == 15 and stats["failures"] == 0

    # a fresh judge on the same cache file: zero calls, same values, in order
    again = make_judge(server, tmp_path)
    out2 = again.run(BLOOM, list(reversed(ITEMS)))
    assert server.count == 3
    assert [r.value for r in out2] == [r.value for r in reversed(out)]
    assert all(r.from_cache for r in out2) and again.stats()["cache_hits"] == 3 and again.stats()["calls"] == 0

    # duplicates in one run are sent once
    judge3 = make_judge(server, tmp_path, cache=None)
    out3 = judge3.run(BLOOM, [ITEMS[0], ITEMS[0], ITEMS[0]])
    assert server.count == 4 and len(out3) == 3 and all(r.ok for r in out3)


def test_reparse_makes_zero_calls(server, tmp_path):
    server.script = lambda n, body: (200, 'Level: Apply {"level": "Apply", "score": "4+4 = 8"}', 0.0)
    judge = make_judge(server, tmp_path)
    assert judge.run(BLOOM, ITEMS[:1])[0].value["score"] == 8
    assert server.count == 1
    # the cached raw text is parsed again: no call
    reparse = make_judge(server, tmp_path, reparse=True)
    out = reparse.run(BLOOM, ITEMS[:1])
    assert server.count == 1 and out[0].from_cache and out[0].value["level"] == "Apply"
    missing = reparse.run(BLOOM, ITEMS[1:2])
    assert server.count == 1 and missing[0].error.startswith("reparse: request not in cache")
    assert reparse.stats()["calls"] == 0 and reparse.stats()["reparsed"] == 1


def test_reparse_fixes_a_cached_parse_failure(server, tmp_path):
    server.script = lambda n, body: (200, '{"level": "apply", "score": 8}', 0.0)
    judge = make_judge(server, tmp_path, max_attempts=1)
    # a stricter (older) parser would have failed; simulate by caching a parse error row
    first = judge.run(BLOOM, ITEMS[:1])[0]
    assert first.ok
    cache = judge.cache
    key = judge.key(BLOOM, ITEMS[0])
    rec = cache.get(key)
    rec.parsed, rec.error = None, "parse: old parser failed"
    cache.put(key, rec)
    assert make_judge(server, tmp_path).run(BLOOM, ITEMS[:1])[0].error == "parse: old parser failed"
    fixed = make_judge(server, tmp_path, reparse=True).run(BLOOM, ITEMS[:1])[0]
    assert fixed.ok and fixed.value["level"] == "Apply" and server.count == 1
    assert cache.get(key).error is None  # the row was updated


def test_answers_parsed_by_other_parser_code_are_reparsed_on_read(server, tmp_path):
    """A cached value is only trusted when the parser code that produced it is today's: otherwise the raw text
    is parsed again (no request), so a changed parser never serves a stale value."""
    server.script = lambda n, body: (200, '{"level": "apply", "score": 8}', 0.0)
    judge = make_judge(server, tmp_path, max_attempts=1)
    key = judge.key(BLOOM, ITEMS[0])
    assert judge.run(BLOOM, ITEMS[:1])[0].ok
    assert judge.cache.get(key).parser == judge.parser_digest(BLOOM)
    assert judge.parser_digest(BLOOM).startswith("thtb.judge.parsers.parse_bloom:")
    rec = judge.cache.get(key)
    rec.parsed, rec.error, rec.parser = None, "parse: an older parser failed", "thtb.judge.parsers.parse_bloom:old"
    judge.cache.put(key, rec)
    again = make_judge(server, tmp_path)
    out = again.run(BLOOM, ITEMS[:1])[0]
    assert out.ok and out.value["score"] == 8 and server.count == 1  # re-parsed, not re-asked
    assert again.stats()["reparsed"] == 1 and again.stats()["calls"] == 0
    assert judge.cache.get(key).error is None and judge.cache.get(key).parser == judge.parser_digest(BLOOM)


def test_cache_written_before_parser_digests_is_migrated(server, tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE requests (key TEXT PRIMARY KEY, model TEXT, template TEXT, raw TEXT NOT NULL, "
                "parsed TEXT, error TEXT, latency_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER, "
                "attempts INTEGER, created REAL NOT NULL)")
    judge = make_judge(server, tmp_path, cache=None)
    key = judge.key(BLOOM, ITEMS[0])
    con.execute("INSERT INTO requests VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (key, "fake-judge", "bloom@1", '{"level": "Apply", "score": 8}', '{"level": "Apply", "score": 7}',
                 None, 0.1, 1, 1, 1, 0.0))
    con.commit()
    con.close()
    out = make_judge(server, tmp_path, cache=RequestCache(path)).run(BLOOM, ITEMS[:1])[0]
    assert out.value["score"] == 8 and server.count == 0  # the stale parsed 7 was not served


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_survive_transient_errors(server, tmp_path, status):
    def script(n, body):
        if n < 2:
            return status, {"error": {"message": "try again"}}, 0.0
        return 200, bloom_answer(body), 0.0

    server.script = script
    judge = make_judge(server, tmp_path, concurrency=1)
    out = judge.run(BLOOM, ITEMS[:1])
    assert out[0].ok and out[0].attempts == 1 and server.count == 3
    assert judge.stats()["retries"] == 2 and judge.stats()["calls"] == 3


def test_retries_survive_timeouts(server, tmp_path):
    server.script = lambda n, body: (200, bloom_answer(body), 1.0 if n == 0 else 0.0)
    judge = make_judge(server, tmp_path, timeout_s=0.3, concurrency=1)
    out = judge.run(BLOOM, ITEMS[:1])
    assert out[0].ok and server.count == 2


def test_non_retryable_status_fails_fast(server, tmp_path):
    server.script = lambda n, body: (400, {"error": {"message": "bad request"}}, 0.0)
    judge = make_judge(server, tmp_path)
    out = judge.run(BLOOM, ITEMS[:1])
    assert out[0].error.startswith("transport: HTTP 400") and server.count == 1


def test_exhausted_retries_recorded_not_cached_and_retried_later(server, tmp_path):
    server.script = lambda n, body: (500, {"error": {"message": "down"}}, 0.0)
    judge = make_judge(server, tmp_path, max_retries=2)
    out = judge.run(BLOOM, ITEMS[:2])
    assert all(r.error and r.error.startswith("transport: HTTP 500") for r in out)
    assert all(r.value is None and r.raw is None for r in out)
    assert server.count == 6 and len(judge.cache) == 0
    assert judge.stats()["failures"] == 2 and judge.stats()["transport_failures"] == 2
    # the server recovers: a resumed run retries both and caches them
    server.script = lambda n, body: (200, bloom_answer(body), 0.0)
    again = make_judge(server, tmp_path)
    out2 = again.run(BLOOM, ITEMS[:2])
    assert all(r.ok and not r.from_cache for r in out2) and server.count == 8 and len(again.cache) == 2


def test_malformed_output_reasked_then_failure_never_default(server, tmp_path):
    server.script = lambda n, body: (200, "I think this is a fairly hard task, maybe Analyze-ish.", 0.0)
    judge = make_judge(server, tmp_path, max_attempts=3)
    out = judge.run(BLOOM, ITEMS[:1])[0]
    assert out.value is None and out.error.startswith("parse:") and "after 3 answers" in out.error
    assert out.attempts == 3 and server.count == 3 and out.raw.startswith("I think")
    # re-asks carry the bad answer and a stricter instruction
    last = server.requests[-1]["messages"]
    assert last[-2] == {"role": "assistant", "content": "I think this is a fairly hard task, maybe Analyze-ish."}
    assert last[-1]["role"] == "user" and "Answer only with one JSON object" in last[-1]["content"]
    assert len(last) == len(server.requests[0]["messages"]) + 4
    stats = judge.stats()
    assert stats["failures"] == 1 and stats["parse_failures"] == 1 and stats["reasks"] == 2
    # a finished request: cached with its error, a rerun makes no call and still reports the error
    again = make_judge(server, tmp_path)
    out2 = again.run(BLOOM, ITEMS[:1])[0]
    assert server.count == 3 and out2.from_cache and out2.error == out.error and out2.value is None


def test_reask_then_success(server, tmp_path):
    def script(n, body):
        if n == 0:
            return 200, '{"level": "Apply", "score": 15}', 0.0  # out of band
        return 200, '{"level": "Evaluate", "score": 15, "reasoning": "judges"}', 0.0

    server.script = script
    judge = make_judge(server, tmp_path)
    out = judge.run(BLOOM, ITEMS[:1])[0]
    assert out.ok and out.attempts == 2 and out.value["level"] == "Evaluate" and out.prompt_tokens == 22
    assert "outside the Apply band" in server.requests[1]["messages"][-1]["content"]


def test_concurrency_bounded(server, tmp_path):
    server.script = lambda n, body: (200, bloom_answer(body), 0.15)
    judge = make_judge(server, tmp_path, concurrency=3, cache=None)
    items = [{"query": f"Name fact number {i}.", "response": str(i)} for i in range(12)]
    t0 = time.perf_counter()
    out = judge.run(BLOOM, items)
    assert all(r.ok for r in out) and server.count == 12
    assert server.max_in_flight <= 3 and server.max_in_flight >= 2
    assert time.perf_counter() - t0 >= 4 * 0.15 * 0.9


def test_api_key_never_in_cache_logs_or_repr(server, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    calls = {"n": 0}

    def script(n, body):
        calls["n"] += 1
        return (500, {"error": {"message": "x"}}, 0.0) if n == 0 else (200, bloom_answer(body), 0.0)

    server.script = script
    judge = make_judge(server, tmp_path, progress=True)
    judge.run(BLOOM, ITEMS)
    judge.run(DISCIPLINES, [{"query": "q"}])
    assert SECRET not in repr(judge) and SECRET not in str(judge.stats())
    assert "HTTP Request" in caplog.text or "Request options" in caplog.text  # logs were captured
    assert SECRET not in caplog.text
    captured = capsys.readouterr()
    assert SECRET not in captured.out and SECRET not in captured.err
    judge.cache.close()
    for f in tmp_path.iterdir():
        assert SECRET.encode() not in f.read_bytes(), f
    con = sqlite3.connect(str(tmp_path / "judge.sqlite"))
    dump = "\n".join(con.iterdump())
    assert SECRET not in dump and "fake-judge" in dump


def test_missing_key_env_uses_empty(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    judge = make_judge(server, tmp_path)
    assert judge.run(BLOOM, ITEMS[:1])[0].ok
    assert server.headers[0]["Authorization"] == "Bearer EMPTY"


def test_extra_body_sent_and_keyed(server, tmp_path):
    judge = make_judge(server, tmp_path, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    judge.run(BLOOM, ITEMS[:1])
    assert server.requests[0]["chat_template_kwargs"] == {"enable_thinking": False}
    plain = make_judge(server, tmp_path)
    assert plain.key(BLOOM, ITEMS[0]) != judge.key(BLOOM, ITEMS[0])
    plain.run(BLOOM, ITEMS[:1])
    assert server.count == 2


def test_run_inside_running_loop(server, tmp_path):
    judge = make_judge(server, tmp_path)

    async def main():
        return judge.run(BLOOM, ITEMS[:1])

    assert asyncio.run(main())[0].ok


# ------------------------------------------------------------------------------ scorers
def test_bloom_scorer_reference_and_paper(server, tmp_path):
    judge = make_judge(server, tmp_path)
    verbatim = JudgeBloomScorer(judge, embedder=object())  # default: the query as the data layer built it
    verbatim.score(["List two primes.\nnan"], ["2, 3"])
    assert "List two primes.\nnan" in server.requests[-1]["messages"][-1]["content"]
    before = server.count
    scorer = JudgeBloomScorer(judge, strip_nan=True)
    queries = ["Name the capital of France.\nnan", "Write a poem about the sea.", "  \nnan"]
    out = scorer.score(queries, ["Paris.", "Waves...", ""])
    assert list(out.columns) == ["bloom_level", "bloom_score", "bloom_reason", "error"]
    assert out["bloom_level"].tolist() == ["Remember", "Create", None]
    assert out["bloom_score"].tolist() == [2, 18, None]
    assert out["bloom_reason"].tolist()[:2] == ["recall", "writes something new"]
    assert out["error"].tolist() == [None, None, "empty query"]
    assert server.count - before == 2  # the empty query is never sent
    assert "### Instruction\nName the capital of France.\n\n### Response" in server.requests[before]["messages"][-1]["content"]

    server.script = lambda n, body: (200, '{"level": "Analyze", "reasoning": "compares"}', 0.0)
    paper = JudgeBloomScorer(judge, fidelity="paper")
    assert paper.template is BLOOM_LEVEL
    out = paper.score(["Compare cats and dogs."], ["..."])
    assert out.loc[0, "bloom_level"] == "Analyze" and out.loc[0, "bloom_score"] == 10 and out.loc[0, "error"] is None
    with pytest.raises(ValueError):
        JudgeBloomScorer(judge, fidelity="other")


def test_bloom_scorer_failure_sets_error_not_default(server, tmp_path):
    server.script = lambda n, body: (200, "garbage", 0.0)
    out = JudgeBloomScorer(make_judge(server, tmp_path, max_attempts=2)).score(["Explain gravity."], ["..."])
    assert out.loc[0, "bloom_level"] is None and out.loc[0, "bloom_score"] is None
    assert out.loc[0, "error"].startswith("parse:")


def test_discipline_tagger(server, tmp_path):
    def script(n, body):
        content = body["messages"][-1]["content"]
        if "Describe the academic discipline" in content:
            name = content.split('"')[1]
            return 200, f"<think>x</think>{name.capitalize()} is a field. It studies things. It has methods.", 0.0
        if "poem" in content.split("### Question", 1)[-1]:
            return 200, "Literature, Creative Writing, literature", 0.0
        return 200, "garbage that is far too long to be the name of any academic discipline at all", 0.0

    server.script = script
    judge = make_judge(server, tmp_path)
    tagger = JudgeDisciplineTagger(judge=judge, embedder=None)
    out = tagger.tag(["Write a poem about the sea.\nnan", "What?", ""])
    assert out["disciplines"].tolist()[0] == ["literature", "creative_writing"]
    assert out["disciplines"].tolist()[1:] == [None, None]
    assert out["error"].tolist()[0] is None and out["error"].tolist()[1].startswith("parse:")
    assert out["error"].tolist()[2] == "empty query"
    # the discipline prompt sees the query only
    assert all("### Response" not in m["content"] for m in server.requests[0]["messages"])
    before = server.count
    desc = tagger.describe(["literature", "creative_writing", "literature"])
    assert list(desc) == ["literature", "creative_writing"]
    assert desc["creative_writing"].startswith("Creative writing is a field.")
    assert server.count == before + 2
    tagger.describe(["creative_writing"])  # cached: no call
    assert server.count == before + 2

    server.script = lambda n, body: (200, "", 0.0)
    with pytest.raises(DescriptionError, match="could not describe 1") as info:
        tagger.describe(["unknown_field", "literature"])
    assert list(info.value.errors) == ["unknown_field"] and info.value.errors["unknown_field"].startswith("parse:")
    assert info.value.described["literature"].startswith("Literature")


def test_judge_from_mapping(server, tmp_path):
    cfg = {"model": "fake-judge", "base_url": server.base_url, "cache": str(tmp_path / "c.sqlite"), "progress": False}
    scorer = JudgeBloomScorer(judge=cfg)
    assert isinstance(scorer.judge, OpenAIJudge) and isinstance(scorer.judge.cache, RequestCache)
    assert scorer.score(["Name a colour."], ["Red."]).loc[0, "bloom_level"] == "Remember"
    assert json.loads(json.dumps(scorer.judge.stats()))["calls"] == 1


def test_hydra_style_config(server, tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"model": "fake-judge", "base_url": server.base_url, "cache": str(tmp_path / "c.sqlite"), "progress": False,
         "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}, "decoding": {"max_tokens": 64}}
    )
    tagger = JudgeDisciplineTagger(judge=cfg, embedder=None)
    assert tagger.judge.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
    server.script = lambda n, body: (200, "physics", 0.0)
    assert tagger.tag(["Why is the sky blue?"]).loc[0, "disciplines"] == ["physics"]
    assert server.requests[0]["max_tokens"] == 64 and server.requests[0]["chat_template_kwargs"]["enable_thinking"] is False
    with pytest.raises(ValueError, match="needs a cache"):
        OpenAIJudge(model="m", base_url=server.base_url, reparse=True)


# ------------------------------------------------------------------ a slow or loaded server (flow control)
VLLM_400 = {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested 2600 "
                                 "tokens (2088 in the messages, 512 in the completion). Please reduce the length of "
                                 "the messages or completion.", "type": "BadRequestError", "param": None, "code": 400}}


def test_http_error_says_the_servers_reason(server, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    server.script = lambda n, body: (400, VLLM_400, 0.0)
    out = make_judge(server, tmp_path).run(BLOOM, ITEMS[:1])[0]
    assert out.error.startswith("transport: HTTP 400: This model's maximum context length is 2048 tokens")
    assert "2088 in the messages" in out.error and server.count == 1  # a definite refusal: not retried
    assert "HTTP 400: This model's maximum context length is 2048 tokens" in caplog.text
    server.script = lambda n, body: (422, "plain text reason", 0.0)
    out = make_judge(server, tmp_path).run(BLOOM, ITEMS[1:2])[0]
    assert out.error.startswith("transport: HTTP 422: plain text reason")


def test_send_timeout_scales_with_max_tokens(server, tmp_path):
    judge = make_judge(server, tmp_path, timeout_s=10.0, timeout_per_token_s=0.5)
    assert judge.send_timeout_s({"max_tokens": 100}) == 60.0 and judge.send_timeout_s({}) == 10.0
    # 0.8 s of "generation": a flat 0.3 s timeout cuts it, 0.3 s + 0.01 s × 128 tokens does not
    server.script = lambda n, body: (200, bloom_answer(body), 0.8)
    flat = make_judge(server, tmp_path, timeout_s=0.3, max_retries=0, decoding={"max_tokens": 128}, cache=None)
    assert flat.run(BLOOM, ITEMS[:1])[0].error == "transport: timeout after 1 tries"
    scaled = make_judge(server, tmp_path, timeout_s=0.3, timeout_per_token_s=0.01, max_retries=0,
                        decoding={"max_tokens": 128}, cache=None)
    assert scaled.run(BLOOM, ITEMS[:1])[0].ok


def test_a_timed_out_request_is_cancelled_not_duplicated(server, tmp_path):
    """The timed-out send's connection is closed (the server stops generating it) before its retry goes out:
    at no moment are two copies of one request in flight."""
    server.script = lambda n, body: (200, bloom_answer(body), 1.5 if n == 0 else 0.0)
    judge = make_judge(server, tmp_path, timeout_s=0.3, concurrency=1, backoff_initial_s=0.2, backoff_max_s=0.2)
    assert judge.run(BLOOM, ITEMS[:1])[0].ok
    assert server.count == 2 and server.disconnected == 1 and server.in_flight_log == [1, 1]
    assert judge.stats()["timeouts"] == 1


def test_concurrency_backs_off_on_overload_and_grows_back(server, tmp_path):
    def script(n, body):
        if n < 8:
            return 503, {"error": {"message": "overloaded"}}, 0.05
        return 200, bloom_answer(body), 0.05

    server.script = script
    judge = make_judge(server, tmp_path, concurrency=8, max_retries=6, cache=None)
    items = [{"query": f"Name fact number {i}.", "response": str(i)} for i in range(40)]
    out = judge.run(BLOOM, items)
    assert all(r.ok for r in out)
    stats = judge.stats()
    assert stats["concurrency_decreases"] >= 1 and stats["concurrency_lowest"] <= 4, stats
    assert max(server.in_flight_log[8:16]) < 8  # the retries and the next requests went out at a lower limit
    assert max(server.in_flight_log[-8:]) > stats["concurrency_lowest"]  # healthy again: the limit grew


def test_adaptive_limit_rules():
    from thtb.judge.flow import AdaptiveLimit

    async def go() -> AdaptiveLimit:
        limit = AdaptiveLimit(8, min_limit=2)
        tokens = [await limit.acquire() for _ in range(8)]
        for t in tokens:  # one round of overload: halved once, not eight times
            limit.feedback(t, "overload")
            limit.release()
        assert limit.limit == 4 and limit.decreases == 1
        t = await limit.acquire()
        limit.feedback(t, "overload")  # a new round: halved again, never below the floor
        limit.release()
        t = await limit.acquire()
        limit.feedback(t, "overload")
        limit.release()
        assert limit.limit == 2 and limit.lowest == 2
        for _ in range(2 + 3):  # `limit` answers in a row: one more slot
            t = await limit.acquire()
            limit.feedback(t, "ok")
            limit.release()
        assert limit.limit == 4
        return limit

    asyncio.run(go())


def test_send_budget_bounds_the_sends_under_timeouts(server, tmp_path):
    """Every send times out: max_retries would allow 11 sends per request, the run's budget allows
    distinct × max_attempts in all. Fast refusals (HTTP 500) stay bounded by max_retries alone."""
    server.script = lambda n, body: (200, bloom_answer(body), 5.0)
    judge = make_judge(server, tmp_path, max_retries=10, max_attempts=2, concurrency=2, timeout_s=0.2)
    out = judge.run(BLOOM, ITEMS)
    assert all(r.error and r.error.startswith("transport: timeout") for r in out)
    assert server.count == len(ITEMS) * 2 and judge.stats()["sends_refused"] >= 1
    assert any("send budget is spent" in r.error for r in out) and len(judge.cache) == 0
    server.script = lambda n, body: (500, {"error": {"message": "broken"}}, 0.0)
    sent = server.count
    judge = make_judge(server, tmp_path, max_retries=3, max_attempts=1, concurrency=2)
    out = judge.run(BLOOM, ITEMS)
    assert all(r.error == "transport: HTTP 500: broken after 4 tries" for r in out)
    assert server.count - sent == len(ITEMS) * 4


def test_server_slower_than_the_timeout_stops_clearly_with_bounded_requests(server, tmp_path):
    """The fault test: every answer takes 30 s, the send timeout is 0.4 s. The run sends at most
    distinct × max_attempts requests, cancels each timed-out one, and stops with a clear message well before
    the retries would run out; a rerun against a healthy server resumes and sends only what is missing."""
    from thtb.judge.flow import JudgeStalledError

    server.script = lambda n, body: (200, bloom_answer(body), 0.0 if "capital of France" in str(body) else 30.0)
    items = ITEMS[:1] + [{"query": f"Explain topic {i} in depth.", "response": str(i)} for i in range(12)]
    judge = make_judge(server, tmp_path, concurrency=4, timeout_s=0.4, max_retries=5, max_attempts=3,
                       stall_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(JudgeStalledError) as info:
        judge.run(BLOOM, items)
    took = time.monotonic() - t0
    message = str(info.value)
    assert "made no progress" in message and "rerun the same command to resume" in message
    assert "timed out" in message and str(judge.cache.path) in message
    assert server.count <= len(items) * 3, server.count  # no storm: ≤ distinct × max_attempts
    time.sleep(0.3)
    assert server.in_flight == 0 and server.disconnected == server.count - 1  # every slow send was cancelled
    assert took < 15, took
    print(f"\nslow server: {server.count} requests for {len(items)} distinct (cap {len(items) * 3}), "
          f"{server.disconnected} cancelled, stopped after {took:.1f} s")
    stats = judge.stats()
    assert stats["timeouts"] >= 1 and stats["concurrency_lowest"] == 1 and stats["stalled"] == 1
    # the one fast request finished and is cached; a rerun against a healthy server sends only the rest
    assert len(judge.cache) == 1
    sent = server.count
    server.script = lambda n, body: (200, bloom_answer(body), 0.0)
    again = make_judge(server, tmp_path, concurrency=4)
    out = again.run(BLOOM, items)
    assert all(r.ok for r in out) and server.count - sent == len(items) - 1
    assert again.stats()["cache_hits"] == 1


def test_prompt_beyond_the_context_is_not_sent(server, tmp_path, smollm2_model_path):
    """With the judge's tokenizer known (SmolLM2's, local) and its context from /v1/models (vLLM's max_model_len),
    a prompt that cannot fit is that sample's failure, with the reason — no request is sent for it."""
    server.model_name = "smollm2"
    server.context_len = 700
    long_item = {"query": "Explain this. " + "word " * 600, "response": "ok"}
    judge = make_judge(server, tmp_path, model="smollm2", decoding={"max_tokens": 128})
    out = judge.run(BLOOM, [ITEMS[0], long_item])
    assert out[0].ok
    assert out[1].error.startswith("context: the prompt has ") and "> the judge's context of 700 tokens" in out[1].error
    assert server.count == 1 and judge.stats()["context_overflows"] == 1 and len(judge.cache) == 1
    # context_len given: no /v1/models needed; 0 switches the check off (the server then decides)
    server.context_len = None
    assert make_judge(server, tmp_path, model="smollm2", context_len=700, cache=None,
                      decoding={"max_tokens": 128}).run(BLOOM, [long_item])[0].error.startswith("context:")
    assert server.count == 1
    off = make_judge(server, tmp_path, model="smollm2", context_len=0, cache=None, decoding={"max_tokens": 128})
    assert off.run(BLOOM, [long_item])[0].ok and server.count == 2


def test_guided_json_sends_the_templates_schema_and_keys_it(server, tmp_path):
    judge = make_judge(server, tmp_path, guided_json=True)
    assert judge.run(BLOOM, ITEMS[:1])[0].ok and judge.run(DISCIPLINES, ITEMS[:1])
    bloom_body, tags_body = server.requests
    fmt = bloom_body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "bloom"
    assert [alt["required"] for alt in fmt["json_schema"]["schema"]["anyOf"]] == [["level", "score", "reasoning"]] * 6
    assert tags_body["response_format"]["json_schema"]["schema"]["type"] == "array"
    assert judge.stats()["guided_json"] is True  # the summary says how answers were produced
    plain_judge = make_judge(server, tmp_path)  # unconstrained answers are other requests: not served from cache
    assert plain_judge.key(BLOOM, ITEMS[0]) != judge.key(BLOOM, ITEMS[0])
    plain_judge.run(BLOOM, ITEMS[:1])
    assert server.count == 3 and "response_format" not in server.requests[-1]


# ----------------------------------------------------------------------------------- a server that is gone
def _rows(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def test_a_closed_port_stops_the_run_naming_the_server(tmp_path):
    """Nothing listens at base_url: once ``unreachable_after`` (8) requests in a row failed on refused connections,
    every retry spent, the run stops with a message naming the URL, the refusal and where to look — instead of
    failing every request left one by one."""
    from thtb.judge.flow import JudgeServerUnreachableError, JudgeStalledError
    from thtb.serve import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = OpenAIJudge("fake-judge", url, cache=RequestCache(tmp_path / "judge.sqlite"), max_retries=1,
                        backoff_initial_s=0.01, backoff_max_s=0.02, progress=False, tokenizer=None)
    items = [{"query": f"Explain topic {i}.", "response": str(i)} for i in range(40)]
    t0 = time.monotonic()
    with pytest.raises(JudgeServerUnreachableError) as info:
        judge.run(BLOOM, items)
    message = str(info.value)
    assert isinstance(info.value, JudgeStalledError)  # a stop like a stall: resumable
    assert f"the server at {url} is unreachable" in message and "8 requests in a row failed" in message
    assert "connections refused" in message and "ConnectionRefusedError" in message
    assert "check the server's log and whether it is still running" in message and "judge.base_url" in message
    assert "0/40 distinct requests are answered" in message and "rerun the same command" in message
    assert judge.stats()["unreachable"] == 1 and judge.stats()["calls"] < len(items) * 2
    assert time.monotonic() - t0 < 10
    print(f"\n{message}")


def test_fewer_lost_requests_than_the_limit_fail_on_their_own(tmp_path):
    """Below ``unreachable_after`` (or with it 0) a refused request is one failed sample among others, its error
    saying what refused it; nothing is cached."""
    from thtb.serve import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    kw = dict(cache=RequestCache(tmp_path / "judge.sqlite"), max_retries=1, backoff_initial_s=0.01,
              backoff_max_s=0.02, progress=False, tokenizer=None)
    out = OpenAIJudge("fake-judge", url, **kw).run(BLOOM, ITEMS)
    assert all(r.error.startswith("transport: connection error: ConnectError") for r in out), out
    assert all("ConnectionRefusedError" in r.error and r.error.endswith("after 2 tries") for r in out)
    many = [{"query": f"Explain topic {i}.", "response": str(i)} for i in range(12)]
    out = OpenAIJudge("fake-judge", url, unreachable_after=0, **kw).run(BLOOM, many)
    assert len(out) == 12 and all(r.error.startswith("transport: connection error") for r in out)
    assert _rows(tmp_path / "judge.sqlite") == 0


def test_a_server_that_dies_mid_run_stops_it_then_the_rerun_resumes(tmp_path):
    """The server answers a few requests, then goes away (its port closed): the in-flight connection is dropped,
    the next ones refused, and the run stops saying so with what was answered; the answered requests are cached
    and a rerun against a live server sends only the rest."""
    from thtb.judge.flow import JudgeServerUnreachableError

    server = FakeServer()
    server.script = lambda n, body: (200, bloom_answer(body), 0.05)
    items = [{"query": f"Explain topic {i}.", "response": str(i)} for i in range(30)]
    cache = tmp_path / "judge.sqlite"
    judge = make_judge(server, tmp_path, concurrency=1, max_retries=1, max_attempts=1)
    box: dict = {}

    def run() -> None:
        try:
            box["out"] = judge.run(BLOOM, items)
        except Exception as exc:  # noqa: BLE001 - checked below
            box["exc"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while _rows(cache) < 3:
        assert time.monotonic() < deadline and worker.is_alive(), box
        time.sleep(0.01)
    server.close()
    worker.join(30)
    assert not worker.is_alive()
    exc = box.get("exc")
    assert isinstance(exc, JudgeServerUnreachableError), box
    answered = _rows(cache)
    assert f"the server at {server.base_url} is unreachable" in str(exc)
    assert "refused" in str(exc) and f"{answered}/30 distinct requests are answered and cached in {cache}" in str(exc)
    again = FakeServer()
    try:
        resumed = make_judge(again, tmp_path, concurrency=4, max_attempts=1)
        out = resumed.run(BLOOM, items)
    finally:
        again.close()
    assert all(r.ok for r in out) and again.count == 30 - answered
    assert resumed.stats()["cache_hits"] == answered


def test_stall_watch_counts_lost_requests_until_progress():
    from thtb.judge.flow import StallWatch

    watch = StallWatch(60.0, unreachable_after=2)
    watch.connection_lost("dropped", "connection error: RemoteProtocolError")
    assert not watch.unreachable()
    watch.progress()  # an answer in between: the count starts again
    watch.connection_lost("refused", "a")
    assert not watch.unreachable() and watch.lost_how == ["refused"]
    watch.connection_lost("refused", "b")
    assert watch.unreachable() and watch.lost == 2 and watch.last_error == "b"
    assert not StallWatch(60.0).unreachable()  # 0: never


def test_two_servers_split_the_load_and_share_the_cache(tmp_path):
    """``base_url`` a list (or one comma-separated string): each server gets its own adaptive limit of
    ``concurrency``, sends go to the one with the most free slots, so two equal servers each answer about half; the
    cache key does not name the server, so a rerun against either one alone sends nothing."""
    first, second = FakeServer(), FakeServer()
    try:
        for srv in (first, second):
            srv.script = lambda n, body: (200, bloom_answer(body), 0.1)
        judge = make_judge(first, tmp_path, base_url=f"{first.base_url}, {second.base_url}", concurrency=2)
        assert judge.base_urls == (first.base_url, second.base_url)
        items = [{"query": f"Name fact number {i}.", "response": str(i)} for i in range(16)]
        out = judge.run(BLOOM, items)
        assert all(r.ok for r in out) and first.count + second.count == 16
        assert 6 <= first.count <= 10 and 6 <= second.count <= 10, (first.count, second.count)
        assert first.max_in_flight <= 2 and second.max_in_flight <= 2
        assert judge.stats()["server_calls"] == {first.base_url: first.count, second.base_url: second.count}
        again = make_judge(second, tmp_path)  # one of the two alone, same cache: every answer is a hit
        assert [r.value for r in again.run(BLOOM, items)] == [r.value for r in out]
        assert second.count + first.count == 16 and again.stats()["calls"] == 0 and "server_calls" not in again.stats()
    finally:
        first.close()
        second.close()


def test_an_overloaded_server_of_two_gets_fewer_sends(tmp_path):
    """One of two servers answers HTTP 503 to every other request: its limit halves, retries are routed again, and
    every item is answered (by the healthy one where the other refused)."""
    busy, healthy = FakeServer(), FakeServer()
    try:
        busy.script = lambda n, body: (503, "overloaded", 0.0) if n % 2 == 0 else (200, bloom_answer(body), 0.1)
        healthy.script = lambda n, body: (200, bloom_answer(body), 0.1)
        judge = make_judge(busy, tmp_path, base_url=[busy.base_url, healthy.base_url], concurrency=4, cache=None)
        items = [{"query": f"Name fact number {i}.", "response": str(i)} for i in range(24)]
        out = judge.run(BLOOM, items)
        assert all(r.ok for r in out)
        answered_by_busy = sum(1 for n in range(busy.count) if n % 2 == 1)
        assert answered_by_busy + healthy.count == 24 and healthy.count > answered_by_busy
        assert judge.stats()["concurrency_decreases"] >= 1
    finally:
        busy.close()
        healthy.close()


def test_a_base_url_naming_no_server_is_refused():
    from thtb.judge.client import split_base_urls

    assert split_base_urls("http://a/v1,http://b/v1,http://a/v1") == ("http://a/v1", "http://b/v1")
    assert split_base_urls(["http://a/v1"]) == ("http://a/v1",)
    with pytest.raises(ValueError, match="names no server"):
        OpenAIJudge("m", " , ")
