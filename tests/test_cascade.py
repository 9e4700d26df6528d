"""Cascade mechanics with small deterministic fake scorers (no models)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thtb.cascade import Cascade, CascadeConfig, SelectionError, n_keep, top_k
from thtb.scorers.base import (
    BLOOM_LEVELS,
    BloomScorer,
    DescriptionError,
    DisciplineTagger,
    Embedder,
    QualityScorer,
)


class LengthQuality(QualityScorer):
    """quality_raw = number of words in the response; rows listed in ``fail`` return an error."""

    name = "length"
    normalization = "minmax"

    def __init__(self, fail=()):
        self.fail = set(fail)
        self.seen: list[str] = []

    def score(self, queries, responses):
        self.seen.extend(queries)
        raw = [float(len(r.split())) for r in responses]
        err = [("reward server 503" if q in self.fail else None) for q in queries]
        return pd.DataFrame({"quality_raw": raw, "quality_reason": "words", "error": err})


class KeywordBloom(BloomScorer):
    """Level from a keyword at the start of the query ("design" → Create …)."""

    name = "keyword"
    words = {"list": 0, "explain": 1, "solve": 2, "compare": 3, "judge": 4, "design": 5}

    def __init__(self):
        self.seen: list[str] = []

    def score(self, queries, responses):
        self.seen.extend(queries)
        idx = [self.words.get(q.split()[0].lower(), 0) for q in queries]
        return pd.DataFrame(
            {
                "bloom_level": [BLOOM_LEVELS[i] for i in idx],
                "bloom_score": [3 * i + 2 for i in idx],
                "bloom_reason": "keyword",
                "error": None,
            }
        )


class FixedTagger(DisciplineTagger):
    name = "fixed"

    def tag(self, queries):
        out = [["physics", "economics"] if "market" in q else ["physics"] for q in queries]
        return pd.DataFrame({"disciplines": out, "error": None})

    def describe(self, disciplines):
        return {d: f"the study of {d}" for d in disciplines}


class AxisEmbedder(Embedder):
    name = "axis"

    def encode(self, texts):
        vecs = np.zeros((len(texts), 4), dtype=np.float32)
        for i, t in enumerate(texts):
            vecs[i, hash(t.split()[-1]) % 4] = 1.0
        return vecs


def make_records(n: int) -> pd.DataFrame:
    verbs = ["list", "explain", "solve", "compare", "judge", "design"]
    rows = []
    for i in range(n):
        q = f"{verbs[i % 6]} topic {i} " + ("of the market" if i % 5 == 0 else "in the lab")
        r = " ".join(["word"] * (5 + (i * 7) % 23)) + f" answer {i}."
        rows.append({"id": f"id{i:04d}", "query": q, "response": r})
    return pd.DataFrame(rows)


class UndescribableTagger(FixedTagger):
    """``economics`` cannot be described (as when the judge keeps answering garbage)."""

    def describe(self, disciplines):
        described = {d: f"the study of {d}" for d in disciplines if d != "economics"}
        if "economics" in disciplines:
            raise DescriptionError({"economics": "parse: no prose (after 3 answers)"}, described)
        return described


def make_cascade(**overrides) -> Cascade:
    params = dict(fractions={"quality": 0.5, "intrinsic": 0.5, "extrinsic": 0.5}, k=3)
    params.update(overrides.pop("config", {}))
    return Cascade(
        CascadeConfig(**params),
        quality=overrides.get("quality", LengthQuality()),
        bloom=overrides.get("bloom", KeywordBloom()),
        disciplines=overrides.get("disciplines", FixedTagger()),
        embedder=AxisEmbedder(),
    )


def test_n_keep_and_top_k_rules():
    assert n_keep(52002, 0.2) == 10400
    assert n_keep(10400, 0.5) == 5200
    assert n_keep(100, 0.29) == 29  # float error absorbed
    assert n_keep(3, 0.1) == 1  # never zero from a non-empty input
    with pytest.raises(ValueError):
        n_keep(10, 0)
    # ties broken by input order
    assert top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 3).tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([1.0, np.nan]), 1)


def test_cascade_counts_ranks_and_stage_inputs():
    records = make_records(80)
    quality, bloom = LengthQuality(), KeywordBloom()
    result = make_cascade(quality=quality, bloom=bloom).run(records)
    assert result.counts == {"input": 80, "quality": 40, "intrinsic": 20, "extrinsic": 10}
    card = result.card
    assert len(card) == 80 and card["id"].tolist() == records["id"].tolist()
    # expensive scorers only see the survivors of the previous stage
    assert len(quality.seen) == 80 and len(bloom.seen) == 40
    assert (card["fell_at"].value_counts().to_dict()) == {"quality": 40, "intrinsic": 20, "extrinsic": 10, "selected": 10}
    # the selected are the top EHS of the stage-3 input, best first, with ranks 1..10
    stage3 = card[card["quality_rank"].notna() & card["intrinsic_rank"].le(20)]
    best = stage3.sort_values(["ehs", "row"], ascending=[False, True]).head(10)["id"].tolist()
    assert result.selected_ids == best
    assert card.set_index("id").loc[result.selected_ids, "rank"].tolist() == list(range(1, 11))
    # every dropped sample says why, with its rank
    assert card.loc[card["fell_at"] == "quality", "why"].str.contains("below the cut-off").all()
    # the normalised scores exist exactly where the stage ran
    assert card["quality"].notna().sum() == 80 and card["ihs"].notna().sum() == 40 and card["ehs"].notna().sum() == 20


def test_fractional_judge_scores_flow_through_the_intrinsic_stage():
    """A judge answering "7.5" (accepted as the authors' parser reads it) gives Bloom = (7.5 − 1) / 20."""

    class HalfBloom(KeywordBloom):
        def score(self, queries, responses):
            out = super().score(queries, responses)
            out["bloom_score"] = out["bloom_score"] + 0.5  # 2.5, 5.5, … stay inside each level's band
            return out

    result = make_cascade(quality=LengthQuality(), bloom=HalfBloom()).run(make_records(80))
    scored = result.card[result.card["bloom"].notna()]
    assert len(scored) == 40 and (scored["bloom_score"] % 1 == 0.5).all()
    assert scored["bloom"].to_numpy() == pytest.approx(((scored["bloom_score"] - 1) / 20).to_numpy())


def test_cascade_is_deterministic():
    records = make_records(60)
    a = make_cascade().run(records)
    b = make_cascade().run(records)
    assert a.selected_ids == b.selected_ids
    pd.testing.assert_frame_equal(a.card, b.card)


def test_budget_sets_the_final_size_and_checks_feasibility():
    records = make_records(100)
    result = make_cascade(config={"budget": 0.2}).run(records)
    assert result.counts["extrinsic"] == 20
    with pytest.raises(SelectionError, match="budget"):
        make_cascade(config={"budget": 0.4}).run(records)


def test_ablation_runs_only_listed_stages_in_thtb_order():
    records = make_records(40)
    quality = LengthQuality()
    cascade = Cascade(
        CascadeConfig(stages=["extrinsic", "intrinsic"], fractions={"intrinsic": 0.5, "extrinsic": 0.5}, k=3),
        bloom=KeywordBloom(),
        disciplines=FixedTagger(),
        embedder=AxisEmbedder(),
    )
    result = cascade.run(records)
    assert list(result.counts) == ["input", "intrinsic", "extrinsic"]
    assert "quality_raw" not in result.card and quality.seen == []


def test_failures_within_budget_are_recorded_not_silent():
    records = make_records(40)
    failing = set(records["query"].iloc[[3, 7]])
    result = make_cascade(quality=LengthQuality(fail=failing), config={"failure_budget": 2}).run(records)
    card = result.card
    failed = card[card["error"].notna()]
    assert failed["id"].tolist() == ["id0003", "id0007"]
    assert (failed["fell_at"] == "quality").all() and failed["why"].str.contains("reward server 503").all()
    assert result.failures == {"quality": ["id0003", "id0007"]}
    # the rest is ranked as if the failed samples did not exist: 38 → 19
    assert result.counts["quality"] == 19


def test_failures_over_budget_stop_the_run_with_ids():
    records = make_records(40)
    failing = set(records["query"].iloc[[3, 7]])
    with pytest.raises(SelectionError, match="failure budget 1") as info:
        make_cascade(quality=LengthQuality(fail=failing), config={"failure_budget": 1}).run(records)
    assert info.value.failed_ids == ["id0003", "id0007"]
    assert "id0003" in str(info.value)


def test_undescribed_discipline_fails_its_samples_against_the_budget():
    records = make_records(60)  # every 5th query mentions the market → tagged physics + economics
    cascade = make_cascade(disciplines=UndescribableTagger(), config={"failure_budget": 60})
    result = cascade.run(records)
    card = result.card
    failed = card[card["error"].notna()]
    assert len(failed) > 0 and (failed["fell_at"] == "intrinsic").all()
    assert failed["error"].str.startswith("discipline description failed: economics (parse:").all()
    assert all("economics" in tags for tags in failed["disciplines"])
    # the samples without economics were scored as usual; the failed ones carry no IHS
    reached = card[card["bloom_level"].notna() & card["error"].isna()]
    assert reached["ihs"].notna().all() and failed["ihs"].isna().all()
    assert sorted(result.failures["intrinsic"]) == failed["id"].tolist() and list(result.failures) == ["intrinsic"]
    # with the default budget (0) the run stops and lists them
    with pytest.raises(SelectionError, match="discipline description failed: economics") as info:
        make_cascade(disciplines=UndescribableTagger()).run(records)
    assert sorted(info.value.failed_ids) == failed["id"].tolist()


def test_nan_without_error_counts_as_failure():
    class NanQuality(LengthQuality):
        def score(self, queries, responses):
            out = super().score(queries, responses)
            out.loc[0, "quality_raw"] = np.nan
            return out

    with pytest.raises(SelectionError, match="NaN"):
        make_cascade(quality=NanQuality()).run(make_records(20))


def test_scorer_contract_is_checked():
    class Short(LengthQuality):
        def score(self, queries, responses):
            return super().score(queries, responses).iloc[:-1]

    with pytest.raises(ValueError, match="rows for"):
        make_cascade(quality=Short()).run(make_records(20))


def test_config_validation():
    with pytest.raises(ValueError, match="selection.stages"):
        CascadeConfig(stages=["quality", "bogus"])
    with pytest.raises(ValueError, match="fidelity"):
        CascadeConfig(fidelity="exact")
    with pytest.raises(ValueError, match="needs a quality scorer"):
        Cascade(CascadeConfig(stages=["quality"]))


def test_every_sample_failing_within_budget_selects_nothing_and_accounts_for_all():
    from thtb.report import build_summary

    records = make_records(20)
    result = make_cascade(quality=LengthQuality(fail=set(records["query"])), config={"failure_budget": 20}).run(records)
    assert result.selected_ids == [] and result.counts == {"input": 20, "quality": 0}
    summary = build_summary(result, fingerprint="f", load_report={}, labels=None)
    assert summary["n_failed"] == 20 and summary["n_selected"] == 0


def test_the_thtb_config_states_the_cascade_defaults_and_passes_them_through(tmp_path):
    """``conf/selection/thtb.yaml`` and :class:`CascadeConfig` hold the same defaults (a library user without Hydra
    gets what ``run.py`` gets), and every ``selection.intrinsic`` / ``selection.extrinsic`` key reaches the cascade
    by its own name — a key the cascade does not know is an error, not silently ignored."""
    import dataclasses

    from omegaconf import OmegaConf

    from tests.helpers import compose_cfg
    from thtb.methods import build_method

    cfg = OmegaConf.to_container(compose_cfg(["selection=thtb", f"paths.run_dir={tmp_path}"]), resolve=True)
    method = build_method(cfg)
    built, default = method.cascade_config(cfg["fidelity"]), CascadeConfig(fidelity=cfg["fidelity"])
    assert dataclasses.asdict(built) == dataclasses.asdict(default)
    assert {**cfg["selection"]["intrinsic"], **cfg["selection"]["extrinsic"]}.keys() <= {
        f.name for f in dataclasses.fields(CascadeConfig)}
    cfg["selection"]["extrinsic"]["k"] = 7
    assert build_method(cfg).cascade_config(cfg["fidelity"]).k == 7
    cfg["selection"]["extrinsic"]["clusters"] = 7
    with pytest.raises(TypeError, match="clusters"):
        build_method(cfg).cascade_config(cfg["fidelity"])
