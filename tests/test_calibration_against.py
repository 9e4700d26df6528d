"""``python -m thtb.calibration fit --against <run>``: the offline proxies fitted to the real scorers of a run.

* a selection of real Alpaca rows whose stage 1 is a small sequence-classification reward model built here
  (:func:`thtb.models.tiny.tiny_llama`, random weights: its scores are deterministic, which is all the mechanism
  needs — the proxy is compared with it, not with a good reward model);
* ``fit --against`` fits the quality proxy only (the run asked no LLM judge: Bloom and disciplines are skipped,
  and it says why), writes a parameter folder of its own that records the run's path, its summary's scorer
  provenance and the score card's sha256, and prints held-out agreement equal to what is recomputed here from the
  resource and the held-out rows (chosen again here from the ids);
* a selection with that proxy names the scorer it imitates and its held-out agreement in its summary, and its
  identity carries the parameter file's digest (the selection cache keys see a refit);
* errors name the file or the column; the shipped parameters are never written unasked;
* (slow, vLLM) the same with SmolLM2 judging through the project's vLLM server: Bloom and disciplines fitted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tests.helpers import run_py, shared_file
from thtb import calibration

pytest.importorskip("transformers")

ROWS = 160  # real Alpaca rows: ~40 held out by id hash, ~120 to fit


def fit_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = calibration.main(["fit", *argv])
    return code, out.getvalue()


def held_out(ids: list[str], share: float = 0.25) -> np.ndarray:
    """The held-out rule, restated: sha256("thtb-hold-out:" + id), first 8 bytes over 2^64, below the share."""
    return np.array([int(hashlib.sha256(f"thtb-hold-out:{i}".encode()).hexdigest()[:16], 16) / 2 ** 64 < share
                     for i in ids])


def rho(a, b) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return None if np.ptp(a) == 0 or np.ptp(b) == 0 else round(float(spearmanr(a, b).statistic), 4)


def printed(out: str, kind: str, figure: str, n: int, value: float | None) -> bool:
    shown = "-" if value is None else f"{value:.4f}"
    return re.search(rf"^\s*{kind}\s+{figure}\s+{n}\s+{re.escape(shown)}\s", out, re.MULTILINE) is not None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_digests() -> dict[str, str]:
    from thtb.scorers.fitted import proxy_path

    return {p.name: sha256(p) for p in sorted(proxy_path("quality").parent.glob("*.json"))}


@pytest.fixture(scope="module")
def alpaca() -> Path:
    return shared_file("alpaca", "alpaca_data.json")


@pytest.fixture(scope="module")
def tiny_reward(tmp_path_factory) -> Path:
    from thtb.models.tiny import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny_reward"), kind="reward")


def reward_args(model: Path) -> list[str]:
    return ["reward=skywork", f"reward.model={model}", "reward.device=cpu", "reward.dtype=float32",
            "reward.max_length=256", "reward.batch_size=16", "reward.show_progress=false"]


@pytest.fixture(scope="module")
def reward_run(alpaca, tiny_reward, tmp_path_factory) -> Path:
    """A selection of the first 160 Alpaca rows whose one stage is the tiny reward model."""
    run = tmp_path_factory.mktemp("reward_run")
    proc = run_py("+experiment=demo", "stages=[select]", f"data.path={alpaca}", f"data.limit={ROWS}",
                  "selection.stages=[quality]", *reward_args(tiny_reward), "logger=none", f"hydra.run.dir={run}",
                  f"paths.cache_dir={tmp_path_factory.mktemp('cache')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def fitted(reward_run, tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    """``fit --against <run> --out <dir>``: (the folder, what it printed, the shipped files' digests before)."""
    before = shipped_digests()
    out = tmp_path_factory.mktemp("fitted") / "proxies"
    code, printed_out = fit_cli("--against", str(reward_run), "--out", str(out))
    assert code == 0, printed_out
    return out, printed_out, before


def test_fit_against_fits_what_ran_and_says_what_it_skipped(fitted, reward_run, tiny_reward):
    out, text, before = fitted
    assert sorted(p.name for p in out.iterdir()) == ["held_out.json", "quality.json"]
    assert shipped_digests() == before  # the shipped reader-calibrated parameters are untouched
    assert "bloom: skipped — the run asked no judge" in text and "disciplines: skipped" in text
    params = json.loads((out / "quality.json").read_text())
    assert params["fitted_on"] == (f"the outputs of the reward model {tiny_reward} (SequenceClassificationReward) "
                                   f"in run {reward_run.resolve()}")
    assert params["fitted_on"] in text
    assert params["imitates"]["backend"] == "SequenceClassificationReward"
    assert params["imitates"]["model"] == str(tiny_reward) and params["imitates"]["revision"].startswith("content:")
    assert params["cv"]["folds"] == calibration.FOLDS  # the calibration fit's cross-validation


def test_the_resource_records_the_source_run(fitted, reward_run):
    out, _, _ = fitted
    params = json.loads((out / "quality.json").read_text())
    card_path = reward_run / "selection" / "scores.parquet"
    summary = json.loads((reward_run / "selection" / "summary.json").read_text())
    source = params["source"]
    assert source["run"] == str(reward_run.resolve()) and source["score_card"] == str(card_path.resolve())
    assert source["score_card_sha256"] == sha256(card_path)
    assert source["summary_sha256"] == sha256(reward_run / "selection" / "summary.json")
    assert source["provenance"]["selection"] == summary["provenance"]["selection"]  # reward, fidelity, prompts…
    assert source["provenance"]["selection"]["scorers"]["reward"]["model"] == params["imitates"]["model"]
    card = pd.read_parquet(card_path)
    held = held_out(card["id"].tolist())
    hold = source["hold_out"]
    assert (hold["n_fit"], hold["n_held_out"]) == (int((~held).sum()), int(held.sum())) == (params["n_train"],
                                                                                            ROWS - params["n_train"])
    assert hold["held_out_ids_sha256"] == hashlib.sha256(
        "".join(f"{i}\n" for i in sorted(card["id"][held])).encode()).hexdigest()


def test_printed_agreement_is_what_the_resource_gives_on_the_held_out_rows(fitted, reward_run):
    from thtb.scorers.proxy import ProxyQualityScorer
    from thtb.scorers.quality import HeuristicQualityScorer

    out, text, _ = fitted
    card = pd.read_parquet(reward_run / "selection" / "scores.parquet")
    rows = card[held_out(card["id"].tolist())]
    queries, responses, truth = rows["query"].tolist(), rows["response"].tolist(), rows["quality_raw"].to_numpy()
    proxy = rho(ProxyQualityScorer(out / "quality.json").score(queries, responses)["quality_raw"], truth)
    hand = rho(HeuristicQualityScorer().score(queries, responses)["quality_raw"], truth)
    reader = rho(ProxyQualityScorer().score(queries, responses)["quality_raw"], truth)
    entry = json.loads((out / "held_out.json").read_text())["proxies"]["quality"]
    assert entry["n"] == len(rows)
    assert (entry["proxy"]["quality_spearman"], entry["hand_built"]["quality_spearman"],
            entry["reader_proxy"]["quality_spearman"]) == (proxy, hand, reader)
    assert printed(text, "quality", "quality_spearman", len(rows), proxy), text
    assert proxy is not None and proxy > 0.3  # the head learned something of the reward model's ranking


def test_a_selection_with_the_fitted_proxy_names_the_scorer_it_imitates(fitted, reward_run, alpaca, tiny_reward,
                                                                         tmp_path):
    out, _, _ = fitted
    proc = run_py("+experiment=demo", "stages=[select]", f"data.path={alpaca}", f"data.limit={ROWS}",
                  "selection.stages=[quality]", "reward=proxy", f"reward.params_path={out / 'quality.json'}",
                  "logger=none", f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "selection" / "summary.json").read_text())
    cal = summary["scorers"]["calibration"]["quality"]
    record = json.loads((out / "held_out.json").read_text())["proxies"]["quality"]
    assert cal["scorer"] == "proxy_quality" and cal["params"] == str(out / "quality.json")
    assert cal["imitates"]["model"] == str(tiny_reward) and cal["imitates"]["backend"] == "SequenceClassificationReward"
    assert cal["imitates"]["run"] == str(reward_run.resolve())
    assert cal["fitted_on"].startswith(f"the outputs of the reward model {tiny_reward}")
    assert cal["held_out"]["proxy"] == record["proxy"] and cal["held_out"]["reader_proxy"] == record["reader_proxy"]
    assert cal["held_out"]["n"] == record["n"]
    reward = summary["provenance"]["selection"]["scorers"]["reward"]
    assert reward["backend"] == "ProxyQualityScorer"
    assert reward["params"]["params_path"]["sha256"] == sha256(out / "quality.json")  # in the selection's key
    assert summary["provenance"]["selection"]["scorer_setup"] == "offline"


