"""Raw scorer outputs kept across runs, so a budget or fraction sweep re-cuts without re-scoring.

A selection's fingerprint changes with ``selection.budget`` or a stage fraction, so the finished-selection
artifact cannot be reused; but the raw scores of a stage whose input is unchanged are the same. :class:`ScoreCache`
keeps each scorer call's output frame under a key made of

* the scorers' identity — their configs, the models' identities, the select stage's code, resources and
  library versions (the same inputs as the selection fingerprint, minus the selection knobs and the data), and
* the scorer's name and the exact texts it scored, in order, given as the rows' content keys
  (:func:`thtb.pool.row_key`, sha256 of each row's texts; a pool-dependent scorer such as the TF-IDF relevance of
  the hand-built quality heuristic sees the same pool again only when every text is the same).

Only frames without errors are kept: a failed call (a judge that timed out) is never served from here; the
judge's own request cache makes its retry cheap. Files are JSON, written atomically, one per call, under
``<cache_dir>/scores/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.io import atomic_write_text

log = logging.getLogger(__name__)

VERSION = 1


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


class ScoreCache:
    """Scorer outputs keyed by the scorers' identity (``key``) and the texts scored (module doc)."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.root = Path(root)
        self.key = key
        self.hits = 0
        self.misses = 0
        self.calls: dict[str, str] = {}

    def _path(self, name: str, texts: Sequence[Sequence[str]]) -> Path:
        h = hashlib.sha256(f"{VERSION}\0{self.key}\0{name}\0".encode())
        for column in texts:
            h.update(b"\1")
            for text in column:
                h.update(str(text).encode("utf-8") + b"\0")
        return self.root / f"{h.hexdigest()[:32]}.json"

    def has(self, name: str, texts: Sequence[Sequence[str]]) -> bool:
        """Whether scorer call ``name`` on ``texts`` is stored (:meth:`get_or_compute` would not compute)."""
        return self._path(name, texts).is_file()

    def get_or_compute(self, name: str, texts: Sequence[Sequence[str]], compute: Callable[[], pd.DataFrame]
                       ) -> pd.DataFrame:
        """The cached frame of scorer call ``name`` on ``texts`` (lists of query/response strings), or
        ``compute()``'s, kept when it has no error."""
        path = self._path(name, texts)
        if path.is_file():
            try:
                frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("score cache: unreadable %s (%s); scoring again", path, exc)
            else:
                if len(frame) == len(texts[0]):
                    self.hits += 1
                    self.calls[name] = "cached"
                    frame["error"] = pd.Series([None] * len(frame), dtype=object)  # only error-free frames are kept
                    return frame
        self.misses += 1
        self.calls[name] = "scored"
        frame = compute()
        if frame["error"].isna().all():
            body = {column: [_plain(v) for v in frame[column].tolist()] for column in frame.columns}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(body, ensure_ascii=False))
        return frame

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "calls": dict(self.calls), "dir": str(self.root)}
