"""Persistent request cache for LLM-judge calls (SQLite, WAL mode).

One row per *finished* request — a request whose HTTP call succeeded and returned text — whether
or not that text parsed. Transport failures are never stored, so a resumed run retries them.
Each row is committed as soon as its request finishes, so a killed run loses at most the requests
in flight.

Key (:func:`make_key`): sha256 of the JSON (sorted keys) of the backend model id, the template
name and version, the rendered messages and the decoding parameters (including any ``extra_body``).
The API key, base URL and other transport settings are not part of the key and never stored.

A row holds the raw answer text (the last attempt's, after any re-asks), the parsed value (JSON),
the parse error (``None`` when parsed), latency in seconds, prompt/completion tokens summed over
the attempts, the number of attempts, the creation time (Unix seconds) and the digest of the parser
code that produced the parsed value (``parser``): a row whose parser digest differs from today's is
re-parsed from its raw text when read (no request is sent), so a changed parser never serves a stale
parsed value. Databases written before the column existed get it added (``NULL``: re-parsed on read).

Thread safety: one connection shared under a :class:`threading.Lock` (``check_same_thread=False``);
several :class:`RequestCache` objects (or processes) may open the same file — WAL lets readers
proceed while one writer commits.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    model TEXT,
    template TEXT,
    raw TEXT NOT NULL,
    parsed TEXT,
    error TEXT,
    latency_s REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    attempts INTEGER,
    created REAL NOT NULL,
    parser TEXT
)
"""


def make_key(
    model: str,
    template_name: str,
    template_version: str | int,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
) -> str:
    """The cache key of one request: sha256 hex of the canonical JSON of its content."""
    payload = {
        "model": model,
        "template": f"{template_name}@{template_version}",
        "messages": list(messages),
        "params": dict(params),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CacheRecord:
    """One finished request. ``error`` is ``None`` when ``raw`` parsed into ``parsed``."""

    raw: str
    parsed: Any = None
    error: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    model: str = ""
    template: str = ""
    created: float = field(default_factory=time.time)
    parser: str | None = None


class RequestCache:
    """SQLite-backed map ``key → CacheRecord`` (see module doc).

    Args:
        path: the database file (parent folders are created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(requests)")}
            if "parser" not in columns:  # a database from before parser digests: its rows get re-parsed on read
                self._conn.execute("ALTER TABLE requests ADD COLUMN parser TEXT")
            self._conn.commit()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def get(self, key: str) -> CacheRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT raw, parsed, error, latency_s, prompt_tokens, completion_tokens, attempts, model, "
                "template, created, parser FROM requests WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        raw, parsed, error, latency, ptok, ctok, attempts, model, template, created, parser = row
        return CacheRecord(
            raw=raw,
            parsed=None if parsed is None else json.loads(parsed),
            error=error,
            latency_s=latency or 0.0,
            prompt_tokens=ptok or 0,
            completion_tokens=ctok or 0,
            attempts=attempts or 1,
            model=model or "",
            template=template or "",
            created=created,
            parser=parser,
        )

    def put(self, key: str, record: CacheRecord) -> None:
        """Insert or replace ``key``'s row and commit at once."""
        if not isinstance(record.raw, str):
            raise TypeError("only finished requests (with raw text) are cached")
        values = asdict(record)
        parsed = None if record.error is not None else json.dumps(values["parsed"], ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO requests (key, model, template, raw, parsed, error, latency_s, "
                "prompt_tokens, completion_tokens, attempts, created, parser) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key, record.model, record.template, record.raw, parsed, record.error,
                    float(record.latency_s), int(record.prompt_tokens), int(record.completion_tokens),
                    int(record.attempts), float(record.created), record.parser,
                ),
            )
            self._conn.commit()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM requests WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        """Row counts (all, parsed, parse errors), token totals and per-template counts."""
        with self._lock:
            total, errors, ptok, ctok = self._conn.execute(
                "SELECT COUNT(*), COUNT(error), COALESCE(SUM(prompt_tokens),0), "
                "COALESCE(SUM(completion_tokens),0) FROM requests"
            ).fetchone()
            by_template = dict(self._conn.execute("SELECT template, COUNT(*) FROM requests GROUP BY template"))
        return {
            "path": str(self.path),
            "entries": int(total),
            "parsed": int(total - errors),
            "parse_errors": int(errors),
            "prompt_tokens": int(ptok),
            "completion_tokens": int(ctok),
            "by_template": by_template,
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
