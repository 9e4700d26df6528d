"""Tiny randomly initialised Llama models with a locally trained tokenizer (built in seconds, no download).

Used by unit tests and as the ``tiny_random`` base model (``conf/model/tiny_random.yaml``). The chat template
marks assistant turns with ``{% generation %}`` so TRL can compute assistant-only loss masks from it::

    from thtb.models.tiny import tiny_random_path
    path = tiny_random_path()      # <cache>/models/tiny-random-llama, built once
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from thtb.models.smollm2 import SOURCE_MARKER, build_once, read_marker

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}</s>{% endgeneration %}"
    "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Renders ``<|role|>content</s>`` per turn; the assistant's content and its ``</s>`` are the generation span."""

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
CORPUS = (
    "explain the theory of relativity in simple terms . write a poem about the sea and the sky . "
    "compare the economic policies of two countries . list three primary colours : red blue yellow . "
    "design a research plan for measuring air quality in cities . what is the capital of france ? paris . "
    "solve the equation x plus two equals five . the answer is three . evaluate the argument carefully . "
)
TINY_DIRNAME = "tiny-random-llama"
_FORMAT = 1  # bump when the recipe changes so cached copies are rebuilt


def tiny_tokenizer(path: str | Path):
    """A word-level tokenizer trained on a small in-memory corpus, with a chat template; saved to ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([CORPUS] * 3, trainers.WordLevelTrainer(special_tokens=SPECIAL, vocab_size=400))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def tiny_llama(path: str | Path, *, kind: str = "causal", seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide Llama (``causal`` LM or ``reward`` sequence classifier) to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    path = Path(path)
    tok = tiny_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if kind == "causal" else LlamaForSequenceClassification
    cls(config).save_pretrained(path)
    return path


def tiny_random_path(cache_dir: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """The ``tiny_random`` causal LM as a model folder under ``<cache_dir>/models/``, built once (atomically:
    :func:`thtb.models.smollm2.build_once`; ``cache_dir`` defaults to ``$THTB_CACHE_DIR`` or ``~/.cache/thtb``)."""
    marker = {"format": _FORMAT, "seed": seed}

    def build(folder: Path) -> None:
        tiny_llama(folder, seed=seed)
        (folder / SOURCE_MARKER).write_text(json.dumps(marker) + "\n")

    return build_once(cache_dir, f"{TINY_DIRNAME}-s{seed}", build, lambda folder: read_marker(folder) == marker)
