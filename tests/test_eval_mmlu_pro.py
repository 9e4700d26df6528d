"""MMLU-Pro through lm-eval: the local parquet task runs for real (tiny model, base + adapter), scoring and the
summary agree with lm-eval, bad inputs fail clearly, and prompts are identical to lm-eval's built-in task."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from thtb.evaluation import harness
from thtb.evaluation import mmlu_pro as mp


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


@pytest.fixture(scope="module")
def mmlu_dir(shared_data):
    root = shared_data / "mmlu_pro"
    if not (root / "test.parquet").is_file():
        pytest.skip(f"MMLU-Pro parquet not found in {root}")
    return root


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


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_missing_is_explained(tmp_path):
    with pytest.raises(ImportError, match="vLLM"):
        harness.model_args("vllm", tmp_path, tensor_parallel_size=2)


def test_vllm_model_args(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    args = harness.model_args("vllm", "m", adapter=tmp_path, tensor_parallel_size=2, data_parallel_size=4,
                              extra={"gpu_memory_utilization": 0.8})
    assert args == {"pretrained": "m", "dtype": "auto", "tensor_parallel_size": 2, "data_parallel_size": 4,
                    "lora_local_path": str(tmp_path), "gpu_memory_utilization": 0.8}


# ------------------------------------------------------------------------------------------ prompt identity


@pytest.fixture(scope="module")
def smollm2_lm():
    from thtb.models.smollm2 import SmolLM2NotInstalled, smollm2_path

    try:
        path = smollm2_path()
    except SmolLM2NotInstalled as err:
        pytest.skip(str(err))
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
        pytest.skip(str(err))
    summary = mp.run_mmlu_pro(path, data_dir=mmlu_dir, out_dir=tmp_path, limit=1, max_gen_toks=96, device="cpu",
                              dtype="float32")
    assert summary["overall"]["n"] == 14
    assert summary["overall"]["parse_failures"] < 14 // 2
