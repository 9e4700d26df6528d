"""The train stage on the tiny random Llama (seconds on CPU): labels, learning, outputs, reuse, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import ROOT, ROWS, make_cfg, write_subset
from tests.tiny_models import CHAT_TEMPLATE
from thtb.train.stage import build_trainer, plan_training, run_train


@pytest.fixture
def run_dir(tmp_path):
    write_subset(tmp_path / "run")
    return tmp_path / "run"


def assistant_positions(tokenizer, example) -> list[list[int]]:
    """Reference mask: the tokens after the last ``<|assistant|>`` up to and including its ``</s>``."""
    ids = tokenizer.apply_chat_template(example, tokenize=True, return_dict=True)["input_ids"]
    start = max(i for i, t in enumerate(ids) if t == tokenizer.convert_tokens_to_ids("<|assistant|>")) + 1
    return ids, list(range(start, len(ids)))


@pytest.mark.parametrize(("template", "mask"), [(None, "assistant"), ("no_markers", "completion")])
def test_only_assistant_tokens_carry_labels(tmp_path, run_dir, template, mask):
    overrides = []
    if template == "no_markers":  # the same template without {% generation %}: the prompt/completion fallback
        plain = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
        (tmp_path / "plain.jinja").write_text(plain)
        overrides.append(f"model.chat_template={tmp_path / 'plain.jinja'}")
    cfg = make_cfg(tmp_path, *overrides)
    plan = plan_training(cfg, run_dir)
    assert plan.mask == mask
    trainer, _ = build_trainer(cfg, plan, tmp_path / "out")
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    examples = plan.train_examples[:4]
    for row, labels, example in zip(range(4), batch["labels"], examples, strict=True):
        conv = example["messages"] if mask == "assistant" else example["prompt"] + example["completion"]
        ids, positions = assistant_positions(plan.tokenizer, conv)
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        carried = (labels != -100).nonzero().flatten().tolist()
        assert carried == positions, (mask, plan.tokenizer.convert_ids_to_tokens(ids))
        assert labels[positions].tolist() == [ids[p] for p in positions]
        decoded = plan.tokenizer.decode([ids[p] for p in positions])
        assert decoded.replace(" ", "") == (conv[-1]["content"] + "</s>").replace(" ", "")


def test_loss_falls_on_a_repeated_batch(tmp_path, run_dir):
    cfg = make_cfg(tmp_path, "train.sft.learning_rate=0.005", "train.sft.max_steps=10", "train.sft.warmup_steps=0",
                   "train.sft.lr_scheduler_type=constant", "train.eval_fraction=0")
    plan = plan_training(cfg, run_dir)
    same = [plan.train_examples[0]] * 20  # every batch is the same example twice
    trainer, _ = build_trainer(cfg, plan, tmp_path / "out", train_examples=same)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 10 and torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < losses[0] - 0.3, losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 7, losses  # falls (almost) every step


@pytest.mark.usefixtures("frozen_code_digest")
def test_stage_writes_outputs_and_the_merged_model_differs(tmp_path, run_dir):
    from transformers import AutoModelForCausalLM

    cfg = make_cfg(tmp_path, "train.sft.learning_rate=0.02")
    summary = run_train(cfg, run_dir)
    out = run_dir / "train"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "merged" / "config.json").is_file() and (out / "merged" / "model.safetensors").is_file()
    assert (out / "merged" / "chat_template.jinja").is_file()
    written = json.loads((out / "summary.json").read_text())
    assert written["reused"] is False and written["steps"] == cfg["train"]["sft"]["max_steps"] == 4
    for key in ("train_loss", "eval_loss", "tokens_seen", "tokens_per_s", "train_wall_time_s", "trainable_parameters"):
        assert written[key] and written[key] > 0, key
    assert written["effective_batch_size"] == 2 and written["gradient_accumulation_steps"] == 2
    assert written["world_size"] == 1 and written["precision"] == "fp32"
    assert written["n_train"] + written["n_eval"] == len(ROWS) and written["n_eval"] == 1
    assert written["trainable_parameters"] < written["total_parameters"]
    assert len(written["subset_fingerprint"]) == 16 and written["artifact"].startswith(str(tmp_path / "cache"))
    assert summary["fingerprint"] == written["fingerprint"]

    base = AutoModelForCausalLM.from_pretrained(written["model"]["path"])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    x = torch.tensor([[4, 8, 9, 10, 2, 5]])
    with torch.no_grad():
        diff = (base(x).logits - merged(x).logits).abs().max().item()
    assert diff > 1e-4
    assert not any("lora" in name for name, _ in merged.named_parameters())

    # the same training in another run dir: reused, nothing trained
    other = tmp_path / "run2"
    write_subset(other)
    again = run_train({**cfg, "paths": {**cfg["paths"], "run_dir": str(other)}}, other)
    assert again["reused"] is True and again["fingerprint"] == written["fingerprint"]
    assert (other / "train" / "merged").resolve() == (out / "merged").resolve()
    assert json.loads((other / "train" / "summary.json").read_text())["reused"] is True

    # a different train config is a different artifact
    changed = make_cfg(tmp_path, "train.sft.learning_rate=0.01")
    assert plan_training(changed, run_dir).key != written["fingerprint"]
    # logging/checkpoint keys are not
    assert plan_training(make_cfg(tmp_path, "train.sft.learning_rate=0.02", "train.sft.logging_steps=7"),
                         run_dir).key == written["fingerprint"]


class Interrupt(RuntimeError):
    pass


@pytest.mark.usefixtures("frozen_code_digest")
def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, run_dir):
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Interrupt("killed after checkpoint-2")

    cfg = make_cfg(tmp_path)  # max_steps 4, save_steps 2
    with pytest.raises(Interrupt):
        run_train(cfg, run_dir, callbacks=[StopAfterSave()])
    assert not (run_dir / "train" / "summary.json").exists()
    partials = list((tmp_path / "cache" / "artifacts" / "train").glob("*.partial"))
    assert len(partials) == 1 and (partials[0] / "checkpoints" / "checkpoint-2").is_dir()

    summary = run_train(cfg, run_dir)
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["steps"] == 4 and summary["reused"] is False
    steps_logged = [h["step"] for h in summary["log_history"] if "loss" in h]
    assert steps_logged[-2:] == [3, 4]
    assert not partials[0].exists()  # committed: renamed into place


def test_effective_batch_must_divide(tmp_path, run_dir):
    cfg = make_cfg(tmp_path, "train.effective_batch_size=3", "train.sft.per_device_train_batch_size=2")
    with pytest.raises(ValueError, match="not a multiple of per_device_train_batch_size"):
        plan_training(cfg, run_dir)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a stage loads weights before its checks."""

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr("thtb.train.stage.load_model", boom)


