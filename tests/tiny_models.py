"""Tiny randomly initialised models with a locally trained tokenizer (built in seconds, no download).

The builders live in :mod:`thtb.models.tiny` (also the ``tiny_random`` base model); re-exported for tests.
"""

from __future__ import annotations

from thtb.models.tiny import CHAT_TEMPLATE, CORPUS, SPECIAL, tiny_llama, tiny_random_path, tiny_tokenizer

__all__ = ["CHAT_TEMPLATE", "CORPUS", "SPECIAL", "tiny_llama", "tiny_random_path", "tiny_tokenizer"]
