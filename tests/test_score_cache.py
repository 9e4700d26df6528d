"""The raw-score cache (``thtb/score_cache.py``): what it serves, what it refuses to keep, and a damaged file."""

from __future__ import annotations

import pandas as pd

from thtb.score_cache import ScoreCache


def frame(values, errors=None):
    n = len(values)
    return pd.DataFrame({"disciplines": pd.Series([["physics", "mathematics"]] * n, dtype=object),
                         "bloom_score": values, "error": pd.Series(errors or [None] * n, dtype=object)})


def test_a_cached_frame_comes_back_as_it_was_scored(tmp_path):
    calls = []
    cache = ScoreCache(tmp_path, key="k")
    texts = (["q1", "q2"], ["r1", "r2"])
    first = cache.get_or_compute("bloom:x", texts, lambda: calls.append(1) or frame([7.0, 16.5]))
    again = ScoreCache(tmp_path, key="k").get_or_compute("bloom:x", texts, lambda: calls.append(1) or frame([0, 0]))
    assert calls == [1]
    assert again["bloom_score"].tolist() == first["bloom_score"].tolist() == [7.0, 16.5]
    assert again["disciplines"].tolist() == [["physics", "mathematics"]] * 2  # lists stay lists
    assert again["error"].tolist() == [None, None]


def test_other_texts_scorer_or_identity_are_other_entries(tmp_path):
    base = ScoreCache(tmp_path, key="k")
    base.get_or_compute("bloom:x", (["q"], ["r"]), lambda: frame([1.0]))
    for cache, name, texts in ((ScoreCache(tmp_path, key="k"), "bloom:x", (["q"], ["r2"])),
                               (ScoreCache(tmp_path, key="k"), "bloom:y", (["q"], ["r"])),
                               (ScoreCache(tmp_path, key="other"), "bloom:x", (["q"], ["r"]))):
        out = cache.get_or_compute(name, texts, lambda: frame([2.0]))
        assert out["bloom_score"].tolist() == [2.0] and cache.misses == 1 and cache.hits == 0


def test_a_frame_with_an_error_is_never_kept(tmp_path):
    cache = ScoreCache(tmp_path, key="k")
    cache.get_or_compute("bloom:x", (["q", "q2"], ["r", "r2"]), lambda: frame([1.0, None], [None, "judge timed out"]))
    assert list(tmp_path.glob("*.json")) == []
    again = ScoreCache(tmp_path, key="k")
    again.get_or_compute("bloom:x", (["q", "q2"], ["r", "r2"]), lambda: frame([1.0, 3.0]))
    assert again.misses == 1  # scored again, not served the failure


def test_a_damaged_entry_is_scored_again_and_replaced(tmp_path, caplog):
    cache = ScoreCache(tmp_path, key="k")
    cache.get_or_compute("bloom:x", (["q"], ["r"]), lambda: frame([1.0]))
    (path,) = tmp_path.glob("*.json")
    path.write_text("{not json", encoding="utf-8")
    again = ScoreCache(tmp_path, key="k")
    out = again.get_or_compute("bloom:x", (["q"], ["r"]), lambda: frame([5.0]))
    assert out["bloom_score"].tolist() == [5.0] and again.misses == 1
    assert "unreadable" in caplog.text
    third = ScoreCache(tmp_path, key="k")
    assert third.get_or_compute("bloom:x", (["q"], ["r"]), lambda: frame([9.0]))["bloom_score"].tolist() == [5.0]
