"""Length-controlled win rate (AlpacaEval 2.0's length_controlled_minimal GLM) from a run's per-prompt records:
synthetic judges that prefer length only / the model only, the cross-check against alpaca_eval's own design
matrix and fit, and the paired bootstrap of two methods' win-rate difference."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
import sklearn

from tests.helpers import ScriptedJudge, longer_wins, missing, outputs
from thtb.eval.length_control import (
    GLM_FORMULA,
    annotations,
    fit_length_glm,
    length_controlled,
    main,
    paired_difference,
)
from thtb.eval.pairwise import run_pairwise

N = 400
N_LONGER = 320  # the model's output is the longer one on 4 prompts in 5
INSTR = [f"Instruction number {i}: explain something." for i in range(N)]
OFFSETS = (20, 60, 150, 400)
PATTERN = np.random.default_rng(0).permutation(N)
"""Prompt i gets length pattern ``PATTERN[i]`` (shuffled: no pattern lines up with prompt order or CV folds)."""


def lengths(i: int) -> tuple[int, int]:
    """(model, baseline) output lengths of prompt ``i``: patterns below :data:`N_LONGER` make the model's output
    longer, the others shorter, by an offset from :data:`OFFSETS` (each offset equally often on either side)."""
    k = PATTERN[i]
    base = 200 + 7 * (i % 40)
    return base + (1 if k < N_LONGER else -1) * OFFSETS[k % 4], base


def texts() -> tuple[list[str], list[str]]:
    pairs = [lengths(i) for i in range(N)]
    return ["M" + "x" * (m - 1) for m, _ in pairs], ["B" + "y" * (b - 1) for _, b in pairs]


def prompt_number(conv) -> int:
    return int(conv[1]["content"].split("Instruction number ", 1)[1].split(":", 1)[0])


def rank(i: int) -> tuple[int, int]:
    """Prompt ``i``'s rank within its (side, offset) length pattern, and the pattern's size."""
    k = PATTERN[i]
    return ((k // 4, N_LONGER // 4) if k < N_LONGER else ((k - N_LONGER) // 4, (N - N_LONGER) // 4))


def model_wins(i: int, share: int) -> bool:
    """``share`` in 10 of the prompts of every (side, offset) length pattern: independent of length."""
    return rank(i)[0] % 10 < share


LONGER_PREFERRED = (0.6, 0.7, 0.8, 0.9)
"""How often the length-only judge prefers the longer output, by offset (the larger the gap, the likelier)."""


def prefers_longer(conv):
    """A judge that looks at length only, as a length-biased LLM judge does on average: it prefers the longer
    output in a share of prompts that grows with the length gap (:data:`LONGER_PREFERRED`, realised exactly
    within each length pattern), whichever side wrote it."""
    i = prompt_number(conv)
    r, size = rank(i)
    longer = r < round(LONGER_PREFERRED[PATTERN[i] % 4] * size)
    a, b = (conv[1]["content"].split(f"## Output ({t})\n", 1)[1].split("\n\n", 1)[0] for t in "ab")
    return "Output (a)\nx" if (len(a) > len(b)) == longer else "Output (b)\nx"


def prefers_the_model(conv, share=7):
    """Picks the model's output (the one starting with "M") on ``share`` in 10 prompts of each length pattern."""
    a_is_model = conv[1]["content"].split("## Output (a)\n", 1)[1].startswith("M")
    return "Output (a)\nx" if a_is_model == model_wins(prompt_number(conv), share) else "Output (b)\nx"


def run(judge_answer, tmp_path, n_boot=300, **kw):
    model, base = texts()
    prompts = pd.DataFrame({"instruction": INSTR, "dataset": "koala", "reference": ""})
    summary = run_pairwise(prompts, outputs("m", model), outputs("b", base), ScriptedJudge(judge_answer),
                           out_dir=tmp_path, n_boot=n_boot, **kw)
    return summary, tmp_path / "pairwise_samples.jsonl"


