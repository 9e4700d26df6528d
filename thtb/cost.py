"""What a stage cost, recorded beside what it produced: wall time, the devices it held and device-hours (devices ×
wall time), tokens, and judge requests. The select and train stages write a ``cost`` block into their summaries; the
eval stage writes its own and gathers all three onto the run line (``cost``), and the tables print them beside the
metric — so "THTB vs random" reads with its price.

A stage reused from a cache keeps the cost of the run that computed it (the price of the artifact, not of looking
it up). Devices are those the stage's process saw: the GPUs (``cuda``), else the CPU host counted as one device; a
stage whose scorers ran on a Ray cluster says so (``executor``) and counts the driver's devices only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def visible_devices() -> dict[str, Any]:
    """``{"kind": "cuda" | "cpu", "name", "count"}`` of this process (no CUDA initialisation without a GPU)."""
    try:
        import torch

        if torch.cuda.is_available():
            return {"kind": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    except ImportError:  # torch is a dependency; a stripped environment still records its CPU
        pass
    return {"kind": "cpu", "name": f"{os.cpu_count()}-core CPU", "count": 1}


def stage_cost(wall_s: float | None, *, devices: Mapping[str, Any] | None = None, tokens: int | None = None,
               token_kind: str | None = None, judge: Mapping[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
    """One stage's cost block. ``devices``: :func:`visible_devices` by default (``count`` × ``wall_s`` gives the
    device-hours); ``tokens`` and what they are (``token_kind``: ``trained``, ``generated``…); ``judge``: a judge
    client's counters (``calls`` — requests sent, cache hits excluded — and the tokens the server reported)."""
    devices = dict(devices or visible_devices())
    wall = float(wall_s) if wall_s is not None else None
    return {
        "wall_s": round(wall, 3) if wall is not None else None,
        "devices": devices,
        "device_hours": round(devices["count"] * wall / 3600.0, 6) if wall is not None else None,
        "tokens": int(tokens) if tokens is not None else None,
        "token_kind": token_kind if tokens is not None else None,
        "judge_requests": int(judge.get("calls", 0)) if judge else 0,
        "judge_tokens": int(judge.get("prompt_tokens", 0)) + int(judge.get("completion_tokens", 0)) if judge else 0,
        **extra,
    }


def run_cost(selection: Mapping[str, Any] | None, training: Mapping[str, Any] | None,
             evaluation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run line's ``cost``: each stage's block (None where the stage did not run here) and the device-hours of
    the stages that did."""
    stages = {"selection": selection, "training": training, "eval": evaluation}
    hours = [s["device_hours"] for s in stages.values() if s and s.get("device_hours") is not None]
    return {**{k: dict(v) if v else None for k, v in stages.items()},
            "device_hours_total": round(sum(hours), 6) if hours else None}


def cost_text(cost: Mapping[str, Any] | None) -> str:
    """``sel 0.01 h · 12 judge req · train 0.20 h, 1.2M tok`` (device-hours; "—" where a stage is unknown)."""
    if not cost:
        return "—"

    def hours(block: Mapping | None) -> str:
        return "—" if not block or block.get("device_hours") is None else f"{block['device_hours']:.3g} h"

    sel, train = cost.get("selection"), cost.get("training")
    parts = [f"sel {hours(sel)}"]
    if sel and sel.get("judge_requests"):
        parts.append(f"{sel['judge_requests']:,} judge req")
    tok = f", {_tokens(train['tokens'])} tok" if train and train.get("tokens") else ""
    parts.append(f"train {hours(train)}{tok}")
    return " · ".join(parts)


def _tokens(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