def test_missing_dataset_fails_early(tmp_path, run_dir, no_model_load):
    cfg = make_cfg(tmp_path, f"train.dataset={tmp_path}/nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        run_train(cfg, run_dir)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(FileNotFoundError, match=r"subset.jsonl does not exist.*select stage"):
        run_train(make_cfg(tmp_path), fresh)


def test_unknown_model_fails_early_listing_the_choices(tmp_path, run_dir, no_model_load):
    cfg = make_cfg(tmp_path, "model.source=hub", "model.path=not a model")
    with pytest.raises(ValueError, match=r"unknown model 'not a model'.*llama32_1b.*smollm2_135m.*tiny_random"):
        run_train(cfg, run_dir)
    with pytest.raises(ValueError, match="unknown model source 'gguf'"):
        run_train(make_cfg(tmp_path, "model.source=gguf"), run_dir)
    with pytest.raises(Exception, match="nope"):  # Hydra itself rejects an unknown choice, listing the options
        make_cfg(tmp_path, "model=nope")


def test_offline_hub_model_not_cached_fails_early(tmp_path, run_dir, no_model_load, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    cfg = make_cfg(tmp_path, "model=llama32_1b")
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        run_train(cfg, run_dir)


def test_empty_subset_fails_early(tmp_path, no_model_load):
    run = tmp_path / "run"
    write_subset(run, rows=[])
    with pytest.raises(ValueError, match="0 rows"):
        run_train(make_cfg(tmp_path), run)


def test_max_length_too_small_for_every_example(tmp_path, run_dir, no_model_load):
    with pytest.raises(ValueError, match=r"max_length=5 is too small for every example: the shortest needs \d+ tokens"):
        run_train(make_cfg(tmp_path, "train.sft.max_length=5"), run_dir)


@pytest.mark.slow  # 45 s on an idle 2-core box, 165 s when another process holds a core
def test_demo_select_and_train_smollm2_through_run_py(tmp_path):
    """The issue's acceptance command (offline SmolLM2, prompt/completion fallback), then the reuse."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false"}
    walls = []
    for name in ("a", "b"):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "run.py", "+experiment=demo", "stages=[select,train]", "model=smollm2_135m",
             "train=cpu_smoke", f"hydra.run.dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )
        walls.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((tmp_path / "a" / "train" / "summary.json").read_text())
    second = json.loads((tmp_path / "b" / "train" / "summary.json").read_text())
    assert first["reused"] is False and second["reused"] is True
    demo_steps = OmegaConf.load(ROOT / "conf" / "experiment" / "demo.yaml").train.sft.max_steps  # over cpu_smoke's
    assert first["loss_mask"] == "completion" and first["steps"] == demo_steps and first["n_eval"] == 1
    assert first["fingerprint"] == second["fingerprint"] and second["stage_wall_time_s"] < 15
    for run in ("a", "b"):
        assert (tmp_path / run / "train" / "adapter" / "adapter_model.safetensors").is_file()
        assert (tmp_path / run / "train" / "merged" / "model.safetensors").is_file()
