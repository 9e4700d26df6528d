"""Moved to :mod:`thtb.eval` (the repository's ``eval/``); this alias goes in 0.3."""

from thtb.deprecated import alias

alias(__name__, "thtb.eval")
