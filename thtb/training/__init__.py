"""Moved to :mod:`thtb.train` (the repository's ``train/``); this alias goes in 0.3."""

from thtb.deprecated import alias

alias(__name__, "thtb.train")