def test_a_judge_that_prefers_length_only_gives_lc_near_50(tmp_path):
    summary, _ = run(prefers_longer, tmp_path)
    overall, lc = summary["overall"], summary["length_controlled"]
    assert overall["win_rate"] == 65.0 and overall["n"] == N  # the model is longer on 4 prompts in 5
    assert abs(overall["lc_win_rate"] - 50.0) <= 3.0, lc
    assert lc["lc_win_rate"] == overall["lc_win_rate"] and lc["win_rate_tie_half"] == 65.0
    lo, hi = overall["lc_win_rate_ci95"]
    assert lo < overall["lc_win_rate"] < hi and hi < 80.0
    assert lc["glm"]["length_coef"] < 0  # Δ = len(baseline) − len(model): the judge likes the model longer
    assert lc["length_ratio"] > 1 and lc["mean_length"]["model"] > lc["mean_length"]["baseline"]
    assert lc["bootstrap"]["n_boot"] == 300 and summary["length_ratio"] == lc["length_ratio"]


def test_a_judge_that_prefers_the_model_whatever_the_length_gives_lc_close_to_raw(tmp_path):
    summary, _ = run(prefers_the_model, tmp_path)
    overall = summary["overall"]
    assert overall["win_rate"] == 70.0 == overall["win_rate_tie_half"]
    assert abs(overall["lc_win_rate"] - overall["win_rate"]) <= 1.0, summary["length_controlled"]
    assert abs(summary["length_controlled"]["glm"]["length_coef"]) < 0.2


def test_small_and_degenerate_runs():
    with pytest.raises(ValueError, match="at least 2"):
        fit_length_glm([1.0], [10], [5])
    assert fit_length_glm([1, 1, 1, 1, 1, 1], [10, 20, 30, 5, 8, 9], [5, 5, 5, 5, 5, 5]).lc_win_rate > 99  # all wins
    same = fit_length_glm([1, 0, 1, 0.5], [10, 10, 10, 10], [10, 10, 10, 10])  # no length difference at all
    assert same.length_sd == 0.0 and same.length_coef == 0.0
    assert length_controlled([{"score": 1.0, "instruction": "x", "model_output": "a", "baseline_output": "b"}],
                             n_boot=10)["lc_win_rate"] is None


def _alpaca_eval_fit(monkeypatch):
    """alpaca_eval's ``make_dmatrix_for_model`` and ``fit_LogisticRegressionCV`` (its top-level import needs
    ``pkg_resources``, gone from setuptools >= 81: for this test a stand-in serves the two functions it calls)."""
    try:
        import patsy  # noqa: F401  (alpaca_eval's formula library)
    except ImportError as err:
        missing(f"alpaca_eval's dependency patsy is not installed ({err}; the dev extra has alpaca-eval)")
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from importlib.metadata import version

        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=version(name))
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)
    try:
        from alpaca_eval.metrics import glm_winrate as glm
    except ImportError as err:  # absent or unusable
        missing(f"alpaca_eval.metrics.glm_winrate does not import: {err}")
    assert glm.GLM_INFO["length_controlled_minimal"]["formula"] == GLM_FORMULA
    return glm


