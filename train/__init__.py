"""The SFT stage (the repository's ``train/``): the ``train`` stage (:mod:`thtb.train.stage`), data → conversational examples
(:mod:`~thtb.train.data`), base-model resolution (:mod:`~thtb.train.models`), config → TRL/PEFT configs
(:mod:`~thtb.train.args`), resumable training folders published into the artifact store (:mod:`~thtb.train.artifacts`).

Heavy libraries (torch, transformers, trl, peft) are imported inside the functions that need them.
"""
