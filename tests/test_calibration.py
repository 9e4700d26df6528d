"""The calibration set (``calibration/``) and the offline proxies fitted on it.

* the set's schema: 1,540 drawn rows, ≥ 500 held out, every row labelled once with valid fields (``sample.py
  check``), the draw reproducible byte for byte;
* the test split never enters fitting: the fit functions refuse it, ``fit`` loads the train split only and
  records cross-validated figures only, and the packaged proxies record the digest of exactly the train split's
  labels;
* the shipped parameters are what fitting gives: refitting each proxy on the train split with its recorded
  hyper-parameters gives the shipped coefficients (tolerances at :data:`REFIT_RTOL`), and ``fit`` chooses those
  hyper-parameters again with the same cross-validated figures;
* held-out agreement of the packaged proxies, recomputed from the labels by ``evaluate``: at least the floors below
  and at least the hand-built scorers' figure on the same split. The floors sit a little under the figures
  measured with the shipped parameters (Bloom ρ 0.716, exact 0.684, within one 0.825; discipline micro-F1 0.694,
  count agreement 0.712; quality ρ 0.278; hand-built: 0.684, 0.645, 0.781, 0.315, 0.608, −0.224), so a regression
  of the features, the stemmer or the embedder shows here; the recorded held-out figures (``held_out.json``) are
  the measured ones, for the shipped parameters' digest, and a record for other parameters is reported stale;
* the proxies honour the scorer contracts, and an offline selection's summary names them with their figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ROOT
from thtb import calibration
from thtb.scorers.base import BLOOM_BANDS

ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"
needs_alpaca = pytest.mark.skipif(not ALPACA.is_file(), reason="../shared/data/alpaca is absent")
FLOORS = {"bloom_spearman": 0.68, "bloom_level_exact": 0.65, "bloom_level_within_one": 0.80,
          "discipline_micro_f1": 0.65, "discipline_count_agreement": 0.68, "quality_spearman": 0.24}
REFIT_RTOL = {"quality": 1e-9, "bloom": 5e-6, "disciplines": 1e-4}
"""How far a refit may be from the shipped parameters: max |refit − shipped| ≤ rtol × max |shipped|, per array.
The quality features are plain arithmetic (a refit here agrees to 4e-15). The Bloom and discipline features
contain MiniLM embeddings, whose float32 values move by ~1e-8 with the batch composition and the machine (the
shipped parameters were fitted elsewhere: their similarity-feature means differ from a refit here by ~1e-8
relative), and lbfgs's default stopping rule carries that into the weights: measured 5.5e-7 (Bloom) and 1.1e-5
(disciplines, C=16 on 384 dimensions), with no prediction changed on the 1,540 pairs."""


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = calibration.main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def embedder():
    """One memoising MiniLM embedder for the module: the calibration queries are embedded once."""
    return calibration._embedder()


def sample() -> list[dict]:
    return [json.loads(line) for line in (ROOT / "calibration" / "sample.jsonl").read_text().splitlines()]


def labels() -> list[dict]:
    return [json.loads(line) for path in sorted((ROOT / "calibration" / "labels").glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


def test_the_sample_and_its_splits():
    rows = sample()
    assert len(rows) == 1540 == len({r["row"] for r in rows}) == len({r["id"] for r in rows})
    by_split = pd.Series([r["split"] for r in rows]).value_counts().to_dict()
    assert by_split["test"] >= 500 and by_split["train"] + by_split["test"] == 1540
    assert set(pd.Series([r["stratum"] for r in rows])) == set(range(8))  # every stratum drawn
    for stratum in range(8):  # each stratum split ~35 / 65
        inside = [r for r in rows if r["stratum"] == stratum]
        share = sum(r["split"] == "test" for r in inside) / len(inside)
        assert 0.3 < share < 0.4, (stratum, share)


def test_every_row_is_labelled_once_with_valid_fields():
    proc = subprocess.run([sys.executable, "calibration/sample.py", "check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1540 of 1540 sampled rows labelled; 0 problems" in proc.stdout
    assert {lb["row"] for lb in labels()} == {r["row"] for r in sample()}


def test_the_label_check_catches_bad_lines(tmp_path):
    sys.path.insert(0, str(ROOT / "calibration"))
    import sample as script  # calibration/sample.py

    good = {"bloom_level": "Apply", "bloom_score": 8, "bloom_reason": "uses a formula", "disciplines": ["physics"],
            "quality": 7}
    assert script.check_label(good, "x") == []
    for bad in ({"bloom_score": 12}, {"bloom_level": "Synthesize"}, {"bloom_reason": " "},
                {"disciplines": ["Computer Science"]}, {"disciplines": []}, {"disciplines": ["art", "art"]},
                {"quality": 11}, {"quality": 7.5}):
        assert script.check_label({**good, **bad}, "f:3"), bad


def test_the_guideline_quotes_the_authors_bloom_prompt():
    """Every level line of the guideline's Bloom quote (name, band, description, examples, characteristics) is
    in the authors' script word for word."""
    reference = ROOT.parent / "shared" / "reference" / "thtb_authors" / "bloom_score" / "bloom.py"
    if not reference.is_file():
        pytest.skip("../shared/reference is absent")
    import re

    squash = lambda text: re.sub(r"\s+", " ", text)  # noqa: E731 - layout differs, words may not
    authors = squash(reference.read_text(encoding="utf-8"))
    guideline = (ROOT / "calibration" / "README.md").read_text(encoding="utf-8")
    quoted = re.findall(r"^> (\d\. \*\*\w+ \(\d+-\d+ points\)\*\*:.*(?:\n>    .*)*)", guideline, re.MULTILINE)
    assert len(quoted) == 6
    for item in quoted:
        for part in squash(item.replace("\n>   ", " ")).split(" — "):
            assert part.strip() in authors, part


