"""The ``train`` config → TRL ``SFTConfig`` and PEFT ``LoraConfig``; hardware-dependent choices.

Effective batch = ``per_device_batch_size × gradient_accumulation_steps × world_size``: the config states the
effective batch and the per-device size, the accumulation is computed here (the world size comes from
``accelerate launch``/``torchrun``'s ``WORLD_SIZE``). Precision and optional speed-ups (gradient
checkpointing, packing, Liger kernels, flash-attention) are picked from what the machine has.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def world_size() -> int:
    """Processes taking part in training (``WORLD_SIZE`` set by accelerate/torchrun; 1 otherwise)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def gradient_accumulation(effective: int, per_device: int, world: int) -> int:
    """``effective / (per_device × world)``; a ValueError when it does not divide exactly."""
    for name, value in (("effective_batch_size", effective), ("per_device_batch_size", per_device), ("world size", world)):
        if int(value) < 1:
            raise ValueError(f"train.{name} must be ≥ 1, got {value}")
    per_step = per_device * world
    if effective % per_step:
        raise ValueError(
            f"train.effective_batch_size={effective} is not a multiple of per_device_batch_size × world size = "
            f"{per_device} × {world} = {per_step}; change train.per_device_batch_size or the number of processes"
        )
    return effective // per_step


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_precision(requested: str = "auto") -> str:
    """``auto`` → ``bf16`` on a GPU that supports it, else ``fp32``; explicit choices are checked."""
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {requested!r}")
    has_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return "bf16" if has_bf16 else "fp32"
    if requested == "bf16" and not has_bf16:
        raise ValueError("train.precision=bf16 needs a CUDA GPU with bf16 support; use precision=auto or fp32")
    if requested == "fp16" and not torch.cuda.is_available():
        raise ValueError("train.precision=fp16 needs a CUDA GPU; use precision=auto or fp32")
    return requested


@dataclass
class Options:
    """The optional speed-ups actually used, with the reasons for those that were asked for and dropped."""

    gradient_checkpointing: bool = False
    packing: bool = False
    liger: bool = False
    attn_implementation: str = "sdpa"
    notes: list[str] = field(default_factory=list)


def pick_options(train: dict[str, Any]) -> Options:
    """Honour each option only where available, logging why one is not."""
    cuda = cuda_available()
    opts = Options(packing=bool(train.get("packing", False)))
    if train.get("gradient_checkpointing", False):
        opts.gradient_checkpointing = True  # the model's support is checked once it is loaded
    if train.get("liger", False):
        if not importlib.util.find_spec("liger_kernel"):
            opts.notes.append("liger: liger-kernel is not installed; off")
        elif not cuda:
            opts.notes.append("liger: needs CUDA; off")
        else:
            opts.liger = True
    attn = train.get("attn_implementation", "auto") or "auto"
    if attn == "auto":
        attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    elif attn.startswith("flash_attention") and not (cuda and importlib.util.find_spec("flash_attn")):
        opts.notes.append(f"attn_implementation: {attn} needs flash-attn and CUDA; using sdpa")
        attn = "sdpa"
    opts.attn_implementation = attn
    for note in opts.notes:
        log.warning("train option unavailable — %s", note)
    return opts


def lora_config(train: dict[str, Any]):
    """PEFT ``LoraConfig`` from ``train.lora`` (r, alpha, dropout, target_modules, bias)."""
    from peft import LoraConfig

    lora = train["lora"]
    targets = lora.get("target_modules", "all-linear")
    return LoraConfig(
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias=lora.get("bias", "none"),
        task_type="CAUSAL_LM",
    )


def sft_config(train: dict[str, Any], *, output_dir: str, seed: int, precision: str, options: Options,
               assistant_only: bool, world: int | None = None, report_to: str | list[str] = "none",
               run_name: str | None = None, has_eval: bool = True):
    """TRL ``SFTConfig`` for the paper's recipe (see ``conf/train/lora_paper.yaml``)."""
    from trl import SFTConfig

    world = world or world_size()
    accum = gradient_accumulation(int(train["effective_batch_size"]), int(train["per_device_batch_size"]), world)
    eval_strategy = train.get("eval_strategy", "epoch") if has_eval else "no"
    kwargs: dict[str, Any] = {}
    if eval_strategy == "steps" and train.get("eval_steps"):
        kwargs["eval_steps"] = int(train["eval_steps"])
    if train.get("dataset_num_proc"):
        kwargs["dataset_num_proc"] = int(train["dataset_num_proc"])
    return SFTConfig(
        output_dir=output_dir,
        seed=seed,
        data_seed=seed,
        num_train_epochs=float(train["epochs"]),
        max_steps=int(train.get("max_steps", -1) or -1),
        learning_rate=float(train["learning_rate"]),
        lr_scheduler_type=train["lr_scheduler"],
        warmup_steps=float(train["warmup_ratio"]),  # a float in [0, 1) is a ratio of the total steps
        weight_decay=float(train["weight_decay"]),
        adam_beta1=float(train["adam_beta1"]),
        adam_beta2=float(train["adam_beta2"]),
        max_grad_norm=float(train["max_grad_norm"]),
        optim=train.get("optim", "adamw_torch"),
        per_device_train_batch_size=int(train["per_device_batch_size"]),
        per_device_eval_batch_size=int(train.get("per_device_eval_batch_size", train["per_device_batch_size"])),
        gradient_accumulation_steps=accum,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=options.gradient_checkpointing,
        use_liger_kernel=options.liger,
        max_length=int(train["max_length"]),
        packing=options.packing,
        assistant_only_loss=assistant_only,
        completion_only_loss=None if assistant_only else True,
        eval_strategy=eval_strategy,
        save_strategy="steps",
        save_steps=int(train["save_steps"]),
        save_total_limit=train.get("save_total_limit"),
        logging_steps=int(train["logging_steps"]),
        include_num_input_tokens_seen="non_padding",
        report_to=report_to,
        run_name=run_name,
        model_init_kwargs=None,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda_available(),
        disable_tqdm=True,
        **kwargs,
    )


def method_name(cfg: dict[str, Any], using_subset: bool | None = None) -> str:
    """The data-selection method a trained model stands for: ``train.method`` if set, else the selection
    method's variant when training on the selected subset (``thtb``, or ``thtb_no_ihs`` / ``thtb_2pct`` for an
    ablation or another budget: :meth:`thtb.methods.SelectionMethod.variant`), else ``data`` (a dataset given
    directly with ``train.dataset``). A ``train.method`` naming the selection while the selection runs as a variant
    becomes the variant, so an ablation or another budget never lands in THTB's rows of the paper tables."""
    train, sel = cfg.get("train") or {}, cfg.get("selection") or {}
    if using_subset is None:
        using_subset = not train.get("dataset")
    if not using_subset:
        return str(train["method"]) if train.get("method") else "data"
    if not sel.get("_target_"):  # no selection configured: the name given
        return str(train.get("method") or sel.get("name", "select"))
    from thtb.methods import build_method

    method = build_method(cfg)
    base = str(train.get("method") or method.name)
    return method.variant() if base == method.name else base


def run_name(cfg: dict[str, Any], using_subset: bool | None = None) -> str:
    """``{experiment}-{method}-{model size}-s{seed}``, e.g. ``alpaca_5pct-thtb-1b-s42`` (W&B run name)."""
    size = (cfg.get("model") or {}).get("size") or (cfg.get("model") or {}).get("name", "model")
    return f"{cfg.get('experiment_name', 'run')}-{method_name(cfg, using_subset)}-{size}-s{cfg.get('seed', 42)}"
