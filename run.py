"""Hydra entry point: compose the config, run the listed stages, nothing else.

    python run.py +experiment=demo
    python run.py +experiment=alpaca_5pct scoring=offline data.path=../shared/data/alpaca/alpaca_data.json
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("thtb")

# Run directories are unique per process (two runs started in the same second never share one): the default
# hydra.run.dir ends with microseconds and the pid.
OmegaConf.register_new_resolver("thtb_run_suffix", lambda: f"{time.time_ns() // 1000 % 10**6:06d}-{os.getpid()}",
                                use_cache=True, replace=True)

STAGES = {
    "score": "thtb.stages.score:run_score", "select": "thtb.stages.select:run_select",
    "train": "thtb.train.stage:run_train", "eval": "thtb.eval.stage:run_eval",
    "tables": "thtb.eval.tables_stage:run_tables",
}
"""Stage name → ``module:function(cfg: dict, run_dir: Path, tracker) -> dict``."""


class RunCannotStart(RuntimeError):
    """Problems found before the first stage ran (every stage's ``preflight``); nothing has run."""


PROJECT_ERRORS = frozenset({
    "thtb.data.errors.DataError", "thtb.scorers.availability.ScorerUnavailableError",
    "thtb.scorers.base.DescriptionError", "thtb.cascade.SelectionError", "thtb.calibration.CalibrationError",
    "thtb.models.smollm2.SmolLM2NotInstalled", "thtb.judge.flow.JudgeStalledError", "thtb.judge.local.ModelLoadError",
    "thtb.serve.ServerStartError", "thtb.eval.stage.EvalConfigError", "thtb.eval.pairwise.EvaluationError",
    "thtb.eval.sanity.NotTrainedError", "thtb.eval.exam.ExamFormatError", "thtb.eval.tables.RunLineError",
})
"""The project's errors whose message says all a user needs (what, where, the fix): a run stopped by one prints
that message alone, no traceback (``HYDRA_FULL_ERROR=1`` shows it). Any other exception keeps its traceback."""


class RunStopped(CompactHydraException):
    """A project error (:data:`PROJECT_ERRORS`, :class:`RunCannotStart`) as Hydra prints it: its message alone on
    stderr, exit status 1, no traceback (with ``HYDRA_FULL_ERROR=1`` the original is raised instead, traceback and
    all). Raised out of the task function, so Hydra still ends the job as failed and a multirun's other jobs run."""


def _is_project_error(exc: BaseException) -> bool:
    return isinstance(exc, RunCannotStart) or any(f"{cls.__module__}.{cls.__qualname__}" in PROJECT_ERRORS
                                                  for cls in type(exc).__mro__)


def _stopped(exc: BaseException) -> RunStopped:
    """``exc`` as one message (also written to the run's log file, which the console line does not reach)."""
    message = f"{type(exc).__name__}: {exc}"
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "run stopped: %s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    return RunStopped(message)


def _preflight(names: list[str], cfg: dict, run_dir: Path) -> list[str]:
    """Every listed stage's ``preflight(cfg, run_dir, stages)`` problems, all at once (no model loads)."""
    modules = [importlib.import_module(STAGES[name].split(":")[0]) for name in dict.fromkeys(names)]
    checks = [module.preflight for module in modules if hasattr(module, "preflight")]
    return [problem for check in checks for problem in check(cfg, run_dir, list(names))]


def _stage(name: str):
    if name not in STAGES:
        raise RunCannotStart(f"unknown stage {name!r} in `stages`; available: {sorted(STAGES)}; nothing has run")
    module, func = STAGES[name].split(":")
    return getattr(importlib.import_module(module), func)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        _run(cfg)
    except Exception as exc:
        if _is_project_error(exc) and os.environ.get("HYDRA_FULL_ERROR") != "1":  # Hydra's own test for it
            raise _stopped(exc) from exc
        raise


def _run(cfg: DictConfig) -> None:
    from thtb.deprecated import deprecation_message, pop_deprecated
    from thtb.tracking import make_tracker

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("httpx", "httpx2"):  # the openai client's HTTP layer logs every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    container = OmegaConf.to_container(cfg, resolve=True)
    if renamed := pop_deprecated(container):
        log.warning("renamed config choices:\n%s", deprecation_message(renamed))
    run_dir = Path(container["paths"]["run_dir"])
    stages = [_stage(name) for name in container["stages"]]  # fail before any work on a typo
    if problems := _preflight(container["stages"], container, run_dir):
        raise RunCannotStart(f"{len(problems)} problem(s) found before the first stage; nothing has run:\n  - "
                             + "\n  - ".join(problems))
    report = []
    with make_tracker(container.get("logger"), name=container["experiment_name"], config=container,
                      run_dir=run_dir) as tracker:
        for name, stage in zip(container["stages"], stages, strict=True):
            log.info("stage %s", name)
            start = time.perf_counter()
            result = stage(container, run_dir, tracker) or {}
            report.append(_describe(name, result, time.perf_counter() - start))
    log.info("done: %s → %s", " · ".join(report), run_dir)


def _describe(name: str, result: dict, seconds: float) -> str:
    """``select reused (0.4 s)`` / ``train ran (131.2 s)`` / ``eval ran, mmlu_pro reused (3.1 s)``."""
    status = "reused" if result.get("reused") else "ran"
    parts = [f"{task} reused" for task, hit in (result.get("reused_tasks") or {}).items() if hit]
    return f"{name} {status}{', ' + ', '.join(parts) if parts and status == 'ran' else ''} ({seconds:.1f} s)"


if __name__ == "__main__":
    main()