def test_a_proxy_whose_record_is_for_other_parameters_says_so(fitted, tmp_path):
    from thtb.scorers.proxy import ProxyQualityScorer

    out, _, _ = fitted
    copy = tmp_path / "proxies"
    shutil.copytree(out, copy)
    params = json.loads((copy / "quality.json").read_text())
    params["model"]["coef"][0] += 1e-9
    (copy / "quality.json").write_text(json.dumps(params))
    stale = ProxyQualityScorer(copy / "quality.json").calibration
    assert stale["held_out"] is None and "fit --against" in stale["held_out_stale"]
    (copy / "held_out.json").unlink()  # never the packaged readers' record in its place
    alone = ProxyQualityScorer(copy / "quality.json").calibration
    assert alone["held_out"] is None and "no held-out record" in alone["held_out_stale"]


# ----------------------------------------------------------------------------------------------- errors
def test_errors_name_the_file_the_column_and_the_fix(reward_run, tmp_path):
    from thtb.scorers.fitted import proxy_path

    card = pd.read_parquet(reward_run / "selection" / "scores.parquet")
    summary = (reward_run / "selection" / "summary.json").read_text()

    def run_with(frame: pd.DataFrame | None, name: str, summary_text: str | None = summary) -> Path:
        folder = tmp_path / name / "selection"
        folder.mkdir(parents=True)
        if frame is not None:
            frame.to_parquet(folder / "scores.parquet")
        if summary_text is not None:
            (folder / "summary.json").write_text(summary_text)
        return folder.parent

    with pytest.raises(calibration.CalibrationError, match=r"scores\.parquet: no column 'quality_raw', though "
                                                           r"the run's the reward model .* scored quality"):
        calibration.fit_against(run_with(card.drop(columns="quality_raw"), "no_column"), tmp_path / "o1")
    with pytest.raises(calibration.CalibrationError, match=r"scores\.parquet: 24 rows have quality_raw .* leaves "
                                                           r"\d+ to measure \(at least 8\) and \d+ to fit"):
        calibration.fit_against(run_with(card.head(24), "few"), tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match=r"no_summary/selection/summary\.json: missing"):
        calibration.fit_against(run_with(card, "no_summary", None), tmp_path / "o3")
    with pytest.raises(FileNotFoundError, match=r"nothing/selection/scores\.parquet: no score card"):
        calibration.fit_against(run_with(None, "nothing"), tmp_path / "o4")
    offline = json.loads(summary)
    offline["provenance"]["selection"]["scorers"]["reward"] = {"backend": "HeuristicQualityScorer", "model": None}
    with pytest.raises(calibration.CalibrationError, match="no real scorer to imitate: quality: the run's reward is "
                                                           "the offline HeuristicQualityScorer"):
        calibration.fit_against(run_with(card, "offline", json.dumps(offline)), tmp_path / "o5")
    with pytest.raises(ValueError, match="--replace-shipped"):
        calibration.fit_against(reward_run, proxy_path("quality").parent)
    code, _ = fit_cli("--against", str(tmp_path / "few"), "--out", str(tmp_path / "o6"))
    assert code == 2 and not (tmp_path / "o2").exists() and not (tmp_path / "o6").exists()  # nothing written


