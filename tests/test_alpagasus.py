"""The AlpaGasus baseline: judge rating ≥ threshold, then the longest responses, size-matched to THTB.

The baseline is tested with a fixed fake scorer; the judge scorer and the select stage go through the
in-process fake OpenAI-compatible server of ``tests/helpers.py``.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.helpers import FakeServer, compose_cfg, make_judge
from thtb.cascade import SelectionError
from thtb.judge import ALPAGASUS, JudgeAlpaGasusScorer, OpenAIJudge
from thtb.methods import SelectionContext
from thtb.methods.alpagasus import AlpaGasus
from thtb.pool import FramePool


class Fixed:
    """A scorer returning fixed ratings (``None`` → NaN) and errors."""

    def __init__(self, scores, errors=None):
        self.scores, self.errors = scores, errors
        self.calls = 0

    def score(self, queries, responses):
        self.calls += 1
        assert len(queries) == len(responses) == len(self.scores)
        scores = [np.nan if s is None else s for s in self.scores]
        return pd.DataFrame({"alpagasus_score": scores, "alpagasus_reason": "r",
                             "error": self.errors or [None] * len(scores)})


def select_alpagasus(recs: pd.DataFrame, n: int, *, scorer, failure_budget: int = 0, **kwargs):
    """The AlpaGasus method over ``recs`` with ``scorer`` as its judge scorer."""
    method = AlpaGasus(name="alpagasus", alpagasus=scorer, failure_budget=failure_budget, **kwargs)
    return method.select(FramePool(recs), n, SelectionContext())


def records(lengths) -> pd.DataFrame:
    n = len(lengths)
    return pd.DataFrame({"id": [f"id{i}" for i in range(n)], "query": [f"q{i}" for i in range(n)],
                         "response": ["x" * k for k in lengths]})


# ------------------------------------------------------------------------------ the baseline
def test_threshold_then_longest_ties_by_row():
    recs = records([5, 9, 3, 9, 20, 7, 1, 9])
    scorer = Fixed([4.5, 5.0, 4.0, 4.5, 3.5, 5.0, 4.9, 4.5])
    result = select_alpagasus(recs, 3, scorer=scorer)
    # passing (>= 4.5): id0 (5), id1 (9), id3 (9), id5 (7), id6 (1), id7 (9); id4 is longest but rated 3.5
    assert result.selected_ids == ["id1", "id3", "id7"]
    assert result.counts == {"input": 8, "alpagasus": 3} and not result.warnings
    assert result.rank_columns == {"alpagasus": "response_len"} and result.cutoffs == {"alpagasus": 9.0}
    card = result.card.set_index("id")
    assert card.loc[result.selected_ids, "rank"].tolist() == [1, 2, 3]
    assert card.loc[["id2", "id4"], "fell_at"].tolist() == ["alpagasus"] * 2
    assert card.at["id4", "why"] == "alpagasus score 3.5 below the threshold 4.5"
    assert card.at["id2", "why"] == "alpagasus score 4 below the threshold 4.5"
    assert "below the cut-off" in card.at["id5", "why"] and card.at["id5", "fell_at"] == "alpagasus"
    assert pd.isna(card.at["id4", "alpagasus_rank"]) and card.at["id5", "alpagasus_rank"] == 4
    assert card["alpagasus_score"].tolist() == scorer.scores
    assert card["response_len"].tolist() == [5, 9, 3, 9, 20, 7, 1, 9]
    assert card["error"].isna().all() and scorer.calls == 1


def test_threshold_is_a_parameter():
    recs = records([5, 9, 3, 9, 20])
    scorer = Fixed([4.5, 5.0, 4.0, 4.5, 3.5])
    assert select_alpagasus(recs, 2, scorer=scorer, threshold=3.5).selected_ids == ["id4", "id1"]
    assert select_alpagasus(recs, 2, scorer=scorer, threshold=5).selected_ids == ["id1"]
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        select_alpagasus(recs, 2, scorer=scorer, threshold=6)
    with pytest.raises(TypeError, match="alpagasus"):
        AlpaGasus(name="alpagasus")  # no judge scorer


def test_fewer_than_n_pass_keeps_all_and_warns(caplog):
    recs = records([5, 9, 3, 9, 20])
    result = select_alpagasus(recs, 4, scorer=Fixed([4.5, 1.0, 4.0, 5.0, 3.5]))
    assert result.selected_ids == ["id3", "id0"]
    assert result.counts == {"input": 5, "alpagasus": 2}
    assert "only 2 pairs score >= 4.5" in result.warnings[0] and "not 4" in result.warnings[0]
    assert "only 2 pairs" in caplog.text
    none = select_alpagasus(recs, 2, scorer=Fixed([1.0] * 5))
    assert none.selected_ids == [] and "only 0 pairs" in none.warnings[0]
    assert (none.card["fell_at"] == "alpagasus").all()


def test_failures_count_against_the_budget():
    recs = records([5, 9, 3, 9, 20])
    scorer = Fixed([4.5, None, 5.0, None, 5.0], errors=[None, "parse: bad (after 3 answers)", None, None, None])
    with pytest.raises(SelectionError, match="failure budget 1") as info:
        select_alpagasus(recs, 2, scorer=scorer, failure_budget=1)
    assert info.value.failed_ids == ["id1", "id3"]  # a NaN without an error is a failure too
    result = select_alpagasus(recs, 2, scorer=scorer, failure_budget=2)
    assert result.selected_ids == ["id4", "id0"] and result.failures == {"alpagasus": ["id1", "id3"]}
    card = result.card.set_index("id")
    assert card.at["id1", "error"] == "parse: bad (after 3 answers)" and card.at["id1", "fell_at"] == "alpagasus"
    assert card.at["id3", "error"] == "scorer returned no alpagasus_score"
    assert card.at["id1", "why"].startswith("failed:") and not card.loc[["id1", "id3"], "selected"].any()


# ------------------------------------------------------------------------------ the judge scorer
def rating(body: dict) -> str:
    """A deterministic AlpaGasus answer: the score follows the prompt's checksum (0, 0.5, …, 5)."""
    user = body["messages"][1]["content"]  # the rating request (a re-ask appends to the conversation)
    if "unrateable" in user:
        return "I cannot rate this."
    return f"{zlib.crc32(user.encode()) % 11 / 2}\nExplanation of the score."


