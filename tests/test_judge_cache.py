"""RequestCache: round trip, upsert, WAL mode, key stability, multi-thread writes; leases of requests in flight."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

from thtb.judge import cache as cache_module
from thtb.judge.cache import CACHED, CLAIMED, FREE, HELD, CacheRecord, RequestCache, make_key


def test_key_is_stable_and_sensitive():
    msgs = [{"role": "user", "content": "hi"}]
    k = make_key("m", "bloom", "1", msgs, {"temperature": 0, "max_tokens": 5})
    assert k == make_key("m", "bloom", "1", msgs, {"max_tokens": 5, "temperature": 0})  # sorted keys
    assert len(k) == 64
    others = [
        make_key("m2", "bloom", "1", msgs, {"temperature": 0, "max_tokens": 5}),
        make_key("m", "bloom", "2", msgs, {"temperature": 0, "max_tokens": 5}),
        make_key("m", "disciplines", "1", msgs, {"temperature": 0, "max_tokens": 5}),
        make_key("m", "bloom", "1", [{"role": "user", "content": "hi!"}], {"temperature": 0, "max_tokens": 5}),
        make_key("m", "bloom", "1", msgs, {"temperature": 0.7, "max_tokens": 5}),
    ]
    assert len({k, *others}) == 6


def test_round_trip_upsert_and_wal(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    cache = RequestCache(path)
    assert cache.journal_mode() == "wal"
    assert cache.get("nope") is None
    rec = CacheRecord(raw='{"level": "Apply"}', parsed={"level": "Apply", "score": 8, "reasoning": "é"},
                      latency_s=0.5, prompt_tokens=10, completion_tokens=3, attempts=2, model="m", template="bloom@1")
    cache.put("k1", rec)
    cache.put("k2", CacheRecord(raw="garbage", error="parse: no JSON", model="m", template="bloom@1"))
    got = cache.get("k1")
    assert got.parsed == rec.parsed and got.raw == rec.raw and got.error is None
    assert (got.latency_s, got.prompt_tokens, got.completion_tokens, got.attempts) == (0.5, 10, 3, 2)
    bad = cache.get("k2")
    assert bad.error == "parse: no JSON" and bad.parsed is None and bad.raw == "garbage"
    cache.put("k2", CacheRecord(raw="garbage", parsed=["x"], model="m", template="bloom@1"))  # upsert
    assert cache.get("k2").parsed == ["x"] and cache.get("k2").error is None
    stats = cache.stats()
    assert stats["entries"] == 2 and stats["parse_errors"] == 0 and stats["prompt_tokens"] == 10
    assert stats["by_template"] == {"bloom@1": 2}
    assert "k1" in cache and len(cache) == 2
    # committed immediately: another connection sees the rows without closing the first
    other = sqlite3.connect(str(path))
    assert other.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 2
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    cache.close()
    with RequestCache(path) as again:
        assert again.get("k1").parsed["reasoning"] == "é"


def test_threads_write_concurrently(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")

    def work(t):
        for i in range(50):
            cache.put(f"{t}-{i}", CacheRecord(raw=str(i), parsed=i))
            assert cache.get(f"{t}-{i}").parsed == i

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 200


# ------------------------------------------------------------------------------ leases (requests in flight)
def _lease_row(cache, key):
    return cache._conn.execute("SELECT owner, host, pid, started, expires FROM leases WHERE key = ?", (key,)).fetchone()


def test_leases_claim_hold_put_release(tmp_path):
    path = tmp_path / "c.sqlite"
    a, b = RequestCache(path), RequestCache(path)
    assert a.owner != b.owner and a.owner.split(":")[1] == str(os.getpid())
    assert a.claim(["k1", "k2"]) == {"k1": CLAIMED, "k2": CLAIMED} and a.held == {"k1", "k2"}
    assert a.claim(["k1"]) == {"k1": CLAIMED}  # our own lease: re-entrant
    assert b.claim(["k1", "k2", "k3"]) == {"k1": HELD, "k2": HELD, "k3": CLAIMED}  # a live owner holds k1, k2
    assert b.lease_states(["k1", "k3", "k4"]) == {"k1": HELD, "k3": CLAIMED, "k4": FREE}
    a.put("k1", CacheRecord(raw="x", parsed=1))  # the row and the end of the lease, in one transaction
    assert _lease_row(a, "k1") is None and a.held == {"k2"}
    assert b.lease_states(["k1"]) == {"k1": CACHED} and b.claim(["k1"]) == {"k1": CACHED}
    a.release(["k2"])
    assert b.lease_states(["k2"]) == {"k2": FREE} and b.claim(["k2"]) == {"k2": CLAIMED}
    assert b.claim(["k5", "k6", "k7"], limit=1) == {"k5": CLAIMED}  # stops at the limit
    assert a.claim(["k5"]) == {"k5": HELD} and a.claim(["k5"], force=["k5"]) == {"k5": CLAIMED}
    b.put("k5", CacheRecord(raw="late"))  # the overtaken owner still writes its row; a's lease stays a's
    assert _lease_row(a, "k5")[0] == a.owner
    b.close()  # releases what b holds
    assert {r[0] for r in a._conn.execute("SELECT key FROM leases")} == {"k5"}
    a.close()


def test_leases_of_dead_processes_and_expired_leases_are_free(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    host = cache_module._HOST  # host name and pid namespace
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)  # exited and reaped
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not _is_zombie(zombie.pid) and time.monotonic() < deadline:  # exited, not reaped
        time.sleep(0.01)
    later = time.time() + 600
    rows = [
        ("dead", "o1", host, gone.pid, None, later),
        ("zombie", "o2", host, zombie.pid, None, later),
        ("reused", "o3", host, os.getpid(), "1", later),  # our pid, another start time: an earlier process
        ("expired", "o4", "elsewhere", 1, None, time.time() - 1),
        ("remote", "o5", "elsewhere", 1, None, later),  # another host: alive until it expires
        ("live", "o6", host, os.getpid(), None, later),  # this process, another RequestCache
    ]
    cache._conn.executemany("INSERT INTO leases VALUES (?,?,?,?,?,?)", rows)
    cache._conn.commit()
    states = cache.lease_states([r[0] for r in rows])
    assert states == {"dead": FREE, "zombie": FREE if sys.platform.startswith("linux") else HELD, "reused": FREE,
                      "expired": FREE, "remote": HELD, "live": HELD}
    claimed = cache.claim([r[0] for r in rows])
    assert {k for k, v in claimed.items() if v == CLAIMED} == {k for k, v in states.items() if v == FREE}
    zombie.wait(timeout=30)
    cache.close()


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return not sys.platform.startswith("linux")


def test_held_leases_are_renewed_then_the_heartbeat_stops(tmp_path):
    owner = RequestCache(tmp_path / "c.sqlite", lease_ttl_s=0.4)
    other = RequestCache(tmp_path / "c.sqlite")
    owner.claim(["k"])
    first = _lease_row(owner, "k")[4]
    time.sleep(1.0)  # past the first expiry: renewed every 0.1 s
    assert _lease_row(owner, "k")[4] > first + 0.5 and other.lease_states(["k"]) == {"k": HELD}
    owner.put("k", CacheRecord(raw="x"))
    deadline = time.monotonic() + 5
    while owner._heartbeat is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert owner._heartbeat is None  # nothing held: the thread ended
    owner.close()
    other.close()


def test_concurrent_claims_give_each_key_one_owner(tmp_path):
    keys = [f"k{i}" for i in range(200)]
    caches = [RequestCache(tmp_path / "c.sqlite") for _ in range(4)]
    got: dict[int, list[str]] = {}

    def work(i):
        mine = []
        for lo in range(0, len(keys), 7):
            mine += [k for k, v in caches[i].claim(keys[lo: lo + 7]).items() if v == CLAIMED]
        got[i] = mine

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(k for mine in got.values() for k in mine) == sorted(keys)
    for c in caches:
        c.close()
    with RequestCache(tmp_path / "c.sqlite") as again:  # every lease ended with its owner
        assert again._conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
