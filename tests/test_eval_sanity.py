"""The adapter sanity check refuses a base model passed off as trained."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.tiny_models import tiny_llama
from thtb.eval.sanity import NotTrainedError, check_trained, outputs_differ


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    base = tiny_llama(root / "base", seed=0)
    copy = root / "copy"
    shutil.copytree(base, copy)  # "trained" model that is really the base
    # a genuinely changed model: the base with one LoRA-style low-rank update merged into q_proj
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        w = model.model.layers[1].self_attn.q_proj.weight
        w += 0.05 * torch.randn(w.shape[0], 2) @ torch.randn(2, w.shape[1])
    model.save_pretrained(root / "trained")
    return base, copy, root / "trained"


def test_trained_model_passes_on_weights(models):
    base, _, trained = models
    info = check_trained(trained, base)
    assert info["method"] == "weights" and info["differ"] and info["tensors_compared"] >= 1


def test_base_passed_off_as_trained_is_refused(models):
    base, copy, _ = models
    with pytest.raises(NotTrainedError, match="same weights as the base model"):
        check_trained(copy, base)
    with pytest.raises(NotTrainedError, match="same outputs as the base model"):
        check_trained(copy, base, method="outputs")
    with pytest.raises(NotTrainedError, match="is the base model itself"):
        check_trained(base, base)


def test_output_check_sees_the_change(models):
    base, _, trained = models
    differ, delta = outputs_differ(trained, base)
    assert differ and delta > 1e-4
    assert check_trained(trained, base, method="outputs")["method"] == "outputs"
