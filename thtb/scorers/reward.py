"""Stage-1 quality from a neural reward model (docs/METHOD.md "Stage 1 — quality").

Two backends share one batching engine (:class:`_BatchedRewardScorer`):

* :class:`SequenceClassificationReward` — any Hugging Face ``AutoModelForSequenceClassification`` reward model with a
  single-label head (Skywork-Reward-V2-Llama-3.1-8B, Skywork-Reward-Llama-3.1-8B-v0.2, …).
  ``quality_raw = logits[0]``. ``normalization="minmax"`` by default (these rewards have no fixed range).
* :class:`InternLM2Reward` — ``internlm/internlm2-7b-reward`` (remote code), the paper's reference model,
  ``normalization="reward_clip"`` (``clip((r + 5) / 10, 0, 1)``).

Input construction
------------------
The conversation is ``[{"role": "user", "content": query}, {"role": "assistant", "content": response}]``; the model's
own chat template is applied with ``tokenize=False, add_generation_prompt=False`` and the text is then tokenised:

* sequence classification: ``add_special_tokens=False`` when the templated text already starts with the tokenizer's
  BOS token (Llama-3 templates do; this avoids the double BOS the Skywork model cards warn about), otherwise
  ``add_special_tokens=True``. The model's head reads the logit at the rightmost non-pad token (Hugging Face
  ``*ForSequenceClassification``).
* InternLM2, two modes:

  - ``last_logit=False`` (reference, = ``model.get_scores(tokenizer, chats)``): the text is tokenised with
    ``add_special_tokens=False`` (the template writes ``<s>`` itself), the reward token ``[UNUSED_TOKEN_130]`` (id
    92527) is appended, and the remote ``forward`` reads the score at it (the last attended position).
  - ``last_logit=True`` (the authors' selection script, ``reward_score.py`` ``_local_model_inference``):
    ``tokenizer(text)`` with the tokenizer's defaults, i.e. ``add_special_tokens=True`` — InternLM2's tokenizer
    (``add_bos_token=True``) therefore puts a second ``<s>`` in front of the template's — and no reward token; the
    score is ``outputs.logits[0, -1]``, the same forward's score at the last template token. Scores differ from the
    reference; use it only to reproduce the released data.

Batching
--------
Samples are sorted by token length, **longest first** (an out-of-memory error shows up on the first batch, not after
hours), cut into ``batch_size`` batches, **right-padded** (causal models: padding after the text cannot change the
real tokens' hidden states, and positions stay 0..n−1 as in an unpadded pass) with an attention mask, and the scores
are scattered back to input order. A batch whose forward raises (e.g. CUDA OOM) is retried one sample at a time; a
sample that still fails, or yields a non-finite score, gets ``error`` and ``quality_raw = NaN`` — never a default
value.

Truncation
----------
A conversation longer than ``max_length`` tokens is, with ``truncate=True`` (default), shortened by cutting the **end
of the response** (then, if needed, the end of the query) at the token level and re-applying the template, so the
template's closing tokens — where the score is read — stay intact. The cut is reported in ``quality_reason``
(``"reward 1.234; truncated: response −517 tokens"``) and counted in a single warning per call. With
``truncate=False`` such a sample gets ``error`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from thtb.scorers.base import QualityScorer, check_result

log = logging.getLogger(__name__)

INTERNLM2_REWARD_TOKEN = "[UNUSED_TOKEN_130]"
"""The reward token the InternLM2-Reward remote code appends (id 92527)."""
INTERNLM2_REWARD_TOKEN_ID = 92527

_MAX_FIT_ROUNDS = 8


def _text_config(model: Any) -> Any:
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def _error_message(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve_device(device: str | None) -> str:
    """``None`` → ``"cuda"`` when available, else ``"cpu"``."""
    if device is not None:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | Any, device: str) -> Any:
    """``"auto"`` → bfloat16 on a bf16-capable CUDA device, float32 otherwise; names map to torch dtypes."""
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    value = getattr(torch, aliases.get(dtype, dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


class _BatchedRewardScorer(QualityScorer):
    """The engine of the module doc (lazy load, truncation, batching, retry). Subclasses name their ``auto_class``
    (the ``transformers`` class that loads the model) and implement :meth:`_tokenize` (text → ids, including any
    appended token)."""

    normalization = "minmax"
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, model: str, batch_size: int = 8, max_length: int = 4096, device: str | None = None,
                 dtype: str = "auto", normalization: str = "minmax", trust_remote_code: bool = False,
                 truncate: bool = True, show_progress: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
        if normalization not in ("minmax", "reward_clip"):
            raise ValueError(f"normalization must be 'minmax' or 'reward_clip', got {normalization!r}")
        self.model_name = str(model)
        self.name = self.model_name
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.device = device
        self.dtype = dtype
        self.normalization = normalization
        self.trust_remote_code = bool(trust_remote_code)
        self.truncate = bool(truncate)
        self.show_progress = bool(show_progress)
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None
        self.pad_token_id: int | None = None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loads tokenizer and model on first access, unless one was attached)."""
        if self._tokenizer is None:
            self._ensure_loaded()
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The model in eval mode on its device (loads on first access)."""
        self._ensure_loaded()
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        start = time.perf_counter()
        self._device = resolve_device(self.device)
        torch_dtype = resolve_dtype(self.dtype, self._device)
        log.info("loading reward model %s (device=%s, dtype=%s)", self.model_name, self._device, torch_dtype)
        tokenizer, model = self._load(torch_dtype)
        model.to(self._device).eval()
        self._tokenizer, self._model = tokenizer, model
        self.pad_token_id = self._resolve_pad_id(tokenizer, model)
        log.info("reward model %s loaded in %.1fs", self.model_name, time.perf_counter() - start)

    def _resolve_pad_id(self, tokenizer: Any, model: Any) -> int:
        for candidate in (tokenizer.pad_token_id, getattr(_text_config(model), "pad_token_id", None),
                          tokenizer.eos_token_id):
            if isinstance(candidate, (list, tuple)):
                candidate = candidate[0] if candidate else None
            if candidate is not None:
                return int(candidate)
        return 0

    def _load(self, torch_dtype: Any) -> tuple[Any, Any]:
        import transformers

        remote = {"trust_remote_code": self.trust_remote_code}
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name, **remote)
        model = getattr(transformers, self.auto_class).from_pretrained(self.model_name, dtype=torch_dtype, **remote)
        return tokenizer, model

    def _render(self, query: str, response: str) -> str:
        chat = [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)

    def encode(self, query: str, response: str) -> tuple[list[int], str]:
        """Token ids of one pair (fitted to ``max_length``) and a truncation note (``""`` if none).

        Raises ``ValueError`` when the pair is too long and ``truncate=False``, or cannot be made to fit.
        """
        ids = self._tokenize(self._render(query, response))
        if len(ids) <= self.max_length:
            return ids, ""
        if not self.truncate:
            raise ValueError(f"input of {len(ids)} tokens exceeds max_length={self.max_length} (truncate=False)")
        tok = self.tokenizer
        parts = {"query": query, "response": response}
        cut = {"query": 0, "response": 0}
        for field in ("response", "query"):
            piece = tok.encode(parts[field], add_special_tokens=False)
            for _ in range(_MAX_FIT_ROUNDS):
                excess = len(ids) - self.max_length
                if excess <= 0 or not piece:
                    break
                drop = min(len(piece), excess)
                piece = piece[:-drop]
                cut[field] += drop
                parts[field] = tok.decode(piece) if piece else ""
                ids = self._tokenize(self._render(parts["query"], parts["response"]))
            if len(ids) <= self.max_length:
                break
        if len(ids) > self.max_length:
            raise ValueError(f"could not fit the conversation into max_length={self.max_length} ({len(ids)} tokens)")
        note = ", ".join(f"{k} −{v} tokens" for k, v in cut.items() if v)
        return ids, f"truncated: {note}"

    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """A 1-D tensor of one score per row: the model's first logit (sequence classification) or score (InternLM2's
        remote ``forward``)."""
        out = self._model(input_ids=input_ids, attention_mask=attention_mask)
        scores = out.logits if hasattr(out, "logits") else out[0]
        return scores.reshape(scores.shape[0], -1)[:, 0]

    def _run_batch(self, batch: list[list[int]]) -> list[float]:
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # right padding
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        with torch.inference_mode():
            scores = self._forward(input_ids.to(self._device), attention_mask.to(self._device))
        values = scores.detach().float().cpu().reshape(-1).tolist()
        if len(values) != len(batch):
            raise RuntimeError(f"model returned {len(values)} scores for a batch of {len(batch)}")
        return values

    @staticmethod
    def _free_memory() -> None:
        import torch

        with contextlib.suppress(Exception):  # best effort
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        """Columns ``quality_raw`` (the raw reward, NaN on error), ``quality_reason``, ``error``."""
        if len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        from tqdm.auto import tqdm

        start = time.perf_counter()
        n = len(queries)
        raws = [math.nan] * n
        notes = [""] * n
        errors: list[str | None] = [None] * n
        encoded: dict[int, list[int]] = {}
        self._ensure_loaded()
        for i, (q, r) in enumerate(zip(queries, responses)):
            try:
                encoded[i], notes[i] = self.encode("" if q is None else str(q), "" if r is None else str(r))
            except Exception as exc:  # noqa: BLE001 - one bad sample must not sink the run
                errors[i] = f"encode: {_error_message(exc)}"
        n_trunc = sum(1 for note in notes if note)
        if n_trunc:
            log.warning("%s: %d/%d pairs truncated to max_length=%d", self.name, n_trunc, n, self.max_length)
        self._check_pad_collisions(encoded)

        order = sorted(encoded, key=lambda i: (-len(encoded[i]), i))  # longest first, stable
        bar = tqdm(total=len(order), desc=f"reward {self.name}", unit="pair", disable=not self.show_progress)
        n_retried = 0
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            try:
                for i, v in zip(idx, self._run_batch([encoded[i] for i in idx])):
                    raws[i] = v
            except Exception as exc:  # noqa: BLE001 - e.g. CUDA OOM: retry this batch sample by sample
                self._free_memory()
                if len(idx) == 1:
                    errors[idx[0]] = f"forward: {_error_message(exc)}"
                else:
                    n_retried += 1
                    log.warning("%s: batch of %d failed (%s); retrying one by one", self.name, len(idx),
                                _error_message(exc, 120))
                    for i in idx:
                        try:
                            raws[i] = self._run_batch([encoded[i]])[0]
                        except Exception as single_exc:  # noqa: BLE001
                            self._free_memory()
                            errors[i] = f"forward: {_error_message(single_exc)}"
            bar.update(len(idx))
        bar.close()

        for i in range(n):
            if errors[i] is None and not math.isfinite(raws[i]):
                errors[i] = f"non-finite reward {raws[i]!r}"
            if errors[i] is not None:
                raws[i] = math.nan
        reasons = ["" if error is not None else f"reward {raw:.4f}" + (f"; {note}" if note else "")
                   for raw, note, error in zip(raws, notes, errors)]
        frame = pd.DataFrame({"quality_raw": np.asarray(raws, dtype=np.float64), "quality_reason": reasons,
                              "error": pd.Series(errors, dtype=object)})  # None stays None (pandas 3: NaN)
        log.info("%s: %d pairs in %.1fs (%d errors, %d truncated, %d batches retried)", self.name, n,
                 time.perf_counter() - start, sum(e is not None for e in errors), n_trunc, n_retried)
        return check_result(frame, n, ("quality_raw", "quality_reason"), self.name)

    def _check_pad_collisions(self, encoded: dict[int, list[int]]) -> None:
        """Hook for backends whose score position depends on the pad id (no-op by default)."""


class SequenceClassificationReward(_BatchedRewardScorer):
    """Any ``AutoModelForSequenceClassification`` reward model with a single-label head: ``model`` a hub id or local
    path (e.g. ``Skywork/Skywork-Reward-V2-Llama-3.1-8B``), ``device`` ``None`` for CUDA when available, ``dtype``
    ``"auto"`` or a torch dtype name (:func:`resolve_dtype`), the others as the module doc says.

    ``quality_raw = logits[:, 0]`` read by the model at the rightmost non-pad token. If the model config has no
    ``pad_token_id`` it is set to the tokenizer's pad id (else its EOS id).
    """

    def _resolve_pad_id(self, tokenizer: Any, model: Any) -> int:
        if getattr(model.config, "num_labels", 1) != 1:
            log.warning("%s has %d labels; using logit 0 as the reward", self.model_name, model.config.num_labels)
        pad = super()._resolve_pad_id(tokenizer, model)
        config = _text_config(model)
        if getattr(config, "pad_token_id", None) is None:
            log.info("%s: model config has no pad_token_id; setting it to %d", self.model_name, pad)
            config.pad_token_id = pad
            model.config.pad_token_id = pad
        return int(config.pad_token_id)

    def _tokenize(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token  # a template that writes the BOS itself gets no second one
        return list(self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"])

    def _check_pad_collisions(self, encoded: dict[int, list[int]]) -> None:
        n_bad = sum(1 for ids in encoded.values() if ids and ids[-1] == self.pad_token_id)
        if n_bad:
            log.warning("%s: %d conversations end with the pad token id %d; the model reads their score at the "
                        "last token that is not the pad id", self.model_name, n_bad, self.pad_token_id)


class InternLM2Reward(_BatchedRewardScorer):
    """``internlm/internlm2-7b-reward`` with the semantics of its remote ``get_score``/``get_scores``.

    ``last_logit``: ``False`` (reference, ``get_scores``) or ``True`` (the authors' script), as the module doc says;
    ``trust_remote_code`` must be ``True`` for the hub model (its modelling code is remote); the others as
    :class:`SequenceClassificationReward`'s (``max_length`` counts the reward token).

    The model is loaded with ``AutoModel.from_pretrained(..., trust_remote_code=True)`` (the model card's recipe). Its
    ``forward`` returns the per-row score at the last attended position (``attention_mask.cumsum(1).argmax(1)``), so
    right padding with a mask is exactly ``get_scores``' own padding.
    """

    auto_class = "AutoModel"

    def __init__(self, model: str = "internlm/internlm2-7b-reward", last_logit: bool = False, *,
                 normalization: str = "reward_clip", trust_remote_code: bool = True, **kwargs: Any) -> None:
        super().__init__(model, normalization=normalization, trust_remote_code=trust_remote_code, **kwargs)
        self.last_logit = bool(last_logit)
        self.reward_token_id: int | None = None

    @staticmethod
    def resolve_reward_token_id(tokenizer: Any) -> int:
        """The id of ``[UNUSED_TOKEN_130]`` in ``tokenizer`` (92527 in InternLM2's vocabulary)."""
        token_id = tokenizer.convert_tokens_to_ids(INTERNLM2_REWARD_TOKEN)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no reward token {INTERNLM2_REWARD_TOKEN!r}")
        if token_id != INTERNLM2_REWARD_TOKEN_ID:
            log.info("reward token %s has id %d (InternLM2: %d)", INTERNLM2_REWARD_TOKEN, token_id,
                     INTERNLM2_REWARD_TOKEN_ID)
        return int(token_id)

    def _tokenize(self, text: str) -> list[int]:
        """``last_logit``: the authors' ``tokenizer(text)`` (special tokens added); otherwise ``get_score``'s
        ``encode(text, add_special_tokens=False)`` + the reward token."""
        tokenizer = self.tokenizer
        if self.last_logit:
            return list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if self.reward_token_id is None:
            self.reward_token_id = self.resolve_reward_token_id(tokenizer)
        return [*tokenizer.encode(text, add_special_tokens=False), self.reward_token_id]