def alpaca_eval_lc(glm, records) -> float:
    """The LC win rate alpaca_eval computes from the same annotations (its ``_get_featurized_data`` without the
    download of the gamed-baseline file it does not use for this GLM): output_1 = baseline, output_2 = model."""
    rows = [r for r in records if r["score"] is not None]
    df = pd.DataFrame({"preference": [r["score"] for r in rows]})  # AlpacaEval's preference − 1
    delta = pd.Series([len(r["baseline_output"]) - len(r["model_output"]) for r in rows], dtype=float)
    df["std_delta_len"] = delta / delta.std()
    df["not_gamed_baseline"] = True
    test = df[["not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0
    info = glm.GLM_INFO["length_controlled_minimal"]
    train, test = glm.make_dmatrix_for_model(df, test, formula=info["formula"])
    with sklearn.config_context():  # it turns metadata routing on globally: restored on the way out
        model = glm.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, **info["kwargs"])
        return float(model.predict_proba(test)[:, 1].mean() * 100)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # alpaca_eval 0.6.6's sklearn arguments, deprecated in 1.8
def test_cross_check_against_alpaca_eval(tmp_path, monkeypatch):
    glm = _alpaca_eval_fit(monkeypatch)
    rng = np.random.default_rng(3)

    def noisy(conv):  # likes length and the model, with noise: a non-degenerate fit
        a, b = (conv[1]["content"].split(f"## Output ({t})\n", 1)[1].split("\n\n", 1)[0] for t in "ab")
        model_is_a = a.startswith("M")
        d = (len(a) - len(b)) / 300 * (1 if model_is_a else -1)
        p = 1 / (1 + np.exp(-(0.4 + 1.5 * np.tanh(d)))) if model_is_a else 1 / (1 + np.exp(0.4 + 1.5 * np.tanh(d)))
        return "Output (a)" if rng.random() < p else "Output (b)"

    def first_when_close(conv):  # position bias on close lengths: both orders make those prompts ties (½)
        a, b = (conv[1]["content"].split(f"## Output ({t})\n", 1)[1].split("\n\n", 1)[0] for t in "ab")
        return "Output (a)" if abs(len(a) - len(b)) < 100 else longer_wins(conv)

    diffs = {}
    for name, answer, kw in (("length", prefers_longer, {}), ("longer_always", longer_wins, {}),
                             ("model", prefers_the_model, {}), ("noisy", noisy, {}),
                             ("with_ties", first_when_close, {"order": "both"})):
        summary, path = run(answer, tmp_path / name, n_boot=0, **kw)
        records = [json.loads(x) for x in path.read_text().splitlines()]
        if name == "with_ties":
            assert summary["overall"]["n_ties"] == N // 2
        a = annotations(records)
        ours = fit_length_glm(a["preference"], a["model_len"], a["baseline_len"]).lc_win_rate
        assert round(ours, 2) == summary["overall"]["lc_win_rate"]
        diffs[name] = abs(alpaca_eval_lc(glm, records) - ours)
    assert max(diffs.values()) <= 0.5, diffs  # the allowed difference (percentage points)
    assert max(diffs.values()) < 0.01, diffs  # in fact the same fit: the same folds, grid, solver and loss


def test_a_judge_that_always_picks_the_longer_output_is_beyond_the_glm(tmp_path):
    """Every verdict follows the length difference: the data are perfectly separable, the fit sends the length
    coefficient to its bound and the model term is left ill-determined — the LC rate stays far from 50 (the
    same in alpaca_eval: see the cross-check). The GLM corrects a length *bias*, not a length-only judge."""
    summary, _ = run(longer_wins, tmp_path, n_boot=0)
    lc = summary["length_controlled"]
    assert summary["overall"]["win_rate"] == 80.0 and lc["glm"]["length_coef"] < -50 and lc["lc_win_rate"] > 60


def test_paired_bootstrap_of_two_methods_against_one_baseline(tmp_path):
    _, a = run(prefers_the_model, tmp_path / "a", n_boot=0)
    _, b = run(lambda conv: prefers_the_model(conv, share=5), tmp_path / "b", n_boot=0)
    out = paired_difference(a, b, n_boot=2000, seed=0)
    assert (out["a"], out["b"], out["difference"], out["n"]) == (70.0, 50.0, 20.0, N)
    lo, hi = out["difference_ci95"]
    assert 10 < lo < 20 < hi < 30 and out["p_value"] < 0.001
    same = paired_difference(a, a, n_boot=500)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0 and same["difference_ci95"] == [0.0, 0.0]
    half = paired_difference(a, b, metric="win_rate_tie_half", n_boot=200)
    assert half["difference"] == 20.0
    lc = paired_difference(a, b, metric="lc_win_rate", n_boot=100)
    assert abs(lc["difference"] - 20.0) < 3 and lc["difference_ci95"][0] > 0
    # matched by prompt, not by position; a prompt one run failed is left out of both
    rows_b = [json.loads(x) for x in b.read_text().splitlines()][::-1]
    rows_b[0]["score"], rows_b[0]["outcome"] = None, None
    shuffled = paired_difference(a, rows_b, n_boot=0)
    assert shuffled["n"] == N - 1 and shuffled["n_excluded_failed"] == 1 and shuffled["n_matched"] == N
    rows_b[1]["baseline_output"] = "another baseline"
    with pytest.raises(ValueError, match="different baseline outputs"):
        paired_difference(a, rows_b)
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_difference(a, b, metric="elo")


def test_command_line(tmp_path, capsys):
    _, a = run(prefers_the_model, tmp_path / "a", n_boot=0)
    _, b = run(lambda conv: prefers_the_model(conv, share=5), tmp_path / "b", n_boot=0)
    assert main([str(a), "--bootstrap", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["win_rate"] == 70.0
    assert main([str(a), str(b), "--bootstrap", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"win_rate", "win_rate_tie_half", "lc_win_rate"} and out["win_rate"]["difference"] == 20.0
