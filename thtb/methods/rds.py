"""RDS+ (``conf/selection/rds.yaml``; Ivison et al., 2025, "Large-Scale Data Selection for Instruction Tuning"):
the candidates most similar to examples of the target task, picked round-robin over the targets — each target in
turn takes its most similar candidate not yet taken — until ``n`` are picked.

Here a row's embedding is the run's embedder's (role ``embedding``: all-MiniLM-L6-v2 offline, BGE with the authors'
scorers), cosine similarity, where the paper pools the hidden states of the model being tuned: the provenance says
which embedder made it. The targets are a file's rows (default: MMLU-Pro's validation split, the 70 questions with
their options): ``target.path``, ``target.columns`` (list values joined by newlines), ``target.split`` for a hub
dataset; the file's content is part of the selection's fingerprint.

Score card: ``rds_similarity`` is a row's highest similarity to any target, ``rds_target`` that target's index,
``rds_priority`` its place in the round-robin continued over every row (``n_rows`` for the first pick, then down),
the ranking column.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thtb.cascade import SelectionResult
from thtb.methods.base import SelectionContext
from thtb.methods.embedding import EmbeddingMethod


def round_robin(similarity: np.ndarray) -> np.ndarray:
    """The rows (candidates) of ``similarity`` (candidates × targets) in round-robin order: target 0 takes its most
    similar candidate, then target 1 its most similar not yet taken, …, then target 0 again, until every candidate
    is taken. Ties by row order."""
    n_rows, n_targets = similarity.shape
    ranked = [np.lexsort((np.arange(n_rows), -similarity[:, t])) for t in range(n_targets)]
    taken = np.zeros(n_rows, dtype=bool)
    cursor = np.zeros(n_targets, dtype=np.int64)
    order = np.empty(n_rows, dtype=np.int64)
    for k in range(n_rows):
        t = k % n_targets
        while taken[ranked[t][cursor[t]]]:
            cursor[t] += 1
        row = ranked[t][cursor[t]]
        taken[row], order[k] = True, row
    return order


class RDSPlus(EmbeddingMethod):
    """``target``: ``{path, columns, split}``; ``embedder``, ``text``: as for the other embedding methods."""

    display_name = "RDS+"
    score_columns = {"rds_similarity": ("rds", "highest cosine similarity to a target example")}

    def __init__(self, *, target: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not target or not target.get("path") or not target.get("columns"):
            raise ValueError("selection.target needs a path and the columns to embed (e.g. [question, options])")
        self.target = dict(target)

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        from thtb.data.loaders import data_source_problem, resolve_data_path

        out = super().problems(cfg)
        why = data_source_problem(resolve_data_path(str(self.target["path"])))
        if why:
            out.append((f"the target set selection.target.path={self.target['path']} {why}",
                        "point selection.target.path at the target task's examples"))
        return out

    def key_files(self) -> list[Path]:
        path = Path(str(self.target["path"])).expanduser().absolute()
        return [*super().key_files(), *([path] if path.is_file() else [])]

    def target_texts(self) -> list[str]:
        """The target examples' texts: ``target.columns`` of each row, list values joined by newlines."""
        from thtb.contamination import load_items

        return load_items({"split": "validation", **self.target}, nonempty=True)[0]

    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        start = time.perf_counter()
        scorer = self.build_scorer("embedding", context.cfg)
        candidates = self.embed(pool, context, scorer)
        targets = np.asarray(scorer.embedder.encode(self.target_texts()), dtype=np.float64)  # on the driver: a few
        similarity = candidates @ targets.T
        order = round_robin(similarity)
        priority = np.empty(len(pool))
        priority[order] = np.arange(len(pool), 0, -1)
        card = self.card(pool)
        card["rds_similarity"] = similarity.max(axis=1)
        card["rds_target"] = similarity.argmax(axis=1)
        timings = {**context.timings, self.name: time.perf_counter() - start}
        return self.ranked(pool, n, "rds_priority", priority, card=card, timings=timings)
