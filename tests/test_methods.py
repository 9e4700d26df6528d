"""The selection-method interface: a method defined only in a test module and a YAML (tests/plugins/) runs through
run.py and shows in the preflight, the provenance, the run line and the tables, with no other file touched; and the
package's own methods are built from their YAML's ``_target_`` alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_cfg, run_py
from thtb.methods import SelectionMethod, build_method, selection_provenance

PLUGIN_CONF = ROOT / "tests" / "plugins" / "conf"
PLUGIN = (f"hydra.searchpath=[file://{PLUGIN_CONF}]", "selection=shortest")
LABEL = "Shortest queries (plugin)"


def shortest_demo_ids(n: int) -> list[str]:
    """The demo's ``n`` shortest queries, ties by row order — computed here, not by the method."""
    from thtb.data import load_records, resolve_data_path

    records, _ = load_records(resolve_data_path("demo"), fidelity="reference")
    order = sorted(range(len(records)), key=lambda i: (len(records.at[i, "query"]), i))
    return records["id"].iloc[order[:n]].tolist()


def test_a_method_defined_outside_the_package_selects_through_run_py(tmp_path):
    proc = run_py("+experiment=demo", "stages=[select]", "logger=none", *PLUGIN, f"hydra.run.dir={tmp_path}",
                  f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "selection"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"input": 264, "shortest": 33}  # size-matched to the demo's THTB cascade
    subset = [json.loads(x)["id"] for x in (out / "subset.jsonl").read_text().splitlines()]
    assert subset == shortest_demo_ids(33)
    prov = summary["provenance"]["selection"]
    assert (prov["method"], prov["label"]) == ("shortest", LABEL)
    assert prov["class"] == "tests.plugins.shortest.ShortestQueries"
    assert prov["scorers"] == {"query_length": {"backend": "QueryLengthScorer", "model": None}}
    assert prov["scorer_setup"] == "custom" and prov["stages"] == [] and prov["seed"] is None
    card = pd.read_parquet(out / "scores.parquet")
    assert {"query_len", "shortness", "shortest_rank"} <= set(card.columns)
    assert summary["timings_s"]["query_length:query_length"] >= 0  # its scorer ran through the executor
    cost = summary["cost"]  # what the selection cost, beside what it produced
    assert cost["wall_s"] == summary["timings_s"]["total"] and cost["device_hours"] > 0
    assert cost["devices"]["kind"] in ("cpu", "cuda") and cost["judge_requests"] == 0 and cost["executor"] == "local"
    assert summary["score_stats"]["query_len"]["count"] == 264  # its declared score, described and plotted
    assert (out / "hist_query_len.png").is_file()


def test_its_preflight_names_its_own_problem(tmp_path):
    proc = run_py("+experiment=demo", "stages=[select]", "logger=none", *PLUGIN, "selection.vocabulary=/no/vocab.txt",
                  f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode != 0
    assert "select: the query-length vocabulary /no/vocab.txt: no such file; create it or set " \
           "selection.vocabulary=null" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "selection").exists()


def test_every_selection_yaml_builds_its_method_and_says_what_it_is(tmp_path):
    names = sorted(p.stem for p in (ROOT / "conf" / "selection").glob("*.yaml"))
    assert {"thtb", "random", "longest", "ifd", "superfiltering", "deita", "alpagasus", "kcenter", "rds"} <= set(names)
    for name in names:
        cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", f"selection={name}", "scoring=served",
                                                  f"paths.run_dir={tmp_path}"]), resolve=True)
        method = build_method(cfg)
        assert isinstance(method, SelectionMethod) and method.name == name and method.label
        assert method.n_select(264) == 33  # every one is size-matched to the demo's cascade
        assert not [p for p in method.key_files() if p.suffix == ".py"]  # its code is in the select stage's digest
        prov = selection_provenance(cfg, method=method)
        assert prov["method"] == name and prov["class"] == cfg["selection"]["_target_"]
        assert set(prov["scorers"]) <= set(method.scorer_configs(cfg)) | set(method.roles) | {"ifd_model"}


