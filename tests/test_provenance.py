"""Provenance: code digests that key the caches, and the identities every result carries.

The cache tests run ``run.py`` from a copy of the project (``thtb/``, ``conf/``, ``eval/``, ``run.py``), edit a
file of the copy the way a developer would, and rerun: the edit must change the key, so nothing stale is served.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_cfg, shared_file
from thtb import provenance
from thtb.eval.provenance import selection_deviations
from thtb.methods import check_scorers_available, selection_provenance
from thtb.scorers.availability import ScorerUnavailableError


def _copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("thtb", "conf", "train", "eval"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "run.py", dest / "run.py")
    return dest


def _python(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("THTB_EVAL_TASKS_DIR", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


# ------------------------------------------------------------------------------------------ code digests
def test_stage_closure_follows_imports_and_config_targets():
    select = dict(provenance.module_closure(provenance.STAGE_MODULES["select"]))
    for module in ("thtb.stages.select", "thtb.cascade", "thtb.maths.silhouette", "thtb.maths.text", "thtb.data.readers"):
        assert module in select, module
    assert select["thtb.maths.text"] == ROOT / "thtb" / "maths" / "text.py"
    assert "thtb.eval.mmlu_pro" not in select  # selection does not depend on the eval code
    cfg = {"reward": {"_target_": "thtb.scorers.quality.HeuristicQualityScorer"},
           "judge": {"bloom": {"_target_": "thtb.judge.JudgeBloomScorer"}}}
    assert provenance.config_targets(cfg) == ["thtb.scorers.quality", "thtb.judge"]
    with_judge = dict(provenance.module_closure(("thtb.stages.select", *provenance.config_targets(cfg))))
    assert {"thtb.scorers.quality", "thtb.judge.prompts", "thtb.judge.parsers"} <= set(with_judge)
    assert provenance.stage_key_inputs("select", cfg)["code"] != provenance.stage_key_inputs("select")["code"]
    assert set(provenance.stage_key_inputs("train")["packages"]) >= {"torch", "transformers", "trl", "peft"}
    assert "scikit-learn" in provenance.stage_key_inputs("select")["packages"]


def test_extra_files_change_the_digest(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: x\n")
    before = provenance.code_digest(["thtb.eval.stage"], extra_files=[tasks])
    assert provenance.code_digest(["thtb.eval.stage"], extra_files=[tasks]) == before  # deterministic
    _append(tasks / "t.yaml", "# edited\n")
    assert provenance.code_digest(["thtb.eval.stage"], extra_files=[tasks]) != before


def test_environment_names_the_commit_and_packages():
    env = provenance.environment()
    assert env["thtb"]["version"]
    if (ROOT / ".git").exists() and shutil.which("git"):
        assert len(env["thtb"]["commit"]) == 40 and isinstance(env["thtb"]["dirty"], bool)
    assert {"torch", "transformers", "peft", "trl", "lm_eval", "scikit-learn"} <= set(env["packages"])


# --------------------------------------------------------------------------- edits invalidate the caches
@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    return _copy_project(tmp_path_factory.mktemp("project"))


@pytest.mark.slow  # end to end through run.py: the slow tier (CI runs it)
def test_editing_a_resource_file_recomputes_the_selection(project_copy, tmp_path):
    args = ["run.py", "+experiment=demo", "stages=[select]", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = _python(project_copy, *args, f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    again = _python(project_copy, *args, f"hydra.run.dir={tmp_path / 'b'}")
    assert "done: select reused" in again.stderr + again.stdout
    _append(project_copy / "thtb" / "resources" / "bloom.yaml", "\n# a maintainer's edit\n")
    edited = _python(project_copy, *args, f"hydra.run.dir={tmp_path / 'c'}")
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert "done: select ran" in edited.stderr + edited.stdout  # recomputed, not served stale
    fps = [json.loads((tmp_path / d / "selection" / "summary.json").read_text())["fingerprint"] for d in "abc"]
    assert fps[0] == fps[1] != fps[2]


_KEYS = """
import json, sys
from omegaconf import OmegaConf
from hydra import compose, initialize_config_dir
from thtb.stages.select import selection_fingerprint
from thtb.eval.stage import task_fingerprint
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = OmegaConf.to_container(compose("config", overrides=["+experiment=demo", "scoring=served",
                                 "paths.run_dir=/tmp/x", "eval.mmlu_pro.data_dir=null"]), resolve=True)
