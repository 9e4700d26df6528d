"""Content fingerprints: a stable hash of configs and inputs, used to name and compare artifacts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def fingerprint(obj: Any, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON of ``obj`` (sorted keys), truncated to ``length``."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def ids_digest(ids: Iterable[str]) -> str:
    """Order-sensitive digest of a sequence of sample ids (the identity of a dataset or subset)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]

