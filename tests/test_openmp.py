"""thtb sets torch's OpenMP wait policy before torch loads (thtb/__init__.py; benchmarks/bench_busy.py measures
why): ``PASSIVE`` unless the user set one, in every process thtb starts too."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT

PROBE = """
import os, subprocess, sys
import thtb, torch
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(os.environ.get("OMP_WAIT_POLICY"), child)
"""


def _probe(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**base, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def test_importing_thtb_makes_waiting_openmp_threads_sleep_here_and_in_children():
    assert _probe() == ["PASSIVE", "PASSIVE"]


def test_a_policy_the_user_set_is_kept():
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "ACTIVE"]