print(json.dumps({"select": selection_fingerprint(cfg, "ids"),
                  "eval": task_fingerprint(cfg, "mmlu_pro", "smollm2/model")}))
"""


def test_editing_a_prompt_template_or_an_eval_task_changes_the_keys(project_copy):
    def keys():
        proc = _python(project_copy, "-c", _KEYS, str(project_copy / "conf"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    before = keys()
    assert keys() == before
    _append(project_copy / "thtb" / "judge" / "prompts.py", "\n# reworded\n")  # a judge prompt: selection key
    after_prompt = keys()
    assert after_prompt["select"] != before["select"]
    _append(project_copy / "eval" / "tasks" / "mmlu_pro_local" / "_default_template_yaml", "\n# edited\n")
    after_task = keys()
    assert after_task["eval"] != after_prompt["eval"] and after_task["select"] == after_prompt["select"]


# ------------------------------------------------------------------------------------------ experiments
def _resolved(*overrides: str, tmp_path: Path) -> dict:
    return OmegaConf.to_container(compose_cfg([*overrides, f"paths.run_dir={tmp_path}"]), resolve=True)


@pytest.mark.parametrize("experiment", ["alpaca_5pct", "alpaca_2pct", "alpaca_no_quality", "alpaca_no_ihs",
                                        "alpaca_no_ehs"])
def test_paper_experiments_select_with_the_papers_scorers(experiment, tmp_path):
    cfg = _resolved(f"+experiment={experiment}", tmp_path=tmp_path)
    prov = selection_provenance(cfg)
    assert prov["scorer_setup"] == "authors", prov
    offline = selection_provenance(_resolved(f"+experiment={experiment}", "scoring=offline",
                                                        tmp_path=tmp_path))
    assert offline["scorer_setup"] == "offline"
    assert selection_deviations(offline) == ["offline scorers"]


def test_paper_scorers_that_cannot_load_stop_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _resolved("+experiment=alpaca_5pct", "judge.base_url=http://127.0.0.1:9/v1", tmp_path=tmp_path)
    with pytest.raises(ScorerUnavailableError) as err:
        check_scorers_available(cfg)
    text = str(err.value)
    assert "internlm/internlm2-7b-reward" in text and "BAAI/bge-large-en-v1.5" in text
    assert "Qwen/Qwen3-32B at judge.base_url=http://127.0.0.1:9/v1" in text and "scoring=offline" in text
    check_scorers_available(_resolved("+experiment=alpaca_5pct", "scoring=offline", tmp_path=tmp_path))


def test_each_judge_server_of_a_list_is_checked(tmp_path, monkeypatch):
    """``judge.base_url`` as a Hydra list: the preflight asks every server, and names the one that does not answer."""
    from tests.helpers import FakeServer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    live = FakeServer()
    try:
        cfg = _resolved("+experiment=demo", "scoring=served", f"judge.base_url=[{live.base_url},http://127.0.0.1:9/v1]",
                        tmp_path=tmp_path)
        with pytest.raises(ScorerUnavailableError, match=r"at judge.base_url=http://127.0.0.1:9/v1: "):
            check_scorers_available(cfg)
        check_scorers_available(_resolved("+experiment=demo", "scoring=served", f"judge.base_url=[{live.base_url}]",
                                          tmp_path=tmp_path))
    finally:
        live.close()


def test_paper_experiment_without_its_models_exits_early_through_run_py(tmp_path, shared_data):
    alpaca = shared_file("alpaca", "alpaca_data.json", base=shared_data)
    proc = _python(ROOT, "run.py", "+experiment=alpaca_5pct", "stages=[select]", "judge.base_url=http://127.0.0.1:9/v1",
                   f"data.path={alpaca}", "data.limit=500", f"hydra.run.dir={tmp_path}",
                   f"paths.cache_dir={tmp_path / 'cache'}", timeout=120)
    assert proc.returncode != 0
    assert "internlm/internlm2-7b-reward" in proc.stderr and "scoring=offline" in proc.stderr
    assert not (tmp_path / "selection").exists()
