"""Superfiltering (``conf/selection/superfiltering.yaml``; Li et al., ACL 2024, "Superfiltering: Weak-to-Strong Data
Filtering for Fast Instruction-Tuning"): IFD from a small LM instead of the model being tuned — GPT-2 as published,
SmolLM2-135M offline — computed as their scripts compute it (:class:`~thtb.scorers.ifd.SuperfilteringIFDScorer`:
plain ``instruction\\n[input\\n]`` prompt, ratio of perplexities), then, as their ``select_data.py`` does, the pairs
with IFD ≥ 1 dropped and the ``n`` highest IFDs kept (size-matched to the THTB cascade; their own size is a share of
the 52,002 Alpaca rows). Unscorable pairs (an empty response, a prompt that fills ``max_length``) are failures
counted against the failure budget (their script drops them silently)."""

from __future__ import annotations

from thtb.methods.ifd import IFD


class Superfiltering(IFD):
    """``ifd``: the scorer's config (``SuperfilteringIFDScorer`` and its model, ``max_length``, batch size) or a
    built scorer."""

    display_name = "Superfiltering"
    score_columns = {"ifd": ("superfiltering", "IFD = PPL(r|q) / PPL(r), small LM")}
    scoring_model = "Superfiltering's small LM"
