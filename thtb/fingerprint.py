"""Content fingerprints: a stable hash of configs and inputs, used to name and compare artifacts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
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


_MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".jinja", ".txt", ".py")
_MODEL_MEMO: dict[tuple, str] = {}


def model_fingerprint(model: str, adapter: str | None = None) -> str:
    """The identity of a model (and optional adapter), for caching its generations and results.

    A local folder is hashed by content — sha256 over every config, tokenizer and weight file (name
    and bytes, sorted by name), so a merged model that differs from its base in a single weight gets
    another fingerprint; memoised per (path, size, mtime) within the process. Anything else (a hub id,
    ``smollm2``) is fingerprinted by its name.
    """
    parts = [_folder_digest(Path(model)) if Path(model).is_dir() else f"name:{model}"]
    if adapter is not None:
        parts.append(_folder_digest(Path(adapter)) if Path(adapter).is_dir() else f"name:{adapter}")
    return fingerprint(parts)


def _folder_digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _MODEL_FILES)
    stamp = (str(folder.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _MODEL_MEMO:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(folder)).encode("utf-8") + b"\0")
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        _MODEL_MEMO[stamp] = "sha256:" + h.hexdigest()
    return _MODEL_MEMO[stamp]
