"""Superfiltering and DEITA: each checked against its paper's own procedure on real rows (the slow tier loads the real
small LM and the real MiniLM), and its ranking logic on rows whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_cfg
from thtb.methods import SelectionContext, build_method, selection_provenance
from thtb.pool import FramePool


# ------------------------------------------------------------------------------------------ Superfiltering
def superfiltering_ifd(model, tok, query: str, response: str, max_length: int = 1024) -> float:
    """IFD of one pair the way tianyi-lab/Superfiltering's ``code_ifd/data_analysis.py`` computes it — one pair at a
    time, the model's own loss with ``labels`` — and ``put_analysis_to_data.py`` divides it (perplexities)."""
    import torch

    prompt = query + "\n"  # their PROMPT_DICT_NONE: "{instruction}\n{input}\n" (the demo/Alpaca query joins them)
    whole = prompt + response
    ids = tok.encode(whole, return_tensors="pt", truncation=True, max_length=max_length)
    start = len(tok.encode(whole[: whole.rfind(response)]))
    labels = ids.clone()
    labels[0, :start] = -100
    prompt_len = tok.encode(prompt, return_tensors="pt", truncation=True, max_length=max_length).shape[1]
    alone = tok.encode(response, return_tensors="pt", truncation=True, max_length=max_length - prompt_len + 1)
    with torch.no_grad():
        ppl_condition = torch.exp(model(ids, labels=labels).loss).item()
        ppl_alone = torch.exp(model(alone, labels=alone.contiguous()).loss).item()
    return ppl_condition / ppl_alone


def check_superfiltering(model_path: str, queries: list[str], responses: list[str]) -> pd.DataFrame:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thtb.scorers.ifd import SuperfilteringIFDScorer

    out = SuperfilteringIFDScorer(model_path, batch_size=3, dtype="float32", show_progress=False).score(queries,
                                                                                                        responses)
    assert out["error"].isna().all(), out["error"].tolist()
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32").eval()
    theirs = [superfiltering_ifd(model, tok, q, r) for q, r in zip(queries, responses, strict=True)]
    np.testing.assert_allclose(out["ifd"].to_numpy(), theirs, rtol=2e-4)
    return out


def test_superfiltering_ifd_is_their_perplexity_ratio_batched(tiny_lm):
    queries = ["explain the theory of relativity", "write a poem about the sea\nthe north sea", "list colours"]
    responses = ["the answer is three .", "the sea and the sky", "red blue yellow and green"]
    check_superfiltering(str(tiny_lm), queries, responses)


def test_superfiltering_counts_an_unscorable_pair_as_a_failure(tiny_lm):
    from thtb.scorers.ifd import SuperfilteringIFDScorer

    out = SuperfilteringIFDScorer(str(tiny_lm), max_length=8, show_progress=False).score(
        ["a short question", "explain the theory of relativity in great detail please now", "q"],
        ["", "the sea", "the sea and the sky"])
    assert out.at[0, "error"] == "empty response: IFD is undefined" and np.isnan(out.at[0, "ifd"])
    assert "fills max_length=8" in out.at[1, "error"]
    assert pd.isna(out.at[2, "error"]) and np.isfinite(out.at[2, "ifd"])


@pytest.mark.slow
def test_superfiltering_ranks_real_alpaca_rows_by_the_small_lms_ifd(tmp_path, shared_data):
    """Its defining property with the real small LM (SmolLM2-135M, offline) on real Alpaca rows: the scores are
    Superfiltering's own IFD, and the subset is the highest of them below 1, best first."""
    from thtb.data import load_records
    from thtb.methods.superfiltering import Superfiltering
    from thtb.models.smollm2 import smollm2_path

    records, _ = load_records(shared_data / "alpaca" / "alpaca_data.json", fidelity="paper", limit=12)
    records = records[records["response"] != ""].reset_index(drop=True)
    path = str(smollm2_path())
    out = check_superfiltering(path, records["query"].tolist(), records["response"].tolist())
    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", "selection=superfiltering",
                                              f"paths.run_dir={tmp_path}"]), resolve=True)
    method = build_method(cfg)
    assert isinstance(method, Superfiltering) and method.label == "Superfiltering"
    assert selection_provenance(cfg, method=method)["scorers"]["ifd_model"]["model"] == "smollm2"
    method.ifd = {**method.ifd, "model": path, "dtype": "float32", "show_progress": False}
    result = method.select(FramePool(records), 4, SelectionContext(cfg=cfg))
    ifd = out["ifd"].to_numpy()
    eligible = [i for i in np.lexsort((np.arange(len(ifd)), -ifd)) if ifd[i] < 1]
    assert result.selected_ids == records["id"].iloc[eligible[:4]].tolist()
    card = result.card.set_index("id")
    assert card.loc[records["id"][ifd >= 1], "why"].str.startswith("IFD >= 1").all()


