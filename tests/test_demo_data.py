"""The bundled demo set: what the demo and the Bloom-accuracy figure rely on."""

from __future__ import annotations

from collections import Counter
from importlib import resources

from thtb.data import load_records
from thtb.scorers.base import BLOOM_LEVELS

DEMO = resources.files("thtb") / "resources" / "demo.jsonl"
KEYS = set((resources.files("thtb") / "resources" / "discipline_keys.txt").read_text().split())


def test_demo_set_is_labelled_diverse_and_loads_cleanly():
    records, report = load_records(str(DEMO))
    assert report.format == "alpaca" and len(records) == report.n_rows >= 200
    assert report.n_duplicates == 0 and report.n_excluded == 0
    good = records[records["broken"].isna()]
    assert Counter(good["bloom_level"]) == {level: 42 for level in BLOOM_LEVELS}
    assert set(records["discipline"]) <= KEYS and records["discipline"].nunique() >= 60
    broken = Counter(records["broken"].dropna())
    assert broken == {"empty": 3, "truncated": 3, "refusal": 3, "off_topic": 3}
    # the empty pairs are reported, not dropped
    assert len(report.empty_response_rows) == 3
    # a few Chinese pairs exercise the jieba path of the silhouette
    assert records["query"].str.contains(r"[\u4e00-\u9fff]").sum() >= 6
