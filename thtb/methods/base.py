"""The selection-method interface: one class per method, one ``conf/selection/<name>.yaml`` with its ``_target_``.

A method is built from ``cfg.selection`` (:func:`build_method`, Hydra's ``instantiate``) and declares everything
the rest of the pipeline reads (:class:`SelectionMethod`: its labels, its per-row scorers' roles, configs (the
fingerprint and score-cache key), identities (provenance) and problems (preflight), whether it is seeded, and
``select``) — nothing outside a method's own module and config compares its name. Every scorer role runs in this
process or in a Ray actor (:mod:`thtb.executor`, ``executor.scorers.<role>`` resources). ``select`` returns a
:class:`~thtb.cascade.SelectionResult`: ids best first, one score-card row per input row with every score, the
stage each row fell at and why.

Size: every method keeps ``n_select(len(pool))`` rows — ``size`` when set, else the THTB cascade's size given
``stages``, ``fractions`` and ``budget`` (the keys of ``conf/selection/thtb.yaml`` that a baseline inherits), so a
baseline is compared with THTB at equal size.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from thtb.cascade import STAGES, SelectionResult, _ranks, n_selected, record_failures, top_k
from thtb.executor import LocalExecutor

log = logging.getLogger(__name__)

THTB_FRACTIONS = {"quality": 0.2, "intrinsic": 0.5, "extrinsic": 0.5}
"""The paper's fractions: a method configured without THTB's keys is size-matched to the paper's 5%."""


@dataclass
class SelectionContext:
    """What a method's ``select`` may use besides the pool: the run's config (the scorers' configs), the seed, the
    fidelity (``reference``: the authors' code; ``paper``: the paper's text), the executor its per-row scorers run on,
    and the score cache. ``score`` runs one scorer call through all of them."""

    cfg: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 42
    fidelity: str = "reference"
    executor: Any = None
    cache: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    """Wall time per scorer call (``<role>:<scorer name>``)."""
    judge_stats: dict[str, Any] = field(default_factory=dict)
    """A judge-backed method's judge counters (its own and its Ray actors'), set by the method."""

    def __post_init__(self) -> None:
        if self.executor is None:
            self.executor = LocalExecutor()

    def score(self, role: str, scorer: Any, pool: Any, rows: np.ndarray, columns: Sequence[str],
              method: str = "score", cached: bool = True) -> pd.DataFrame:
        """``scorer.<method>`` on the texts ``columns`` of the pool's ``rows``, on the executor (a Ray actor builds
        its own copy with the method's ``build_scorer(role, cfg)``), timed as ``<role>:<scorer name>``, through the
        score cache (keyed by the rows' content) when there is one and ``cached``."""
        name = f"{role}:{getattr(scorer, 'name', type(scorer).__name__)}"

        def compute() -> pd.DataFrame:
            start = time.perf_counter()
            out = self.executor.map(role, scorer, method, pool, rows, list(columns))
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            return out

        if self.cache is None or not cached:
            return compute()
        return self.cache.get_or_compute(name, [pool.keys(rows, list(columns))], compute)


