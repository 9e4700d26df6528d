"""RequestCache: round trip, upsert, WAL mode, key stability, multi-thread writes."""

from __future__ import annotations

import sqlite3
import threading

from thtb.judge.cache import CacheRecord, RequestCache, make_key


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
