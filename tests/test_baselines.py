"""Random and longest-response baselines, size-matched to THTB, through the same select stage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from thtb.cascade import n_selected
from thtb.methods import SelectionContext
from thtb.methods.ifd import IFD
from thtb.methods.longest import LongestResponses
from thtb.methods.random import RandomSelection
from thtb.pool import FramePool
from tests.helpers import run_py


def select_baseline(recs: pd.DataFrame, method: type, n: int, *, seed: int = 42, failure_budget: int = 0, **kwargs):
    """A baseline method over ``recs`` (``kwargs``: its own arguments, e.g. IFD's scorer)."""
    name = {RandomSelection: "random", LongestResponses: "longest", IFD: "ifd"}[method]
    built = method(name=name, failure_budget=failure_budget, **kwargs)
    return built.select(FramePool(recs), n, SelectionContext(seed=seed))


def records(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"id{i}" for i in range(n)], "query": ["q"] * n, "response": ["x" * ((i * 7) % 10) for i in range(n)]}
    )


def test_thtb_matched_size():
    fractions = {"quality": 0.2, "intrinsic": 0.5, "extrinsic": 0.5}
    assert n_selected(52002, fractions) == 2600
    assert n_selected(52002, fractions, budget=0.02) == 1040
    assert n_selected(264, {"quality": 0.5, "intrinsic": 0.5, "extrinsic": 0.5}) == 33
    assert n_selected(100, fractions, stages=["extrinsic"]) == 50


def test_longest_keeps_longest_responses_ties_by_row():
    recs = records(20)  # lengths 0,7,4,1,8,5,2,9,6,3,0,7,4,...
    result = select_baseline(recs, LongestResponses, 5)
    assert result.selected_ids == ["id7", "id17", "id4", "id14", "id1"]
    card = result.card
    assert card.set_index("id").loc[result.selected_ids, "rank"].tolist() == [1, 2, 3, 4, 5]
    assert (card["fell_at"] == "selected").sum() == 5 and (card["fell_at"] == "longest").sum() == 15
    assert card.loc[~card["selected"], "why"].str.contains("below the cut-off").all()


def test_random_is_seeded_and_depends_on_the_seed():
    recs = records(100)
    a = select_baseline(recs, RandomSelection, 10, seed=42).selected_ids
    assert a == select_baseline(recs, RandomSelection, 10, seed=42).selected_ids
    assert a != select_baseline(recs, RandomSelection, 10, seed=43).selected_ids
    assert len(set(a)) == 10


def test_bad_baseline_requests():
    with pytest.raises(ValueError, match="1 <= n <= 5"):
        select_baseline(records(5), RandomSelection, 6)
    with pytest.raises(ValueError, match="selection.size must be >= 1"):
        RandomSelection(name="random", size=0)


@pytest.mark.parametrize("method", ["random", "longest"])
def test_baseline_through_run_py_writes_the_thtb_files(method, tmp_path):
    proc = run_py("+experiment=demo", "stages=[select]", "logger=none", f"selection={method}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "selection"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"input": 264, method: 33}  # the demo's THTB size
    assert summary["n_selected"] + summary["n_dropped_per_stage"][method] == 264
    card = pd.read_parquet(out / "scores.parquet")
    subset = [json.loads(x)["id"] for x in (out / "subset.jsonl").read_text().splitlines()]
    assert subset == card[card["selected"]].sort_values("rank")["id"].tolist()


def test_ifd_matches_a_direct_computation(tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thtb.scorers.ifd import IFDScorer

    queries = ["explain the theory of relativity", "write a poem about the sea", "list three primary colours"]
    responses = ["the answer is three .", "the sea and the sky", "red blue yellow"]
    out = IFDScorer(str(tiny_lm), batch_size=2, show_progress=False).score(queries, responses)
    assert out["error"].isna().all()
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()

    def mean_ce(context: list[int], target: list[int]) -> float:
        ids = torch.tensor([context + target])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(context) - 1 : -1]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(target)).item()

    for i, (q, r) in enumerate(zip(queries, responses)):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(r, add_special_tokens=False)["input_ids"]
        cond, alone = mean_ce(p_ids, r_ids), mean_ce([tok.bos_token_id], r_ids)
        assert out.at[i, "loss_conditioned"] == pytest.approx(cond, rel=1e-4)
        assert out.at[i, "loss_response"] == pytest.approx(alone, rel=1e-4)
        assert out.at[i, "ifd"] == pytest.approx(cond / alone, rel=1e-4)


def test_ifd_empty_response_is_a_failure_not_a_score(tiny_lm):
    from thtb.scorers.ifd import IFDScorer

    scorer = IFDScorer(str(tiny_lm), show_progress=False)
    recs = pd.DataFrame({"id": ["a", "b", "c"], "query": ["explain it", "list colours", "solve it"],
                         "response": ["the answer", "", "red blue"]})
    with pytest.raises(Exception, match="failure budget 0") as info:
        select_baseline(recs, IFD, 1, ifd=scorer)
    assert info.value.failed_ids == ["b"]
    result = select_baseline(recs, IFD, 1, ifd=scorer, failure_budget=1)
    card = result.card.set_index("id")
    assert card.at["b", "error"].startswith("empty response") and not card.at["b", "selected"]
    assert len(result.selected_ids) == 1


def test_ifd_excludes_misaligned_pairs_and_warns_when_short():
    class Fixed:
        def score(self, queries, responses):
            return pd.DataFrame({"ifd": [0.5, 1.2, 0.9, 0.7], "error": None})

    recs = records(4)
    result = select_baseline(recs, IFD, 3, ifd=Fixed())
    assert result.selected_ids == ["id2", "id3", "id0"]
    result = select_baseline(recs, IFD, 4, ifd=Fixed())
    assert len(result.selected_ids) == 3 and "only 3 pairs" in result.warnings[0]
    card = result.card.set_index("id")
    assert card.at["id1", "fell_at"] == "ifd" and "IFD >= 1" in card.at["id1", "why"]
