"""Selection methods: one class per method (:class:`SelectionMethod`), one ``conf/selection/<name>.yaml`` naming it
with ``_target_``. THTB's cascade (:mod:`thtb.methods.cascade`) and the baselines it is compared with — random
(:mod:`~thtb.methods.random`), longest responses (:mod:`~thtb.methods.longest`), IFD (:mod:`~thtb.methods.ifd`),
AlpaGasus (:mod:`~thtb.methods.alpagasus`) — are all built the same way (:func:`build_method`)."""

from thtb.methods.base import (SelectionContext, SelectionMethod, build_method, check_scorers_available,
                               scorer_problems, selection_provenance)

__all__ = ["SelectionContext", "SelectionMethod", "build_method", "check_scorers_available", "scorer_problems",
           "selection_provenance"]
