"""Atomic file writes: a killed run never leaves a half-written file that looks whole."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; on success it is fsynced and
    renamed onto ``path`` (atomic on POSIX), on error it is removed and ``path`` is left as it was. An
    ``OSError`` that does not name ``path`` (a full disk reported by pyarrow, say) is re-raised naming it.

    Parent directories are created; the file gets the usual ``0o666 & ~umask`` mode.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and str(target) not in str(exc):  # e.g. pyarrow's "Error writing bytes to file"
            raise io_error(exc, "writing", target) from exc
        raise


def io_error(exc: OSError, action: str, path: str | os.PathLike[str]) -> OSError:
    """The same error (same errno), saying what was being done to which path; a full disk says so."""
    hint = " (the disk is full: free space or set paths.cache_dir elsewhere)" if exc.errno == errno.ENOSPC else ""
    return OSError(exc.errno, f"{action} {path}: {exc.strerror or exc}{hint}", str(path))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def read_jsonl(path: str | os.PathLike[str], error: type[Exception] = ValueError) -> list[dict[str, Any]]:
    """The JSON values of a JSON Lines file (blank lines skipped); a bad line raises ``error`` naming
    ``<path>: line <n>``."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise error(f"{path}: line {i}: not valid JSON ({err.msg})") from None
    return rows