# ------------------------------------------------------------------------------------------ DEITA
def test_repr_filter_keeps_a_row_only_when_no_kept_row_is_too_similar():
    from thtb.methods.deita import repr_filter

    vectors = np.array([[1, 0], [1, 0.01], [0, 1], [1, 1], [-1, 0.0]])
    kept, similarity, nearest = repr_filter(np.array([5, 4, 3, 2, 1.0]), vectors, 3, 0.9)
    assert kept.tolist() == [0, 2, 3]  # row 1 is 0.99995 similar to row 0; row 3 (0.707) passes; row 4 not reached
    assert similarity[1] == pytest.approx(0.99995, abs=1e-5) and nearest[1] == 0
    assert np.isnan(similarity[0]) and np.isnan(similarity[4])
    kept, _, _ = repr_filter(np.array([1, 2, 3, 4, 5.0]), vectors, 5, 0.9)  # score order: 4, 3, 2, 1, 0
    assert kept.tolist() == [4, 3, 2, 1]  # row 0 is too close to row 1, kept before it
    assert repr_filter(np.ones(5), vectors, 5, 1.0)[0].tolist() == [0, 1, 2, 3, 4]  # τ = 1: score order alone


class _Fixed:
    """A scorer of our own interface returning fixed columns (rows in order)."""

    def __init__(self, name: str, **columns) -> None:
        self.name, self.columns, self.normalization = name, columns, "minmax"

    def score(self, *texts):
        return pd.DataFrame({**{k: v[: len(texts[0])] for k, v in self.columns.items()},
                             "error": [None] * len(texts[0])})


class _Vectors:
    name = "vectors"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts):
        return np.array([self.table[t.split("\n\n")[0]] for t in texts], dtype=np.float32)


def test_deita_scores_first_then_drops_rows_too_close_to_a_kept_one():
    from thtb.methods.deita import Deita

    recs = pd.DataFrame({"id": [f"r{i}" for i in range(5)], "query": [f"q{i}" for i in range(5)],
                         "response": ["a", "b", "c", "d", "e"]})
    # quality (minmax → 1–6): 6, 6, 3.5, 1, 6; Bloom levels Create, Create, Apply, Create, Remember
    quality = _Fixed("fixed", quality_raw=[1.0, 1.0, 0.5, 0.0, 1.0], quality_reason=[""] * 5)
    bloom = _Fixed("fixed", bloom_level=["Create", "Create", "Apply", "Create", "Remember"],
                   bloom_score=[21.0, 21.0, 9.0, 21.0, 1.0], bloom_reason=[""] * 5)
    vectors = _Vectors({"q0": [1, 0], "q1": [1, 0.05], "q2": [0.95, 0.1], "q3": [-1, 0], "q4": [0.7, 0.7]})

    class Wired(Deita):
        def build_scorer(self, role, cfg):
            return {"quality": quality, "bloom": bloom}.get(role) or super().build_scorer(role, cfg)

    result = Wired(name="deita", embedder=vectors).select(FramePool(recs), 3, SelectionContext())
    card = result.card.set_index("id")
    assert card["deita_score"].round(6).tolist() == [36.0, 36.0, 3.5 * 3.0, 6.0, 6.0]
    # r0 first; r1 (same score) and r2 (next) are 0.999 and 0.995 similar to it; then r3 and r4 tie at 6 (row
    # order): r3, then r4 (0.707 to r0)
    assert result.selected_ids == ["r0", "r3", "r4"]
    assert card.at["r1", "why"].startswith("cosine similarity 0.999 to r0 (kept, higher score) > 0.9")
    assert card.at["r2", "why"].startswith("cosine similarity 0.995 to r0")
    assert card.loc[["r1", "r2"], "selected"].eq(False).all() and card.at["r4", "deita_similarity"] == pytest.approx(
        0.7071, abs=1e-4)
    assert card.loc[["r0", "r3", "r4"], "rank"].tolist() == [1, 2, 3]