@needs_alpaca
def test_the_draw_is_reproducible(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "calibration"))
    import sample as script

    drawn = script.draw(ALPACA)
    assert "".join(json.dumps(d, sort_keys=True) + "\n" for d in drawn) == \
        (ROOT / "calibration" / "sample.jsonl").read_text()


@needs_alpaca
def test_loading_checks_the_text_against_the_digest(tmp_path):
    rows = json.loads(ALPACA.read_text())
    rows[sample()[0]["row"]]["output"] += " (edited)"
    edited = tmp_path / "alpaca.json"
    edited.write_text(json.dumps(rows))
    with pytest.raises(calibration.CalibrationError, match="differs from the digest"):
        calibration.load_calibration(alpaca=edited)


# -------------------------------------------------------------------------------------- the test split
@needs_alpaca
def test_fitting_refuses_the_test_split():
    both = calibration.load_calibration(alpaca=ALPACA)
    with pytest.raises(ValueError, match="train split only"):
        calibration.fit_quality(both)
    with pytest.raises(ValueError, match="train split only"):
        calibration.fit_bloom(both[both["split"] == "test"], embedder=None)


@needs_alpaca
@pytest.mark.parametrize(("name", "columns"), [("bloom", ("bloom_level", "bloom_score")),
                                                ("disciplines", ("disciplines",)), ("quality", ("quality",))])
def test_packaged_proxies_were_fitted_on_exactly_the_train_split(name, columns):
    from thtb.scorers.fitted import labels_digest, load_params, proxy_path

    params = load_params(proxy_path(name), name)
    train = calibration.load_calibration("train", alpaca=ALPACA)
    assert params["n_train"] == len(train) == sum(r["split"] == "train" for r in sample())
    assert params["train_labels_sha256"] == labels_digest(train, columns)
    assert "held_out" not in params  # the parameter files hold no test-split figure; held_out.json does
    assert params["fitted_on"] == (
        "calibration/ train split (labels written by AI assistants reading each pair under calibration/README.md's "
        "guideline; one reader per pair, no double annotation)")


