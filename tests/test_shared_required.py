"""``THTB_REQUIRE_SHARED=1`` (set by ``.ci/run``): a test whose input lives in ``../shared`` (real data, the
oracles' code) fails naming the missing path instead of skipping — so a CI run can never pass with its reference
checks silently skipped. Without the variable the same tests skip, as on a developer's machine without ``../shared``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

# one test per kind of shared input: Alpaca, AlpacaEval prompts, MMLU-Pro, the authors' scripts, TIGER's outputs
CHECKS = [
    "tests/test_scorers_offline.py::test_quality_full_alpaca_pool",
    "tests/test_eval_pairwise.py::test_alpaca_eval_files",
    "tests/test_eval_mmlu_pro.py::test_prompts_identical_to_builtin_task",
    "tests/test_reward.py::test_last_logit_feeds_the_model_what_the_authors_script_feeds_it",
    "tests/test_mmlu_pro_tiger.py::test_official_chain_reproduces_llama_preds",
]


def _pytest(tmp_path, require: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "THTB_SHARED_DATA": str(tmp_path / "moved-away" / "data")}
    env.pop("THTB_REQUIRE_SHARED", None)
    if require:
        env["THTB_REQUIRE_SHARED"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", *CHECKS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    return _pytest(tmp, require=True), _pytest(tmp, require=False), tmp / "moved-away"


def test_required_shared_inputs_fail_naming_the_missing_paths(runs):
    required, _, gone = runs
    out = required.stdout + required.stderr
    summary = out.strip().splitlines()[-1]  # e.g. "1 failed, 4 errors in 12.1s" (a fixture's failure is an error)
    failed = sum(int(n) for n, what in re.findall(r"(\d+) (failed|errors?)", summary))
    assert required.returncode == 1 and failed == len(CHECKS) and "skipped" not in summary, out[-3000:]
    for path in (gone / "data", gone / "reference" / "thtb_authors" / "reward_score" / "reward_score.py",
                 gone / "reference" / "mmlu_pro_tiger" / "evaluate_from_api.py"):
        assert f"{path} not found" in out, (path, out[-3000:])
    assert "THTB_REQUIRE_SHARED=1" in out


def test_without_the_requirement_they_skip(runs):
    _, optional, _ = runs
    out = optional.stdout + optional.stderr
    assert optional.returncode == 0 and f"{len(CHECKS)} skipped" in out, out[-3000:]
