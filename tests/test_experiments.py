"""Experiment configs (method / data / model / train / eval choices), URL datasets, and the THTB score."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, EXPERIMENTS, ROOT, compose_cfg, shared_file
from thtb.data import DataError, load_records
from thtb.data.readers import url_cache_path
from thtb.train.args import method_name

RELEASED = "https://raw.githubusercontent.com/DYJG-research/THTB/main/datasets/"

# experiment → (run-line method, model, stages, eval tasks)
PAPER_EVAL = ["mmlu_pro", "pairwise"]
EXPECTED = {
    "alpaca_5pct": ("thtb", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_2pct": ("thtb_2pct", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_full": ("full", "llama32_1b", ["train", "eval"], ["mmlu_pro"]),
    "alpaca_random": ("random", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_longest": ("longest", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_ifd": ("ifd", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_alpagasus": ("alpagasus", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_random_released": ("random_released", "llama32_1b", ["train", "eval"], PAPER_EVAL),
    "alpaca_alpagasus_released": ("alpagasus_released", "llama32_1b", ["train", "eval"], PAPER_EVAL),
    "alpaca_no_quality": ("thtb_no_quality", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_no_ihs": ("thtb_no_ihs", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "alpaca_no_ehs": ("thtb_no_ehs", "llama32_1b", ["select", "train", "eval"], PAPER_EVAL),
    "tcm_2pct": ("tcm_hard", "qwen3_8b", ["score", "train", "eval"], ["exam"]),
    "tcm_full": ("tcm_simple", "qwen3_8b", ["score", "train", "eval"], ["exam"]),
}
SELECTION = {"alpaca_random": "random", "alpaca_longest": "longest", "alpaca_ifd": "ifd",
             "alpaca_alpagasus": "alpagasus"}
ABLATION_STAGES = {"alpaca_no_quality": ["intrinsic", "extrinsic"], "alpaca_no_ihs": ["quality", "extrinsic"],
                   "alpaca_no_ehs": ["quality", "intrinsic"]}


def resolved(experiment: str, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_cfg([f"+experiment={experiment}", f"paths.run_dir={tmp_path}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_experiments_are_all_listed_and_land_in_every_published_row(tmp_path):
    """Against what conf/ composes to: every experiment that fine-tunes (the demo's aside) is in EXPECTED, so the
    checks here reach it; no two write run lines under one method (they would share the tables' cells); and every
    published row that fine-tunes a model (all but Vanilla, results/paper/) has an experiment with its method and
    a conf/model/ of its size (a plain ``model=`` override)."""
    import pandas as pd

    trained = {}  # experiment -> the run line's method
    for experiment in EXPERIMENTS:
        c = resolved(experiment, tmp_path)
        if "train" in c["stages"] and c["data"]["name"] != "demo":
            trained[experiment] = method_name(c)
    assert sorted(trained) == sorted(EXPECTED)
    by_method = {m: sorted(e for e in trained if trained[e] == m) for m in set(trained.values())}
    shared = {m: e for m, e in by_method.items() if len(e) > 1}
    assert not shared, f"experiments sharing a method: {shared}"
    sizes = {str(OmegaConf.load(p)["size"]).upper() for p in (CONF / "model").glob("*.yaml")}
    published = pd.concat([pd.read_csv(p) for p in sorted((ROOT / "results" / "paper").glob("table*.csv"))])
    rows = set(zip(published["method"], published["model_size"])) - {("vanilla", "8B")}  # no SFT: no experiment
    unreachable = sorted((m, s) for m, s in rows if m not in by_method or s not in sizes)
    assert rows and not unreachable, f"published rows no experiment reaches: {unreachable}"


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_experiment_names_its_choices(experiment, tmp_path):
    method, model, stages, tasks = EXPECTED[experiment]
    c = resolved(experiment, tmp_path)
    assert c["experiment_name"] == experiment
    assert c["train"]["method"] in (None, method) and method == method_name(c)  # the run line's method
    assert (c["model"]["name"], c["train"]["name"], c["eval"]["name"]) == (model, "lora_paper", "paper")
    assert c["stages"] == stages
    assert c["eval"]["tasks"] == tasks
    if experiment.startswith("alpaca_"):
        assert c["data"]["name"] == "alpaca"
    if "select" in stages:
        assert c["selection"]["name"] == SELECTION.get(experiment, "thtb")
        assert c["train"]["dataset"] is None  # trains on its own selection
    else:
        assert c["train"]["dataset"]


def test_selection_budgets_and_ablations(tmp_path):
    from thtb.cascade import n_selected

    for experiment, stages in ABLATION_STAGES.items():
        sel = resolved(experiment, tmp_path)["selection"]
        assert sel["stages"] == stages and sel["budget"] == 0.05
        assert n_selected(52002, sel["fractions"], sel["stages"], sel["budget"]) == 2600  # THTB's size
    sel = resolved("alpaca_2pct", tmp_path)["selection"]
    assert n_selected(52002, sel["fractions"], sel["stages"], sel["budget"]) == 1040
    sel = resolved("alpaca_5pct", tmp_path)["selection"]
    assert n_selected(52002, sel["fractions"], sel["stages"], sel["budget"]) == 2600


def test_full_trains_on_the_data(tmp_path):
    c = resolved("alpaca_full", tmp_path, "data.path=/data/alpaca_data.json")
    assert c["train"]["dataset"] == "/data/alpaca_data.json"


def test_alpagasus_uses_an_http_judge_and_accepts_scoring_paper(tmp_path):
    c = resolved("alpaca_alpagasus", tmp_path)
    assert c["judge"]["name"] == "openai" and c["selection"]["alpagasus"]["judge"]["_target_"]
    c = resolved("alpaca_alpagasus", tmp_path, "scoring=authors")
    assert c["reward"]["_target_"].endswith("InternLM2Reward")


def _without(c: dict, path: tuple[str, ...]) -> dict:
    c = json.loads(json.dumps(c))
    node = c
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1])
    return c


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_model_size_is_a_plain_override(experiment, tmp_path):
    base = resolved(experiment, tmp_path)
    big = resolved(experiment, tmp_path, "model=llama32_3b")
    assert big["model"]["name"] == "llama32_3b" and big["model"]["size"] == "3b"
    a, b = _without(base, ("model",)), _without(big, ("model",))
    if experiment == "alpaca_ifd":  # IFD is scored by the model being fine-tuned (Cherry LLM's self-guided IFD)
        assert b["selection"]["ifd"]["model"] == big["model"]["path"]
        a, b = _without(a, ("selection", "ifd", "model")), _without(b, ("selection", "ifd", "model"))
    assert a == b


@pytest.mark.parametrize(
    ("experiment", "files"),
    [("alpaca_random_released", ["random.jsonl"]), ("alpaca_alpagasus_released", ["alpagasus.jsonl"]),
     ("tcm_2pct", ["higher-order.jsonl", "lower-order.jsonl"]),
     ("tcm_full", ["lower-order.jsonl", "higher-order.jsonl"])],
)
def test_released_and_tcm_data_are_the_authors_urls(experiment, files, tmp_path):
    c = resolved(experiment, tmp_path)
    urls = [c["train"]["dataset"], *(c.get("score") or {}).get("with", [])]
    assert urls == [RELEASED + f for f in files]


def test_tcm_exam_comes_from_the_environment(tmp_path, monkeypatch):
    assert resolved("tcm_2pct", tmp_path)["eval"]["exam"]["path"] is None
    monkeypatch.setenv("THTB_TCM_EXAM", "/exams/tcm.jsonl")
    assert resolved("tcm_full", tmp_path)["eval"]["exam"]["path"] == "/exams/tcm.jsonl"


# ------------------------------------------------------------------------------------------------ URL datasets
@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, folder, request paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 (the stdlib's name)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("THTB_CACHE_DIR", str(tmp_path / "cache"))
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    finally:
        server.shutdown()
        server.server_close()


def test_url_dataset_is_downloaded_once_then_read_from_the_cache(http_dir, tmp_path):
    base, root, requests = http_dir
    rows = [{"query": f"Explain topic {i}.", "response": f"Topic {i} is explained here."} for i in range(5)]
    (root / "sub.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    url = f"{base}/sub.jsonl"
    local, _ = load_records(root / "sub.jsonl")
    first, report = load_records(url)
    assert requests == ["/sub.jsonl"]
    assert first["id"].tolist() == local["id"].tolist() and report.source == url
    cached = url_cache_path(url)
    assert cached.parent.parent == tmp_path / "cache" / "downloads" and cached.name == "sub.jsonl"
    assert cached.read_bytes() == (root / "sub.jsonl").read_bytes()
    assert not [p for p in cached.parent.iterdir() if p.name != "sub.jsonl"]  # no temp file left
    (root / "sub.jsonl").unlink()  # the second read must not need the server
    second, _ = load_records(url)
    assert requests == ["/sub.jsonl"]
    assert second.equals(first)


def test_url_download_failure_names_the_url(http_dir):
    base, _, requests = http_dir
    url = f"{base}/missing.jsonl"
    with pytest.raises(DataError, match="missing.jsonl.*download failed.*internet"):
        load_records(url)
    assert not url_cache_path(url).exists()  # a failed download caches nothing
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        load_records(f"{base}/notes.txt")
    assert requests == ["/missing.jsonl"]  # the bad suffix was refused before any request


def test_url_connection_refused_is_a_data_error(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("THTB_CACHE_DIR", str(tmp_path))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.jsonl"
    with pytest.raises(DataError, match=rf"{url}: download failed .*needs internet"):
        load_records(url)


# ------------------------------------------------------------------------------------------------ THTB score
SLICE = 40


def _score(shared_data: Path, tmp_path: Path) -> dict:
    from thtb.stages.score import run_score

    released = shared_file("thtb_released", "higher-order.jsonl", base=shared_data).parent
    c = resolved("tcm_2pct", tmp_path, f"train.dataset={released / 'higher-order.jsonl'}",
                 f"score.with=[{released / 'lower-order.jsonl'}]", f"score.limit={SLICE}", "score.k=8")
    return run_score(c, tmp_path)


@pytest.fixture(scope="module")
def tcm_scores(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("score")
    return out, _score(shared_data, out)


def test_tcm_thtb_scores_on_a_slice(tcm_scores):
    import pandas as pd

    out, summary = tcm_scores
    hard, simple = summary["datasets"]
    assert (hard["role"], simple["role"]) == ("scored", "with")
    assert summary["thtb_score"] == hard["thtb_score"]
    assert hard["n"] == simple["n"] == summary["n"] == SLICE and summary["n_pooled"] == 2 * SLICE
    for d in (hard, simple):
        assert d["n_failed"] == 0
        assert 0 <= d["thtb_score"] <= 1
        assert all(0 <= v <= 1 for v in d["means"].values())
        assert d["thtb_score"] == pytest.approx(sum(d["means"].values()) / 3)
    card = pd.read_parquet(out / "score" / "scores.parquet")
    assert len(card) == 2 * SLICE and card["thtb_score"].between(0, 1).all()
    for col in ("quality_n", "ihs_n", "ehs_n"):  # min-max over the pooled set
        assert card[col].min() == 0 and card[col].max() == 1
    by_dataset = card.groupby("dataset")["thtb_score"].mean()
    assert by_dataset.tolist() == pytest.approx([hard["thtb_score"], simple["thtb_score"]])
    on_disk = json.loads((out / "score" / "summary.json").read_text())
    assert on_disk["thtb_score"] == summary["thtb_score"] and on_disk["normalize"] == "minmax"
    assert on_disk["scorers"]["reward"]["_target_"]


@pytest.mark.slow  # end to end through run.py: the slow tier (CI runs it)
def test_tcm_thtb_score_is_deterministic(tcm_scores, shared_data, tmp_path):
    again = _score(shared_data, tmp_path)
    assert [d["thtb_score"] for d in again["datasets"]] == [d["thtb_score"] for d in tcm_scores[1]["datasets"]]
