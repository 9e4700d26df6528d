"""The train configs compose to exactly METHOD.md's hyperparameters and reach TRL/PEFT unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from thtb.train.args import gradient_accumulation, lora_config, pick_options, pick_precision, sft_args, sft_config
from thtb.train.models import model_choices, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(overrides: list[str]) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


@pytest.fixture
def paper(tmp_path):
    return compose_cfg(["+experiment=alpaca_5pct", "model=llama32_1b", f"paths.run_dir={tmp_path}"])


def test_alpaca_5pct_is_the_papers_recipe(paper):
    """docs/METHOD.md "Training", value by value."""
    train = paper["train"]
    assert paper["stages"] == ["select", "train", "eval"] and paper["seed"] == 42
    assert paper["model"]["path"] == "meta-llama/Llama-3.2-1B-Instruct" and paper["model"]["size"] == "1b"
    assert train["lora"] == {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear",
                             "bias": "none", "task_type": "CAUSAL_LM"}
    expected = {
        "effective_batch_size": 8, "eval_fraction": 0.02, "precision": "auto", "loss_mask": "auto",
        "system_prompt": None, "dataset": None,
    }
    assert {k: train[k] for k in expected} == expected
    sft = {
        "learning_rate": 1e-4, "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "num_train_epochs": 3,
        "per_device_train_batch_size": 1, "max_length": 8192, "weight_decay": 0.1, "adam_beta1": 0.9,
        "adam_beta2": 0.95, "max_grad_norm": 1.0, "max_steps": -1,
    }
    assert {k: train["sft"][k] for k in sft} == sft


@pytest.mark.parametrize(("world", "accum"), [(1, 8), (2, 4), (8, 1)])
def test_sft_and_lora_configs_carry_every_value(paper, tmp_path, world, accum):
    train = paper["train"]
    args = sft_config(train, output_dir=str(tmp_path), seed=paper["seed"], precision="fp32",
                      options=pick_options(train), assistant_only=False, world=world)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * world == 8
    assert args.gradient_accumulation_steps == accum
    assert (args.learning_rate, args.lr_scheduler_type.value, args.warmup_steps) == (1e-4, "cosine", 0.05)
    assert (args.num_train_epochs, args.max_steps, args.max_length) == (3.0, -1, 8192)
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2, args.max_grad_norm) == (0.1, 0.9, 0.95, 1.0)
    assert args.seed == 42 and args.completion_only_loss is True and args.assistant_only_loss is False
    assert args.report_to == []  # logger=none: no W&B
    lora = lora_config(train)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.target_modules) == (8, 32, 0.05, "all-linear")
    assert lora.task_type == "CAUSAL_LM"


def test_the_authors_two_gpus_accumulate_four():
    assert gradient_accumulation(8, 1, 2) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        gradient_accumulation(8, 3, 1)


def test_any_trl_or_peft_argument_works_from_yaml(tmp_path):
    """Arguments the project never names reach SFTConfig / LoraConfig through the train stage's own builders: from
    an experiment file, and from the command line (``+`` adds a key the recipe does not list)."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "neftune.yaml").write_text(
        "# @package _global_\ndefaults:\n  - demo\n  - _self_\ntrain:\n  sft:\n    neftune_noise_alpha: 5\n"
        "  lora:\n    use_rslora: true\n")
    cfg = compose_cfg([f"hydra.searchpath=[file://{tmp_path}]", "+experiment=neftune",
                       "+train.sft.torch_empty_cache_steps=3", "train.lora.target_modules=[q_proj,v_proj]",
                       f"paths.run_dir={tmp_path}"])
    train = cfg["train"]
    args = sft_config(train, output_dir=str(tmp_path), seed=cfg["seed"], precision="fp32",
                      options=pick_options(train), assistant_only=False, world=1)
    assert (args.neftune_noise_alpha, args.torch_empty_cache_steps) == (5, 3)
    lora = lora_config(train)
    assert lora.use_rslora is True and lora.target_modules == {"q_proj", "v_proj"}


