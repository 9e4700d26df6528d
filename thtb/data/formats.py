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

Checks on every format
----------------------
* Text must be Unicode: a string (or a key) holding a lone UTF-16 surrogate, which only a JSON
  ``\\uD800``-``\\uDFFF`` escape without its other half can produce, is a ``DataError`` naming the
  record and the field path (``meta.tags[1]``, ``messages[1].content``) (:func:`check_unicode`).
* Gold Bloom labels: a ``bloom_level`` field (the demo's intended levels, which the selection
  summary scores the Bloom classifier against) must hold one of :data:`BLOOM_LABELS`, in any case
  and with surrounding whitespace (``"analyse"`` is accepted for Analyze); it is rewritten to the
  canonical spelling. An empty, ``null`` or absent label means *unlabelled*: it becomes ``None``
  and is counted (``LoadReport.n_unlabelled``). Anything else is a ``DataError`` naming the first
  bad row and counting the others (:func:`check_labels`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thtb.data.errors import DataError, type_name
from thtb.data.readers import MISSING, TEXT_FIELDS, RawTable
from thtb.data.records import Fidelity, alpaca_query, strip_nan_artifact

logger = logging.getLogger("thtb.data")

FORMATS: tuple[str, ...] = ("alpaca", "query_response", "sharegpt", "messages")

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "query_response": ("query", "response"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
}


CONSUMED_FIELDS: dict[str, frozenset[str]] = {
    "alpaca": frozenset(),
    "query_response": frozenset({"query", "response"}),
    "sharegpt": frozenset(),
    "messages": frozenset({"messages"}),
}
"""Source fields that *become* canonical columns instead of being kept beside them."""

BLOOM_LABELS: tuple[str, ...] = ("Remember", "Understand", "Apply", "Analyze", "Evaluate", "Create")
"""Valid gold labels, lowest to highest; the same tuple as ``thtb.scorers.base.BLOOM_LEVELS`` (a
test keeps them equal; it is repeated here so the data layer does not import the scorers)."""

LABEL_COLUMN = "bloom_level"
"""A source field of this name holds gold Bloom labels (checked by :func:`check_labels`)."""

_LABEL_LOOKUP = {level.lower(): level for level in BLOOM_LABELS} | {"analyse": "Analyze"}

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

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
        except RecursionError:
            from thtb.data.readers import too_deep

            raise table.error(index, f"field {column!r}: {too_deep(value)}", field=column) from None
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


# --------------------------------------------------------------------------- Unicode and labels


def check_unicode(table: RawTable, extracted: Extracted, fmt: str) -> None:
    """DataError at the first record (in source order) with a lone surrogate in a value or key.

    Runs only when the reader flagged an escape that may produce one
    (:attr:`~thtb.data.readers.RawTable.maybe_lone_surrogates`); a conversation parsed from a
    JSON string cell is checked through its normalised turns.
    """
    if not table.maybe_lone_surrogates:
        return
    columns = list(table.columns.items())
    turn_column = "conversations" if fmt == "sharegpt" else "messages"
    content_key = _TURN_KEYS.get(fmt, ("", ""))[1]
    for index in range(len(table)):
        for name, values in columns:
            if values[index] is MISSING:
                continue
            in_name = _LONE_SURROGATE.search(name)  # the key first: a value's path includes it
            if in_name:
                raise _surrogate_error(table, index, name, in_name.group(), in_name.start(), True)
            found = _find_lone_surrogate(values[index], name)
            if found:
                raise _surrogate_error(table, index, *found)
        if extracted.messages is not None:
            for position, turn in enumerate(extracted.messages[index]):
                found = _find_lone_surrogate(turn["content"], f"{turn_column}[{position}].{content_key}")
                if found:
                    raise _surrogate_error(table, index, *found)


def _find_lone_surrogate(value: Any, path: str) -> tuple[str, str, int, bool] | None:
    """``(field path, surrogate, character index, in a key)`` of the first lone surrogate in
    ``value`` (depth-first, in order; iterative, so deep values cannot overflow the stack)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            match = _LONE_SURROGATE.search(item)
            if match:
                return where, match.group(), match.start(), False
        elif isinstance(item, dict):
            for key in item:
                match = _LONE_SURROGATE.search(key) if isinstance(key, str) else None
                if match:
                    return f"{where}.{key}" if where else key, match.group(), match.start(), True
            stack.extend((f"{where}.{key}" if where else str(key), sub) for key, sub in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", item[i]) for i in range(len(item) - 1, -1, -1))
    return None


def _surrogate_error(table: RawTable, index: int, field: str, char: str, offset: int, in_key: bool) -> DataError:
    shown = field.encode("utf-8", "backslashreplace").decode("utf-8")
    what = f"field name '{shown}'" if in_key else f"field '{shown}'"
    return table.error(
        index,
        f"{what} holds a lone UTF-16 surrogate \\u{ord(char):04x} (character {offset}), which is not valid "
        "Unicode text: a JSON \\uD800-\\uDFFF escape must be one half of a high+low pair; fix or remove it",
        field=shown,
    )


def bloom_label(value: Any) -> str | None:
    """The canonical Bloom level of a gold label, ``None`` when unlabelled; ``ValueError`` otherwise.

    >>> bloom_label(" apply "), bloom_label(""), bloom_label(None)
    ('Apply', None, None)
    """
    if value is None or value is MISSING or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        label = _LABEL_LOOKUP.get(value.strip().lower())
        if label is not None:
            return label
    raise ValueError(
        f"{value!r} is not a Bloom level (expected one of {', '.join(BLOOM_LABELS)}, in any case; "
        "empty means unlabelled)"
    )


def check_labels(table: RawTable) -> int | None:
    """Canonicalise the ``bloom_level`` column in place; return how many rows are unlabelled.

    ``None`` when the source has no such field. Invalid labels raise a DataError at the first one,
    counting and listing (up to 10) all of them: none is dropped from the accuracy silently.
    """
    values = table.columns.get(LABEL_COLUMN)
    if values is None:
        return None
    labels: list[str | None] = []
    invalid: list[tuple[int, str]] = []
    for index, value in enumerate(values):
        try:
            labels.append(bloom_label(value))
        except ValueError as exc:
            invalid.append((index, str(exc)))
            labels.append(None)
    if invalid:
        index, detail = invalid[0]
        if len(invalid) > 1:
            unit = "lines" if table.unit == "line" else "rows"
            offset = 1 if table.unit == "line" else 0
            shown = [str(table.positions[i] + offset) for i, _ in invalid[:10]]
            more = ", …" if len(invalid) > 10 else ""
            detail += f"; {len(invalid)} rows have invalid labels ({unit} {', '.join(shown)}{more})"
        raise table.error(index, f"field {LABEL_COLUMN!r}: {detail}", field=LABEL_COLUMN)
    table.columns[LABEL_COLUMN] = labels
    return sum(label is None for label in labels)
