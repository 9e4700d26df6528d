"""Persistent request cache for LLM-judge calls (SQLite, WAL mode).

One row per *finished* request — a request whose HTTP call succeeded and returned text — whether
or not that text parsed. Transport failures are never stored, so a resumed run retries them.
Each row is committed as soon as its request finishes, so a killed run loses at most the requests
in flight.

Key (:func:`make_key`): sha256 of the JSON (sorted keys) of the backend model id, the template
name and version, the rendered messages and the decoding parameters (including any ``extra_body``).
The API key, base URL and other transport settings are not part of the key and never stored.

A row (:class:`CacheRecord`) holds the last answer's raw text, its parsed value (JSON) or parse error, latency
and tokens summed over the attempts, and the digest of the parser code that parsed it (``parser``): a row whose
digest differs from today's is re-parsed from its raw text when read (no request is sent). Databases written
before the column existed get it added (``NULL``: re-parsed on read).

Thread safety: one connection shared under a :class:`threading.Lock` (``check_same_thread=False``);
several :class:`RequestCache` objects (or processes) may open the same file — WAL lets readers
proceed while one writer commits.

Requests in flight (leases)
---------------------------
Processes sharing a cache file also share the requests they are asking, so two concurrent runs never
pay twice for one request. A ``leases`` table in the same file holds one row per request being asked:
its key, its owner (``host:pid:token``, one token per :class:`RequestCache` object), the owner's host
(host name and pid namespace), pid and process start time, and an expiry (Unix seconds). The rules (the backends in
:mod:`thtb.judge.base` follow them):

- :meth:`RequestCache.claim` (one ``BEGIN IMMEDIATE`` transaction) takes a request's lease when it has
  no row, and no lease or one that is ours, expired, or whose owner process is gone (same host: its pid
  is not running, is a zombie or is another process since the pid was reused). A request that got its
  row meanwhile is reported ``cached``; one whose lease a live owner holds, ``held`` — it is not asked:
  the backend waits for its row (:meth:`lease_states`, polled with a bounded backoff) and uses it like a
  cache hit, or takes the lease over when it becomes free (the owner failed or died).
- While an object holds leases a daemon thread renews them every ``lease_ttl_s / 4`` seconds, so a
  lease expires ``lease_ttl_s`` after its owner stopped (killed on another host, or frozen); on the
  same host a dead owner is seen at once.
- :meth:`put` of a leased request deletes the lease in the same transaction as it writes the row;
  a request that fails (transport errors are never cached) is :meth:`release`-d, so a waiter takes
  it over. :meth:`close` releases what is left.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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

_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT,
    expires REAL NOT NULL
)
"""

