"""The calibration set (``calibration/``) and the offline proxies fitted on it.

* the set's schema: 1,540 drawn rows, ≥ 500 held out, every row labelled once with valid fields (``sample.py
  check``), the draw reproducible byte for byte;
* the test split never enters fitting: the fit functions refuse it, and the packaged proxies record the digest of
  exactly the train split's labels;
* held-out agreement of the packaged proxies, recomputed from the labels: at least the floors below and at least
  the hand-built scorers' figure on the same split. The floors sit a little under the figures measured when the
  proxies were fitted (Bloom ρ 0.716, exact 0.684, within one 0.825; discipline micro-F1 0.694, count agreement
  0.712; quality ρ 0.278; hand-built: 0.684, 0.645, 0.781, 0.315, 0.608, −0.224), so a regression of the features,
  the stemmer or the embedder shows here;
* the proxies honour the scorer contracts, and an offline selection's summary names them with their figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT
from thtb import calibration
from thtb.scorers.base import BLOOM_BANDS

ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"
needs_alpaca = pytest.mark.skipif(not ALPACA.is_file(), reason="../shared/data/alpaca is absent")
FLOORS = {"bloom_spearman": 0.68, "bloom_level_exact": 0.65, "bloom_level_within_one": 0.80,
          "discipline_micro_f1": 0.65, "discipline_count_agreement": 0.68, "quality_spearman": 0.24}


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
    from thtb.scorers.proxy import labels_digest, load_params, proxy_path

    params = load_params(proxy_path(name), name)
    train = calibration.load_calibration("train", alpaca=ALPACA)
    assert params["n_train"] == len(train) == sum(r["split"] == "train" for r in sample())
    assert params["train_labels_sha256"] == labels_digest(train, columns)
    assert params["held_out"]["n"] == sum(r["split"] == "test" for r in sample())


# ------------------------------------------------------------------------------------------- agreement
@pytest.fixture(scope="module")
def held_out():
    if not ALPACA.is_file():
        pytest.skip("../shared/data/alpaca is absent")
    test = calibration.load_calibration("test", alpaca=ALPACA)
    embedder = calibration._embedder()
    return (calibration.score_split(test, proxies=True, embedder=embedder).as_dict(),
            calibration.score_split(test, proxies=False, embedder=embedder).as_dict())


@pytest.mark.parametrize("figure", sorted(FLOORS))
def test_held_out_agreement_meets_its_floor_and_beats_the_hand_built_scorer(held_out, figure):
    proxy, hand = held_out
    assert proxy["n"] >= 500 and proxy["n_failed"] == 0
    assert proxy[figure] >= FLOORS[figure], (figure, proxy[figure])
    assert proxy[figure] >= hand[figure], (figure, proxy[figure], hand[figure])


def test_the_recorded_figures_are_the_measured_ones(held_out):
    proxy, hand = held_out
    table = calibration.held_out_table()
    for _, row in table.iterrows():
        assert row["proxy_value"] == pytest.approx(proxy[row["figure"]], abs=1e-3)
        assert row["hand_built_value"] == pytest.approx(hand[row["figure"]], abs=1e-3)


# ---------------------------------------------------------------------------------------- the scorers
@pytest.fixture(scope="module")
def proxies():
    from thtb.scorers.proxy import ProxyBloomScorer, ProxyDisciplineTagger, ProxyQualityScorer

    embedder = calibration._embedder()
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
    from thtb.scorers.proxy import ProxyQualityScorer, load_params, proxy_path

    wrong = tmp_path / "q.json"
    wrong.write_text(json.dumps({**load_params(proxy_path("bloom"), "bloom")}))
    with pytest.raises(ValueError, match="expected a thtb-proxy/1 'quality' proxy"):
        ProxyQualityScorer(wrong)
    with pytest.raises(FileNotFoundError, match="python -m thtb.calibration fit"):
        ProxyQualityScorer(tmp_path / "missing.json")


def test_offline_selection_summary_names_the_proxies_and_their_agreement(tmp_path):
    from tests.helpers import run_py

    proc = run_py("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "selection" / "summary.json").read_text())
    recorded = calibration.held_out_table()
    cal = summary["scorers"]["calibration"]
    assert {role: cal[role]["scorer"] for role in cal} == {
        "quality": "proxy_quality", "bloom": "proxy_bloom", "disciplines": "proxy_disciplines"}
    for _, row in recorded.iterrows():
        assert cal[row["proxy"]]["held_out"]["proxy"][row["figure"]] == row["proxy_value"]
        assert cal[row["proxy"]]["held_out"]["hand_built"][row["figure"]] == row["hand_built_value"]
    assert "coef" not in json.dumps(cal)  # figures and provenance, not the weights
    assert Path(summary["provenance"]["selection"]["scorers"]["reward"]["backend"]) == Path("ProxyQualityScorer")