def test_a_plugins_own_source_is_in_its_fingerprint(tmp_path):
    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", f"paths.run_dir={tmp_path}"]), resolve=True)
    cfg["selection"] = {"_target_": "tests.plugins.shortest.ShortestQueries", "name": "shortest",
                        "scorer": {"_target_": "tests.plugins.shortest.QueryLengthScorer"}}
    assert build_method(cfg).key_files() == [ROOT / "tests" / "plugins" / "shortest.py"]
    with pytest.raises(ValueError, match="names no method class"):
        build_method({**cfg, "selection": {"name": "x"}})
    with pytest.raises(TypeError, match="not a thtb.methods.SelectionMethod"):
        build_method({**cfg, "selection": {"_target_": "collections.OrderedDict", "name": "x"}})


@pytest.mark.slow
def test_its_run_line_and_table_row(tmp_path, shared_data):
    """select → train → eval on the tiny model, then the tables: the run line carries the plugin's name and
    provenance, and its table row its label."""
    from thtb.eval.tables_stage import run_tables

    results = tmp_path / "results"
    proc = run_py("+experiment=demo", "stages=[select,train,eval]", *PLUGIN, "model=tiny_random", "train=cpu_smoke",
                  "eval=smoke", "eval.tasks=[mmlu_pro]", "eval.mmlu_pro.limit=1",
                  f"eval.mmlu_pro.data_dir={shared_data / 'mmlu_pro'}", f"eval.results_dir={results}", "logger=none",
                  f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [json.loads(x) for x in (results / "demo.jsonl").read_text().splitlines()]
    assert line["method"] == "shortest" and line["provenance"]["selection"]["label"] == LABEL
    cost = line["cost"]  # each stage's price on the run line
    assert cost["selection"]["wall_s"] > 0 and cost["training"]["tokens"] > 0
    assert cost["training"]["token_kind"] == "trained" and cost["eval"]["wall_s"] > 0
    assert cost["device_hours_total"] == pytest.approx(sum(cost[s]["device_hours"] for s in
                                                          ("selection", "training", "eval")), abs=1e-5)
    assert line["contamination"]["mmlu_pro"]["checked"] and line["contamination"]["mmlu_pro"]["n_selected"] == 33
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "tables" / "default.yaml").read_text())
    conf.update(runs_dir=str(results), out_dir=str(tmp_path / "tables"), paper_dir=str(ROOT / "results" / "paper"))
    run_tables({"tables": conf, "experiment_name": "paper_tables"}, tmp_path / "tables_run")
    md = (tmp_path / "tables" / "table1_mmlu_pro.md").read_text()
    assert any(row.startswith(f"| {LABEL}-") for row in md.splitlines()), md


# ------------------------------------------------------------------------------------------ k-center greedy
def test_farthest_first_picks_the_greedy_cover_and_its_ranking_keeps_exactly_the_picks():
    from thtb.methods.kcenter import farthest_first

    angles = np.deg2rad([0, 10, 20, 90, 100, 180, 185, 270])
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    picks, score = farthest_first(points, 4)
    # the mean lies at (0.09, 0.18): 270 is the farthest row from it, then 90 (opposite); 0 and 180 are then both
    # sqrt(2) from the nearest pick (0 wins: the lower row), then 180
    assert picks.tolist() == [7, 3, 0, 5]
    assert score[7] == 2.0 and score[3] == pytest.approx(2.0) and score[0] == score[5] == pytest.approx(np.sqrt(2))
    assert np.all(np.diff(score[picks[1:]]) <= 0)
    order = np.lexsort((np.arange(len(score)), -score))  # the ranking: score descending, ties by row
    assert sorted(order[:4].tolist()) == sorted(picks.tolist())


@pytest.fixture(scope="module")
def demo_embedder():
    """The offline embedder (real MiniLM), one instance for the module: its memo embeds each demo query once."""
    from hydra.utils import instantiate

    return instantiate(OmegaConf.to_container(compose_cfg(["+experiment=demo"]).embedder, resolve=True))


