"""The subset's overlap with the evaluation sets (thtb/contamination.py): n-gram rules on known texts, real MMLU-Pro
test questions and AlpacaEval prompts planted among the demo rows, and the select stage's summary."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_cfg
from thtb.contamination import NgramIndex, PoolScans, check
from thtb.pool import FramePool

LONG = "the quick brown fox jumps over the lazy dog near the river bank at dawn today"  # 16 words


def test_ngram_rules():
    index = NgramIndex([LONG, "What is the capital of France?", "one two three four five six seven eight"],
                       ngram=13, min_tokens=8)
    assert index.n_items == 3 and index.n_too_short == 1  # 6 words: too short to check, counted
    assert index.first_match("Intro. The QUICK brown fox jumps over the lazy dog near the river bank, at dawn!") == \
        "the quick brown fox jumps over the lazy dog near the river bank"  # case and punctuation do not matter
    assert index.first_match("the quick brown fox jumps over the lazy dog near the river") is None  # 12 words
    assert index.first_match("count: one two three four five six seven eight.") == \
        "one two three four five six seven eight"  # an 8-word item matches whole
    assert index.first_match("what is the capital of france") is None
    with pytest.raises(ValueError, match="min_tokens"):
        NgramIndex([], ngram=5, min_tokens=6)


def _sets(shared_data) -> list[str]:
    """The evaluation sets from ../shared (the default paths interpolate the repository's root)."""
    return [f"contamination.sets.mmlu_pro.path={shared_data / 'mmlu_pro' / 'test.parquet'}",
            f"contamination.sets.alpaca_eval.path={shared_data / 'alpaca_eval' / 'alpaca_eval.jsonl'}"]


def _demo_with_planted(shared_data) -> tuple[FramePool, list[str]]:
    from thtb.data import load_records, resolve_data_path

    records, _ = load_records(resolve_data_path("demo"), fidelity="reference")
    questions = pd.read_parquet(shared_data / "mmlu_pro" / "test.parquet")["question"].iloc[1234:]
    question = next(q for q in questions if len(q.split()) >= 15)
    prompts = [json.loads(x)["instruction"] for x in (shared_data / "alpaca_eval" / "alpaca_eval.jsonl").open()]
    prompt = next(p for p in prompts[100:] if len(p.split()) >= 15)
    planted = pd.DataFrame({"id": ["leak_mmlu", "leak_alpaca"],
                            "query": [f"Answer this.\n{question}", prompt], "response": ["(A)", "Sure."]})
    return FramePool(pd.concat([records[["id", "query", "response"]], planted], ignore_index=True)), [question, prompt]


def test_planted_benchmark_items_are_flagged(shared_data, tmp_path):
    pool, _ = _demo_with_planted(shared_data)
    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", f"paths.run_dir={tmp_path}", *_sets(shared_data),
                                              "+contamination.sets.gone={path: /no/such.parquet, columns: [q]}"]),
                                 resolve=True)["contamination"]
    rows = [0, 1, len(pool) - 2, len(pool) - 1]  # two demo rows and the two planted ones
    report = check(pool, rows, cfg["sets"], cfg["ngram"], cfg["min_tokens"])
    assert list(report["sets"]) == ["mmlu_pro", "alpaca_eval", "gone"]  # the config's order, an unread set too
    mmlu, alpaca = report["sets"]["mmlu_pro"], report["sets"]["alpaca_eval"]
    assert mmlu["checked"] and mmlu["n_items"] == 12032 and mmlu["sha256"]
    assert [f["id"] for f in mmlu["flagged"]] == ["leak_mmlu"] and mmlu["rate"] == 0.25
    assert [f["id"] for f in alpaca["flagged"]] == ["leak_alpaca"] and alpaca["n_items"] == 805
    assert mmlu["pool_n_flagged"] >= 1 and alpaca["pool_n_flagged"] >= 1
    gone = report["sets"]["gone"]
    assert not gone["checked"] and "/no/such.parquet" in gone["why"]  # said, not skipped


def test_the_select_stage_reports_it_fresh_and_reused(shared_data, tmp_path):
    from thtb.stages.select import run_select

    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", "selection=random", "logger=none",
                                              f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
                                              *_sets(shared_data)]), resolve=True)
    fresh = run_select(cfg, tmp_path / "a")
    assert set(fresh["contamination"]["sets"]) == {"mmlu_pro", "alpaca_eval"}
    assert all(s["checked"] and s["n_selected"] == 33 for s in fresh["contamination"]["sets"].values())
    assert all(s["pool_scan"] == "read" for s in fresh["contamination"]["sets"].values())
    again = run_select(cfg, tmp_path / "b")  # the finished selection reused: its subset checked, the pool not read
    assert again["reused"] and all(s["pool_scan"] == "stored" for s in again["contamination"]["sets"].values())
    assert {k: {f: v for f, v in s.items() if f != "pool_scan"} for k, s in again["contamination"]["sets"].items()} \
        == {k: {f: v for f, v in s.items() if f != "pool_scan"} for k, s in fresh["contamination"]["sets"].items()}
    cfg["contamination"]["sets"] = {}
    reused = run_select(cfg, tmp_path / "c")
    assert reused["reused"] and reused["contamination"]["sets"] == {}  # checked again with the run's own sets


