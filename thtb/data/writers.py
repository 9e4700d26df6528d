"""Write records frames as training/interchange files: atomic and byte-deterministic.

Every writer renders the whole file in memory, writes it to a temporary file in the target's directory, fsyncs it
and ``os.replace``-s it over the target, so a killed run never leaves a half-written file under the final name. The
same frame always gives identical bytes: UTF-8, ``"\\n"`` line ends, a final newline, keys in a fixed order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.data.records import strip_nan_artifact
from thtb.io import atomic_write_bytes


def write_jsonl(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """One ``{"id", "query", "response"}`` object per line (``ensure_ascii=False``)."""
    ids, queries, responses = (_texts(frame, name) for name in ("id", "query", "response"))
    return atomic_write_bytes(path, _join_lines(json.dumps({"id": i, "query": q, "response": r}, ensure_ascii=False)
                                                for i, q, r in zip(ids, queries, responses)))


def write_alpaca_json(frame: pd.DataFrame, path: str | os.PathLike[str], *, ensure_ascii: bool = True) -> Path:
    """A JSON array of ``{"instruction", "input", "output"}`` in Alpaca's own layout.

    ``output`` is the response. A row with a string ``instruction`` column value (an Alpaca source) writes its
    original ``instruction``/``input``; any other row writes ``instruction`` = the query without the authors'
    ``"\\nnan"`` artefact and ``input = ""``, so reloading gives the same ids (and, in reference fidelity, the same
    query back). The defaults (``indent=4``, ASCII escapes) reproduce ``alpaca_data.json`` byte for byte.
    """
    queries, responses = _texts(frame, "query"), _texts(frame, "response")
    instructions, inputs = _optional(frame, "instruction"), _optional(frame, "input")
    records = []
    for query, response, instruction, input_text in zip(queries, responses, instructions, inputs):
        if isinstance(instruction, str):
            records.append({"instruction": instruction, "input": input_text if isinstance(input_text, str) else "",
                            "output": response})
        else:
            records.append({"instruction": strip_nan_artifact(query), "input": "", "output": response})
    text = json.dumps(records, ensure_ascii=ensure_ascii, indent=4)
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_messages_jsonl(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """One ``{"id", "messages": [{"role", "content"}, …]}`` per line, for TRL's SFTTrainer.

    A row with a ``messages`` list (a conversation source) writes that whole conversation,
    system and later turns included; any other row writes ``[user: query, assistant: response]``.
    """
    ids, queries, responses = (_texts(frame, name) for name in ("id", "query", "response"))
    conversations = _optional(frame, "messages")
    lines = []
    for record_id, query, response, conversation in zip(ids, queries, responses, conversations):
        if isinstance(conversation, (list, tuple, np.ndarray)) and len(conversation):
            messages = [{"role": turn["role"], "content": turn["content"]} for turn in conversation]
        else:
            messages = [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        lines.append(json.dumps({"id": record_id, "messages": messages}, ensure_ascii=False))
    return atomic_write_bytes(path, _join_lines(lines))


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        raise ValueError(f"records frame has no {column!r} column (columns: {', '.join(map(str, frame.columns))})")
    values = frame[column].tolist()
    for position, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"records frame: column {column!r} at position {position} must be a string, got {value!r}")
    return values


def _optional(frame: pd.DataFrame, column: str) -> Sequence[Any]:
    return frame[column].tolist() if column in frame.columns else [None] * len(frame)


def _join_lines(lines: Any) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")
