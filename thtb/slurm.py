"""A Ray cluster inside a SLURM allocation, running `run.py` on it: the sbatch script, rendered.

    python -m thtb.slurm --nodes 4 --gpus-per-node 8 --cpus-per-node 64 --partition gpu --time 08:00:00 \\
        -- +experiment=alpaca_5pct stages=[select] > thtb_ray.sbatch
    sbatch thtb_ray.sbatch

The script starts Ray on every allocated node with Ray's own ``ray symmetric-run`` (one task per node: the first
node is the head, the others join it, ``--min-nodes`` waits for all of them), runs ``python run.py <overrides>
executor=ray executor.address=auto`` on the head once the cluster is whole, and stops Ray when the run ends. The
score cache (``paths.cache_dir``) must be on a filesystem every node sees: each scored batch is stored there by its
rows' content, so a job that is killed and submitted again scores only what is missing.

Sweeps stay on Hydra's submitit launcher (``hydra/launcher=submitit_slurm``: one job per sweep point); this is for
one selection larger than a machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from thtb import __version__

ROOT = Path(__file__).resolve().parents[1]


def render(overrides: list[str], *, nodes: int, cpus_per_node: int, gpus_per_node: int = 0,
           partition: str | None = None, time: str | None = None, job_name: str = "thtb-ray", port: int = 6379,
           workdir: str | Path = ROOT, python: str = "python", setup: str | None = None,
           account: str | None = None) -> str:
    """The sbatch script (module doc). ``python``: the interpreter of the environment thtb is installed in (every
    node runs it); ``setup``: shell lines run first on the head (``module load …``, ``source venv/bin/activate``)."""
    if nodes < 1 or cpus_per_node < 1 or gpus_per_node < 0:
        raise ValueError(f"nodes and cpus_per_node must be >= 1 and gpus_per_node >= 0, got {nodes}, "
                         f"{cpus_per_node}, {gpus_per_node}")
    if any(o.startswith(("executor=", "executor.address=")) for o in overrides):
        raise ValueError("the script sets executor=ray and executor.address=auto itself; leave them out")
    sbatch = [f"--job-name={job_name}", f"--nodes={nodes}", "--ntasks-per-node=1", "--exclusive",
              f"--cpus-per-task={cpus_per_node}", f"--output={job_name}-%j.out"]
    if gpus_per_node:
        sbatch.append(f"--gpus-per-task={gpus_per_node}")
    sbatch += [f"--partition={partition}"] * bool(partition) + [f"--time={time}"] * bool(time)
    sbatch += [f"--account={account}"] * bool(account)
    run = [python, "run.py", *overrides, "executor=ray", "executor.address=auto"]
    ray = str(Path(python).with_name("ray")) if "/" in python else "ray"  # the environment's own Ray CLI
    start = [shlex.quote(ray), "symmetric-run", "--address", '"$head_ip:$port"', "--min-nodes",
             '"$SLURM_JOB_NUM_NODES"', "--num-cpus", '"$SLURM_CPUS_PER_TASK"', "--num-gpus", str(gpus_per_node), "--"]
    made_by = " ".join(["python -m thtb.slurm", f"--nodes {nodes}", f"--cpus-per-node {cpus_per_node}",
                        f"--gpus-per-node {gpus_per_node}", "--", *map(shlex.quote, overrides)])
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {arg}" for arg in sbatch),
        f"# Made by: {made_by} (thtb {__version__}). A Ray cluster on the allocation's nodes (ray symmetric-run: the",
        "# first node is the head), then run.py on it with executor=ray; Ray stops when the run ends.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        *([setup] if setup else []),
        *([f"export PATH={shlex.quote(str(Path(python).parent))}:\"$PATH\"  # ray symmetric-run calls `ray start`"]
          if "/" in python else []),
        'mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'head_ip=$(srun --nodes=1 --ntasks=1 -w "${nodes[0]}" hostname --ip-address | awk \'{print $1}\')',
        f"port={int(port)}",
        'echo "thtb: Ray head ${nodes[0]} ($head_ip:$port), ${#nodes[@]} node(s)"',
        'srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" \\',
        "    " + " ".join(start) + " \\",
        "    " + " ".join(shlex.quote(part) for part in run),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thtb.slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--cpus-per-node", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--partition")
    parser.add_argument("--time", help="wall-clock limit, e.g. 08:00:00")
    parser.add_argument("--account")
    parser.add_argument("--job-name", default="thtb-ray")
    parser.add_argument("--port", type=int, default=6379, help="the Ray head's port")
    parser.add_argument("--workdir", default=str(ROOT), help="where run.py is (default: this checkout)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter every node runs")
    parser.add_argument("--setup", help="shell lines run first, e.g. 'module load cuda'")
    parser.add_argument("overrides", nargs="*", help="run.py's overrides, after --")
    args = vars(parser.parse_args(argv))  # every option is one of render's keyword arguments
    try:
        script = render(args.pop("overrides"), **args)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(script)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