def _without_scan(report):
    return {name: {k: v for k, v in s.items() if k != "pool_scan"} for name, s in report["sets"].items()}


def test_a_stored_pool_scan_is_used_only_for_the_same_pool_sets_and_settings(shared_data, tmp_path, monkeypatch,
                                                                             caplog):
    """Each set's scan of the pool is stored by the pool's digest, the set file's sha256 and columns, the n-gram
    settings and the code: the same ones check another subset without reading the pool; any other is read."""
    pool, _ = _demo_with_planted(shared_data)
    sets = OmegaConf.to_container(compose_cfg(["+experiment=demo", f"paths.run_dir={tmp_path}", *_sets(shared_data)]),
                                  resolve=True)["contamination"]["sets"]
    rows, root = [0, 1, len(pool) - 2, len(pool) - 1], tmp_path / "scans"
    scans = PoolScans(root, {"pool": "pool-a", "code": "code-1"})
    first = check(pool, rows, sets, 13, 8, scans=scans)
    assert [s["pool_scan"] for s in first["sets"].values()] == ["read", "read"] and len(list(root.iterdir())) == 2

    with monkeypatch.context() as patched:  # stored: a new subset's flags come from the scan, the pool is not read
        patched.setattr(FramePool, "texts", lambda *a, **k: pytest.fail("the pool was read"))
        assert _without_scan(check(pool, rows, sets, 13, 8, scans=scans)) == _without_scan(first)
        other = check(pool, [len(pool) - 1], sets, 13, 8, scans=scans)
        assert [f["id"] for f in other["sets"]["alpaca_eval"]["flagged"]] == ["leak_alpaca"]
        assert other["sets"]["mmlu_pro"]["flagged"] == [] and other["sets"]["mmlu_pro"]["rate"] == 0.0
        assert other["sets"]["mmlu_pro"]["pool_n_flagged"] == first["sets"]["mmlu_pro"]["pool_n_flagged"]

    def scanned(report):
        return {name: s["pool_scan"] for name, s in report["sets"].items()}

    assert scanned(check(pool, rows, sets, 13, 8, scans=PoolScans(root, {"pool": "pool-b", "code": "code-1"}))) == \
        {"mmlu_pro": "read", "alpaca_eval": "read"}  # another pool
    assert scanned(check(pool, rows, sets, 13, 8, scans=PoolScans(root, {"pool": "pool-a", "code": "code-2"}))) == \
        {"mmlu_pro": "read", "alpaca_eval": "read"}  # other code
    assert scanned(check(pool, rows, sets, 12, 8, scans=scans)) == {"mmlu_pro": "read", "alpaca_eval": "read"}
    edited = tmp_path / "alpaca_eval.jsonl"  # the same set with one more prompt: another sha256
    text = open(sets["alpaca_eval"]["path"], encoding="utf-8").read()
    edited.write_text(text.rstrip("\n") + "\n" + json.dumps({"instruction": LONG}) + "\n", encoding="utf-8")
    report = check(pool, rows, {**sets, "alpaca_eval": {**sets["alpaca_eval"], "path": str(edited)}}, 13, 8,
                   scans=scans)
    assert scanned(report) == {"mmlu_pro": "stored", "alpaca_eval": "read"}
    assert report["sets"]["alpaca_eval"]["n_items"] == first["sets"]["alpaca_eval"]["n_items"] + 1
    for stored in root.iterdir():  # a stored scan cut short or edited: said, the pool read again, the file rewritten
        stored.write_text('{"rows": [1, 2], "grams": ["x"]')
    with caplog.at_level("WARNING", logger="thtb.contamination"):
        again = check(pool, rows, sets, 13, 8, scans=scans)
    assert "unreadable" in caplog.text and str(root) in caplog.text
    assert scanned(again) == {"mmlu_pro": "read", "alpaca_eval": "read"}
    assert _without_scan(again) == _without_scan(first)
    assert scanned(check(pool, rows, sets, 13, 8, scans=scans)) == {"mmlu_pro": "stored", "alpaca_eval": "stored"}
