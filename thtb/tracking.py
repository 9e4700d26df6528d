"""Experiment tracking: Weights & Biases online/offline, or nothing.

The run's own files never depend on the tracker: it only mirrors what the stages write. Secrets
(any config key that looks like an API key or token) are redacted before a config leaves the process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.IGNORECASE)


def redact(config: Any) -> Any:
    """A copy of a (nested) config with every secret-looking key's value replaced by ``"***"``."""
    if isinstance(config, Mapping):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
                for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [redact(v) for v in config]
    return config


class Tracker(AbstractContextManager):
    """No-op tracker (``logger=none``); the base of :class:`WandbTracker`. Always used as a context
    manager so the run is closed even when a stage fails."""

    backend = "none"

    def log_metrics(self, metrics: Mapping[str, float], prefix: str = "") -> None:
        pass

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        pass

    def log_histogram(self, name: str, values) -> None:
        pass

    def log_images(self, name: str, paths: list[Path]) -> None:
        pass

    def log_summary(self, values: Mapping[str, Any]) -> None:
        pass

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def close(self, failed: bool = False) -> None:
        pass


class WandbTracker(Tracker):
    """Logs to a W&B run (``mode`` online or offline); ``wandb`` is imported only here."""

    backend = "wandb"

    def __init__(self, *, project: str, mode: str, name: str, group: str | None, config: Mapping,
                 entity: str | None = None, tags: list[str] | None = None, dir: str | Path | None = None):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(project=project, entity=entity, mode=mode, name=name, group=group, tags=list(tags or []),
                              config=redact(dict(config)), dir=str(dir) if dir else None, reinit="finish_previous")
        log.info("W&B run %s (%s) in %s", self.run.name, mode, self.run.dir)

    def log_metrics(self, metrics, prefix=""):
        self.run.log({f"{prefix}{k}": v for k, v in metrics.items()})

    def log_table(self, name, frame):
        frame = frame.copy()
        for col in frame.columns:  # W&B tables want plain scalars: lists joined, pandas' NA/NaT → None
            if frame[col].dtype == object:
                frame[col] = frame[col].map(lambda v: ", ".join(v) if isinstance(v, list | tuple) else v)
            if isinstance(frame[col].dtype, pd.api.extensions.ExtensionDtype) or frame[col].dtype == object:
                frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        self.run.log({name: self._wandb.Table(dataframe=frame)})

    def log_histogram(self, name, values):
        self.run.log({name: self._wandb.Histogram(list(values))})

    def log_images(self, name, paths):
        self.run.log({name: [self._wandb.Image(str(p), caption=Path(p).stem) for p in paths]})

    def log_summary(self, values):
        self.run.summary.update(dict(values))

    def close(self, failed=False):
        self.run.finish(exit_code=1 if failed else 0)


def make_tracker(cfg: Mapping | None, *, name: str, config: Mapping, run_dir: Path | None = None) -> Tracker:
    """Build the tracker named by ``cfg.backend`` (``none`` | ``wandb``)."""
    backend = (cfg or {}).get("backend", "none")
    if backend == "none":
        return Tracker()
    if backend == "wandb":
        from thtb.provenance import environment

        config = {**config, "provenance": environment()}  # the project's commit and the key package versions
        return WandbTracker(project=cfg.get("project", "thtb"), mode=cfg.get("mode", "online"), name=name,
                            group=cfg.get("group"), entity=cfg.get("entity"), tags=cfg.get("tags"), config=config,
                            dir=run_dir)
    raise ValueError(f"unknown logger.backend {backend!r}: use none or wandb")
