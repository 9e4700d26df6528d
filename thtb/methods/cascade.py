"""THTB (``conf/selection/thtb.yaml``): the paper's three cascaded stages — reward-model quality, intrinsic hardness
(Bloom level + interdisciplinary complexity), extrinsic hardness (expansion index + silhouette) — as a selection
method. The cascade itself is :class:`thtb.cascade.Cascade`; this class says what it uses and builds it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from thtb.cascade import STAGES, Cascade, CascadeConfig, SelectionResult
from thtb.executor import merge_judge_stats
from thtb.methods.base import SelectionContext, SelectionMethod

log = logging.getLogger(__name__)

_INTRINSIC: dict[str, Any] = {}
"""The intrinsic scorers last built in this process, and the config they were built from (``build_scorer``)."""

STAGE_SHORT = {"quality": "quality", "intrinsic": "ihs", "extrinsic": "ehs"}
"""How a variant's name spells a dropped stage (``thtb_no_ihs``: the paper's ablation without intrinsic hardness)."""


class THTB(SelectionMethod):
    """The THTB cascade; ``stages`` (a subset for an ablation), ``fractions``, ``budget``, ``intrinsic`` and
    ``extrinsic`` as in ``conf/selection/thtb.yaml``. An ablation without its own ``budget`` keeps the full
    cascade's share (``Π fractions``), so it is compared with THTB at equal size."""

    display_name = "Ours"
    roles = ("quality", "bloom", "disciplines")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.size is not None:
            raise ValueError("selection.size is a baseline's explicit size; THTB's size is set by selection.budget "
                             "(or its fractions)")
        if not self.stages:
            raise ValueError(f"selection.stages is empty: THTB needs at least one of {list(STAGES)}")

    # ------------------------------------------------------------------ size and name
    def effective_budget(self) -> float | None:
        """``budget``, or — for an ablation (a strict subset of the stages) that sets none — the full cascade's
        share ``Π fractions`` (5% with 0.2 × 0.5 × 0.5), so an ablation keeps THTB's size instead of silently
        keeping more (dropping stage 2 would keep 10%)."""
        if self.budget is not None:
            return self.budget
        if set(self.stages) != set(STAGES):
            return math.prod(float(self.fractions[s]) for s in STAGES)
        return None

    def n_select(self, n_pool: int) -> int:
        from thtb.cascade import n_selected

        return n_selected(n_pool, self.fractions, self.stages, self.effective_budget())

    def variant(self) -> str:
        """``thtb`` for the full cascade at its own size; ``thtb_no_ihs`` (a dropped stage), ``thtb_2pct`` (another
        budget) or both for variants, so they never land in THTB's rows."""
        dropped = [STAGE_SHORT[s] for s in STAGES if s not in self.stages]
        suffix = f"_no_{'_'.join(dropped)}" if dropped else ""
        budget = self.effective_budget()
        full = math.prod(float(self.fractions[s]) for s in STAGES)
        if budget is not None and not math.isclose(budget, full, rel_tol=1e-9):
            suffix += f"_{budget * 100:g}pct"
        return self.name + suffix

    def describe(self) -> dict[str, Any]:
        return {"stages": list(self.stages), "budget": self.effective_budget()}

    def cascade_config(self, fidelity: str) -> CascadeConfig:
        """The cascade's knobs: ``intrinsic`` and ``extrinsic`` pass through to :class:`CascadeConfig` as named there
        (``conf/selection/thtb.yaml`` states each one; a test checks it agrees with the dataclass)."""
        return CascadeConfig(stages=list(self.stages), fractions=dict(self.fractions), budget=self.effective_budget(),
                             failure_budget=self.failure_budget, fidelity=fidelity, **self.intrinsic, **self.extrinsic)

    # ------------------------------------------------------------------ its scorers
    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {"reward": cfg.get("reward") if "quality" in self.stages else None,
                "judge": cfg.get("judge") if "intrinsic" in self.stages else None,
                "embedder": cfg.get("embedder") if "intrinsic" in self.stages else None}

    def cache_inputs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Every stage's scorers, whichever stages run: an ablation reuses the full cascade's scores."""
        full = THTB(name=self.name, fractions=self.fractions)
        return {"configs": full.scorer_configs(cfg), "scorers": full.identities(cfg)}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from thtb.judge import prompts
        from thtb.provenance import embedder_identity, judge_identity, reward_identity
        from thtb.scorers.fitted import fitted_params_identity

        out: dict[str, dict[str, Any]] = {}
        if "quality" in self.stages:  # a proxy's parameters named by params_path: their digest too
            out["reward"] = {**reward_identity(cfg.get("reward")), **fitted_params_identity(cfg.get("reward"))}
        if "intrinsic" in self.stages:
            bloom = prompts.BLOOM if cfg["fidelity"] == "reference" else prompts.BLOOM_LEVEL
            out["judge"] = {**judge_identity(cfg.get("judge"), [bloom.name, prompts.DISCIPLINES.name,
                                                                prompts.DISCIPLINE_DESCRIPTION.name]),
                            **fitted_params_identity(cfg.get("judge"))}
            out["embedder"] = embedder_identity(cfg.get("embedder"))
        return out

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        from thtb.scorers.availability import judge_problem, model_problem

        out = []
        if "quality" in self.stages:
            out += model_problem("reward model", (cfg.get("reward") or {}).get("model"))
        if "intrinsic" in self.stages:
            out += model_problem("embedder", (cfg.get("embedder") or {}).get("model"))
            out += judge_problem(cfg.get("judge") or {})
        return out

    def build_scorer(self, role: str, cfg: Mapping[str, Any]) -> Any:
        from thtb.scorers import build_scorers

        if role == "quality":
            return build_scorers(cfg, ["quality"]).quality
        if role in ("bloom", "disciplines"):  # one build per config in a process: a Ray actor scoring both roles
            key = json.dumps(cfg, sort_keys=True, default=str)  # gets them sharing one embedder (and judge)
            if _INTRINSIC.get("key") != key:
                _INTRINSIC.update(key=key, scorers=build_scorers(cfg, ["intrinsic"]))
            return getattr(_INTRINSIC["scorers"], role)
        return super().build_scorer(role, cfg)

    # ------------------------------------------------------------------ the selection
    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        """The cascade over ``pool``; it keeps ``n_select(len(pool))`` rows by construction (``n`` is that)."""
        from thtb.scorers import build_scorers

        cfg = context.cfg
        if self.budget is None and set(self.stages) != set(STAGES):
            log.info("select: ablation %s keeps the full cascade's size, %g%% of the input (selection.budget=%g); "
                     "set selection.budget to choose another", self.variant(), 100 * self.effective_budget(),
                     self.effective_budget())
        scorers = build_scorers(cfg, self.stages)
        cascade = Cascade(self.cascade_config(context.fidelity), quality=scorers.quality,
                          bloom=scorers.bloom, disciplines=scorers.disciplines, embedder=scorers.embedder,
                          score_cache=context.cache, executor=context.executor)
        try:
            result = cascade.run(pool)
            if scorers.judge is not None:  # with executor=ray the actors' judges did the asking: their counters added
                result.scorer_stats["judge"] = merge_judge_stats(scorers.judge.stats(), context.executor.judge_stats())
            calibration = {role: {"scorer": getattr(scorer, "name", type(scorer).__name__), **scorer.calibration}
                           for role, scorer in (("quality", scorers.quality), ("bloom", scorers.bloom),
                                                ("disciplines", scorers.disciplines))
                           if getattr(scorer, "calibration", None)}  # the offline scorers say it themselves
            if calibration:  # the offline scorers' agreement with the labels read in calibration/ (held-out split)
                result.scorer_stats["calibration"] = calibration
            return result
        finally:
            if scorers.judge is not None:  # also when the run stops on its failure budget
                stats = merge_judge_stats(scorers.judge.stats(), context.executor.judge_stats())
                log.info("judge: %s", {k: v for k, v in stats.items() if k != "cache"})
