"""How a run line's result differs from the paper's setup, and what produced it: the tables' provenance policy.

:func:`deviations` compares a run line's provenance (``thtb.provenance`` records the selection and training
identities, :mod:`thtb.eval.protocol` the evaluation protocols) with the authors' setup
(:data:`PAPER_SETUP`); the tables (:mod:`thtb.eval.tables`) use it to keep runs of different
provenance in different rows and to say plainly how a row differs from the paper. :func:`describe` is the one-line
``provenance`` column of each table cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thtb.provenance import PAPER_SETUP as PAPER_SELECTION

PAPER_SETUP: dict[str, Any] = {
    **PAPER_SELECTION,
    "train_recipe": "lora_paper",
    "mmlu_pro_protocol": "tiger",
    "pairwise_judge": "Qwen/Qwen3-32B",
}
"""The authors' setup (docs/METHOD.md): their selection (fidelity and scorers), their training recipe, their
evaluation protocol."""


def _short(model: Any) -> str:
    return str(model).rstrip("/").rpartition("/")[2] if model else "none"


def selection_deviations(sel: Mapping | None) -> list[str]:
    """How a subset's selection (its provenance, :func:`thtb.methods.selection_provenance`) differs from the authors'
    (empty: made as they made it): scorers other than theirs; for the cascade (a selection with stages), a fidelity
    other than theirs. A method that scores nothing (random, longest) has nothing to differ in."""
    if not sel:
        return []
    out = []
    setup = sel.get("scorer_setup")
    scorers = sel.get("scorers") or {}
    if scorers and setup == "offline":
        out.append("offline scorers")
    elif scorers and setup == "custom":
        out.append("scorers " + ", ".join(f"{role} {_short(s.get('model') or s.get('backend'))}"
                                          for role, s in sorted(scorers.items())))
    if sel.get("stages") and sel.get("fidelity") != PAPER_SETUP["fidelity"]:
        out.append(f"fidelity={sel.get('fidelity')}")
    return out


def eval_deviations(block: str, protocol: Mapping | None) -> list[str]:
    """How one evaluation differs from the authors' protocol."""
    if not protocol:
        return []
    if block == "mmlu_pro" and protocol.get("protocol") != PAPER_SETUP["mmlu_pro_protocol"]:
        return [f"MMLU-Pro via {protocol.get('protocol')}"]
    if block == "pairwise":
        judge = protocol.get("judge")
        out = [f"judge {_short(judge)}"] if judge != PAPER_SETUP["pairwise_judge"] else []
        if protocol.get("template") not in (None, "forced"):
            out.append(f"judge template {protocol.get('template')} (ties allowed)")
        return out
    return []


def score_deviations(score: Mapping | None) -> list[str]:
    """How a dataset's THTB score (Table 3) was scored differently from the authors."""
    if not score:
        return []
    return [f"THTB score: {d}" for d in selection_deviations(score)]


def deviations(line: Mapping, block: str) -> dict[str, list[str]]:
    """``{"row": [...], "eval": [...]}``: how a run line's result for ``block`` differs from the paper's setup.

    ``row`` differences (selection scorers, fidelity, training recipe, unknown provenance) make a different
    experiment: such a run is its own row and no published number stands beside it. ``eval`` differences (the
    scoring protocol) keep it beside the published number, marked, with a footnote saying what differs."""
    prov = line.get("provenance")
    if not isinstance(prov, Mapping):
        return {"row": ["provenance unknown"], "eval": []}
    row = selection_deviations(prov.get("selection"))
    recipe = (prov.get("training") or {}).get("recipe")
    if recipe and recipe != PAPER_SETUP["train_recipe"]:
        row.append(f"train={recipe}")
    evals = eval_deviations(block, (prov.get("eval") or {}).get(block))
    if block == "exam":
        evals += score_deviations(prov.get("score"))
    return {"row": row, "eval": evals}


def describe(line: Mapping, block: str) -> str:
    """One line saying what produced a run line's ``block`` result (the tables' ``provenance`` column)."""
    prov = line.get("provenance")
    if not isinstance(prov, Mapping):
        return "provenance unknown"
    parts = []
    if sel := prov.get("selection") or {}:
        scorers = ", ".join(f"{role} {_short(s.get('model') or s.get('backend'))}"
                            + (f" ({', '.join((s.get('prompts') or {}).values())})" if s.get("prompts") else "")
                            for role, s in sorted((sel.get("scorers") or {}).items()))
        parts.append(f"selection {sel.get('method')}" + (f" [{scorers}]" if scorers else "")
                     + (f", fidelity={sel['fidelity']}" if sel.get("fidelity") and scorers else ""))
    if train := prov.get("training") or {}:
        parts.append(f"train {train.get('recipe')} on {train.get('model')}")
    protocol = (prov.get("eval") or {}).get(block) or {}
    if block == "mmlu_pro" and protocol:
        parts.append(f"MMLU-Pro {protocol.get('protocol')}, {protocol.get('fewshot')}-shot"
                     + (", chat template" if protocol.get("apply_chat_template") else ""))
    elif block == "pairwise" and protocol:
        parts.append(f"judge {_short(protocol.get('judge'))} ({protocol.get('prompt')}, order {protocol.get('order')})")
    if thtb := prov.get("thtb") or {}:
        commit = (thtb.get("commit") or "")[:10] or "no commit"
        parts.append(f"thtb {thtb.get('version')} @ {commit}{' (dirty)' if thtb.get('dirty') else ''}")
    return "; ".join(parts)
