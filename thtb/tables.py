"""Moved to :mod:`thtb.eval.tables` (``eval/tables.py``); this alias goes in 0.3."""

from thtb.deprecated import alias

alias(__name__, "thtb.eval.tables")
