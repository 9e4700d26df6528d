"""Is the model we are about to evaluate really the trained one?

lm-eval has, in the past, silently evaluated the base model when an adapter failed to load; a merged
folder written from the wrong object looks just like a trained one. Before scoring, :func:`check_trained`
compares the evaluated model with its base and raises :class:`NotTrainedError` when nothing differs:

1. **Weights** (cheap, no model load): when both are local folders of safetensors, the tensors whose
   names the adapter targets (``*_proj.weight``, ``*.dense*``, ``*fc*``… — any 2-D weight present in both
   with the same shape) are compared, up to ``max_tensors`` of them spread across the layers. Any
   difference → trained.
2. **Outputs** (otherwise, or with ``method="outputs"``): both models' next-token logits on a few short
   prompts (fp32, CPU or the given device); a maximum absolute difference above ``atol`` → trained.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open

log = logging.getLogger(__name__)

PROBES = (
    "Explain why the sky is blue.",
    "Write a haiku about autumn.",
    "What is 17 times 23?",
)


class NotTrainedError(RuntimeError):
    """The evaluated model is indistinguishable from its base model."""


def _tensor_index(folder: Path) -> dict[str, Path]:
    """Each tensor's name → the file of a local folder's ``*.safetensors`` holding it ({}: none)."""
    index: dict[str, Path] = {}
    for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        with safe_open(str(f), framework="pt") as fh:
            index.update(dict.fromkeys(fh.keys(), f))
    return index


def weights_differ(model: str | Path, base: str | Path, max_tensors: int = 16) -> tuple[bool, int] | None:
    """Compare up to ``max_tensors`` shared 2-D weights; ``(differ, n_compared)``, or ``None`` when either
    side is not a local safetensors folder (nothing to compare without loading)."""
    import torch

    a, b = _tensor_index(Path(model)), _tensor_index(Path(base))
    names = sorted(n for n in set(a) & set(b) if n.endswith(".weight") and "norm" not in n and "embed" not in n)
    if not names:
        return None
    step = max(1, len(names) // max_tensors)
    picked = names[::step][:max_tensors]
    for compared, name in enumerate(picked, 1):
        with safe_open(str(a[name]), framework="pt") as fa, safe_open(str(b[name]), framework="pt") as fb:
            if not torch.equal(fa.get_tensor(name), fb.get_tensor(name)):  # False for another shape, too
                return True, compared
    return False, len(picked)


def outputs_differ(model: str | Path, base: str | Path, *, atol: float = 1e-5, device: str = "cpu",
                   prompts: Sequence[str] = PROBES) -> tuple[bool, float]:
    """Greedy next-token logits of both models on ``prompts``: ``(differ, max |Δ|)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    batch = [tok(p, return_tensors="pt").to(device) for p in prompts]
    logits = []
    for path in (model, base):
        m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
        with torch.inference_mode():
            logits.append([m(**enc).logits[0, -1].float().cpu() for enc in batch])
        del m
    delta = max(float((x - y).abs().max()) for x, y in zip(*logits, strict=True))
    return delta > atol, delta


def check_trained(model: str | Path, base: str | Path, *, method: str = "auto", atol: float = 1e-5,
                  device: str = "cpu") -> dict:
    """Raise :class:`NotTrainedError` when ``model`` equals ``base`` (see module doc); return what was
    checked (``{"method", "differ", ...}``) for the eval summary."""
    if method not in ("auto", "weights", "outputs"):
        raise ValueError(f"method must be auto, weights or outputs, got {method!r}")
    if Path(model).resolve() == Path(base).resolve() if Path(model).exists() else str(model) == str(base):
        raise NotTrainedError(f"the evaluated model {model} is the base model itself")
    if method in ("auto", "weights"):
        result = weights_differ(model, base)
        if result is not None:
            differ, n = result
            if not differ:
                raise NotTrainedError(f"{model} has the same weights as the base model {base} ({n} weight tensors "
                                      "compared): the adapter was not merged or the wrong model was saved; refusing to "
                                      "evaluate it as trained")
            log.info("sanity: %s differs from its base in its weights (%d tensors compared)", model, n)
            return {"method": "weights", "differ": True, "tensors_compared": n}
        if method == "weights":
            raise ValueError(f"cannot compare weights: {model} or {base} is not a local safetensors folder")
    differ, delta = outputs_differ(model, base, atol=atol, device=device)
    if not differ:
        raise NotTrainedError(f"{model} gives the same outputs as the base model {base} (max |Δlogit| {delta:.2e} ≤ "
                              f"{atol:g} on {len(PROBES)} prompts): refusing to evaluate it as trained")
    log.info("sanity: %s differs from its base in its outputs (max |Δlogit| %.3g)", model, delta)
    return {"method": "outputs", "differ": True, "max_abs_logit_diff": delta}
