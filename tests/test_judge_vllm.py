"""The HTTP judge (:class:`~thtb.judge.client.OpenAIJudge`) against a real vLLM OpenAI-compatible server
(``thtb.serve``, SmolLM2-135M-Instruct on the CPU; the ``vllm_server`` fixture of ``tests/serving.py``).

What only the real server can show: its 400 reason reaches the sample's error, the context check agrees with
vLLM's own, and a send that times out is aborted on the server (``/metrics``), not left generating.
"""

from __future__ import annotations

import logging
import time

import pytest

from thtb.judge import BLOOM, DISCIPLINES, OpenAIJudge, RequestCache
from thtb.scorers.base import BLOOM_BANDS

pytestmark = pytest.mark.vllm

ITEMS = [
    {"query": "Name the capital of France.", "response": "Paris."},
    {"query": "Write a short poem about the sea.", "response": "Waves roll in, and out again."},
    {"query": "Explain why the sky is blue.", "response": "Rayleigh scattering of sunlight."},
    {"query": "List three prime numbers.", "response": "2, 3, 5."},
]
LONG = {"query": "Summarise this text. " + "The committee met again to discuss the budget. " * 260,
        "response": "A meeting."}


def judge_for(server, tmp_path, **kw) -> OpenAIJudge:
    args = dict(model=server.model, base_url=server.base_url, cache=RequestCache(tmp_path / "judge.sqlite"),
                concurrency=4, max_attempts=2, decoding={"max_tokens": 96}, progress=False)
    args.update(kw)
    return OpenAIJudge(**args)


def wait_idle(server, timeout_s: float = 20.0) -> dict:
    """vLLM's metrics once nothing is running or waiting (bounded)."""
    t0 = time.monotonic()
    while True:
        m = server.metrics()
        if m.get("num_requests_running", 0) == 0 and m.get("num_requests_waiting", 0) == 0:
            return m
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"vLLM still busy after {timeout_s} s: {m}")
        time.sleep(0.1)


def test_bloom_and_disciplines_through_vllm_then_zero_requests_on_rerun(vllm_server, tmp_path):
    """JSON-guided (as ``scoring=served`` runs it): every answer parses into a level inside its band and a list of
    lower_snake_case disciplines; a rerun on the same cache sends nothing and reads the same values."""
    guided = {"guided_json": True, "decoding": {"max_tokens": 256}}  # room for the bounded reasoning (≤ 400 chars)
    judge = judge_for(vllm_server, tmp_path, **guided)
    bloom = judge.run(BLOOM, ITEMS)
    tags = judge.run(DISCIPLINES, ITEMS)
    assert [r.error for r in bloom + tags] == [None] * (2 * len(ITEMS))  # every answer parsed, the server never failed
    for r in bloom:
        level, score = r.value["level"], r.value["score"]
        low, high = BLOOM_BANDS[level]
        assert low <= score <= high, r.value
    for r in tags:
        assert r.value and all(t == t.lower() and " " not in t for t in r.value), r.value
    first = judge.stats()
    assert first["calls"] >= 2 * len(ITEMS) and first["transport_failures"] == 0 and first["completion_tokens"] > 0
    again = judge_for(vllm_server, tmp_path, **guided)
    assert [r.value for r in again.run(BLOOM, ITEMS)] == [r.value for r in bloom]
    again.run(DISCIPLINES, ITEMS)
    assert again.stats()["calls"] == 0 and again.stats()["cache_hits"] == 2 * len(ITEMS)


