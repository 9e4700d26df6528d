"""The SFT stage, the repository's ``train/`` (its modules: ``train/README.md``; the stage: :mod:`thtb.train.stage`).

Heavy libraries (torch, transformers, trl, peft) are imported inside the functions that need them.
"""
