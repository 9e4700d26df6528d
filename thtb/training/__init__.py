"""LoRA SFT helpers for the ``train`` stage (:mod:`thtb.stages.train`): data → conversational examples
(:mod:`~thtb.training.data`), base-model resolution (:mod:`~thtb.training.models`), config → TRL/PEFT configs
(:mod:`~thtb.training.args`), the content-addressed artifact store (:mod:`~thtb.training.artifacts`).

Heavy libraries (torch, transformers, trl, peft) are imported inside the functions that need them.
"""