CLAIMED, CACHED, HELD, FREE = "claimed", "cached", "held", "free"
"""Lease states: ours now, finished (a row exists), asked by a live owner, claimable."""


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/{pid}/stat`` after the command name (Linux), ``None`` where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), ``None`` where unknown; tells a pid from a
    later process that reused it."""
    fields = _proc_stat(pid)
    return fields[19].decode() if fields is not None and len(fields) > 19 else None


def _host_id() -> str:
    """This machine as lease owners see it: the host name, plus the pid namespace where there is one (two
    containers with one host name do not see each other's pids)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{ns}"


_HOST = _host_id()


def process_alive(host: str, pid: int, started: str | None) -> bool:
    """Whether the owner process of a lease still runs. Another host's (or pid namespace's) processes cannot
    be seen: alive (their leases end by expiry)."""
    if host != _HOST:
        return True
    if pid == os.getpid():
        return started is None or started == _process_start(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    except OSError:
        return True
    if sys.platform.startswith("linux"):
        state = _proc_stat(pid)
        if state and state[0].decode() in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        now = _process_start(pid)
        if started is not None and now is not None and now != started:  # the pid was reused
            return False
    return True


def make_key(model: str, template_name: str, template_version: str | int, messages: Sequence[Mapping[str, Any]],
             params: Mapping[str, Any]) -> str:
    """The cache key of one request: sha256 hex of the canonical JSON of its content."""
    payload = {"model": model, "template": f"{template_name}@{template_version}", "messages": list(messages),
               "params": dict(params)}
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
        lease_ttl_s: how long a lease outlives its owner's last renewal (renewed every ``lease_ttl_s / 4``
            seconds while held); the bound on how long a frozen owner, or a dead one on another host,
            holds a request.
    """

    def __init__(self, path: str | Path, lease_ttl_s: float = 60.0) -> None:
        if lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0, got {lease_ttl_s}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_ttl_s = float(lease_ttl_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._pid = os.getpid()
        self._started = _process_start(self._pid)
        self._held: set[str] = set()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.execute(_LEASES)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(requests)")}
            if "parser" not in columns:  # a database from before parser digests: its rows get re-parsed on read
                self._conn.execute("ALTER TABLE requests ADD COLUMN parser TEXT")
            self._conn.execute("DELETE FROM leases WHERE expires < ?", (time.time(),))  # free anyway: tidy up
            self._conn.commit()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def get(self, key: str) -> CacheRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT raw, parsed, error, latency_s, prompt_tokens, completion_tokens, "
                                     "attempts, model, template, created, parser FROM requests WHERE key = ?",
                                     (key,)).fetchone()
        if row is None:
            return None
        raw, parsed, error, latency, ptok, ctok, attempts, model, template, created, parser = row
        return CacheRecord(raw, None if parsed is None else json.loads(parsed), error, latency or 0.0, ptok or 0,
                           ctok or 0, attempts or 1, model or "", template or "", created, parser)

    def put(self, key: str, record: CacheRecord) -> None:
        """Insert or replace ``key``'s row and commit at once; our lease on ``key`` (if any) ends in the same
        transaction."""
        if not isinstance(record.raw, str):
            raise TypeError("only finished requests (with raw text) are cached")
        parsed = None if record.error is not None else json.dumps(record.parsed, ensure_ascii=False)
        with self._lock:
            with self._conn:  # one transaction: committed, or rolled back on any error
                self._conn.execute(
                    "INSERT OR REPLACE INTO requests (key, model, template, raw, parsed, error, latency_s, "
                    "prompt_tokens, completion_tokens, attempts, created, parser) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (key, record.model, record.template, record.raw, parsed, record.error,
                     float(record.latency_s), int(record.prompt_tokens), int(record.completion_tokens),
                     int(record.attempts), float(record.created), record.parser),
                )
                if key in self._held:
                    self._conn.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, self.owner))
            self._held.discard(key)

    def claim(self, keys: Iterable[str], limit: int | None = None, force: Collection[str] = ()) -> dict[str, str]:
        """Try to take the leases of ``keys``, in order, in one transaction, until ``limit`` are ours.

        Returns the state of each key looked at: :data:`CLAIMED` (ours now — ask it, then :meth:`put` or
        :meth:`release` it), :data:`CACHED` (its row exists: read it) or :data:`HELD` (a live owner asks it:
        wait). Keys after the ``limit``-th claim are not looked at. A key in ``force`` is taken even from a
        live owner (a waiter that waited too long).
        """
        keys = list(keys)
        if not keys:
            return {}
        now = time.time()
        out: dict[str, str] = {}
        alive = functools.cache(process_alive)  # each owner looked at once
        n = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            with self._conn:
                for key in keys:
                    if limit is not None and n >= limit:
                        break
                    if self._conn.execute("SELECT 1 FROM requests WHERE key = ?", (key,)).fetchone() is not None:
                        out[key] = CACHED
                        continue
                    row = self._conn.execute("SELECT owner, host, pid, started, expires FROM leases WHERE key = ?",
                                             (key,)).fetchone()
                    if (row is not None and row[0] != self.owner and row[4] > now and key not in force
                            and alive(row[1], int(row[2]), row[3])):
                        out[key] = HELD
                        continue
                    self._conn.execute(
                        "INSERT OR REPLACE INTO leases (key, owner, host, pid, started, expires) VALUES (?,?,?,?,?,?)",
                        (key, self.owner, _HOST, self._pid, self._started, now + self.lease_ttl_s),
                    )
                    out[key] = CLAIMED
                    n += 1
            self._held.update(k for k, state in out.items() if state == CLAIMED)
        if n:
            self._ensure_heartbeat()
        return out

    def lease_states(self, keys: Sequence[str]) -> dict[str, str]:
        """Read-only: each key's state — :data:`CACHED`, :data:`HELD` (by a live owner other than us, lease not
        expired), :data:`CLAIMED` (ours) or :data:`FREE` (no lease, expired, or its owner is gone)."""
        now = time.time()
        out: dict[str, str] = {}
        alive = functools.cache(process_alive)
        for lo in range(0, len(keys), 500):
            part = list(keys[lo: lo + 500])
            marks = ",".join("?" * len(part))
            with self._lock:
                cached = {r[0] for r in self._conn.execute(f"SELECT key FROM requests WHERE key IN ({marks})", part)}
                leases = {r[0]: r[1:] for r in self._conn.execute(
                    f"SELECT key, owner, host, pid, started, expires FROM leases WHERE key IN ({marks})", part)}
            for key in part:
                lease = leases.get(key)
                if key in cached:
                    out[key] = CACHED
                elif lease is None or lease[4] <= now:
                    out[key] = FREE
                elif lease[0] == self.owner:
                    out[key] = CLAIMED
                else:
                    out[key] = HELD if alive(lease[1], int(lease[2]), lease[3]) else FREE
        return out

    def release(self, keys: Iterable[str]) -> None:
        """End our leases of ``keys`` without a row (the request failed): a waiter takes them over."""
        mine = [k for k in keys if k in self._held]
        if not mine:
            return
        with self._lock:
            with self._conn:
                self._conn.executemany("DELETE FROM leases WHERE key = ? AND owner = ?",
                                       [(k, self.owner) for k in mine])
            self._held.difference_update(mine)

    @property
    def held(self) -> frozenset[str]:
        """The keys whose leases this object holds."""
        with self._lock:
            return frozenset(self._held)

    def _renew(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._conn.execute("UPDATE leases SET expires = ? WHERE owner = ?",
                               (time.time() + self.lease_ttl_s, self.owner))
            self._conn.commit()

    def _ensure_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None and self._heartbeat.is_alive():
                return
            self._heartbeat = threading.Thread(target=self._beat, name=f"judge-lease-{self.owner}", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        """Renew our leases every ``lease_ttl_s / 4`` s while we hold any; exit when none are left."""
        while not self._stop.wait(self.lease_ttl_s / 4):
            if not self._held:
                with self._lock:  # claim() adds under the lock: re-check there before leaving
                    if not self._held:
                        self._heartbeat = None
                        return
            try:
                self._renew()
            except sqlite3.Error:  # closed or busy: the next beat tries again; expiry is the backstop
                if self._stop.is_set():
                    return

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
                "COALESCE(SUM(completion_tokens),0) FROM requests").fetchone()
            by_template = dict(self._conn.execute("SELECT template, COUNT(*) FROM requests GROUP BY template"))
        return {"path": str(self.path), "entries": int(total), "parsed": int(total - errors),
                "parse_errors": int(errors), "prompt_tokens": int(ptok), "completion_tokens": int(ctok),
                "by_template": by_template}

    def close(self) -> None:
        """Release our leases (a waiter takes them over) and close the connection."""
        self._stop.set()
        with contextlib.suppress(sqlite3.Error):
            self.release(list(self._held))
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
