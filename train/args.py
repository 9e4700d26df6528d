"""The ``train`` config → TRL ``SFTConfig`` and PEFT ``LoraConfig``; the values the project derives.

``train.sft`` holds ``SFTConfig``'s own arguments and ``train.lora`` ``LoraConfig``'s, passed unchanged: any TRL or
PEFT setting works from YAML (``train.sft.neftune_noise_alpha=5``, ``train.lora.use_rslora=true``). The arguments a
user does not set directly are derived here from the project's ``train.*`` keys (:data:`DERIVED`): gradient
accumulation from ``effective_batch_size = per_device_train_batch_size × gradient_accumulation_steps × world_size``
(:func:`world_size`), precision, Liger kernels and attention from what is installed, loss mask, seed, logging.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")

DERIVED = {
    "gradient_accumulation_steps": "train.effective_batch_size", "bf16": "train.precision", "fp16": "train.precision",
    "use_liger_kernel": "train.liger", "assistant_only_loss": "train.loss_mask",
    "completion_only_loss": "train.loss_mask", "output_dir": "paths.cache_dir (the training artifact's folder)",
    "seed": "seed", "data_seed": "seed", "report_to": "logger", "run_name": "experiment_name",
}
"""``SFTConfig`` arguments the train stage computes, and the key to set instead of each."""


def plain(block: Any) -> dict[str, Any]:
    """A config block as plain Python (OmegaConf lists and dicts converted), for the libraries' own classes."""
    return OmegaConf.to_container(OmegaConf.create(block or {}), resolve=True)


def sft_args(train: dict[str, Any]) -> dict[str, Any]:
    """``train.sft`` as plain Python; a ValueError naming the project key when it sets a derived argument."""
    sft = plain(train["sft"])
    if clash := sorted(DERIVED.keys() & sft.keys()):
        raise ValueError("; ".join(f"train.sft.{key} is computed by the train stage: set {DERIVED[key]} instead"
                                   for key in clash))
    return sft


def world_size() -> int:
    """Processes taking part in training (``WORLD_SIZE`` set by accelerate/torchrun; 1 otherwise)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def gradient_accumulation(effective: int, per_device: int, world: int) -> int:
    """``effective / (per_device × world)``; a ValueError when it does not divide exactly."""
    for name, value in (("effective_batch_size", effective), ("sft.per_device_train_batch_size", per_device),
                        ("world size", world)):
        if int(value) < 1:
            raise ValueError(f"train.{name} must be ≥ 1, got {value}")
    per_step = per_device * world
    if effective % per_step:
        raise ValueError(f"train.effective_batch_size={effective} is not a multiple of per_device_train_batch_size × "
                         f"world size = {per_device} × {world} = {per_step}; change "
                         "train.sft.per_device_train_batch_size or the number of processes")
    return effective // per_step


def accumulation(train: dict[str, Any], world: int) -> int:
    """The gradient accumulation steps of a ``train`` config on ``world`` processes."""
    per_device = int(train["sft"]["per_device_train_batch_size"])
    return gradient_accumulation(int(train["effective_batch_size"]), per_device, world)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_precision(requested: str) -> str:
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
    """The hardware-dependent speed-ups actually used, with the reasons for those asked for and dropped."""

    liger: bool = False
    attn_implementation: str = "sdpa"
    notes: list[str] = field(default_factory=list)


def pick_options(train: dict[str, Any]) -> Options:
    """Liger kernels and flash-attention only where available, logging why one is not."""
    cuda = cuda_available()
    flash = cuda and importlib.util.find_spec("flash_attn") is not None
    opts = Options()
    if train["liger"]:
        if not importlib.util.find_spec("liger_kernel"):
            opts.notes.append("liger: liger-kernel is not installed; off")
        elif not cuda:
            opts.notes.append("liger: needs CUDA; off")
        else:
            opts.liger = True
    attn = train["attn_implementation"]
    if attn == "auto":
        attn = "flash_attention_2" if flash else "sdpa"
    elif attn.startswith("flash_attention") and not flash:
        opts.notes.append(f"attn_implementation: {attn} needs flash-attn and CUDA; using sdpa")
        attn = "sdpa"
    opts.attn_implementation = attn
    for note in opts.notes:
        log.warning("train option unavailable — %s", note)
    return opts


def lora_config(train: dict[str, Any]):
    """PEFT ``LoraConfig(**train.lora)``."""
    from peft import LoraConfig

    return LoraConfig(**plain(train["lora"]))


def sft_config(train: dict[str, Any], *, output_dir: str, seed: int, precision: str, options: Options,
               assistant_only: bool, world: int | None = None, report_to: str | list[str] = "none",
               run_name: str | None = None, has_eval: bool = True):
    """TRL ``SFTConfig(**train.sft)`` with the derived arguments (:data:`DERIVED`) merged over it."""
    from trl import SFTConfig

    derived = {
        "gradient_accumulation_steps": accumulation(train, world or world_size()), "bf16": precision == "bf16",
        "fp16": precision == "fp16", "use_liger_kernel": options.liger, "assistant_only_loss": assistant_only,
        "completion_only_loss": None if assistant_only else True, "output_dir": output_dir, "seed": seed,
        "data_seed": seed, "report_to": report_to, "run_name": run_name,
    }
    if not has_eval:
        derived["eval_strategy"] = "no"  # nothing held out: no eval loss to compute
    return SFTConfig(**{"dataloader_pin_memory": cuda_available(), **sft_args(train), **derived})


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
    return f"{cfg['experiment_name']}-{method_name(cfg, using_subset)}-{size}-s{cfg['seed']}"