@pytest.fixture
def server():
    srv = FakeServer()
    srv.script = lambda n, body: (200, rating(body), 0.0)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-alpagasus-test")


def test_judge_scorer_through_the_fake_server(server, tmp_path):
    judge = make_judge(server, tmp_path, max_attempts=2)
    scorer = JudgeAlpaGasusScorer(judge)
    queries = ["Give three tips for staying healthy.", "", "unrateable query", "Name the capital of France."]
    responses = ["Eat, sleep, move.", "orphan", "x", "Paris."]
    out = scorer.score(queries, responses)
    assert list(out.columns) == ["alpagasus_score", "alpagasus_reason", "error"]
    assert out["alpagasus_score"].dtype == np.float64
    for i in (0, 3):
        expected = rating({"messages": ALPAGASUS.messages({"query": queries[i], "response": responses[i]})})
        assert out.at[i, "alpagasus_score"] == float(expected.split("\n")[0])
        assert out.at[i, "alpagasus_reason"] == "Explanation of the score." and out.at[i, "error"] is None
    assert out.at[1, "error"] == "empty query" and np.isnan(out.at[1, "alpagasus_score"])
    assert out.at[2, "error"].startswith("parse:") and "after 2 answers" in out.at[2, "error"]
    assert np.isnan(out.at[2, "alpagasus_score"]) and out.at[2, "alpagasus_reason"] is None
    first = server.requests[0]
    assert first["temperature"] == 0 and first["messages"][0]["content"].startswith("We would like to request")
    assert server.count == 4  # 2 rated + 2 answers for the unrateable one; none for the empty query
    again = JudgeAlpaGasusScorer(make_judge(server, tmp_path)).score(queries, responses)
    assert server.count == 4  # every finished request came from the cache
    pd.testing.assert_frame_equal(out, again)


def test_judge_scorer_accepts_a_mapping(server, tmp_path):
    scorer = JudgeAlpaGasusScorer({"model": "m", "base_url": server.base_url, "progress": False,
                                   "cache": str(tmp_path / "c.sqlite")})
    assert isinstance(scorer.judge, OpenAIJudge) and scorer.judge.base_url == server.base_url
    with pytest.raises(TypeError):
        JudgeAlpaGasusScorer(42)
    with pytest.raises(ValueError, match="2 queries but 1 responses"):
        scorer.score(["a", "b"], ["c"])


# ------------------------------------------------------------------------------ config and stage
def served_cfg(tmp_path, base_url: str = "http://127.0.0.1:9/v1", *extra: str) -> dict:
    cfg = compose_cfg(["+experiment=demo", "selection=alpagasus", "scoring=served", f"paths.run_dir={tmp_path}",
                       f"paths.cache_dir={tmp_path / 'cache'}",
                       f"judge.base_url={base_url}", f"judge.cache={tmp_path / 'judge.sqlite'}", *extra])
    return OmegaConf.to_container(cfg, resolve=True)


def test_config_composes_and_builds_the_scorer(tmp_path):
    cfg = served_cfg(tmp_path)
    sel = cfg["selection"]
    assert get_class(sel["_target_"]) is AlpaGasus and sel["threshold"] == 4.5 and sel["size"] is None
    assert get_class(sel["alpagasus"]["_target_"]) is JudgeAlpaGasusScorer
    assert sel["alpagasus"]["judge"]["_target_"] == "thtb.judge.OpenAIJudge"
    scorer = instantiate(sel["alpagasus"])
    assert isinstance(scorer, JudgeAlpaGasusScorer) and isinstance(scorer.judge, OpenAIJudge)
    assert scorer.judge.base_url == "http://127.0.0.1:9/v1" and scorer.judge.model == cfg["judge"]["model"]


def test_select_stage_runs_the_baseline(server, tmp_path):
    from thtb.stages.select import run_select

    cfg = served_cfg(tmp_path, server.base_url, "judge.failure_budget=0", "selection.threshold=3",
                     "data.limit=40", "selection.plots=false")
    cfg["judge"]["client"]["progress"] = False
    cfg["selection"]["alpagasus"]["judge"]["progress"] = False
    summary = run_select(cfg, tmp_path)
    out = tmp_path / "selection"
    card = pd.read_parquet(out / "scores.parquet")
    assert summary["counts"]["input"] == 40 and summary["scorers"]["judge"]["calls"] == 40
    passed = card[card["alpagasus_score"] >= 3]
    n = min(len(passed), 5)  # 40 → 20 → 10 → 5 with the demo's fractions
    assert summary["n_selected"] == n and summary["n_dropped_per_stage"]["alpagasus"] == 40 - n
    expected = passed.assign(len=passed["response"].str.len()).sort_values(["len", "row"], ascending=[False, True])
    subset = [json.loads(x)["id"] for x in (out / "subset.jsonl").read_text().splitlines()]
    assert subset == expected["id"].head(n).tolist()
    assert {"alpagasus_score", "alpagasus_reason", "response_len", "alpagasus_rank"} <= set(card.columns)
    assert summary["cutoffs"]["alpagasus"]["column"] == "response_len"
    assert "alpagasus_score" in summary["score_stats"]
