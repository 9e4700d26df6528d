"""`python -m thtb.slurm`: the sbatch script that starts a Ray cluster in a SLURM allocation (Ray's own
`ray symmetric-run`) and runs run.py on it with executor=ray — rendered, checked by bash, and run here on one
"node" through stand-ins for `scontrol` and `srun` (the only SLURM commands it calls)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from thtb.slurm import main, render


def test_the_script_asks_slurm_for_one_task_per_node_and_starts_ray_on_each():
    script = render(["+experiment=alpaca_5pct", "stages=[select]"], nodes=4, cpus_per_node=64, gpus_per_node=8,
                    partition="gpu", time="08:00:00", python="/opt/env/bin/python")
    sbatch = [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == ["--job-name=thtb-ray", "--nodes=4", "--ntasks-per-node=1", "--exclusive", "--cpus-per-task=64",
                      "--output=thtb-ray-%j.out", "--gpus-per-task=8", "--partition=gpu", "--time=08:00:00"]
    assert ('/opt/env/bin/ray symmetric-run --address "$head_ip:$port" --min-nodes "$SLURM_JOB_NUM_NODES" '
            '--num-cpus "$SLURM_CPUS_PER_TASK" --num-gpus 8 --') in script
    assert script.rstrip().endswith("/opt/env/bin/python run.py +experiment=alpaca_5pct 'stages=[select]' "
                                    "executor=ray executor.address=auto")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    with pytest.raises(ValueError, match="sets executor=ray"):
        render(["executor=local"], nodes=1, cpus_per_node=2)


def test_the_cli_prints_the_script(capsys):
    assert main(["--nodes", "2", "--cpus-per-node", "8", "--", "+experiment=demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash\n#SBATCH --job-name=thtb-ray\n#SBATCH --nodes=2\n")
    assert "# Made by: python -m thtb.slurm --nodes 2 --cpus-per-node 8 --gpus-per-node 0 -- +experiment=demo" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_script_runs_the_demo_selection_on_a_one_node_allocation(tmp_path):
    """The rendered script, run by bash with `scontrol` and `srun` standing in for one allocated node: Ray starts
    (ray symmetric-run), run.py selects the demo on it with executor=ray, and Ray stops."""
    pytest.importorskip("ray")
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "scontrol").write_text("#!/bin/bash\necho localhost\n")
    # srun: drop its own options (-w takes a value), run the command once, here
    (shims / "srun").write_text('#!/bin/bash\nwhile [[ $# -gt 0 && $1 == -* ]]; do\n'
                                '  if [[ $1 == -w ]]; then shift; fi; shift\ndone\nexec "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    script = render(["+experiment=demo", "stages=[select]", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}",
                     f"hydra.run.dir={tmp_path / 'run'}"], nodes=1, cpus_per_node=2, port=_free_port(),
                    python=sys.executable)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "localhost",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_CPUS_PER_TASK": "2", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "RAY_ADDRESS": ""}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "selection" / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_selected"] == 33 and summary["scorers"]["executor"]["name"] == "ray"
    assert summary["scorers"]["executor"]["address"] == "auto"
    assert (tmp_path / "run" / "selection" / "subset.jsonl").is_file()
    assert Path(ROOT / "run.py").is_file()