def test_deita_counts_a_failed_score_against_the_budget_never_ranks_it():
    from thtb.cascade import SelectionError
    from thtb.methods.deita import Deita

    recs = pd.DataFrame({"id": ["r0", "r1", "r2"], "query": ["q0", "q1", "q2"], "response": ["a", "b", "c"]})

    class Failing(_Fixed):
        def score(self, *texts):
            out = super().score(*texts)
            out.loc[1, "error"] = "judge: no parsable answer"
            return out

    bloom = Failing("fixed", bloom_level=["Create"] * 3, bloom_score=[21.0] * 3, bloom_reason=[""] * 3)
    quality = _Fixed("fixed", quality_raw=[1.0, 0.5, 0.0], quality_reason=[""] * 3)
    vectors = _Vectors({"q0": [1, 0], "q1": [0, 1], "q2": [-1, 0]})

    class Wired(Deita):
        def build_scorer(self, role, cfg):
            return {"quality": quality, "bloom": bloom}.get(role) or super().build_scorer(role, cfg)

    with pytest.raises(SelectionError, match="r1"):  # budget 0: the run stops naming the failed row
        Wired(name="deita", embedder=vectors).select(FramePool(recs), 2, SelectionContext())
    result = Wired(name="deita", embedder=vectors, failure_budget=1).select(FramePool(recs), 2, SelectionContext())
    card = result.card.set_index("id")
    assert result.selected_ids == ["r0", "r2"] and card.at["r1", "error"] == "judge: no parsable answer"
    assert np.isnan(card.at["r1", "deita_score"])


@pytest.mark.slow
def test_deita_on_real_rows_keeps_no_two_picks_closer_than_its_threshold(tmp_path):
    """Its defining property on the real demo rows with the offline scorers and the real MiniLM: no two picks are more
    similar than τ, and the picks score higher than random subsets do; with τ = 1 it is the score ranking alone."""
    from hydra.utils import instantiate

    from thtb.data import load_records, resolve_data_path
    from thtb.methods.random import RandomSelection

    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", "selection=deita", "selection.threshold=0.5",
                                              f"paths.run_dir={tmp_path}"]), resolve=True)
    prov = selection_provenance(cfg)
    assert set(prov["scorers"]) == {"reward", "judge", "embedder"} and prov["scorer_setup"] == "offline"
    method = build_method(cfg)
    embedder = instantiate(cfg["embedder"])
    method.embedder = embedder
    records, _ = load_records(resolve_data_path("demo"), fidelity="reference")
    pool = FramePool(records)
    result = method.select(pool, 33, SelectionContext(cfg=cfg))
    card = result.card.set_index("id")
    position = {i: k for k, i in enumerate(records["id"])}
    texts = [q + "\n\n" + r for q, r in zip(records["query"], records["response"], strict=True)]
    vectors = np.asarray(embedder.encode(texts), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picked = vectors[[position[i] for i in result.selected_ids]]
    sims = picked @ picked.T
    assert sims[np.triu_indices(len(picked), 1)].max() <= 0.5 + 1e-6
    assert (card["why"].str.contains("> 0.5", na=False)).sum() > 0  # the threshold did drop rows
    for seed in (1, 2, 3):
        random = RandomSelection(name="random").select(pool, 33, SelectionContext(seed=seed)).selected_ids
        assert card.loc[result.selected_ids, "deita_score"].mean() > card.loc[random, "deita_score"].mean()
    method.threshold = 1.0
    plain = method.select(pool, 33, SelectionContext(cfg=cfg))
    score = plain.card["deita_score"].to_numpy()
    alive = ~np.isnan(score)
    order = [i for i in np.lexsort((np.arange(len(score)), -np.nan_to_num(score, nan=-np.inf))) if alive[i]]
    assert plain.selected_ids == records["id"].iloc[order[:33]].tolist()
