"""A researcher's first hour: a run fails in seconds, not after training; ablations and budgets say what they
are; a budget re-cut scores nothing again; a stage that carries no signal says so; a small judge gives a verdict
on every pairwise prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import compose_cfg, run_py


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "selection" / "summary.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- fail fast
def test_a_missing_eval_baseline_stops_the_run_before_any_stage(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_py("+experiment=demo", "eval.pairwise.baseline.experiment=no_such_experiment",
                  f"eval.exam.path={tmp_path / 'no_exam.json'}", "eval.tasks=[mmlu_pro,pairwise,exam]",
                  f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    assert "found before the first stage; nothing has run" in err
    assert "no finished training of experiment 'no_such_experiment'" in err  # both problems, listed at once
    assert "no_exam.json" in err and "is not a file" in err
    assert not (run_dir / "selection").exists() and not (run_dir / "train").exists()  # nothing ran
    assert "Loading weights" not in err  # no model was loaded (transformers reports every load)


def test_a_missing_offline_model_is_named_before_any_stage(tmp_path):
    proc = run_py("+experiment=demo", "stages=[select,train]", "model=llama32_1b", f"hydra.run.dir={tmp_path}",
                  timeout=300)
    assert proc.returncode != 0
    assert "train: model 'llama32_1b'" in proc.stderr and "HF_HUB_OFFLINE=1" in proc.stderr
    assert not (tmp_path / "selection").exists()


# ------------------------------------------------------------------------------ ablations and budgets
@pytest.mark.parametrize(("overrides", "budget", "variant"), [
    ([], None, "thtb"),
    (["selection.stages=[quality,extrinsic]"], 0.05, "thtb_no_ihs"),
    (["selection.stages=[intrinsic,extrinsic]"], 0.05, "thtb_no_quality"),
    (["selection.budget=0.02"], 0.02, "thtb_2pct"),
    (["selection.stages=[quality,intrinsic]", "selection.budget=0.02"], 0.02, "thtb_no_ehs_2pct"),
])
def test_ablations_keep_the_budget_and_carry_their_own_name(overrides, budget, variant, tmp_path):
    from thtb.train.args import method_name

    cfg = compose_cfg(["+experiment=alpaca_5pct", *overrides, f"paths.run_dir={tmp_path}"])
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(cfg, resolve=True)
    from thtb.methods import build_method

    method = build_method(cfg)
    assert method.effective_budget() == pytest.approx(budget) if budget else method.effective_budget() is None
    assert method.cascade_config("reference").budget == (pytest.approx(budget) if budget else None)
    assert method.variant() == variant == method_name(cfg)  # never a THTB row unless it is THTB


@pytest.mark.slow  # end to end through run.py: the slow tier (CI runs it)
def test_an_ablated_demo_keeps_the_full_size(tmp_path):
    cache = tmp_path / "cache"
    full = run_py("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / 'full'}",
                  f"paths.cache_dir={cache}")
    ablated = run_py("+experiment=demo", "stages=[select]", "selection.stages=[quality,extrinsic]",
                     f"hydra.run.dir={tmp_path / 'ablated'}", f"paths.cache_dir={cache}")
    assert full.returncode == ablated.returncode == 0, ablated.stderr[-2000:]
    a, b = _summary(tmp_path / "full"), _summary(tmp_path / "ablated")
    assert a["n_selected"] == b["n_selected"] == 33
    assert b["provenance"]["selection"]["variant"] == "thtb_no_ihs"
    assert b["scorers"]["score_cache"]["calls"] == {"quality:heuristic_quality": "cached"}  # stage 1 reused


def test_a_budget_recut_after_a_finished_run_scores_nothing_again(tmp_path):
    cache = tmp_path / "cache"
    first = run_py("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / 'a'}", f"paths.cache_dir={cache}")
    recut = run_py("+experiment=demo", "stages=[select]", "selection.budget=0.05", f"hydra.run.dir={tmp_path / 'b'}",
                   f"paths.cache_dir={cache}")
    assert first.returncode == recut.returncode == 0, recut.stderr[-2000:]
    a, b = _summary(tmp_path / "a"), _summary(tmp_path / "b")
    assert a["fingerprint"] != b["fingerprint"] and b["n_selected"] == 13 != a["n_selected"]
    assert a["scorers"]["score_cache"]["misses"] == 3
    assert b["scorers"]["score_cache"] == {**b["scorers"]["score_cache"], "hits": 3, "misses": 0}
    scorer_calls = {"quality:heuristic_quality", "bloom:proxy_bloom", "disciplines:proxy_disciplines"}
    assert scorer_calls <= set(a["timings_s"]) and scorer_calls.isdisjoint(b["timings_s"])  # nothing scored again


@pytest.mark.slow  # end to end through run.py: the slow tier (CI runs it)
def test_the_score_cache_never_serves_another_scorer(tmp_path):
    cache = tmp_path / "cache"
    run_py("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / 'a'}", f"paths.cache_dir={cache}")
    other = run_py("+experiment=demo", "stages=[select]", "reward=proxy", "selection.budget=0.05",
                   f"hydra.run.dir={tmp_path / 'b'}", f"paths.cache_dir={cache}")
    assert other.returncode == 0, other.stderr[-2000:]
    calls = _summary(tmp_path / "b")["scorers"]["score_cache"]["calls"]
    assert calls["quality:proxy_quality"] == "scored"  # another reward: scored, not served from the cache


# ------------------------------------------------------------------------------------ degenerate stages
def test_a_stage_without_signal_warns_in_the_summary_with_the_fix(tmp_path):
    proc = run_py("+experiment=demo", "stages=[select]", "selection.extrinsic.k=40", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = _summary(tmp_path)["warnings"]
    (warning,) = [w for w in warnings if w.startswith("stage extrinsic: sc is constant")]
    assert "every silhouette is 0" in warning and "use a smaller selection.extrinsic.k" in warning
    assert "stage extrinsic: sc is constant" in proc.stdout + proc.stderr  # and on the console


# -------------------------------------------------------------------------------------- pairwise verdicts
@pytest.mark.slow
def test_a_small_judge_gives_a_verdict_on_every_demo_prompt(tmp_path):
    from importlib import resources

    from thtb.judge import HFJudge
    from thtb.eval.prompts import PAIRWISE_FORCED

    prompts = [json.loads(line) for line in (resources.files("thtb") / "resources" / "demo_eval.jsonl")
               .read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(prompts) == 10
    items = []
    for p in prompts:  # one short, plausible answer and one that misses the point, in both orders
        good, bad = f"Here is a direct answer to: {p['instruction'][:80]}", "I am not sure."
        items += [{"instruction": p["instruction"], "output_a": good, "output_b": bad},
                  {"instruction": p["instruction"], "output_a": bad, "output_b": good}]
    judge = HFJudge("smollm2", batch_size=4, cache=tmp_path / "judge.sqlite", max_attempts=1)
    results = judge.run(PAIRWISE_FORCED, items)
    assert all(r.error is None and r.value["winner"] in ("a", "b") for r in results), \
        [r.error for r in results if r.error]
    assert judge.stats()["parse_failures"] == 0 and judge.params(PAIRWISE_FORCED)["choices"] == ["Output (a)",
                                                                                                "Output (b)"]