def _assert_same_parameters(name, refit, shipped):
    rtol = REFIT_RTOL[name]
    arrays = [("model", "coef"), ("model", "intercept")]
    arrays += {"bloom": [("scaler", "mean"), ("scaler", "scale"), ("level_mean_scores", None)],
               "quality": [("scaler", "mean"), ("scaler", "scale")], "disciplines": []}[name]
    for outer, inner in arrays:
        a = np.asarray(refit[outer] if inner is None else refit[outer][inner], dtype=float)
        b = np.asarray(shipped[outer] if inner is None else shipped[outer][inner], dtype=float)
        assert a.shape == b.shape, (outer, inner)
        error = np.abs(a - b).max() / np.abs(b).max()
        assert error <= rtol, (name, outer, inner, error)
    for key in ("format", "kind", "features", "embedder", "labels", "descriptions", "n_train", "train_labels_sha256",
                "fitted_on", "threshold", "max_disciplines"):
        assert refit.get(key) == shipped.get(key), key
    assert {k: v for k, v in refit["model"].items() if k not in ("coef", "intercept")} == \
        {k: v for k, v in shipped["model"].items() if k not in ("coef", "intercept")}


@needs_alpaca
@pytest.mark.parametrize("name", ["bloom", "disciplines", "quality"])
def test_refitting_with_the_recorded_hyper_parameters_gives_the_shipped_parameters(name, embedder):
    """The shipped weights are what the train split and the recorded (cross-validation-chosen) hyper-parameters
    give; and those are the best setting of the recorded cross-validation table."""
    from thtb.scorers.fitted import cv_setting, load_params, proxy_path

    shipped = load_params(proxy_path(name), name)
    train = calibration.load_calibration("train", alpaca=ALPACA)
    model = shipped["model"]
    refit = {"bloom": lambda: calibration.fit_bloom(train, embedder, C=model["C"]),
             "disciplines": lambda: calibration.fit_disciplines(train, embedder, C=model["C"],
                                                                threshold=shipped["threshold"]),
             "quality": lambda: calibration.fit_quality(train, alpha=model["alpha"])}[name]()
    assert "cv" not in refit  # hyper-parameters given: no cross-validation
    _assert_same_parameters(name, refit, shipped)
    table_name, chosen = cv_setting(shipped)
    table = shipped["cv"][table_name]
    first = calibration.FIGURES[name][0]
    assert table[chosen][first] == max(row[first] for row in table.values())


