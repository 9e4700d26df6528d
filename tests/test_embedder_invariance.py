"""The embedder's rows depend on the text alone: byte-identical whatever the other texts of the call and their order.

A selection split across Ray workers (any number of blocks) must give the subset a single process gives, so
:meth:`~thtb.scorers.embedder.SentenceTransformerEmbedder.encode` batches canonically (texts grouped by token
length, batches of exactly :func:`~thtb.scorers.embedder.invariant_batch` texts of that length, no padding).
Checked on real MiniLM and ~600 real Alpaca queries, with texts past ``max_seq_length`` (truncated) among them:
one call over all, seven shuffled chunks and one text per call give the same float32 bytes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.helpers import shared_file
from thtb.scorers.embedder import INVARIANT_TOKENS, SentenceTransformerEmbedder, clean_query, invariant_batch

for _var, _val in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}.items():
    os.environ.setdefault(_var, _val)

MAX_SEQ_LENGTH = 128
N_QUERIES = 600


def make_embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("minilm_offline", device="cpu", max_seq_length=MAX_SEQ_LENGTH,
                                       show_progress=False)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """600 distinct Alpaca queries (seeded draw) and 12 texts longer than ``max_seq_length``, two of which share
    their first ~200 words (so they are the same text once truncated)."""
    rows = json.loads(shared_file("alpaca", "alpaca_data.json").read_text())
    rng = np.random.default_rng(20240607)
    queries: list[str] = []
    for i in rng.permutation(len(rows)):
        text = clean_query(rows[i]["instruction"] + "\n" + (rows[i]["input"] or ""))
        if text and text not in queries:
            queries.append(text)
        if len(queries) == N_QUERIES:
            break
    long = [" ".join(queries[k:k + 12]) for k in range(0, 120, 12)]
    shared = " ".join(queries[200:215])
    long += [shared + " first ending", shared + " a different ending"]
    return queries + long


@pytest.fixture(scope="module")
def reference(texts) -> np.ndarray:
    """Every text in one call (one embedder, fresh memo)."""
    out = make_embedder().encode(texts)
    assert out.dtype == np.float32 and out.shape == (len(texts), 384)
    return out


def test_the_set_covers_many_lengths_and_truncation(texts):
    lengths = make_embedder().token_lengths(texts)
    assert max(lengths) == MAX_SEQ_LENGTH
    assert sum(n == MAX_SEQ_LENGTH for n in lengths) >= 12  # the long texts, truncated
    assert len(set(lengths)) >= 40  # many groups, most with a partly filled last batch
    assert {invariant_batch(n) for n in lengths} == {8, 16, 32, 64}  # every batch size is exercised


def test_seven_shuffled_chunks_give_the_same_bytes(texts, reference):
    rng = np.random.default_rng(7)
    order = rng.permutation(len(texts))
    cuts = np.sort(rng.choice(np.arange(1, len(texts)), 6, replace=False))
    embedder = make_embedder()
    out = np.empty_like(reference)
    for chunk in np.split(order, cuts):
        out[chunk] = embedder.encode([texts[i] for i in chunk])
    assert embedder.n_encoded == len(texts)
    different = np.flatnonzero((out != reference).any(axis=1))
    assert different.size == 0, (f"{different.size} rows differ, max abs {np.abs(out - reference).max():.3g}",
                                 [texts[i][:60] for i in different[:5]])
    assert out.tobytes() == reference.tobytes()


def test_one_text_per_call_gives_the_same_bytes(texts, reference):
    rng = np.random.default_rng(1)
    subset = sorted(rng.choice(N_QUERIES, 28, replace=False).tolist()) + list(range(N_QUERIES, len(texts)))
    embedder = make_embedder()
    for i in subset:
        row = embedder.encode([texts[i]])[0]
        assert row.tobytes() == reference[i].tobytes(), (texts[i][:60], float(np.abs(row - reference[i]).max()))


def test_truncated_texts_are_the_text_the_model_sees(texts, reference):
    """The two long texts that differ only past the truncation point embed identically."""
    assert reference[-1].tobytes() == reference[-2].tobytes()
    assert not np.array_equal(reference[-1], reference[-3])


def test_every_forward_pass_is_a_full_batch_of_one_length(texts, monkeypatch):
    embedder = make_embedder()
    calls: list[list[str]] = []
    real = embedder.model.encode

    def spy(sentences, **kwargs):
        calls.append((list(sentences), kwargs["batch_size"]))
        return real(sentences, **kwargs)

    monkeypatch.setattr(embedder.model, "encode", spy)
    sample = texts[:40] + texts[-3:]
    embedder.encode(sample + sample[:5])  # duplicates are encoded once
    assert embedder.n_encoded == len(sample)
    assert {t for call, _ in calls for t in call} == set(sample)
    for call, size in calls:
        (length,) = set(embedder.token_lengths(call))
        assert len(call) == size == invariant_batch(length)
    assert sum(len(set(call)) for call, _ in calls) == len(sample)  # each text in one batch; fillers repeat it


def test_the_batch_size_is_a_function_of_the_length():
    assert [invariant_batch(n) for n in (2, 8, 9, 16, 17, 32, 33, 128, 512)] == [64, 64, 32, 32, 16, 16, 8, 8, 8]


def test_the_fingerprint_records_the_batching():
    assert f"batch=length-grouped-{INVARIANT_TOKENS}-tokens-8-64" in make_embedder().embedder_fingerprint()