def test_only_the_kinds_a_real_scorer_produced_are_fitted():
    judge = {"backend": "openai", "model": "smollm2", "prompts": {"bloom": "bloom@1", "disciplines": "disciplines@1",
                                                                  "discipline_description": "discipline_description@1"}}
    offline_judge = {"backend": "proxy", "model": None, "prompts": None, "bloom": "ProxyBloomScorer",
                     "disciplines": "ProxyDisciplineTagger"}
    real_reward = {"backend": "InternLM2Reward", "model": "internlm/internlm2-7b-reward"}
    imitate, skipped = calibration.real_scorers({"scorers": {"reward": real_reward, "judge": offline_judge}})
    assert list(imitate) == ["quality"] and set(skipped) == {"bloom", "disciplines"}
    assert "offline `proxy` (ProxyBloomScorer): no LLM answered" in skipped["bloom"]
    imitate, skipped = calibration.real_scorers({"scorers": {"reward": {"backend": "ProxyQualityScorer"},
                                                             "judge": judge}})
    assert list(imitate) == ["bloom", "disciplines"] and "offline ProxyQualityScorer" in skipped["quality"]
    deita_judge = {**judge, "prompts": {"bloom": "bloom@1"}}  # a judge asked for Bloom only
    imitate, skipped = calibration.real_scorers({"scorers": {"judge": deita_judge}})
    assert list(imitate) == ["bloom"] and "answered no disciplines prompt" in skipped["disciplines"]
    assert "no reward" in skipped["quality"]


def test_the_held_out_rows_depend_on_the_ids_alone(alpaca):
    ids = [f"{i:016x}" for i in range(4000)]
    mask = calibration.held_out_mask(ids)
    assert mask.tolist() == held_out(ids).tolist()
    assert 0.22 < mask.mean() < 0.28
    order = np.random.default_rng(0).permutation(len(ids))
    assert calibration.held_out_mask([ids[i] for i in order]).tolist() == mask[order].tolist()
    with pytest.raises(ValueError, match="share"):
        calibration.held_out_mask(ids, 1.0)


