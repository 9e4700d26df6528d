"""Training data: the selection stage's subset (or any dataset) → conversational examples for TRL.

Each record becomes ``[system?, user: query, assistant: response]``; a ``messages`` source keeps its whole
conversation, and so does the selected subset (read from ``selection/subset_messages.jsonl``). Two example
layouts, both with loss on assistant tokens only:

* ``assistant`` — ``{"messages": [...]}`` with ``assistant_only_loss``: needs a chat template with
  ``{% generation %}`` markers (TRL masks everything outside them);
* ``completion`` — ``{"prompt": [...turns before the last assistant turn], "completion": [last assistant turn]}``
  with ``completion_only_loss``: works with any template (the fallback, e.g. SmolLM2, Llama 3).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.data import load_records
from thtb.data.loaders import SUBSET_FILE, SUBSET_MESSAGES_FILE, dataset_source
from thtb.fingerprint import ids_digest, records_digest

log = logging.getLogger(__name__)

LOSS_MASKS = ("auto", "assistant", "completion")


@dataclass
class TrainData:
    """The training set as records, with where it came from and its identity."""

    records: pd.DataFrame
    source: str
    digest: str
    """``ids_digest`` of the ordered sample ids: the identity of the subset."""
    selection_fingerprint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    content_digest: str | None = None
    """``records_digest`` of the records as trained on (every turn's text, the format): keys the training."""


def training_source(cfg: dict[str, Any], run_dir: Path) -> tuple[str, str | None]:
    """``(source, format)`` of the training records: ``train.dataset`` with ``train.dataset_format``, else this
    run's ``selection/subset_messages.jsonl`` (whole conversations) when the select stage wrote it, else its
    ``selection/subset.jsonl``."""
    source = dataset_source(cfg, run_dir)
    if cfg["train"].get("dataset"):
        return source, cfg["train"]["dataset_format"]
    messages = Path(run_dir) / SUBSET_MESSAGES_FILE
    if messages.is_file():
        return str(messages), "messages"
    return source, "query_response"


def load_train_data(cfg: dict[str, Any], run_dir: Path) -> TrainData:
    """Load the training records; a clear error for a missing dataset or one with 0 rows.

    From the selection, the records keep the selection's ids (the ``id`` each line was written with) and must
    list the same samples, in the same order, as ``subset.jsonl``."""
    train = cfg["train"]
    source, fmt = training_source(cfg, run_dir)
    path = Path(source)
    if path.is_file() and not path.read_text(encoding="utf-8", errors="replace").strip():
        raise ValueError(f"train: the training set {source} has 0 rows (the selection kept nothing?)")
    try:
        records, report = load_records(source, format=fmt, fidelity=cfg["fidelity"], split=train["dataset_split"],
                                       limit=train["limit"])
    except FileNotFoundError as err:
        raise FileNotFoundError(f"train: dataset not found (train.dataset={source!r}): {err}") from err
    if len(records) == 0:
        raise ValueError(f"train: the training set {source} has 0 rows")
    selection_fp = None
    if not train.get("dataset"):  # from the selection
        _check_same_subset(records, path, Path(run_dir) / SUBSET_FILE, train["limit"])
        records = _selection_ids(records, source)
        summary = Path(run_dir) / "selection" / "summary.json"
        if summary.is_file():
            selection_fp = json.loads(summary.read_text()).get("fingerprint")
    info = {"n_rows": len(records), "format": report.format, "n_multi_turn": int(report.n_multi_turn)}
    return TrainData(records, source, ids_digest(records["id"]), selection_fp, info,
                     content_digest=records_digest(records, report.format))


_DUP_SUFFIX = re.compile(r"-dup\d+$")


def _selection_ids(records: pd.DataFrame, source: str) -> pd.DataFrame:
    """The ids the select stage wrote (``orig_id``) in place of the recomputed ones, when they agree up to the
    ``-dupK`` suffix: exact repeats are numbered in source order when the selection is made, but in subset
    order when its file is read back (a repeat ranked before its first occurrence would swap ids). Ids that
    disagree otherwise (a hand-written file) leave the content ids, with a warning."""
    if "orig_id" not in records.columns:
        return records
    written = records["orig_id"].tolist()
    same = all(isinstance(w, str) and _DUP_SUFFIX.sub("", w) == _DUP_SUFFIX.sub("", r)
               for w, r in zip(written, records["id"], strict=True))
    if same and len(set(written)) == len(written):
        return records.assign(id=written).drop(columns="orig_id")
    log.warning("train: the ids written in %s are not the content ids of its samples; using content ids", source)
    return records


def _check_same_subset(records: pd.DataFrame, path: Path, subset: Path, limit: int | None = None) -> None:
    """The ids written in the messages file and in ``subset.jsonl`` must be the same, in the same order (a
    selection cut short while writing its files would leave one stale); with ``train.limit``, the first rows."""
    if path.name == subset.name or not subset.is_file():
        return
    written = records["orig_id"].tolist() if "orig_id" in records.columns else [None] * len(records)
    listed = []
    for line in subset.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                listed.append(json.loads(line).get("id"))
            except (json.JSONDecodeError, AttributeError):
                listed.append(None)
    if limit:
        listed = listed[:limit]
    if listed != written:
        where = next((i for i, (a, b) in enumerate(zip(listed, written)) if a != b), min(len(listed), len(written)))
        raise ValueError(f"train: {path} and {subset} list different samples ({len(written)} and {len(listed)} rows, "
                         f"first difference at row {where}): the selection's files are out of step; rerun the select "
                         "stage (reuse=false) or delete the run's selection folder")


def conversations(records: pd.DataFrame, system_prompt: str | None = None) -> list[list[dict[str, str]]]:
    """One conversation per record: its ``messages`` if it has them, else ``[user: query, assistant: response]``;
    a configured system prompt goes first (unless the conversation has its own)."""
    out = []
    for row in records.itertuples(index=False):
        turns = getattr(row, "messages", None)
        if isinstance(turns, (list, tuple, np.ndarray)) and len(turns):
            conv = [{"role": str(t["role"]), "content": str(t["content"])} for t in turns]
        else:
            conv = [{"role": "user", "content": str(row.query)}, {"role": "assistant", "content": str(row.response)}]
        if system_prompt and conv[0]["role"] != "system":
            conv.insert(0, {"role": "system", "content": str(system_prompt)})
        while conv and conv[-1]["role"] != "assistant":  # nothing to learn after the last assistant turn
            conv.pop()
        out.append(conv)
    return out


def pick_loss_mask(requested: str, chat_template: Any) -> str:
    """``auto`` → ``assistant`` when the template has ``{% generation %}`` markers, else ``completion``."""
    from trl.chat_template_utils import has_generation_markers

    if requested not in LOSS_MASKS:
        raise ValueError(f"train.loss_mask must be one of {LOSS_MASKS}, got {requested!r}")
    if not chat_template:
        raise ValueError("train: the tokenizer has no chat template; set model.chat_template")
    markers = has_generation_markers(chat_template)
    if requested == "assistant" and not markers:
        raise ValueError("train.loss_mask=assistant needs a chat template with {% generation %} markers; use auto")
    if requested == "auto":
        return "assistant" if markers else "completion"
    return requested


def to_example(conv: list[dict[str, str]], mask: str) -> dict[str, Any]:
    if mask == "assistant":
        return {"messages": conv}
    return {"prompt": conv[:-1], "completion": conv[-1:]}


def token_lengths(tokenizer, convs: list[list[dict[str, str]]]) -> tuple[np.ndarray, np.ndarray]:
    """(full length, prompt length incl. the generation prompt) in tokens, per conversation."""
    def length(conv, generation_prompt: bool) -> int:
        return len(tokenizer.apply_chat_template(conv, tokenize=True, add_generation_prompt=generation_prompt,
                                                 return_dict=True)["input_ids"])

    full = [length(conv, False) for conv in convs]
    prompt = [length(conv[:-1], True) for conv in convs]
    return np.asarray(full, dtype=int), np.asarray(prompt, dtype=int)


def fit_to_length(convs: list, full: np.ndarray, prompt: np.ndarray, max_length: int) -> tuple[list[int], dict]:
    """Indices of the conversations to train on, and counts. Over-long ones are truncated by TRL (keep start);
    one whose prompt alone fills ``max_length`` would keep no assistant token and is dropped. A ValueError when
    every example is longer than ``max_length``."""
    if len(convs) and (full > max_length).all():
        raise ValueError(f"train.sft.max_length={max_length} is too small for every example: the shortest needs "
                         f"{int(full.min())} tokens (median {int(np.median(full))}); raise train.sft.max_length")
    keep = [i for i in range(len(convs)) if prompt[i] < max_length]
    counts = {"n_truncated": int(((full > max_length) & (prompt < max_length)).sum()),
              "n_dropped_prompt_too_long": int(len(convs) - len(keep)),
              "tokens_min": int(full.min()) if len(full) else 0,
              "tokens_median": float(np.median(full)) if len(full) else 0.0,
              "tokens_max": int(full.max()) if len(full) else 0}
    if counts["n_truncated"] or counts["n_dropped_prompt_too_long"]:
        log.warning("max_length=%d: %d examples truncated, %d dropped (prompt alone too long)", max_length,
                    counts["n_truncated"], counts["n_dropped_prompt_too_long"])
    return keep, counts


def eval_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded held-out split: ``ceil(fraction·n)`` eval rows (at least 1 when ``fraction > 0`` and ``n ≥ 2``, at
    most ``n − 1``); train keeps the original order (the trainer shuffles)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"train.eval_fraction must be in [0, 1), got {fraction}")
    n_eval = min(max(1, math.ceil(fraction * n)), n - 1) if fraction > 0 and n >= 2 else 0
    perm = np.random.default_rng(seed).permutation(n)
    held = set(perm[:n_eval].tolist())
    return [i for i in range(n) if i not in held], sorted(held)
