"""The pool a selection reads (:mod:`thtb.pool`): a pool file written from real records gives back the same texts,
content keys, lengths and subset files as the records frame, and opening it reads no text."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from tests.helpers import shared_file
from thtb.data import load_records, write_alpaca_json, write_jsonl, write_messages_jsonl
from thtb.pool import ArrowPool, FramePool, row_key, store_pool


@pytest.fixture(scope="module")
def alpaca():
    records, _ = load_records(shared_file("alpaca", "alpaca_data.json"), limit=3000)
    return records


def both(records: pd.DataFrame, tmp_path) -> tuple[FramePool, ArrowPool]:
    return FramePool(records), ArrowPool(store_pool(records, tmp_path, "test"))


def test_a_pool_file_gives_the_records_texts_keys_and_lengths(alpaca, tmp_path):
    frame, arrow = both(alpaca, tmp_path)
    rows = np.random.default_rng(0).permutation(len(alpaca))[:500]
    assert len(arrow) == len(frame) == 3000 and arrow.ids.tolist() == alpaca["id"].tolist()
    for columns in (["query"], ["query", "response"]):
        assert arrow.texts(rows, columns) == frame.texts(rows, columns)
        assert arrow.keys(rows, columns) == frame.keys(rows, columns)
    assert arrow.texts(rows, ["query"])[0] == alpaca["query"].to_numpy()[rows].tolist()
    assert arrow.keys(rows[:1], ["query", "response"]) == [row_key([alpaca["query"][rows[0]],
                                                                    alpaca["response"][rows[0]]])]
    for column in ("query", "response"):
        assert arrow.lengths(rows, column).tolist() == alpaca[column].str.len().to_numpy()[rows].tolist()


@pytest.mark.parametrize("source", ["alpaca", "messages"])
def test_subset_files_from_a_pool_file_are_byte_identical(alpaca, tmp_path, source):
    """The subset's three files, written from the pool file's rows, equal those written from the records frame —
    for Alpaca (``instruction``/``input`` kept in the other fields) and for a conversation source (``messages``)."""
    if source == "messages":
        path = tmp_path / "chats.jsonl"
        path.write_text("".join(json.dumps({"messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": q},
            {"role": "assistant", "content": r}, {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "Because."}]}) + "\n"
            for q, r in zip(alpaca["query"][:300], alpaca["response"][:300], strict=True)), encoding="utf-8")
        records, _ = load_records(path)
    else:
        records = alpaca
    frame, arrow = both(records, tmp_path)
    rows = np.random.default_rng(1).permutation(len(records))[:100]
    for write in (write_jsonl, write_alpaca_json, write_messages_jsonl):
        a, b = tmp_path / f"frame-{write.__name__}", tmp_path / f"arrow-{write.__name__}"
        write(frame.frame(rows), a)
        write(arrow.frame(rows), b)
        assert a.read_bytes() == b.read_bytes(), write.__name__


def test_opening_a_pool_file_reads_no_text(tmp_path):
    """20,000 rows of 2,000-character responses (40 MB of text): opening the pool file allocates the ids, under
    150 bytes a row (content keys and lengths are read in place from the mapped file), not the text; reading 10
    rows' texts and keys gives those rows'."""
    n = 20_000
    records = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "query": [f"question {i}" for i in range(n)],
                            "response": [(f"answer {i} " * 200)[:2_000] for i in range(n)]})
    path = store_pool(records, tmp_path, "big")
    tracemalloc.start()
    pool = ArrowPool(path)
    _, opened = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert opened < 150 * n, f"opening allocated {opened:,} bytes ({opened / n:.0f} a row)"
    rows = np.arange(n - 10, n)
    assert pool.texts(rows, ["query", "response"]) == FramePool(records).texts(rows, ["query", "response"])
    assert pool.keys(rows, ["query"]) == FramePool(records).keys(rows, ["query"])
    assert pool.lengths(rows, "response").tolist() == [2_000] * 10


def test_a_stored_pool_file_is_kept_and_a_killed_write_leaves_none(alpaca, tmp_path):
    path = store_pool(alpaca.head(10), tmp_path, "same")
    before = path.stat().st_mtime_ns
    assert store_pool(alpaca.head(10), tmp_path, "same") == path and path.stat().st_mtime_ns == before  # kept
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left beside it
    labelled = alpaca.head(10).assign(bloom_level="Create")  # same ids and texts, one more field: its own file
    other = store_pool(labelled, tmp_path, "same")
    assert other != path and ArrowPool(other).column("bloom_level").tolist() == ["Create"] * 10
