"""Scorers behind THTB's stages, built from config (Hydra ``_target_``) so backends swap freely."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from thtb.scorers.base import BloomScorer, DisciplineTagger, Embedder, QualityScorer


@dataclass
class Scorers:
    quality: QualityScorer | None
    bloom: BloomScorer | None
    disciplines: DisciplineTagger | None
    embedder: Embedder | None


def build_scorers(cfg: Mapping, stages: list[str]) -> Scorers:
    """Instantiate the scorers the listed stages need from ``cfg.reward``, ``cfg.judge`` and
    ``cfg.embedder``. One embedder instance is shared (its text memo means queries embedded for the
    Bloom classifier are not embedded again by the discipline tagger)."""
    from hydra.utils import instantiate

    quality = instantiate(cfg["reward"]) if "quality" in stages else None
    bloom = disciplines = embedder = None
    if "intrinsic" in stages:
        embedder = instantiate(cfg["embedder"])
        bloom = instantiate(cfg["judge"]["bloom"], embedder=embedder)
        disciplines = instantiate(cfg["judge"]["disciplines"], embedder=embedder)
    return Scorers(quality=quality, bloom=bloom, disciplines=disciplines, embedder=embedder)
