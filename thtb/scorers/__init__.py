"""Scorers behind THTB's stages, built from config (Hydra ``_target_``) so backends swap freely."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thtb.scorers.availability import ScorerUnavailableError
from thtb.scorers.base import BloomScorer, DisciplineTagger, Embedder, QualityScorer


@dataclass
class Scorers:
    quality: QualityScorer | None
    bloom: BloomScorer | None
    disciplines: DisciplineTagger | None
    embedder: Embedder | None
    judge: Any = None
    """The LLM judge client shared by the Bloom scorer and the discipline tagger (``judge.client``),
    ``None`` for the offline judge."""


def build_scorers(cfg: Mapping, stages: list[str]) -> Scorers:
    """Instantiate the scorers the listed stages need from ``cfg.reward``, ``cfg.judge`` and
    ``cfg.embedder``. One embedder instance is shared (its text memo means queries embedded for the
    Bloom classifier are not embedded again by the discipline tagger), and one judge client (one
    request cache, one set of counters) serves every judge-backed scorer."""
    from hydra.utils import instantiate

    quality = instantiate(cfg["reward"]) if "quality" in stages else None
    bloom = disciplines = embedder = client = None
    if "intrinsic" in stages:
        embedder = instantiate(cfg["embedder"])
        shared: dict[str, Any] = {"embedder": embedder}
        if cfg["judge"].get("client"):
            client = shared["judge"] = instantiate(cfg["judge"]["client"])
        bloom = instantiate(cfg["judge"]["bloom"], **shared)
        disciplines = instantiate(cfg["judge"]["disciplines"], **shared)
    return Scorers(quality=quality, bloom=bloom, disciplines=disciplines, embedder=embedder, judge=client)
