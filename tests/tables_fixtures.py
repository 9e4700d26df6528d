"""Run lines for the tables' tests (a plain module: pytest collects no tests from it), shared by
``tests/test_tables.py`` and ``tests/test_golden_tables.py``: :func:`provenance` (the paper's setup by default),
:func:`line`, the :data:`FIXTURE` lines, :func:`write_lines` and :func:`mmlu_samples` (per-item MMLU-Pro samples)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import ROOT

PAPER = ROOT / "results" / "paper"
MMLU_N = {"business": 789, "law": 1101, "psychology": 798, "biology": 717, "chemistry": 1132, "history": 381,
          "health": 818, "economics": 844, "math": 1351, "physics": 1299, "philosophy": 499, "engineering": 969,
          "computer science": 410, "other": 924}

PAPER_SCORERS = {"reward": {"backend": "InternLM2Reward", "model": "internlm/internlm2-7b-reward"},
                 "judge": {"backend": "openai", "model": "Qwen/Qwen3-32B", "prompts": {"bloom": "bloom@1"}},
                 "embedder": {"backend": "SentenceTransformerEmbedder", "model": "BAAI/bge-large-en-v1.5"}}
OFFLINE_SCORERS = {"reward": {"backend": "HeuristicQualityScorer", "model": None},
                   "judge": {"backend": "offline", "model": None, "prompts": None},
                   "embedder": {"backend": "SentenceTransformerEmbedder", "model": "minilm_offline"}}


def provenance(method, *, setup="authors", fidelity="reference", recipe="lora_paper", mmlu_protocol="tiger",
               judge="Qwen/Qwen3-32B"):
    """A run line's provenance block; the defaults are the paper's setup."""
    scored = method.startswith("thtb")
    scorers = (PAPER_SCORERS if setup == "authors" else OFFLINE_SCORERS) if scored else {}
    label = {"thtb": "Ours", "random": "Random Sampling", "longest": "Longest"}.get(method, method)
    stages = ["quality", "intrinsic", "extrinsic"] if scored else []
    return {"selection": {"method": method, "label": label, "variant": method, "stages": stages, "fidelity": fidelity,
                          "scorers": scorers,
                          "scorer_setup": setup if scored else "none"},
            "training": {"recipe": recipe, "model": "m"},
            "eval": {"mmlu_pro": {"protocol": mmlu_protocol}, "pairwise": {"judge": judge}},
            "thtb": {"version": "0.1.0", "commit": "abc", "dirty": False}, "packages": {"torch": "2.13.0"}}


def line(method, size, seed, *, mmlu=None, categories=None, limit=None, n=12032, pairwise=None, exam=None,
         finished="2026-11-24T22:00:00Z", data="alpaca", prov=None, **extra):
    metrics = {}
    if mmlu is not None:
        metrics["mmlu_pro"] = {"overall": mmlu, "n": n, "limit": limit,
                               "categories": {c: {"accuracy": v, "n": MMLU_N[c]}
                                              for c, v in (categories or {}).items()}}
    if pairwise is not None:
        metrics["pairwise"] = pairwise
    if exam is not None:
        metrics["exam"] = {"accuracy": exam, "n": 165, "correct": round(exam * 1.65)}
        metrics["thtb_score"] = 0.5
    return {"experiment": f"x_{method}", "method": method, "data": data, "model": "m", "model_size": size,
            "seed": seed, "finished_at": finished, "thtb_version": "0.1.0", "metrics": metrics,
            "provenance": prov or provenance(method), **extra}


FIXTURE = [
    # two seeds for Ours-1B: overall 20.0 and 21.0 → 20.50 ± 0.71, t-interval [14.15, 26.85] (n=2); business only in
    # seed 42
    line("thtb", "1B", 42, mmlu=20.0, categories={"business": 20.41},
         pairwise={"baseline": "full", "judge": "j", "n_prompts": 805,
                   "overall": {"win_rate": 75.0, "win_rate_ci95": [72.1, 78.0], "win_rate_tie_half": 76.0, "n": 805},
                   "subsets": {"koala": {"win_rate": 80.0, "win_rate_ci95": [73.0, 86.0], "n": 156}}}),
    line("thtb", "1B", 43, mmlu=21.0),
    # an older line for the same cell and seed: the latest wins
    line("thtb", "1B", 43, mmlu=99.0, finished="2026-01-01T00:00:00Z"),
    # a smoke slice
    line("random", "1B", 42, mmlu=30.0, n=100, limit=100),
    # a method the paper lacks
    line("longest", "3b", 42, mmlu=31.0),
    # Table 3
    line("tcm_hard", "8B", 42, exam=60.0, data="tcm"),
]


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def mmlu_samples(run_dir: Path, correct: list[bool]) -> None:
    rows = [{"question_id": i, "category": "math", "target": "A", "n_options": 10,
             "response": "The answer is (A)." if ok else "The answer is (B)."} for i, ok in enumerate(correct)]
    write_lines(run_dir / "eval" / "mmlu_pro_samples.jsonl", rows)
