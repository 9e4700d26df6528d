"""Moved to :mod:`thtb.dataset_score` (a dataset's THTB score, Table 3); this alias goes in 0.3."""

from thtb.deprecated import alias

alias(__name__, "thtb.dataset_score")
