"""Old names kept for one release (removed in 0.3): import paths of modules that moved, and config choices that
were renamed.

**Config choices.** 0.2 renamed choices whose names misled: ``judge=offline`` → ``judge=rules`` (the hand-built
classifiers: no judge is involved), ``reward=heuristic`` → ``reward=rules`` (the hand-built heuristic: not a reward
model), ``scoring=paper`` → ``scoring=authors`` (the authors' models; "paper" also names the paper's text,
``fidelity=paper``). The offline judge default became ``judge=proxy``, fitted on ``calibration/``; stage 1's
offline default is ``reward=rules`` (docs/METHOD.md says why), ``reward=proxy`` by name. Each old choice is still a
file in its group that includes the new one and adds ``_deprecated_: {old: new}``; :func:`pop_deprecated` takes those
entries out of a composed config (so the old name computes and caches exactly what the new one does) and returns
them for ``run.py`` to print.

**Modules.** 0.2 moved the SFT stage to ``train/`` (``thtb.train``) and the evaluation stage to ``eval/``
(``thtb.eval``). ``import thtb.training…`` / ``thtb.evaluation…`` / ``thtb.tables`` still work: the old package
imports the new one, registers each new submodule under its old name (so that
``from thtb.evaluation.mmlu_pro import run_mmlu_pro`` keeps working) and warns once. The new names are strings:
the selection library never imports a stage package.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from types import ModuleType
from typing import Any


def alias(old: str, new: str) -> ModuleType:
    """Import ``new`` and make it (and its submodules) importable as ``old``, with a FutureWarning."""
    warnings.warn(f"{old} moved to {new} in thtb 0.2; the old name goes in 0.3 — import {new} instead",
                  FutureWarning, stacklevel=3)
    module = importlib.import_module(new)
    sys.modules[old] = module
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.ispkg:
            sys.modules[f"{old}.{info.name}"] = importlib.import_module(f"{new}.{info.name}")
    return module


KEY = "_deprecated_"


def pop_deprecated(cfg: Any) -> dict[str, str]:
    """Remove every ``_deprecated_`` mapping from a composed config (a plain dict/list tree, changed in place) and
    return ``{old choice: new choice}``."""
    found: dict[str, str] = {}
    if isinstance(cfg, dict):
        found.update({str(k): str(v) for k, v in (cfg.pop(KEY, None) or {}).items()})
        for value in cfg.values():
            found.update(pop_deprecated(value))
    elif isinstance(cfg, list):
        for value in cfg:
            found.update(pop_deprecated(value))
    return found


def deprecation_message(found: dict[str, str]) -> str:
    """One line per renamed choice: ``judge=offline is now judge=rules (the old name goes in 0.3)``."""
    return "\n".join(f"{old} is now {new} (the old name goes in 0.3)" for old, new in sorted(found.items()))