def _fit_with_a_spy(tmp_path, monkeypatch, embedder) -> str:
    """``python -m thtb.calibration fit --params-dir tmp_path``, asserting that it loads the train split alone
    and scores nothing; returns what it printed."""
    loaded = []
    load = calibration.load_calibration

    def spy(split=None, **kwargs):
        loaded.append(split)
        return load(split, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("fit scored a split")

    monkeypatch.setattr(calibration, "load_calibration", spy)
    monkeypatch.setattr(calibration, "score_split", never)
    monkeypatch.setattr(calibration, "evaluate_proxies", never)
    monkeypatch.setattr(calibration, "_embedder", lambda: embedder)
    code, out = run_cli("fit", "--params-dir", str(tmp_path), "--alpaca", str(ALPACA))
    assert code == 0 and loaded == ["train"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bloom.json", "disciplines.json", "quality.json"]
    assert "test split was not read" in out and "hand_built" not in out
    return out


def _check_fit_output(tmp_path, out, full_grid: bool) -> None:
    from thtb.scorers.fitted import cv_figures, cv_setting, load_params, proxy_path

    for name in calibration.FIGURES:
        shipped, refit = load_params(proxy_path(name), name), load_params(tmp_path / f"{name}.json", name)
        assert list(refit) == list(shipped) and "held_out" not in refit
        table, chosen = cv_setting(shipped)
        assert cv_setting(refit) == (table, chosen)
        if full_grid:
            assert refit["cv"] == shipped["cv"]
        else:
            assert refit["cv"][table] == {chosen: shipped["cv"][table][chosen]}
        _assert_same_parameters(name, refit, shipped)
        for figure, value in cv_figures(shipped).items():
            assert re.search(rf"{figure}\s+{shipped['n_train']}\s+5\s+{value:.4f}", out), (figure, out)


@needs_alpaca
def test_fit_reads_only_the_train_split_and_records_cross_validated_figures(tmp_path, monkeypatch, embedder):
    """``fit`` loads the train split alone and scores nothing; cross-validating the shipped setting alone (the
    full grid is the slow test below) it gives the recorded cross-validated figures and the shipped parameters,
    in the shipped layout, and prints the CV table."""
    from thtb.scorers.fitted import load_params, proxy_path

    bloom, disciplines, quality = (load_params(proxy_path(name), name) for name in ("bloom", "disciplines", "quality"))
    monkeypatch.setattr(calibration, "BLOOM_C", (bloom["model"]["C"],))
    monkeypatch.setattr(calibration, "DISCIPLINE_C", (disciplines["model"]["C"],))
    monkeypatch.setattr(calibration, "DISCIPLINE_THRESHOLDS", (disciplines["threshold"],))
    monkeypatch.setattr(calibration, "QUALITY_ALPHA", (quality["model"]["alpha"],))
    _check_fit_output(tmp_path, _fit_with_a_spy(tmp_path, monkeypatch, embedder), full_grid=False)


@needs_alpaca
@pytest.mark.slow
def test_fit_over_the_full_grid_chooses_the_shipped_hyper_parameters_again(tmp_path, monkeypatch, embedder):
    """The whole cross-validation grid: the same table as recorded, the same choice, the shipped parameters."""
    _check_fit_output(tmp_path, _fit_with_a_spy(tmp_path, monkeypatch, embedder), full_grid=True)


# ------------------------------------------------------------------------------------------- agreement
@pytest.fixture(scope="module")
def held_out(tmp_path_factory, embedder):
    """``python -m thtb.calibration evaluate --write`` into a temporary record: (the record, what it printed)."""
    if not ALPACA.is_file():
        pytest.skip("../shared/data/alpaca is absent")
    path = tmp_path_factory.mktemp("held_out") / "held_out.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calibration, "_embedder", lambda: embedder)
        code, out = run_cli("evaluate", "--write", "--held-out", str(path), "--alpaca", str(ALPACA))
    assert code == 0
    return json.loads(path.read_text()), out


@pytest.mark.parametrize("figure", sorted(FLOORS))
def test_held_out_agreement_meets_its_floor_and_beats_the_hand_built_scorer(held_out, figure):
    record, _ = held_out
    assert record["n"] >= 500
    (entry,) = [e for e in record["proxies"].values() if figure in e["proxy"]]
    assert entry["proxy"][figure] >= FLOORS[figure], (figure, entry["proxy"][figure])
    assert entry["proxy"][figure] >= entry["hand_built"][figure], (figure, entry)


def test_evaluate_prints_the_table_and_the_recorded_figures_are_the_measured_ones(held_out):
    """The shipped held-out record is what ``evaluate`` measures now: the same figures, for the shipped
    parameters' digests and the current test labels."""
    from thtb.scorers.fitted import load_held_out, load_params, params_digest, proxy_path

    measured, out = held_out
    recorded = load_held_out()
    assert recorded["format"] == measured["format"] == "thtb-held-out/1"
    assert recorded["n"] == measured["n"] == sum(r["split"] == "test" for r in sample())
    assert recorded["test_labels_sha256"] == measured["test_labels_sha256"]
    assert recorded["labels"] == measured["labels"] and "AI assistants" in recorded["labels"]
    for name, entry in recorded["proxies"].items():
        assert entry["params_sha256"] == measured["proxies"][name]["params_sha256"] == \
            params_digest(load_params(proxy_path(name), name))
        for side in ("proxy", "hand_built"):
            assert entry[side] == pytest.approx(measured["proxies"][name][side], abs=1e-3), (name, side)
    table = calibration.held_out_table()
    assert table["current"].all() and len(table) == 6
    for _, row in table.iterrows():
        assert re.search(rf"{row['proxy']}\s+{row['figure']}\s+{row['n']}\s+{row['proxy_value']:.4f}", out)


def test_a_held_out_record_for_other_parameters_is_reported_stale(tmp_path):
    """A refit (any change of a parameter file) leaves the held-out record behind: the scorer's summary entry and
    ``report`` say so instead of passing the old figures off as the new parameters'."""
    from thtb.scorers.fitted import load_params, params_digest, proxy_path
    from thtb.scorers.proxy import ProxyQualityScorer

    shipped = ProxyQualityScorer().calibration
    assert shipped["held_out"]["params_sha256"] == params_digest(load_params(proxy_path("quality"), "quality"))
    assert shipped["held_out"]["proxy"]["quality_spearman"] > 0 and "held_out_stale" not in shipped
    for name in ("bloom", "disciplines", "quality"):
        (tmp_path / f"{name}.json").write_text(proxy_path(name).read_text())
    assert run_cli("report", "--params-dir", str(tmp_path))[0] == 0
    refit = load_params(tmp_path / "quality.json", "quality")
    refit["model"]["coef"][0] += 1e-9
    (tmp_path / "quality.json").write_text(json.dumps(refit, indent=1) + "\n")
    stale = ProxyQualityScorer(tmp_path / "quality.json").calibration
    assert stale["held_out"] is None and "evaluate --write" in stale["held_out_stale"]
    table = calibration.held_out_table(tmp_path)
    current = table.groupby("proxy")["current"].all()
    assert current.to_dict() == {"bloom": True, "disciplines": True, "quality": False}
    code, out = run_cli("report", "--params-dir", str(tmp_path))
    assert code == 1 and "False" in out


def test_the_proxy_docs_state_no_feature_count_that_can_drift():
    """Feature lists are named by their tuples (BLOOM_FEATURES, QUALITY_FEATURES), never by a hand-typed count."""
    import inspect

    from thtb.scorers import proxy

    docs = [proxy.__doc__] + [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(proxy)
                              if inspect.isfunction(obj) or inspect.isclass(obj)]
    for doc in docs:
        assert not re.search(r"\b\d+ (?:named )?features\b|\(n, \d+\)", doc), doc
    assert ":data:`BLOOM_FEATURES`" in proxy.__doc__ and ":data:`QUALITY_FEATURES`" in proxy.__doc__
    for name, features in (("bloom", proxy.BLOOM_FEATURES), ("quality", proxy.QUALITY_FEATURES)):
        assert len(set(features)) == len(features)
        assert tuple(proxy.load_params(proxy.proxy_path(name), name)["features"]) == features


# ---------------------------------------------------------------------------------------- the scorers
@pytest.fixture(scope="module")
def proxies(embedder):
    from thtb.scorers.proxy import ProxyBloomScorer, ProxyDisciplineTagger, ProxyQualityScorer

    return ProxyBloomScorer(embedder), ProxyDisciplineTagger(embedder), ProxyQualityScorer()


def test_proxies_keep_the_scorer_contracts(proxies):
    bloom, tagger, quality = proxies
    queries = ["Write a sonnet about the sea.", "What is the capital of France?", "", "Compare TCP and UDP.\nnan"]
    responses = ["The sea...", "Paris.", "x", "TCP is reliable; UDP is not."]
    b = bloom.score(queries, responses)
    assert b.loc[2, "error"] == "empty query" and pd.isna(b.loc[2, "bloom_level"])
    for _, row in b.drop(index=2).iterrows():
        lo, hi = BLOOM_BANDS[row["bloom_level"]]
        assert lo <= row["bloom_score"] <= hi and pd.isna(row["error"]) and "p=" in row["bloom_reason"]
    assert b.loc[0, "bloom_level"] == "Create" and b.loc[1, "bloom_level"] == "Remember"
    d = tagger.tag(queries)
    assert d.loc[2, "error"] == "empty query" and d.loc[2, "disciplines"] is None
    assert "computer_science" in d.loc[3, "disciplines"] and 1 <= len(d.loc[0, "disciplines"]) <= 3
    named = sorted({x for ds in d["disciplines"].dropna() for x in ds} | {"business", "engineering"})
    assert set(tagger.describe(named)) == set(named)  # the catalogue, or the proxy's own descriptions
    q = quality.score(queries, responses)
    assert q["error"].isna().all() and q["quality_raw"].notna().all() and q["quality_reason"].str.len().min() > 0


def test_a_proxy_with_the_wrong_resource_is_refused(tmp_path):
    from thtb.scorers.fitted import load_params, proxy_path
    from thtb.scorers.proxy import ProxyQualityScorer

    wrong = tmp_path / "q.json"
    wrong.write_text(json.dumps({**load_params(proxy_path("bloom"), "bloom")}))
    with pytest.raises(ValueError, match="expected a thtb-proxy/1 'quality' proxy"):
        ProxyQualityScorer(wrong)
    with pytest.raises(FileNotFoundError, match="python -m thtb.calibration fit"):
        ProxyQualityScorer(tmp_path / "missing.json")


def test_a_proxy_refuses_an_embedder_other_than_the_one_it_was_fitted_over():
    """The Bloom and discipline heads read MiniLM's coordinates (max_seq_length 128): another model, or the same one
    truncating elsewhere, would give other scores with no error (another width: a shape error far from the cause).
    The shipped parameters say which space they were fitted over, and the proxies refuse any other, by name."""
    from thtb.scorers.embedder import SentenceTransformerEmbedder
    from thtb.scorers.fitted import load_params, proxy_path
    from thtb.scorers.proxy import ProxyBloomScorer, ProxyDisciplineTagger

    fitted = calibration._embedder()
    for name in ("bloom", "disciplines"):
        assert load_params(proxy_path(name), name)["embedder"] == fitted.space() == \
            "minilm_offline|pooling=default|max_seq_length=128|normalize=True"
    ProxyBloomScorer(fitted), ProxyDisciplineTagger(fitted)  # the space they were fitted over: accepted
    for other in (SentenceTransformerEmbedder("BAAI/bge-large-en-v1.5", pooling="cls", max_seq_length=512),
                  SentenceTransformerEmbedder("minilm_offline", max_seq_length=256)):
        for proxy in (ProxyBloomScorer, ProxyDisciplineTagger):
            with pytest.raises(ValueError, match=re.escape(f"fitted over the embedder '{fitted.space()}', this run's "
                                                           f"is '{other.space()}'")) as error:
                proxy(other)
            assert str(proxy_path(proxy.name.removeprefix("proxy_"))) in str(error.value)
            assert other._model is None  # refused before any model was loaded


def test_offline_selection_summary_names_the_proxies_and_their_agreement(tmp_path):
    from tests.helpers import run_py

    # reward=proxy by name: stage 1's offline default is the rules (docs/METHOD.md), the proxies stay selectable
    proc = run_py("+experiment=demo", "stages=[select]", "reward=proxy", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "selection" / "summary.json").read_text())
    from thtb.scorers.fitted import cv_figures, load_held_out, load_params, proxy_path

    recorded = calibration.held_out_table()
    cal = summary["scorers"]["calibration"]
    assert {role: cal[role]["scorer"] for role in cal} == {
        "quality": "proxy_quality", "bloom": "proxy_bloom", "disciplines": "proxy_disciplines"}
    for _, row in recorded.iterrows():
        assert cal[row["proxy"]]["held_out"]["proxy"][row["figure"]] == row["proxy_value"]
        assert cal[row["proxy"]]["held_out"]["hand_built"][row["figure"]] == row["hand_built_value"]
    for role, entry in load_held_out()["proxies"].items():
        assert cal[role]["held_out"]["params_sha256"] == entry["params_sha256"]
        assert cal[role]["cv"]["figures"] == cv_figures(load_params(proxy_path(role), role))
        assert "AI assistants" in cal[role]["fitted_on"]
        assert cal[role]["imitates"]["role"] == "readers" and cal[role]["params"] is None  # the shipped parameters
    assert "coef" not in json.dumps(cal)  # figures and provenance, not the weights
    assert Path(summary["provenance"]["selection"]["scorers"]["reward"]["backend"]) == Path("ProxyQualityScorer")


def test_the_proxies_are_fitted_and_measured_with_the_embedder_the_cascade_runs():
    """``fit`` and ``evaluate`` embed with the settings of conf/embedder/minilm_offline.yaml (the offline cascade's),
    so the held-out figures are those of the scorer a selection applies (truncation at 128 tokens included)."""
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "embedder" / "minilm_offline.yaml").read_text())
    embedder = calibration._embedder()
    for key in ("model", "max_seq_length", "pooling"):
        assert getattr(embedder, "model_name" if key == "model" else key) == conf[key], key
