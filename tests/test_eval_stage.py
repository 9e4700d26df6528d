"""The eval stage end to end (select → train → eval through run.py, tiny model, SmolLM2 judge in-process),
its run line read back by the paper tables, and the config mistakes it catches before loading a model."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_cfg, missing, run_py, shared_file
from thtb.eval.sanity import NotTrainedError
from thtb.models import SmolLM2NotInstalled, smollm2_path
from thtb.eval.stage import EvalConfigError, run_eval


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_data):
    shared_file("mmlu_pro", "test.parquet", base=shared_data)
    try:
        smollm2_path()
    except SmolLM2NotInstalled as err:
        missing(str(err))
    root = tmp_path_factory.mktemp("eval_stage")
    args = ["+experiment=demo", "stages=[select,train,eval]", "model=tiny_random", "train=cpu_smoke", "eval=smoke",
            f"eval.mmlu_pro.data_dir={shared_data / 'mmlu_pro'}", f"paths.cache_dir={root / 'cache'}",
            f"eval.results_dir={root / 'results'}", "logger=wandb_offline",
            "eval.pairwise.baseline={kind: base, name: base}"]
    first = run_py(*args, f"hydra.run.dir={root / 'a'}")
    assert first.returncode == 0, first.stderr[-4000:]
    return root, args


@pytest.mark.slow
def test_eval_writes_every_output_and_a_run_line(pipeline):
    root, _ = pipeline
    out = root / "a" / "eval"
    for name in ("sanity.json", "mmlu_pro.json", "mmlu_pro_samples.jsonl", "pairwise.json", "pairwise_samples.jsonl",
                 "summary.json", "mmlu_pro_categories.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "sanity.json").read_text())["method"] == "weights"
    (line,) = [json.loads(x) for x in (root / "results" / "demo.jsonl").read_text().splitlines()]
    assert line["method"] == "thtb" and line["model"] == "tiny_random" and line["seed"] == 42
    assert line["subset_fingerprint"] and line["train_fingerprint"]
    mmlu = line["metrics"]["mmlu_pro"]
    assert mmlu["n"] == 28 and len(mmlu["categories"]) == 14 and mmlu["limit"] == 2  # the demo's slice
    assert all(v["n"] == 2 for v in mmlu["categories"].values())
    assert 0.0 <= mmlu["overall"] <= 100.0
    pw = line["metrics"]["pairwise"]
    assert pw["baseline"] == "base" and pw["order"] == "both"
    assert pw["overall"]["n"] + pw["overall"]["n_failed"] == pw["n_prompts"] == 10
    assert set(pw["subsets"]) <= {"helpful_base", "koala", "selfinstruct", "oasst", "vicuna"}
    full = json.loads((out / "pairwise.json").read_text())
    assert full["judge"]["backend"] == "hf" and full["judge"]["template"] == "pairwise_forced@1"
    assert full["position_consistency"] is not None
    # the same line went to W&B (offline run) for tables.source=wandb
    assert list((root / "a" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_every_result_says_what_produced_it(pipeline):
    """Selection summary, train summary, eval JSONs, run line and W&B carry the provenance fields."""
    root, _ = pipeline
    run = root / "a"
    select = json.loads((run / "selection" / "summary.json").read_text())["provenance"]
    sel = select["selection"]
    assert (sel["method"], sel["fidelity"], sel["scorer_setup"]) == ("thtb", "reference", "offline")
    assert sel["scorers"]["reward"]["backend"] == "HeuristicQualityScorer"  # stage 1's offline default: the rules
    assert sel["scorers"]["embedder"]["model"] == "minilm_offline" and sel["scorers"]["judge"]["model"] is None
    assert sel["fingerprint"] == json.loads((run / "selection" / "summary.json").read_text())["fingerprint"]
    for prov in (select,):
        assert prov["thtb"]["version"] and {"torch", "transformers", "scikit-learn", "lm_eval"} <= set(prov["packages"])
    train = json.loads((run / "train" / "summary.json").read_text())["provenance"]
    assert train["selection"] == sel
    assert (train["training"]["recipe"], train["training"]["model"]) == ("cpu_smoke", "tiny_random")
    mmlu = json.loads((run / "eval" / "mmlu_pro.json").read_text())["provenance"]
    assert mmlu["protocol"]["protocol"] == "tiger" and mmlu["protocol"]["prompt_format"] == "tiger_api"
    assert "TIGER chain" in mmlu["protocol"]["extraction"] and mmlu["packages"]["lm_eval"]
    pairwise = json.loads((run / "eval" / "pairwise.json").read_text())["provenance"]
    assert pairwise["protocol"]["prompt"] == "pairwise_forced@1" and pairwise["protocol"]["judge"] == "smollm2"
    (line, *_) = [json.loads(x) for x in (root / "results" / "demo.jsonl").read_text().splitlines()]
    prov = line["provenance"]
    assert prov["selection"] == sel and prov["training"]["recipe"] == "cpu_smoke"
    assert set(prov["eval"]) >= {"mmlu_pro", "pairwise"} and prov["thtb"]["commit"] == select["thtb"]["commit"]
    blob = b"".join(p.read_bytes() for p in next((run / "wandb").glob("offline-run-*")).rglob("*") if p.is_file())
    assert b"scorer_setup" in blob and b"provenance" in blob and b"lm_eval" in blob  # W&B config and summary


@pytest.mark.slow
def test_rerun_reuses_training_and_generations(pipeline):
    root, args = pipeline
    again = run_py(*args, f"hydra.run.dir={root / 'b'}")
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads((root / "b" / "train" / "summary.json").read_text())["reused"] is True
    pairwise = json.loads((root / "b" / "eval" / "pairwise.json").read_text())
    assert pairwise["generation_stats"]["model"]["calls"] == 0  # outputs cached by model content
    assert pairwise["judge_stats"]["calls"] == 0
    lines = (root / "results" / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["metrics"] == json.loads(lines[0])["metrics"]


@pytest.mark.slow
def test_paper_tables_read_the_run_line(pipeline, tmp_path):
    root, _ = pipeline
    proc = run_py("+experiment=paper_tables", f"tables.runs_dir={root / 'results'}", f"tables.out_dir={tmp_path}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads((root / "results" / "demo.jsonl").read_text().splitlines()[0])
    table = (tmp_path / "table1_mmlu_pro.csv").read_text()
    assert f"{line['metrics']['mmlu_pro']['overall']:.2f}" in table or str(line["metrics"]["mmlu_pro"]["overall"]) in table


def _cfg(tmp_path, *overrides):
    cfg = compose_cfg(["+experiment=demo", f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
                       f"eval.results_dir={tmp_path / 'results'}",
                       "eval.mmlu_pro.data_dir=null",  # no parquet needed: these checks stop before MMLU-Pro runs
                       *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_config_mistakes_fail_before_any_model_loads(tmp_path):
    with pytest.raises(EvalConfigError, match="eval.pairwise needs an LLM judge"):
        run_eval(_cfg(tmp_path, "eval=paper"), tmp_path)
    with pytest.raises(EvalConfigError, match="eval.tasks must be"):
        run_eval(_cfg(tmp_path, "eval=smoke", "eval.tasks=[mmlu_pro,bogus]"), tmp_path)
    with pytest.raises(EvalConfigError, match="eval.exam.path"):
        run_eval(_cfg(tmp_path, "eval=smoke", "eval.tasks=[exam]"), tmp_path)
    with pytest.raises(EvalConfigError, match="run the train stage first"):
        run_eval(_cfg(tmp_path, "eval=smoke", "eval.tasks=[mmlu_pro]"), tmp_path)
    with pytest.raises(FileNotFoundError, match="test.parquet"):
        run_eval(_cfg(tmp_path, "eval=smoke", f"eval.mmlu_pro.data_dir={tmp_path}"), tmp_path)
    # the paper's baseline — the full-data model of the same size — must have been trained
    with pytest.raises(EvalConfigError, match=r"no finished training of experiment 'alpaca_full'.*\+experiment=alpaca_full"):
        run_eval(_cfg(tmp_path, "eval=smoke", "eval.pairwise.baseline={kind: run, experiment: alpaca_full}"), tmp_path)


def test_base_model_passed_off_as_trained_is_refused(tmp_path):
    cfg = _cfg(tmp_path, "eval=smoke", "model=tiny_random", "eval.tasks=[mmlu_pro]")
    from thtb.eval.stage import base_model_path

    fake = tmp_path / "not_trained"
    shutil.copytree(base_model_path(cfg), fake)
    cfg["eval"]["model"] = str(fake)
    with pytest.raises(NotTrainedError, match="same weights as the base model"):
        run_eval(cfg, tmp_path)
    assert not (tmp_path / "eval" / "mmlu_pro.json").exists()
