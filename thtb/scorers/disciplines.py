"""Offline discipline tagger: nearest disciplines of a fixed, project-written catalogue.

:class:`CatalogueDisciplineTagger` is the hand-built offline tagger (``judge=rules``) of docs/METHOD.md
"Interdisciplinary complexity (IC)". The catalogue (``thtb/resources/disciplines.yaml``) holds every key of
``discipline_keys.txt`` with a human name and a 3–5 sentence description; :meth:`~CatalogueDisciplineTagger.describe`
returns those descriptions (they are what the IC distance term embeds).

Rules
-----
* Each catalogue entry is embedded once, sentence by sentence, each sentence prefixed by the name
  (``"Chemistry: It covers atoms and molecules, …"``); each query (after :func:`~thtb.scorers.embedder.clean_query`,
  the same text the Bloom classifier embeds, so a shared embedder serves both from one encoding) is embedded once.
* ``s_j`` = the best cosine of the query to any sentence of discipline ``j``. A short query matches one facet of a
  field (its methods, or its typical questions) far better than the average of the whole paragraph: on a hand-labelled
  development set of 50 clear queries the top-1 accuracy was about 0.77 for the best sentence against 0.66 for the
  whole "name: description" text.
* The tagger keeps the best discipline always, plus every other discipline with ``s_j ≥ threshold`` **and**
  ``s_j ≥ s_best − margin``, at most ``max_disciplines``, in descending similarity (ties: catalogue order).
* Defaults ``threshold = 0.30``, ``margin = 0.10``, ``max_disciplines = 4``, measured with all-MiniLM-L6-v2 on 1,500
  random Alpaca queries: the best match has median cosine 0.32 (5–95%: 0.18–0.52) and the runner-up trails it by a
  median 0.04, while disciplines a reader would not name score below ~0.3. With these defaults 72% of Alpaca queries
  get one label and the mean is 1.45, single-topic queries ("Balance this chemical equation") keep one, and clearly
  interdisciplinary ones ("machine learning to diagnose diseases from medical images", "climate change and
  agricultural productivity") get two or more. The cap of four keeps a vague query that is loosely near many fields
  from dominating IC's count term.
* An empty query is an error (``disciplines`` ``None``), never a default label.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from thtb.scorers.base import DisciplineTagger, Embedder, check_result
from thtb.scorers.embedder import clean_query
from thtb.scorers.fitted import hand_built_calibration


def split_sentences(text: str) -> list[str]:
    """Split a description on sentence ends (". ", "! ", "? "); the catalogue avoids "e.g."."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def top_labels(scores: np.ndarray, labels: Sequence[str], floor: float, cap: int) -> list[str]:
    """The best-scoring label, then every other one scoring at least ``floor``, in descending score (ties: label
    order), at most ``cap``."""
    order = np.argsort(-scores, kind="stable")
    keep = [order[0]] + [j for j in order[1:] if scores[j] >= floor]
    return [labels[j] for j in keep[:cap]]


def tag_rows(tagger: DisciplineTagger, queries: Sequence[str], scores) -> pd.DataFrame:
    """A tagger's frame: ``tagger.select`` of each row of ``scores(ok)`` (one row per non-empty cleaned query, at
    the positions ``ok``); an empty query is an error (``disciplines`` ``None``)."""
    ok = [i for i, q in enumerate(queries) if clean_query("" if q is None else str(q))]
    labels: list[list[str] | None] = [None] * len(queries)
    errors: list[str | None] = ["empty query"] * len(queries)
    for i, row in zip(ok, scores(ok) if ok else ()):
        labels[i], errors[i] = tagger.select(row), None
    frame = pd.DataFrame({"disciplines": pd.Series(labels, dtype=object), "error": errors})
    return check_result(frame, len(queries), ("disciplines",), tagger.name)


def load_catalogue(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """Read a discipline catalogue: ``{key: {"name": ..., "description": ...}}`` in file order."""
    source = resources.files("thtb.resources") / "disciplines.yaml" if path is None else Path(path)
    entries = yaml.safe_load(source.read_text(encoding="utf-8"))["disciplines"]
    catalogue: dict[str, dict[str, str]] = {}
    for key, entry in entries.items():
        name, description = entry.get("name"), entry.get("description")
        if not name or not description:
            raise ValueError(f"discipline {key!r} needs a non-empty name and description")
        catalogue[str(key)] = {"name": str(name).strip(), "description": " ".join(str(description).split())}
    if not catalogue:
        raise ValueError("the discipline catalogue is empty")
    return catalogue


class CatalogueDisciplineTagger(DisciplineTagger):
    """Multi-label discipline tags by cosine similarity to catalogue entries (``threshold``, ``margin`` and
    ``max_disciplines``: the rules of the module doc), with the shared ``embedder`` and a catalogue YAML at
    ``catalogue_path`` (``None``: the packaged ``disciplines.yaml``)."""

    name = "catalogue_disciplines"
    calibration = property(lambda self: hand_built_calibration("disciplines"))
    """Held-out agreement with the labels of ``calibration/`` (``python -m thtb.calibration evaluate --write``)."""

    def __init__(self, embedder: Embedder, catalogue_path: str | Path | None = None, threshold: float = 0.30,
                 margin: float = 0.10, max_disciplines: int = 4) -> None:
        if max_disciplines < 1:
            raise ValueError(f"max_disciplines must be >= 1, got {max_disciplines}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.embedder = embedder
        self.catalogue = load_catalogue(catalogue_path)
        self.keys: tuple[str, ...] = tuple(self.catalogue)
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.max_disciplines = int(max_disciplines)

    @functools.cached_property
    def _sentence_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every ``"name: sentence"`` and the catalogue index owning each (once)."""
        owned = [(j, f"{entry['name']}: {sentence}") for j, entry in enumerate(self.catalogue.values())
                 for sentence in split_sentences(entry["description"])]
        return self.embedder.encode([text for _, text in owned]), np.asarray([j for j, _ in owned])

    def similarities(self, queries: Sequence[str]) -> np.ndarray:
        """``(n, n_disciplines)``: best cosine of each cleaned query to a sentence of each entry."""
        matrix, owner = self._sentence_matrix
        texts = [clean_query(str(q)) for q in queries]
        cos = self.embedder.encode(texts) @ matrix.T
        return np.stack([cos[:, owner == j].max(axis=1) for j in range(len(self.keys))], axis=1)

    def select(self, sims: np.ndarray) -> list[str]:
        """Apply the best + margin + threshold + cap rule to one row of similarities."""
        return top_labels(sims, self.keys, max(self.threshold, float(sims.max()) - self.margin), self.max_disciplines)

    def tag(self, queries: Sequence[str]) -> pd.DataFrame:
        """Columns ``disciplines`` (keys, most similar first) and ``error``."""
        texts = [clean_query("" if q is None else str(q)) for q in queries]
        return tag_rows(self, queries, lambda ok: self.similarities([texts[i] for i in ok]))

    def describe(self, disciplines: Sequence[str]) -> dict[str, str]:
        """Catalogue description of each key; an unknown key raises ``KeyError`` naming it."""
        unknown = [d for d in disciplines if d not in self.catalogue]
        if unknown:
            raise KeyError(f"discipline(s) not in the catalogue: {', '.join(map(repr, unknown))}")
        return {d: self.catalogue[d]["description"] for d in disciplines}