@pytest.mark.slow
def test_kcenter_picks_lie_farther_apart_than_random_ones(tmp_path, demo_embedder):
    """Its defining property on the real demo rows and the real MiniLM: the smallest distance between two picked
    queries is larger for k-center than for a random subset of the same size, for each of three seeds."""
    from scipy.spatial.distance import pdist

    from thtb.data import load_records, resolve_data_path
    from thtb.methods import SelectionContext
    from thtb.methods.kcenter import KCenterGreedy
    from thtb.methods.random import RandomSelection
    from thtb.pool import FramePool

    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", "selection=kcenter", f"paths.run_dir={tmp_path}"]),
                                 resolve=True)
    prov = selection_provenance(cfg)
    assert prov["scorers"]["embedder"]["model"] == "minilm_offline" and prov["scorer_setup"] == "offline"
    records, _ = load_records(resolve_data_path("demo"), fidelity="reference")
    pool = FramePool(records)
    embedder = demo_embedder
    result = KCenterGreedy(name="kcenter", embedder=embedder).select(pool, 33, SelectionContext())
    assert result.counts == {"input": 264, "kcenter": 33} and len(set(result.selected_ids)) == 33
    card = result.card.set_index("id")
    assert card.loc[result.selected_ids, "kcenter_order"].tolist() == list(range(1, 34))  # best first = pick order
    vectors = embedder.encode(records["query"].tolist())
    position = {i: k for k, i in enumerate(records["id"])}

    def min_gap(ids: list[str]) -> float:
        return float(pdist(vectors[[position[i] for i in ids]]).min())

    for seed in (1, 2, 3):
        random = RandomSelection(name="random").select(pool, 33, SelectionContext(seed=seed)).selected_ids
        assert min_gap(result.selected_ids) > min_gap(random)


# ------------------------------------------------------------------------------------------ RDS+
def test_round_robin_gives_each_target_its_nearest_in_turn():
    from thtb.methods.rds import round_robin

    similarity = np.array([[0.9, 0.1],   # row 0: target 0's best
                           [0.8, 0.7],   # row 1: second for both
                           [0.2, 0.9],   # row 2: target 1's best
                           [0.8, 0.0],   # row 3: ties row 1 for target 0 (row 1 first: row order)
                           [0.1, 0.1]])
    assert round_robin(similarity).tolist() == [0, 2, 1, 4, 3]  # t0: 0, t1: 2, t0: 1, t1: 4 (0.1 > 0.0), t0: 3


@pytest.mark.slow
def test_rds_picks_rows_nearer_the_target_set_than_random(tmp_path, shared_data, demo_embedder):
    """Its defining property on the real demo rows, the real MiniLM and the real MMLU-Pro validation questions: the
    picks' mean similarity to their nearest target is higher than a random subset's, for three seeds."""
    from thtb.data import load_records, resolve_data_path
    from thtb.methods import SelectionContext
    from thtb.methods.random import RandomSelection
    from thtb.methods.rds import RDSPlus
    from thtb.pool import FramePool

    target = shared_data / "mmlu_pro" / "validation.parquet"
    cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", "selection=rds", f"paths.run_dir={tmp_path}",
                                              f"selection.target.path={target}"]), resolve=True)
    method = build_method(cfg)
    assert method.key_files() == [target]  # the target set's content is part of the selection's fingerprint
    assert selection_provenance(cfg)["scorer_setup"] == "offline"
    records, _ = load_records(resolve_data_path("demo"), fidelity="reference")
    pool = FramePool(records)
    assert cfg["selection"]["embedder"] == OmegaConf.to_container(compose_cfg(["+experiment=demo"]).embedder,
                                                                   resolve=True)  # the run's embedder
    rds = RDSPlus(name="rds", embedder=demo_embedder, target=cfg["selection"]["target"])
    result = rds.select(pool, 33, SelectionContext())
    card = result.card.set_index("id")
    assert result.counts == {"input": 264, "rds": 33} and card["rds_target"].between(0, 69).all()
    picked = card.loc[result.selected_ids, "rds_similarity"].mean()
    for seed in (1, 2, 3):
        random = RandomSelection(name="random").select(pool, 33, SelectionContext(seed=seed)).selected_ids
        assert picked > card.loc[random, "rds_similarity"].mean()
    with pytest.raises(Exception, match=r"validation\.parquet.*no column 'prompt'"):
        RDSPlus(name="rds", embedder=rds.embedder, target={**rds.target, "columns": ["prompt"]}).target_texts()


def test_the_seed_is_in_the_fingerprint_of_a_seeded_method_only(tmp_path):
    """A seed sweep re-selects only where the seed changes the subset: random's, not a scored ranking's."""
    from thtb.stages.select import selection_fingerprint

    def key(name: str, seed: int) -> str:
        cfg = OmegaConf.to_container(compose_cfg(["+experiment=demo", f"selection={name}", f"seed={seed}",
                                                  f"paths.run_dir={tmp_path}"]), resolve=True)
        return selection_fingerprint(cfg, "ids")

    assert key("random", 1) != key("random", 2)
    assert key("thtb", 1) == key("thtb", 2) and key("kcenter", 1) == key("kcenter", 2)