def test_vllm_context_error_reaches_the_sample_and_the_check_prevents_it(vllm_server, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    # the check off: vLLM refuses the request, and says why
    unchecked = judge_for(vllm_server, tmp_path, context_len=0, cache=None, decoding={"max_tokens": 512})
    out = unchecked.run(BLOOM, [LONG])[0]
    assert out.error.startswith("transport: HTTP 400: ") and "context length" in out.error, out.error
    assert unchecked.stats()["calls"] == 1  # a definite refusal is not retried
    assert "HTTP 400: " in caplog.text and "context length" in caplog.text
    # the check on (SmolLM2's tokenizer is local; max_model_len 2048 from /v1/models): not sent at all
    checked = judge_for(vllm_server, tmp_path, cache=None, decoding={"max_tokens": 512})
    res = checked.run(BLOOM, [ITEMS[0], LONG])
    assert res[0].error is None or res[0].error.startswith("parse:")
    assert res[1].error.startswith("context: the prompt has ") and "context of 2048 tokens" in res[1].error
    assert checked.stats()["context_overflows"] == 1 and checked.stats()["calls"] == res[0].attempts


def test_a_timed_out_send_is_aborted_on_the_server(vllm_server, tmp_path):
    """A 0.5 s send timeout on a 1,500-token essay: the judge gives up, closes the connection, and vLLM aborts
    the generation (nothing left running); the run sent at most distinct × max_attempts requests."""
    wait_idle(vllm_server)
    before = vllm_server.metrics()
    essay = [{"query": f"Write a very long essay about the history of city number {i}.", "response": "-"}
             for i in range(3)]
    judge = judge_for(vllm_server, tmp_path, timeout_s=0.5, timeout_per_token_s=0.0, max_retries=3, max_attempts=2,
                      decoding={"max_tokens": 1500}, backoff_initial_s=0.2, backoff_max_s=0.5, cache=None,
                      context_len=0)
    out = judge.run(DISCIPLINES, essay)
    stats = judge.stats()
    assert all(r.error and "timeout" in r.error for r in out), [r.error for r in out]
    assert stats["timeouts"] == stats["calls"] and stats["calls"] <= len(essay) * 2
    after = wait_idle(vllm_server, timeout_s=10.0)  # aborted: a 1,500-token generation would run far longer
    generated = after.get("generation_tokens_total", 0) - before.get("generation_tokens_total", 0)
    assert generated < stats["calls"] * 1500 / 2, generated  # each aborted long before its 1,500 tokens
    print(f"\nvLLM: {stats['calls']} timed-out sends for {len(essay)} distinct, {generated:.0f} tokens generated "
          f"in all before the aborts")


def test_guided_json_through_vllm_gives_answers_in_the_schema(vllm_server, tmp_path):
    """response_format json_schema (vLLM's structured outputs): every Bloom answer is a JSON object with the
    schema's fields and every disciplines answer a JSON list — the parsers accept them or name the rule they
    break (a score outside its level's band), never a missing JSON object."""
    judge = judge_for(vllm_server, tmp_path, guided_json=True, max_attempts=1, decoding=None)
    bloom = judge.run(BLOOM, ITEMS)
    tags = judge.run(DISCIPLINES, ITEMS)
    for r in bloom:
        assert r.ok or "outside the" in r.error, r.error
        assert r.raw.lstrip().startswith("{") and '"level"' in r.raw
    for r in tags:
        assert r.ok and r.raw.lstrip().startswith("["), (r.raw, r.error)


def test_pairwise_verdicts_through_vllm_are_one_of_the_allowed_answers(vllm_server, tmp_path):
    """guided_json also restricts a closed question to its choices (vLLM's structured_outputs.choice): SmolLM2,
    which writes "The output (a) is better." unconstrained, answers exactly "Output (a)" or "Output (b)"."""
    from thtb.eval.prompts import PAIRWISE_FORCED

    items = [{"instruction": it["query"], "output_a": it["response"], "output_b": "I do not know."} for it in ITEMS]
    items += [{**it, "output_a": it["output_b"], "output_b": it["output_a"]} for it in items]
    judge = judge_for(vllm_server, tmp_path, guided_json=True, max_attempts=1, decoding=None)
    results = judge.run(PAIRWISE_FORCED, items)
    assert all(r.ok and r.raw.strip() in ("Output (a)", "Output (b)") for r in results), \
        [(r.raw, r.error) for r in results]
    assert judge.params(PAIRWISE_FORCED)["structured_outputs"] == {"choice": ["Output (a)", "Output (b)"]}


@pytest.mark.slow
def test_the_judge_splits_its_load_over_two_vllm_servers_and_reruns_with_zero_requests(vllm_server, tmp_path):
    """``base_url`` listing two real vLLM servers of SmolLM2 (the session's and a second one): each answers a share
    of the requests (its own ``/metrics`` counts them, and the judge's ``server_calls`` agree), every answer
    parses, and a rerun on the same cache sends neither server anything."""
    from thtb.serve import ServedModel

    items = [{"query": f"Explain step {i} of making bread at home.", "response": "Knead, rest, bake."}
             for i in range(16)]
    second = ServedModel("smollm2", engine="vllm", dtype="bfloat16", max_model_len=2048,
                         log_path=tmp_path / "second.log", startup_timeout=600, env={"VLLM_CPU_KVCACHE_SPACE": ""})
    with second:
        servers = (vllm_server, second)
        before = [wait_idle(s).get("request_success_total", 0.0) for s in servers]
        urls = [s.base_url for s in servers]
        judge = judge_for(vllm_server, tmp_path, base_url=urls, guided_json=True, concurrency=4,
                          decoding={"max_tokens": 64})
        out = judge.run(DISCIPLINES, items)
        assert [r.error for r in out] == [None] * len(items)
        served = [wait_idle(s).get("request_success_total", 0.0) - b for s, b in zip(servers, before)]
        calls = judge.stats()["server_calls"]
        assert [calls[u] for u in urls] == served and sum(served) == judge.stats()["calls"] >= len(items)
        assert min(served) >= len(items) // 4, served  # both took a real share
        again = judge_for(vllm_server, tmp_path, base_url=urls, guided_json=True, concurrency=4,
                          decoding={"max_tokens": 64})
        assert [r.value for r in again.run(DISCIPLINES, items)] == [r.value for r in out]
        assert again.stats()["calls"] == 0 and again.stats()["cache_hits"] == len(items)
        assert [wait_idle(s).get("request_success_total", 0.0) - b for s, b in zip(servers, before)] == served
        print(f"two vLLM servers: {served[0]:.0f} + {served[1]:.0f} requests for {len(items)} items; rerun 0")