# ----------------------------------------------------------------------------- a judge-backed run (slow)
@pytest.mark.slow
@pytest.mark.vllm
def test_fit_against_a_run_judged_by_smollm2_through_vllm(vllm_server, alpaca, tiny_reward, tmp_path):
    """60 real Alpaca rows: the tiny reward model scores them all (``fractions.quality=1``), SmolLM2 judges every
    one through the project's vLLM server (JSON-guided answers); ``fit --against`` fits all three proxies, and the
    Bloom and discipline figures it prints are recomputed here from the resource and the held-out rows."""
    from thtb.calibration import _embedder
    from thtb.scorers.proxy import ProxyBloomScorer, ProxyDisciplineTagger
    from thtb.scorers.base import BLOOM_LEVELS

    run = tmp_path / "run"
    proc = run_py("+experiment=demo", "scoring=served", f"judge.base_url={vllm_server.base_url}",
                  f"judge.model={vllm_server.model}", f"judge.cache={tmp_path / 'judge.sqlite'}",
                  "judge.failure_budget=1000", f"data.path={alpaca}", "data.limit=60", "selection.fractions.quality=1",
                  "selection.extrinsic.k=4", *reward_args(tiny_reward), "stages=[select]", "logger=none",
                  f"hydra.run.dir={run}", f"paths.cache_dir={tmp_path / 'cache'}", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "proxies"
    code, text = fit_cli("--against", str(run), "--out", str(out))
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["bloom.json", "disciplines.json", "held_out.json", "quality.json"]
    record = json.loads((out / "held_out.json").read_text())["proxies"]
    card = pd.read_parquet(run / "selection" / "scores.parquet")
    embedder = _embedder()
    for kind in ("bloom", "disciplines"):
        params = json.loads((out / f"{kind}.json").read_text())
        assert params["imitates"]["model"] == vllm_server.model and params["imitates"]["prompts"]
        assert params["fitted_on"].startswith(f"the outputs of the LLM judge {vllm_server.model} (openai; prompts ")
        assert params["source"]["score_card_sha256"] == sha256(run / "selection" / "scores.parquet")
    rank = {lv: i for i, lv in enumerate(BLOOM_LEVELS)}
    bloom_rows = card[card["bloom_level"].isin(BLOOM_LEVELS) & card["bloom_score"].notna()]
    rows = bloom_rows[held_out(bloom_rows["id"].tolist())]
    got = ProxyBloomScorer(embedder, out / "bloom.json").score(rows["query"].tolist(), rows["response"].tolist())
    pred, true = got["bloom_level"].map(rank).to_numpy(), rows["bloom_level"].map(rank).to_numpy()
    expected = {"bloom_spearman": rho(got["bloom_score"], rows["bloom_score"]),
                "bloom_level_exact": round(float((pred == true).mean()), 4),
                "bloom_level_within_one": round(float((abs(pred - true) <= 1).mean()), 4)}
    assert record["bloom"]["proxy"] == expected and record["bloom"]["n"] == len(rows)
    for figure, value in expected.items():
        assert printed(text, "bloom", figure, len(rows), value), (figure, text)
    tagged = card[[isinstance(d, list | np.ndarray) and len(d) > 0 for d in card["disciplines"]]]
    rows = tagged[held_out(tagged["id"].tolist())]
    got = ProxyDisciplineTagger(embedder, out / "disciplines.json").tag(rows["query"].tolist())["disciplines"]
    tp = fp = fn = 0
    for truth, guess in zip(rows["disciplines"], got, strict=True):
        truth, guess = set(truth), set(guess)
        tp, fp, fn = tp + len(truth & guess), fp + len(guess - truth), fn + len(truth - guess)
    f1 = round(2 * tp / (2 * tp + fp + fn), 4)
    assert record["disciplines"]["proxy"]["discipline_micro_f1"] == f1
    assert printed(text, "disciplines", "discipline_micro_f1", len(rows), f1), text

    # a selection with the judge proxies fitted to SmolLM2 names it in its summary
    proc = run_py("+experiment=demo", "stages=[select]", f"data.path={alpaca}", "data.limit=60",
                  "selection.stages=[intrinsic,extrinsic]", "selection.extrinsic.k=4",
                  f"judge.bloom.params_path={out / 'bloom.json'}",
                  f"judge.disciplines.params_path={out / 'disciplines.json'}", "logger=none",
                  f"hydra.run.dir={tmp_path / 'offline'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cal = json.loads((tmp_path / "offline" / "selection" / "summary.json").read_text())["scorers"]["calibration"]
    for kind in ("bloom", "disciplines"):
        assert cal[kind]["imitates"]["model"] == vllm_server.model and cal[kind]["imitates"]["role"] == "judge"
        assert cal[kind]["held_out"]["proxy"] == record[kind]["proxy"]
