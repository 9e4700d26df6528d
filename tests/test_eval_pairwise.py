"""Pairwise (AlpacaEval-style) evaluation: verdict bookkeeping with a scripted judge, the real AlpacaEval
files, generation cached by model fingerprint, and the judge through a real `transformers serve`."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ScriptedJudge, longer_wins, outputs, shared_file
from tests.tiny_models import tiny_llama
from thtb.data.errors import DataError
from thtb.eval.pairwise import (
    EvaluationError,
    Outputs,
    generate_outputs,
    hit_cap,
    judge_pairs,
    load_eval_set,
    load_outputs,
    model_generator,
    outputs_from_file,
    pairwise_template,
    run_pairwise,
    win_rates,
)
from thtb.judge import OpenAIJudge, RequestCache

INSTR = [f"Instruction number {i}: say something useful." for i in range(40)]


def test_random_order_counts_wins_and_is_seeded():
    model = [f"a long and detailed answer {i}" if i % 4 else "short" for i in range(40)]
    base = ["a medium answer"] * 40
    judge = ScriptedJudge(longer_wins)
    frame = judge_pairs(judge, INSTR, model, base, order="random", seed=7)
    assert frame["model_first"].nunique() == 2  # the model is shown first for some prompts, second for others
    assert (frame["outcome"] == "win").sum() == 30 and (frame["outcome"] == "loss").sum() == 10
    again = judge_pairs(ScriptedJudge(longer_wins), INSTR, model, base, order="random", seed=7)
    assert again["model_first"].tolist() == frame["model_first"].tolist()
    other = judge_pairs(ScriptedJudge(longer_wins), INSTR, model, base, order="random", seed=8)
    assert other["model_first"].tolist() != frame["model_first"].tolist()
    frame["dataset"] = ["koala"] * 20 + ["vicuna"] * 20
    rates = win_rates(frame, ["koala", "vicuna"], seed=0)
    assert rates["overall"]["win_rate"] == 75.0 and rates["overall"]["n"] == 40
    lo, hi = rates["overall"]["win_rate_ci95"]
    assert lo < 75.0 < hi and hi - lo < 40
    assert rates["subsets"]["koala"]["n"] == 20 and rates["position_consistency"] is None


def test_ties_count_zero_and_half_and_identical_outputs_need_no_call():
    model = ["same text"] * 10 + ["x" * 30] * 10
    base = ["same text"] * 10 + ["y" * 30] * 10  # equal lengths: the judge says tie
    judge = ScriptedJudge(longer_wins)
    frame = judge_pairs(judge, INSTR[:20], model, base, order="random", template="with_tie")
    assert judge.stats()["calls"] == 10  # identical outputs are ties without a call
    assert frame["identical"].sum() == 10 and (frame["outcome"] == "tie").all()
    frame["dataset"] = "oasst"
    rates = win_rates(frame, ["oasst"])
    assert rates["overall"]["win_rate"] == 0.0 and rates["overall"]["win_rate_tie_half"] == 50.0


def test_forced_choice_template_turns_a_tie_answer_into_a_counted_failure():
    model = ["same text"] * 4 + ["x" * 30] * 4 + ["a much longer answer"] * 2
    base = ["same text"] * 4 + ["y" * 30] * 4 + ["short"] * 2
    judge = ScriptedJudge(longer_wins, max_attempts=2)  # answers "Tie" to equal lengths, whatever it is told
    frame = judge_pairs(judge, INSTR[:10], model, base, order="random")  # template="forced": the paper's default
    asked = [c for chunk in judge.chunks for c in chunk]
    assert all("no tie" in c[0]["content"] and '"Tie"' not in c[1]["content"] for c in asked if len(c) == 2)
    reasks = [c for c in asked if len(c) == 4]  # the tie answer and the stricter follow-up
    assert len(reasks) == 4 and all(c[2]["content"].startswith("Tie") and "tie is not allowed" in c[3]["content"]
                                    for c in reasks)
    assert judge.stats()["calls"] == 6 + 4 and judge.stats()["parse_failures"] == 4
    outcomes = [o if isinstance(o, str) else None for o in frame["outcome"]]
    assert outcomes == ["tie"] * 4 + [None] * 4 + ["win"] * 2  # identical: a tie without a call
    assert all(e.startswith("judge: parse: a tie is not an allowed verdict") for e in frame["error"][4:8])
    assert pairwise_template("forced").id == "pairwise_forced@1" and pairwise_template("with_tie").id == "pairwise@3"
    with pytest.raises(ValueError, match="eval.pairwise.template must be one of"):
        judge_pairs(judge, INSTR[:1], ["a"], ["b"], template="tie_ok")


def test_both_orders_expose_position_bias():
    always_a = ScriptedJudge(lambda conv: "Output (a) is better.")
    frame = judge_pairs(always_a, INSTR[:10], ["m"] * 10, ["b"] * 10, order="both")
    assert always_a.stats()["calls"] == 20
    assert (frame["outcome"] == "tie").all() and not frame["consistent"].any()
    frame["dataset"] = "koala"
    assert win_rates(frame, ["koala"])["position_consistency"] == 0.0
    fair = judge_pairs(ScriptedJudge(longer_wins), INSTR[:10], ["a longer answer"] * 10, ["b"] * 10, order="both")
    assert (fair["outcome"] == "win").all() and fair["consistent"].all()


def test_failed_judgements_are_listed_never_scored(tmp_path):
    def flaky(conv):
        return "I like both of them" if "number 3:" in conv[1]["content"] else longer_wins(conv)

    prompts = load_like(INSTR[:8])
    judge = ScriptedJudge(flaky, max_attempts=2)
    model, base = outputs("m", ["long answer here"] * 8), outputs("b", ["short"] * 8)
    with pytest.raises(EvaluationError, match="1 pairwise comparison") as info:
        run_pairwise(prompts, model, base, judge, out_dir=tmp_path, failure_budget=0)
    assert info.value.failed == [3]
    summary = json.loads((tmp_path / "pairwise.json").read_text())  # written before stopping, for inspection
    assert summary["n_failed"] == 1 and summary["failed"][0]["error"].startswith("judge: parse:")
    ok = run_pairwise(prompts, model, base, ScriptedJudge(flaky, max_attempts=2), out_dir=tmp_path, failure_budget=1)
    assert ok["overall"]["n"] == 7 and ok["overall"]["win_rate"] == 100.0 and ok["overall"]["n_failed"] == 1
    assert ok["length_controlled"]["n"] == 7  # the failed prompt is not in the length GLM either
    rows = [json.loads(line) for line in (tmp_path / "pairwise_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[3]["outcome"] is None and rows[3]["score"] is None
    # a missing generation is a failure of that prompt too, naming the side
    broken = Outputs("m", [None] + ["long answer here"] * 7, ["backend: OOM"] + [None] * 7, "m", {})
    out = run_pairwise(prompts, broken, base, ScriptedJudge(longer_wins), out_dir=tmp_path, failure_budget=1)
    assert out["failed"] == [{"index": 0, "error": "model generation: backend: OOM"}]


def load_like(instructions):
    import pandas as pd

    return pd.DataFrame({"instruction": instructions, "dataset": "helpful_base", "reference": ""})


def test_alpaca_eval_files(shared_data, tmp_path):
    path = shared_file("alpaca_eval", "alpaca_eval.jsonl", base=shared_data)
    prompts = load_eval_set(path)
    assert len(prompts) == 805
    assert prompts["dataset"].value_counts().to_dict() == {
        "selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80}
    small = load_eval_set(path, limit=2)
    assert len(small) == 10 and small["dataset"].value_counts().max() == 2
    gpt4 = load_outputs(shared_data / "alpaca_eval" / "gpt4_turbo_baseline.json", small["instruction"].tolist())
    assert len(gpt4) == 10 and all(gpt4)
    # a baseline file that lacks prompts fails, saying how many and which
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps([{"instruction": t, "output": "x"} for t in small["instruction"][:7]]))
    with pytest.raises(DataError, match="3 of 10 evaluation prompts have no output"):
        load_outputs(partial, small["instruction"].tolist())
    with pytest.raises(DataError, match="not in the file"):
        load_eval_set(path, subsets=["koala", "nope"])


def test_bad_eval_set_names_file_row_and_field(tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"instruction": "  "}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl: line 2: field .instruction. is empty"):
        load_eval_set(bad)
    none = tmp_path / "none.jsonl"
    none.write_text('{"prompt": "hi"}\n')
    with pytest.raises(DataError, match="no 'instruction' field"):
        load_eval_set(none)


def test_generation_is_cached_by_model_content(tmp_path):
    base = tiny_llama(tmp_path / "base", seed=0)
    other = tiny_llama(tmp_path / "other", seed=1)  # same architecture, other weights
    cache = RequestCache(tmp_path / "gen.sqlite")
    kw = dict(cache=cache, decoding={"max_tokens": 8}, progress=False)
    first = generate_outputs(model_generator(str(base), **kw), INSTR[:5])
    assert all(t is not None for t in first.text) and first.stats["calls"] == 5
    # the transformers backend counts each answer's tokens: whether it hit the 8-token cap is known
    assert first.max_tokens == 8 and all(0 < n <= 8 for n in first.tokens)
    assert first.truncated == [n == 8 for n in first.tokens]
    again = generate_outputs(model_generator(str(base), **kw), INSTR[:5])
    assert again.text == first.text and again.stats["calls"] == 0 and again.stats["cache_hits"] == 5
    moved = tmp_path / "moved"
    (tmp_path / "base").rename(moved)  # the same weights elsewhere: still cached
    assert generate_outputs(model_generator(str(moved), **kw), INSTR[:5]).stats["calls"] == 0
    changed = generate_outputs(model_generator(str(other), **kw), INSTR[:5])
    assert changed.fingerprint != first.fingerprint and changed.stats["calls"] == 5


@pytest.mark.slow
def test_pairwise_through_a_real_served_judge(smollm2_server, shared_data, tmp_path):
    path = shared_file("alpaca_eval", "alpaca_eval.jsonl", base=shared_data)
    prompts = load_eval_set(path, limit=2)  # 10 prompts, 2 per subset
    instructions = prompts["instruction"].tolist()
    davinci = Outputs("text-davinci-003", prompts["reference"].tolist(), [None] * 10, "davinci", {})
    gpt4 = outputs_from_file(shared_data / "alpaca_eval" / "gpt4_turbo_baseline.json", instructions, "gpt4_turbo")
    cache = tmp_path / "judge.sqlite"

    def judge():
        # concurrency 1: `transformers serve` answers one request at a time, and with max_attempts=1 a send that
        # timed out while queued behind the others would not be sent again (the run's send budget)
        return OpenAIJudge(smollm2_server.model, smollm2_server.base_url, cache=cache, concurrency=1,
                           timeout_s=180, max_retries=2, max_attempts=1, decoding={"max_tokens": 64}, progress=False)

    first = judge()
    summary = run_pairwise(prompts, davinci, gpt4, first, out_dir=tmp_path / "a", failure_budget=10)
    stats = first.stats()
    assert stats["calls"] == 10 and stats["transport_failures"] == 0
    overall = summary["overall"]
    assert overall["n"] + overall["n_failed"] == 10 == summary["n_prompts"]
    assert overall["n_wins"] + overall["n_ties"] + overall["n_losses"] == overall["n"]
    assert set(summary["subsets"]) == {"helpful_base", "koala", "selfinstruct", "oasst", "vicuna"}
    for failure in summary["failed"]:  # SmolLM2 often rambles: recorded as failures, never as a verdict
        assert failure["error"].startswith("judge: parse:")
    assert summary["mean_length"]["baseline"] > summary["mean_length"]["model"]  # GPT-4-turbo is verbose
    assert summary["judge"]["template"] == "pairwise_forced@1"
    assert summary["length_controlled"]["n"] == overall["n"] and overall["lc_win_rate"] is not None
    assert summary["truncation"]["model"]["n_unknown"] == 10  # reference files: no token counts
    again = judge()
    rerun = run_pairwise(prompts, davinci, gpt4, again, out_dir=tmp_path / "b", failure_budget=10)
    assert again.stats()["calls"] == 0 and rerun["overall"] == overall


class ScriptedGenerator(ScriptedJudge):
    """A generator whose "model" writes ``answer(instruction)`` word by word (one token per word, plus a stop
    token) until it is done or reaches ``max_tokens`` — as a real backend counts its completion tokens."""

    def _generate(self, conversations, params, template):
        cap = int(params["max_tokens"])
        out = []
        for conv in conversations:
            words = self.answer(conv[-1]["content"]).split()
            out.append((" ".join(words[:cap]), 5, cap if len(words) >= cap else len(words) + 1))
        return out


def test_outputs_that_hit_the_token_cap_are_flagged_per_side(tmp_path):
    def verbose(instruction):  # every third prompt rambles past any cap
        n = int(instruction.split("number ")[1].split(":")[0])
        return "word " * (50 if n % 3 == 0 else 4)

    cache = RequestCache(tmp_path / "gen.sqlite")
    model = generate_outputs(ScriptedGenerator(verbose, cache=cache, decoding={"max_tokens": 16}), INSTR[:9], name="m")
    assert model.max_tokens == 16 and model.tokens == [16, 5, 5] * 3
    assert model.truncated == [True, False, False] * 3 and len(model.text[0].split()) == 16
    again = generate_outputs(ScriptedGenerator(lambda c: pytest.fail("cached"), cache=cache,
                                               decoding={"max_tokens": 16}), INSTR[:9])
    assert again.truncated == model.truncated and again.stats["cache_hits"] == 9  # token counts are cached too
    short = generate_outputs(ScriptedGenerator(lambda i: "ok", decoding={"max_tokens": 16}), INSTR[:9], name="b")
    assert short.truncated == [False] * 9
    summary = run_pairwise(load_like(INSTR[:9]), model, short, ScriptedJudge(longer_wins), out_dir=tmp_path, n_boot=50)
    trunc = summary["truncation"]
    assert trunc["model"] == {"n": 9, "n_truncated": 3, "n_unknown": 0, "rate": 33.33, "max_new_tokens": 16}
    assert trunc["baseline"]["n_truncated"] == 0 and trunc["baseline"]["rate"] == 0.0
    assert summary["length_controlled"]["truncation"]["model"]["n_truncated"] == 3
    rows = [json.loads(line) for line in (tmp_path / "pairwise_samples.jsonl").read_text().splitlines()]
    assert [r["model_truncated"] for r in rows] == model.truncated and rows[0]["model_tokens"] == 16
    assert summary["length_ratio"] == round(summary["mean_length"]["model"] / summary["mean_length"]["baseline"], 3)
    # unknown where the backend reports no count (0 tokens) or there is no cap; a file has no counts at all
    assert hit_cap(0, 16) is None and hit_cap(16, None) is None and hit_cap(15, 16) is False
    assert outputs("f", ["x"]).flags() == [None]
