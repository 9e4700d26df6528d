"""thtb: select hard, high-value instruction data (THTB, arXiv 2510.13892).

The selection library is importable without Hydra, W&B or a GPU. The repository's ``train/`` (the SFT stage) and
``eval/`` (the evaluation stage) are the subpackages ``thtb.train`` and ``thtb.eval``: an installed wheel holds
them inside ``thtb/``; in a source checkout they are the folders beside ``thtb/``, found by
:class:`_CheckoutStages` — always those of the checkout this ``thtb`` was imported from (not those of whichever
checkout an editable install last pointed at), with or without an install.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

__version__ = "0.2.0"

# OpenMP threads that wait for each other sleep instead of spinning. libgomp (torch's OpenMP) reads this when torch
# loads, so it is set here, before any thtb module imports torch; every process thtb starts inherits it. On 2 cores
# beside one busy process, sleeping threads ran torch's small matmuls 2.1x and a SmolLM2 forward 1.7x faster than
# spinning ones, and cost nothing on an idle machine (`python benchmarks/bench_busy.py`). A user's value is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STAGE_PACKAGES = ("train", "eval")
"""The stage folders of a checkout that are subpackages of ``thtb`` (pyproject's ``package-dir``)."""


class _CheckoutStages(importlib.abc.MetaPathFinder):
    """Finds ``thtb.train`` / ``thtb.eval`` in the checkout folder ``root`` (their submodules then load from the
    package's own ``__path__`` as usual)."""

    def __init__(self, root: Path, names: tuple[str, ...]) -> None:
        self.root = root
        self.names = names

    def find_spec(self, name, path=None, target=None):  # noqa: ARG002 - the MetaPathFinder signature
        package, _, child = name.partition(".")
        if package != __name__ or child not in self.names:
            return None
        folder = self.root / child
        return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def _register_checkout_stages() -> None:
    here = Path(__file__).resolve().parent
    root = here.parent
    names = tuple(n for n in STAGE_PACKAGES if not (here / n).is_dir() and (root / n / "__init__.py").is_file())
    if names and not any(isinstance(f, _CheckoutStages) and f.root == root for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutStages(root, names))


_register_checkout_stages()
