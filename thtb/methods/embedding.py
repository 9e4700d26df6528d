"""What the embedding-based methods (:mod:`~thtb.methods.kcenter`, :mod:`~thtb.methods.rds`) share: each row's text
embedded by the run's embedder as a per-row scorer (role ``embedding``, so it runs on ``executor=ray`` too), its
config, identity and preflight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from thtb.methods.base import SelectionContext, SelectionMethod

TEXTS = {"query": ["query"], "response": ["response"], "pair": ["query", "response"]}
"""What is embedded: the query, the response, or both (``query + "\\n\\n" + response``)."""


class EmbeddingScorer:
    """A per-row scorer: each row's embedding (a list of floats) from an :class:`~thtb.scorers.base.Embedder`."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.name = str(getattr(embedder, "name", type(embedder).__name__))

    def score(self, *columns: list[str]) -> pd.DataFrame:
        texts = list(columns[0]) if len(columns) == 1 else ["\n\n".join(t) for t in zip(*columns, strict=True)]
        vectors = np.asarray(self.embedder.encode(texts), dtype=np.float32)
        return pd.DataFrame({"embedding": list(vectors), "error": None})


class EmbeddingMethod(SelectionMethod):
    """A method that ranks rows by their embeddings. ``embedder``: the embedder's config (``_target_``…, the run's
    ``embedder`` in the YAML) or a built embedder; ``text``: ``query`` | ``response`` | ``pair``."""

    roles = ("embedding",)

    def __init__(self, *, embedder: Mapping[str, Any] | Any, text: str = "query", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if text not in TEXTS:
            raise ValueError(f"selection.text must be one of {sorted(TEXTS)}, got {text!r}")
        self.embedder, self.text = embedder, text

    def scorer_configs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {"embedder": self.embedder if isinstance(self.embedder, Mapping) else type(self.embedder).__name__}

    def identities(self, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from thtb.provenance import embedder_identity

        return {"embedder": embedder_identity(self.embedder if isinstance(self.embedder, Mapping) else
                                              {"model": getattr(self.embedder, "model_name", None)})}

    def problems(self, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        from thtb.scorers.availability import model_problem

        return model_problem("embedder", self.embedder.get("model") if isinstance(self.embedder, Mapping) else None)

    def build_scorer(self, role: str, cfg: Mapping[str, Any]) -> Any:
        if role != "embedding":
            return super().build_scorer(role, cfg)
        if not isinstance(self.embedder, Mapping):
            return EmbeddingScorer(self.embedder)
        from hydra.utils import instantiate

        return EmbeddingScorer(instantiate(self.embedder))

    def embed(self, pool: Any, context: SelectionContext, scorer: EmbeddingScorer | None = None) -> np.ndarray:
        """Every row's embedding (float64 rows), computed on the executor; not kept in the JSON score cache (hundreds
        of floats a row)."""
        scorer = scorer or self.build_scorer("embedding", context.cfg)
        out = context.score("embedding", scorer, pool, np.arange(len(pool)), TEXTS[self.text], cached=False)
        return np.stack([np.asarray(v, dtype=np.float64) for v in out["embedding"]])
