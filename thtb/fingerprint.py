"""Content fingerprints: a stable hash of configs, inputs, files and model folders, used to name and compare
artifacts."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FULL_HASH_LIMIT = 512 * 2**20  # files above this get a sampled digest (size + 4 chunks), see file_digest
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_META_FILES = ("config.json", "generation_config.json", "adapter_config.json", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def fingerprint(obj: Any, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON of ``obj`` (sorted keys), truncated to ``length``."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def records_digest(records: Any, fmt: str | None = None) -> str:
    """Order-sensitive digest of canonical records *as scored*: the source format and, per row, the id, the
    query and response texts (fidelity-specific: the authors' ``"\\nnan"`` included where it is kept) and the
    whole conversation when the records carry one (``messages``). Two inputs that differ in anything a scorer
    or the trainer reads never share a digest, even when their ids (content hashes of the clean text) agree."""
    h = hashlib.sha256()
    h.update(f"format:{fmt}\n".encode())
    columns = ["id", "query", "response"] + (["messages"] if "messages" in records.columns else [])
    for row in records[columns].itertuples(index=False, name=None):
        h.update(json.dumps(row, ensure_ascii=False, default=_plain).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _plain(obj: Any) -> Any:
    """JSON for numpy arrays / scalars in record cells (conversations read from parquet)."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def ids_digest(ids: Iterable[str]) -> str:
    """Order-sensitive digest of a sequence of sample ids (the identity of a dataset or subset)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def file_digest(path: str | os.PathLike, *, full_limit: int = FULL_HASH_LIMIT) -> str:
    """sha256 of a file's bytes; for files above ``full_limit`` bytes, of its size and four 1 MiB chunks
    (start, 1/3, 2/3, end) prefixed ``sampled:`` — cheap for multi-GB weights, still changes when they do."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= full_limit:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
            return h.hexdigest()
        h.update(str(size).encode())
        for offset in (0, size // 3, 2 * size // 3, max(size - 2**20, 0)):
            fh.seek(offset)
            h.update(fh.read(2**20))
    return "sampled:" + h.hexdigest()


def describe_model_dir(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """Identity of a model or adapter: for a local folder its resolved path and the digest and size of its
    config, tokenizer and weight files; for anything else (a hub id) just the id."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.exists():
        return {"hub_id": str(path)}
    if p.is_file():
        return {"path": str(p.resolve()), "files": {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}}}
    files = {f.name: {"size": f.stat().st_size, "sha256": file_digest(f)} for f in sorted(p.iterdir())
             if f.is_file() and (f.name in _META_FILES or f.name.endswith(_WEIGHT_SUFFIXES))}
    return {"path": str(p.resolve()), "files": files}


def model_fingerprint(model_path: str | os.PathLike, adapter: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"model": ..., "adapter": ..., "fingerprint": <16 hex>}``; the fingerprint ignores local paths, so the
    same weights moved elsewhere keep it."""
    model, adapter_info = describe_model_dir(model_path), describe_model_dir(adapter)
    content = [None if info is None else info.get("files") or info.get("hub_id") for info in (model, adapter_info)]
    return {"model": model, "adapter": adapter_info, "fingerprint": fingerprint(content)}