@pytest.mark.parametrize(("key", "instead"), [("gradient_accumulation_steps", "train.effective_batch_size"),
                                              ("bf16", "train.precision"), ("seed", "seed")])
def test_a_derived_argument_set_in_sft_names_the_key_to_set(tmp_path, key, instead):
    cfg = compose_cfg(["+experiment=demo", f"+train.sft.{key}=1", f"paths.run_dir={tmp_path}"])
    with pytest.raises(ValueError, match=rf"train\.sft\.{key} is computed by the train stage: set {instead} instead"):
        sft_args(cfg["train"])


def test_precision_follows_the_hardware():
    import torch

    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    assert pick_precision("auto") == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16 needs a CUDA GPU"):
            pick_precision("bf16")
        opts = pick_options({"liger": True, "attn_implementation": "flash_attention_2"})
        assert not opts.liger and opts.attn_implementation == "sdpa" and len(opts.notes) == 2


@pytest.mark.parametrize("model", ["llama32_1b", "llama32_3b", "llama31_8b", "qwen3_8b", "smollm2_135m", "tiny_random"])
def test_every_model_config_composes(model, tmp_path):
    cfg = compose_cfg(["+experiment=demo", f"model={model}", f"paths.run_dir={tmp_path}"])
    assert cfg["model"]["name"] == model and cfg["model"]["size"]
    assert cfg["model"]["source"] in ("hub", "smollm2", "tiny_random")
    assert model in model_choices()


def test_hub_ids_are_the_papers_models(tmp_path):
    paths = {m: compose_cfg(["+experiment=demo", f"model={m}", f"paths.run_dir={tmp_path}"])["model"]["path"]
             for m in ("llama32_1b", "llama32_3b", "llama31_8b", "qwen3_8b")}
    assert paths == {"llama32_1b": "meta-llama/Llama-3.2-1B-Instruct", "llama32_3b": "meta-llama/Llama-3.2-3B-Instruct",
                     "llama31_8b": "meta-llama/Llama-3.1-8B-Instruct", "qwen3_8b": "Qwen/Qwen3-8B"}


def test_cpu_smoke_keeps_the_recipe_but_runs_a_few_steps(tmp_path):
    cfg = compose_cfg(["train=cpu_smoke", f"paths.run_dir={tmp_path}"])
    train = cfg["train"]
    assert train["name"] == "cpu_smoke" and 0 < train["sft"]["max_steps"] <= 8 and train["sft"]["max_length"] <= 512
    assert train["lora"]["r"] == 8 and train["sft"]["weight_decay"] == 0.1 and train["eval_fraction"] == 0.02
    assert cfg["model"]["name"] == "smollm2_135m"  # the default model: offline


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="choices: .*llama32_1b.*tiny_random"):
        resolve_model({"name": "x", "source": "hub", "path": "/no/such dir"})


def test_wandb_logger_reports_with_an_identifying_run_name(tmp_path):
    from thtb.train.args import run_name

    cfg = compose_cfg(["+experiment=alpaca_5pct", "model=llama32_3b", "logger=wandb_offline", "seed=7",
                       f"paths.run_dir={tmp_path}"])
    assert run_name(cfg, using_subset=True) == "alpaca_5pct-thtb-3b-s7"
    cfg["train"]["dataset"] = "tatsu-lab/alpaca"
    assert run_name(cfg) == "alpaca_5pct-data-3b-s7"  # a dataset given directly is "data"
    cfg["train"]["method"] = "thtb"
    assert run_name(cfg) == "alpaca_5pct-thtb-3b-s7"  # unless train.method names what it stands for
    args = sft_config(cfg["train"], output_dir=str(tmp_path), seed=7, precision="fp32",
                      options=pick_options(cfg["train"]), assistant_only=True, world=1, report_to=["wandb"],
                      run_name="alpaca_5pct-thtb-3b-s7")
    assert args.report_to == ["wandb"] and args.run_name == "alpaca_5pct-thtb-3b-s7"