class SelectionMethod:
    """Base of every selection method (module doc). Subclasses set ``display_name`` and implement ``select``;
    model-scored ones also ``roles``, ``build_scorer``, ``scorer_configs``, ``identities`` and ``problems``.

    Args:
        name: the method's name (``conf/selection/<name>.yaml``'s ``name``): run lines, artifacts, tables.
        size: rows to keep; ``None``: THTB's size (``stages``, ``fractions``, ``budget``).
        stages, fractions, budget: the THTB cascade this method is size-matched to (THTB: the cascade itself).
        failure_budget: failed scores allowed before the run stops.
        plots: write a histogram of every score.
        intrinsic, extrinsic: THTB's stage settings (a baseline inherits them with THTB's keys; unused by it).
    """

    display_name: ClassVar[str] = ""
    """The method's row label in the tables (default: its name)."""
    roles: ClassVar[tuple[str, ...]] = ()
    """Its per-row scorers' roles."""
    seeded: ClassVar[bool] = False
    """Whether the seed changes the subset (random: yes; a scored ranking: no)."""
    score_columns: ClassVar[dict[str, tuple[str, str]]] = {}
    """Its score-card columns the summary describes and plots: column → (its name as the stage, label)."""

    def __init__(self, *, name: str, size: int | None = None, stages: Sequence[str] = STAGES,
                 fractions: Mapping[str, float] | None = None, budget: float | None = None, failure_budget: int = 0,
                 plots: bool = True, intrinsic: Mapping | None = None, extrinsic: Mapping | None = None) -> None:
        self.name = str(name)
        self.size = int(size) if size is not None else None
        if self.size is not None and self.size < 1:
            raise ValueError(f"selection.size must be >= 1 (or null for THTB's size), got {size}")
        self.stages = [s for s in STAGES if s in (stages or [])]
        unknown = sorted(set(stages or []) - set(STAGES))
        if unknown:
            raise ValueError(f"selection.stages: unknown stage(s) {unknown}; the stages are {list(STAGES)}")
        self.fractions = {**THTB_FRACTIONS, **dict(fractions or {})}
        self.budget = float(budget) if budget is not None else None
        self.failure_budget = int(failure_budget)
        self.plots = bool(plots)
        self.intrinsic, self.extrinsic = dict(intrinsic or {}), dict(extrinsic or {})

    # ------------------------------------------------------------------ what the method declares
    @property
    def label(self) -> str:
        return self.display_name or self.name

    def variant(self) -> str:
        """Its name on run lines and in table rows."""
        return self.name

    def n_select(self, n_pool: int) -> int:
        """How many rows it keeps from a pool of ``n_pool``."""
        return self.size if self.size is not None else n_selected(n_pool, self.fractions, self.stages, self.budget)

    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """``{role: config}`` of the scorers its subset depends on (none for a method that scores nothing)."""
        return {}

    def cache_inputs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """What its raw scores depend on (the score cache's key, with the select stage's code): its scorers' configs
        and identities."""
        return {"configs": self.scorer_configs(cfg), "scorers": self.identities(cfg)}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``{role: identity}`` of its scorers for provenance: backend, model, revision, prompt versions."""
        return {}

    def scorer_setup(self, identities: Mapping[str, Mapping]) -> str:
        """``authors`` / ``offline`` / ``custom`` / ``none``: whose scorers made the subset."""
        from thtb.provenance import scorer_setup

        return scorer_setup(identities)

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(what cannot run here and why, how to fix it)`` for each of its scorers (no model is loaded)."""
        return []

    def build_scorer(self, role: str, cfg: Mapping[str, Any]) -> Any:
        """The scorer of ``role``, built from its config (in a Ray actor too). Default: the method's argument named
        after the role — a config with ``_target_`` (instantiated) or a scorer already built."""
        spec = getattr(self, role, None) if role in self.roles else None
        if spec is None:
            raise ValueError(f"selection {self.name!r} has no scorer role {role!r} (its roles: {list(self.roles)})")
        if not isinstance(spec, Mapping):
            return spec
        from hydra.utils import instantiate

        return instantiate(spec)

    def describe(self) -> dict[str, Any]:
        """Its size settings for provenance: ``stages`` (a cascade's; none for a single-score method), ``budget``."""
        return {"stages": [], "budget": self.budget, "size": self.size}

    def key_files(self) -> list[Path]:
        """Files outside this package its subset depends on — a plugin's module, a target set — hashed into the
        selection's fingerprint."""
        module = type(self).__module__
        if module == "thtb" or module.startswith("thtb."):
            return []  # the package's own modules are in the select stage's code digest
        source = inspect.getsourcefile(type(self))
        return [Path(source)] if source else []

    # ------------------------------------------------------------------ the selection
    def select(self, pool: Any, n: int, context: SelectionContext) -> SelectionResult:
        """Keep ``n`` rows of ``pool`` (:mod:`thtb.pool`), best first."""
        raise NotImplementedError

    def ranked(self, pool: Any, n: int, column: str, scores: np.ndarray, *, card: pd.DataFrame | None = None,
               alive: np.ndarray | None = None, timings: dict[str, float] | None = None,
               failures: dict[str, list[str]] | None = None, warnings: list[str] | None = None,
               short: str = "rows are eligible") -> SelectionResult:
        """The result of keeping the ``n`` highest ``scores`` among the ``alive`` rows (ties by row order), the
        others marked as below the cut-off. ``card`` carries the method's own columns and the rows that fell
        earlier (failed, or excluded with their reason); default: a fresh card (:meth:`card`). Fewer eligible rows
        than ``n``: all are kept and a warning says ``only <k> <short>``."""
        card = self.card(pool) if card is None else card
        alive = np.arange(len(pool)) if alive is None else alive
        failures, warnings = failures if failures is not None else {}, warnings if warnings is not None else []
        if not 1 <= n <= len(pool):
            raise ValueError(f"a {self.name} selection of {n} samples needs 1 <= n <= {len(pool)} input samples")
        if len(alive) < n:
            warnings.append(f"{self.name}: only {len(alive)} {short}; the subset has {len(alive)} samples, not {n}")
            log.warning(warnings[-1])
            n = len(alive)
        scores = np.asarray(scores, dtype=np.float64)
        card[column] = scores
        order = alive[top_k(scores[alive], len(alive))]
        rank = f"{self.name}_rank"
        card[rank] = pd.array([pd.NA] * len(card), dtype="Int64")
        card.loc[order, rank] = _ranks(len(order), np.arange(len(order)))
        kept = order[:n]
        cutoff = float(scores[kept[-1]]) if n else float("nan")
        out = order[n:]
        card.loc[out, "why"] = [f"{column} {v:.4g} below the cut-off {cutoff:.4g}" for v in scores[out]]
        card["selected"] = False
        card.loc[kept, "selected"] = True
        card.loc[kept, "fell_at"] = "selected"
        card["rank"] = pd.array([pd.NA] * len(card), dtype="Int64")
        card.loc[kept, "rank"] = np.arange(1, n + 1)
        return SelectionResult(card=card, selected_ids=card.loc[kept, "id"].tolist(),
                               counts={"input": len(pool), self.name: n}, cutoffs={self.name: cutoff},
                               timings=dict(timings or {}), failures=failures, warnings=warnings,
                               rank_columns={self.name: column},
                               score_columns={c: (self.name, label) for c, (_, label) in self.score_columns.items()})

    def card(self, pool: Any) -> pd.DataFrame:
        """A fresh score card: one row per pool row, every row falling at this method unless selected."""
        card = pd.DataFrame({"id": pool.ids, "row": np.arange(len(pool))})
        card["fell_at"], card["why"], card["error"] = self.name, None, None
        return card

    def fail(self, card: pd.DataFrame, rows: np.ndarray, errors: Sequence[str], failures: dict[str, list[str]]) -> None:
        """Mark ``rows`` as failed (their errors in the card), counted against the failure budget (none: nothing)."""
        if len(rows):
            record_failures(card, rows, list(errors), self.name, failures, self.failure_budget)


