"""Record formats: detection from the fields present, validation, and query/response extraction.

Formats and their fields
------------------------
=================  ============================================================================
``alpaca``         ``instruction``, ``output`` (strings), ``input`` (string, optional: a record
                   without the key has an empty input; a source with no ``input`` field at
                   all, e.g. AlpacaEval, has ``query = instruction`` in both fidelities, since
                   the authors' ``"\\nnan"`` artefact marks an empty input field)
``query_response`` ``query``, ``response`` (strings; the authors' released files)
``sharegpt``       ``conversations``: list of ``{from: human|gpt|system, value}``
                   (``user``/``assistant`` are accepted as ``from`` aliases)
``messages``       ``messages``: list of ``{role: user|assistant|system, content}``
=================  ============================================================================

Detection checks, in this order: ``instruction`` + ``output`` → alpaca, ``query`` + ``response`` →
query_response, ``conversations`` → sharegpt, ``messages`` → messages; ``format=`` overrides it.

Conversations
-------------
Turns are normalised to ``{"role", "content"}`` dicts (other per-turn keys are dropped, with a
warning for ``messages`` sources; a ShareGPT source also keeps its original ``conversations``
column). Leading ``system`` turns are allowed; the first other turn must be ``user`` and the next
one ``assistant``. **That first user→assistant exchange is the (query, response) that is scored**;
a multi-turn conversation is kept whole in the ``messages`` column (and written whole for SFT),
and counted in ``LoadReport.n_multi_turn``. System messages never enter the query. A conversation
stored as a JSON string (e.g. in a csv cell) is parsed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thtb.data.errors import DataError, type_name
from thtb.data.readers import MISSING, RawTable
from thtb.data.records import Fidelity, alpaca_query, strip_nan_artifact

logger = logging.getLogger("thtb.data")

FORMATS: tuple[str, ...] = ("alpaca", "query_response", "sharegpt", "messages")

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "query_response": ("query", "response"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
}

TEXT_FIELDS = frozenset({"instruction", "input", "output", "query", "response"})
"""Fields read as text (csv cells of these columns are never turned into missing values)."""

CONSUMED_FIELDS: dict[str, frozenset[str]] = {
    "alpaca": frozenset(),
    "query_response": frozenset({"query", "response"}),
    "sharegpt": frozenset(),
    "messages": frozenset({"messages"}),
}
"""Source fields that *become* canonical columns instead of being kept beside them."""

_TURN_KEYS = {"sharegpt": ("from", "value"), "messages": ("role", "content")}
_ROLES = {
    "sharegpt": {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"},
    "messages": {"user": "user", "assistant": "assistant", "system": "system"},
}


@dataclass
class Extracted:
    """Validated per-record texts of one table, aligned with its records."""

    queries: list[str]
    """Query text in the requested fidelity."""
    clean_queries: list[str]
    """Fidelity-independent clean query (the id basis)."""
    responses: list[str]
    messages: list[list[dict[str, str]]] | None = None
    n_multi_turn: int = 0


def detect_format(table: RawTable) -> str:
    """The first format whose required fields are all present; DataError listing the fields."""
    for name in FORMATS:
        if all(field in table.columns for field in REQUIRED_FIELDS[name]):
            return name
    raise DataError(
        table.source,
        f"no recognisable fields: found {', '.join(table.columns) or 'none'}; expected "
        "instruction+output (alpaca), query+response, conversations (sharegpt) or messages",
    )


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a known format name; ``ValueError`` otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def extract(table: RawTable, fmt: str, fidelity: Fidelity) -> Extracted:
    """Validate ``table`` as ``fmt`` and build query/response texts for every record."""
    missing = [field for field in REQUIRED_FIELDS[fmt] if field not in table.columns]
    if missing:
        raise DataError(
            table.source,
            f"format {fmt!r} needs field(s) {', '.join(missing)}; fields found: {', '.join(table.columns)}",
        )
    if fmt == "alpaca":
        return _extract_alpaca(table, fidelity)
    if fmt == "query_response":
        return _extract_query_response(table, fidelity)
    return _extract_conversations(table, fmt, fidelity)


def text_column(table: RawTable, name: str, *, optional: bool = False) -> list[str]:
    """The string values of column ``name``; a missing key or a non-string is a DataError.

    With ``optional=True`` an absent column or key reads as ``""`` (``null`` is still an error).
    """
    values = table.columns.get(name)
    if values is None:
        return [""] * len(table)
    if all(type(value) is str for value in values):
        return values
    out = list(values)
    for index, value in enumerate(out):
        if isinstance(value, str):
            continue
        if value is MISSING:
            if optional:
                out[index] = ""
                continue
            present = ", ".join(table.fields_present(index)) or "none"
            raise table.error(index, f"field {name!r} is missing (fields present: {present})", field=name)
        raise table.error(index, f"field {name!r} must be a string, got {type_name(value)}", field=name)
    return out


def _extract_alpaca(table: RawTable, fidelity: Fidelity) -> Extracted:
    instructions = text_column(table, "instruction")
    outputs = text_column(table, "output")
    if "input" not in table.columns:  # no input field at all: nothing for the artefact to mark
        return Extracted(instructions, instructions, outputs)
    inputs = text_column(table, "input", optional=True)
    clean = [alpaca_query(i, x, "paper") for i, x in zip(instructions, inputs)]
    queries = clean if fidelity == "paper" else [alpaca_query(i, x, "reference") for i, x in zip(instructions, inputs)]
    return Extracted(queries, clean, outputs)


def _extract_query_response(table: RawTable, fidelity: Fidelity) -> Extracted:
    raw = text_column(table, "query")
    responses = text_column(table, "response")
    clean = [strip_nan_artifact(q) for q in raw]
    return Extracted(clean if fidelity == "paper" else raw, clean, responses)


def _extract_conversations(table: RawTable, fmt: str, fidelity: Fidelity) -> Extracted:
    column = "conversations" if fmt == "sharegpt" else "messages"
    queries: list[str] = []
    responses: list[str] = []
    conversations: list[list[dict[str, str]]] = []
    n_multi_turn = 0
    rows_with_dropped_keys: list[int] = []
    for index, value in enumerate(table.columns[column]):
        turns, dropped = normalize_conversation(value, fmt, table, index)
        query, response, exchanges = first_exchange(turns, column, table, index)
        queries.append(query)
        responses.append(response)
        conversations.append(turns)
        n_multi_turn += exchanges > 1
        if dropped:
            rows_with_dropped_keys.append(table.positions[index])
    if fmt == "messages" and rows_with_dropped_keys:
        logger.warning(
            "%s: %d conversations had per-turn keys other than role/content, dropped (rows %s)",
            table.source, len(rows_with_dropped_keys), _first(rows_with_dropped_keys),
        )
    clean = [strip_nan_artifact(q) for q in queries]
    return Extracted(clean if fidelity == "paper" else queries, clean, responses, conversations, n_multi_turn)


def normalize_conversation(
    value: Any, fmt: str, table: RawTable, index: int
) -> tuple[list[dict[str, str]], bool]:
    """Turns as ``{"role", "content"}`` dicts, and whether any turn had other keys."""
    column = "conversations" if fmt == "sharegpt" else "messages"
    role_key, content_key = _TURN_KEYS[fmt]
    roles = _ROLES[fmt]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise table.error(index, f"field {column!r} is a string but not JSON: {exc.msg}", field=column) from None
    if value is MISSING:
        raise table.error(index, f"field {column!r} is missing", field=column)
    if not isinstance(value, (list, tuple)) or not value:
        what = "an empty list" if isinstance(value, (list, tuple)) else type_name(value)
        raise table.error(index, f"field {column!r} must be a non-empty list of turns, got {what}", field=column)
    turns: list[dict[str, str]] = []
    dropped = False
    for position, turn in enumerate(value):
        where = f"{column}[{position}]"
        if not isinstance(turn, dict):
            raise table.error(index, f"field {where!r} must be an object, got {type_name(turn)}", field=where)
        role, content = turn.get(role_key, MISSING), turn.get(content_key, MISSING)
        for key, item in ((role_key, role), (content_key, content)):
            if item is MISSING:
                raise table.error(index, f"field '{where}.{key}' is missing", field=f"{where}.{key}")
            if not isinstance(item, str):
                raise table.error(
                    index, f"field '{where}.{key}' must be a string, got {type_name(item)}", field=f"{where}.{key}"
                )
        if role not in roles:
            raise table.error(
                index,
                f"field '{where}.{role_key}': unknown role {role!r} (expected one of {', '.join(roles)})",
                field=f"{where}.{role_key}",
            )
        dropped = dropped or any(key not in (role_key, content_key) and item is not None for key, item in turn.items())
        turns.append({"role": roles[role], "content": content})
    return turns, dropped


def first_exchange(
    turns: Sequence[dict[str, str]], column: str, table: RawTable, index: int
) -> tuple[str, str, int]:
    """``(query, response, n_exchanges)`` from the first user→assistant exchange.

    Leading system turns are skipped; the first other turn must be ``user`` and the next one
    ``assistant``. ``n_exchanges`` counts user turns directly followed by an assistant turn.
    """
    start = 0
    while start < len(turns) and turns[start]["role"] == "system":
        start += 1
    if start == len(turns) or turns[start]["role"] != "user":
        got = "only system turns" if start == len(turns) else f"a {turns[start]['role']!r} turn"
        raise table.error(
            index, f"field '{column}[{start}]': the first non-system turn must be from the user, got {got}",
            field=f"{column}[{start}]",
        )
    if start + 1 == len(turns) or turns[start + 1]["role"] != "assistant":
        got = "the end of the conversation" if start + 1 == len(turns) else f"a {turns[start + 1]['role']!r} turn"
        raise table.error(
            index, f"field {column!r}: no assistant turn after the first user turn (got {got})", field=column
        )
    exchanges = sum(
        1 for a, b in zip(turns, turns[1:]) if a["role"] == "user" and b["role"] == "assistant"
    )
    return turns[start]["content"], turns[start + 1]["content"], exchanges


def _first(rows: Sequence[int], n: int = 5) -> str:
    """``"1, 4, 9, …"``: the first ``n`` row numbers for a log line."""
    head = ", ".join(map(str, rows[:n]))
    return head + (", …" if len(rows) > n else "")