def build_method(cfg: Mapping[str, Any]) -> SelectionMethod:
    """The selection method of a resolved run config: ``cfg.selection`` instantiated (its scorers' configs stay
    configs until the method builds them)."""
    from hydra.utils import instantiate

    sel = dict(cfg.get("selection") or {})
    if "_target_" not in sel:
        raise ValueError(f"selection {sel.get('name')!r} names no method class (`_target_` in "
                         "conf/selection/<name>.yaml, e.g. thtb.methods.random.RandomSelection)")
    method = instantiate(sel, _recursive_=False, _convert_="all")
    if not isinstance(method, SelectionMethod):
        raise TypeError(f"selection._target_={sel['_target_']} built a {type(method).__name__}, not a "
                        "thtb.methods.SelectionMethod")
    return method


def scorer_problems(cfg: Mapping[str, Any], method: SelectionMethod | None = None) -> list[tuple[str, str]]:
    """``(what cannot run and why, how to fix it)`` for every scorer the configured selection method uses that cannot
    run here (its :meth:`~SelectionMethod.problems`): cache look-ups and at most one bounded request per model or
    server; nothing is loaded or downloaded."""
    return (method or build_method(cfg)).problems(cfg)


def check_scorers_available(cfg: Mapping[str, Any], method: SelectionMethod | None = None) -> None:
    """Raise :class:`~thtb.scorers.availability.ScorerUnavailableError` naming every scorer of the selection that
    cannot run here."""
    from thtb.scorers.availability import OFFLINE_HINT, ScorerUnavailableError

    problems = scorer_problems(cfg, method)
    if problems:
        lines = "\n".join(f"  - {what}; {fix}" for what, fix in problems)
        raise ScorerUnavailableError(f"experiment {cfg.get('experiment_name')!r} cannot select: its scorers are not "
                                     f"available here\n{lines}\nMake them available, {OFFLINE_HINT}.")


def selection_provenance(cfg: Mapping[str, Any], fingerprint: str | None = None,
                         method: SelectionMethod | None = None) -> dict[str, Any]:
    """Which method (its name, label, class), fidelity, size settings and scorers (model ids, revisions, prompt
    versions) produced a subset — everything read from the method object."""
    method = method or build_method(cfg)
    scorers, kind, variant = method.identities(cfg), type(method), method.variant()
    return {"method": method.name, "label": method.label if variant == method.name else variant,
            "class": f"{kind.__module__}.{kind.__qualname__}", "fidelity": str(cfg["fidelity"]), **method.describe(),
            "variant": variant, "seed": cfg.get("seed") if method.seeded else None, "fingerprint": fingerprint,
            "scorers": scorers, "scorer_setup": method.scorer_setup(scorers)}
