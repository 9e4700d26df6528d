"""Record formats: detection from the fields present, and every record's validated (query, response).

=================  ============================================================================================
``alpaca``         ``instruction``, ``output``, optional ``input`` (strings; a record without the key has an
                   empty input, a source without the field, e.g. AlpacaEval, has ``query = instruction``)
``query_response`` ``query``, ``response`` (strings; the authors' released files)
``sharegpt``       ``conversations``: list of ``{from: human|gpt|system, value}`` (``user``/``assistant`` too)
``messages``       ``messages``: list of ``{role: user|assistant|system, content}``
=================  ============================================================================================

Detection takes the first format, in this order, whose fields are all present; ``format=`` overrides it.
A conversation (a JSON string, e.g. a csv cell, is parsed) becomes ``{"role", "content"}`` turns (other per-turn
keys are dropped, with a warning for ``messages``). Leading ``system`` turns are allowed, then a ``user`` and an
``assistant`` turn: **that first exchange is the (query, response) scored**; the whole conversation is kept in
``messages`` (and written whole for SFT). Checks on every format, each a ``DataError`` naming record and field:

* a lone UTF-16 surrogate in a string or a key, from a JSON ``\\uD800``-``\\uDFFF`` escape without its other half
  (``json`` decodes it without a word);
* gold labels: a ``bloom_level`` field holds one of :data:`BLOOM_LABELS` in any case and spacing (``analyse`` is
  Analyze), rewritten canonical; empty, ``null`` or absent is unlabelled (``None``, counted); anything else fails.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from thtb.data.errors import DataError, type_name
from thtb.data.readers import MISSING, RawTable, too_deep
from thtb.data.records import alpaca_query, strip_nan_artifact

logger = logging.getLogger("thtb.data")


class Format(NamedTuple):
    fields: tuple[str, ...]
    query: str
    response: str
    """Where its query and response come from (for messages)."""
    canonical: bool = False
    """Its fields *are* the canonical columns (``query``/``response``, ``messages``), not kept beside them."""


FORMATS: dict[str, Format] = {
    "alpaca": Format(("instruction", "output"), "fields 'instruction' and 'input'", "field 'output'"),
    "query_response": Format(("query", "response"), "field 'query'", "field 'response'", canonical=True),
    "sharegpt": Format(("conversations",), "first user turn of 'conversations'",
                       "first assistant turn of 'conversations'"),
    "messages": Format(("messages",), "first user turn of 'messages'", "first assistant turn of 'messages'",
                       canonical=True),
}

_TURNS = {  # per conversation format: the turn's role and content keys, and the roles it may name
    "sharegpt": ("from", "value", {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                                   "system": "system"}),
    "messages": ("role", "content", {"user": "user", "assistant": "assistant", "system": "system"}),
}

BLOOM_LABELS: tuple[str, ...] = ("Remember", "Understand", "Apply", "Analyze", "Evaluate", "Create")
"""Valid gold labels, lowest to highest; the same tuple as ``thtb.scorers.base.BLOOM_LEVELS`` (a test keeps them
equal; repeated so that the data layer does not import the scorers)."""
LABEL_COLUMN = "bloom_level"
_LABEL_LOOKUP = {level.lower(): level for level in BLOOM_LABELS} | {"analyse": "Analyze"}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Records:
    """The validated texts of a table's records, aligned with them: the query in the requested fidelity, the
    fidelity-independent clean query (the id basis), the response, and for conversations the whole of each."""

    format: str
    queries: list[str]
    clean_queries: list[str]
    responses: list[str]
    messages: list[list[dict[str, str]]] | None = None
    n_multi_turn: int = 0
    n_unlabelled: int | None = None


def normalise(table: RawTable, fmt: str | None, fidelity: str) -> Records:
    """Detect the format (unless given), check every record and build its texts; canonicalise ``bloom_level``
    in place. A DataError names the record and field of the first problem."""
    if fmt is None:
        fmt = next((name for name, spec in FORMATS.items() if all(f in table.columns for f in spec.fields)), None)
        if fmt is None:
            raise DataError(table.source, f"no recognisable fields: found {', '.join(table.columns) or 'none'}; "
                                          "expected instruction+output (alpaca), query+response, conversations "
                                          "(sharegpt) or messages")
    missing = [field for field in FORMATS[fmt].fields if field not in table.columns]
    if missing:
        raise DataError(table.source, f"format {fmt!r} needs field(s) {', '.join(missing)}; "
                                      f"fields found: {', '.join(table.columns)}")
    if fmt == "alpaca":
        instructions, outputs = text_column(table, "instruction"), text_column(table, "output")
        records = Records(fmt, instructions, instructions, outputs)
        if "input" in table.columns:  # a source without the field has nothing for the "\nnan" artefact to mark
            inputs = text_column(table, "input", optional=True)
            records.clean_queries = [alpaca_query(i, x, "paper") for i, x in zip(instructions, inputs)]
            records.queries = records.clean_queries if fidelity == "paper" else [
                alpaca_query(i, x, "reference") for i, x in zip(instructions, inputs)]
    elif fmt == "query_response":
        raw = text_column(table, "query")
        clean = [strip_nan_artifact(q) for q in raw]
        records = Records(fmt, clean if fidelity == "paper" else raw, clean, text_column(table, "response"))
    else:
        records = _conversations(table, fmt, fidelity)
    if table.maybe_lone_surrogates:
        _check_unicode(table, records)
    records.n_unlabelled = _check_labels(table)
    return records


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
        if value is MISSING and optional:
            out[index] = ""
        elif value is MISSING:
            present = ", ".join(field for field, column in table.columns.items() if column[index] is not MISSING)
            raise table.error(index, f"field {name!r} is missing (fields present: {present or 'none'})", field=name)
        elif not isinstance(value, str):
            raise table.error(index, f"field {name!r} must be a string, got {type_name(value)}", field=name)
    return out


def _conversations(table: RawTable, fmt: str, fidelity: str) -> Records:
    column = FORMATS[fmt].fields[0]
    role_key, content_key, roles = _TURNS[fmt]
    queries, responses, conversations, dropped_keys = [], [], [], []
    n_multi_turn = 0

    def error(field: str, detail: str) -> DataError:  # about the record being read (``index``)
        return table.error(index, f"field {field!r}{detail}", field=field)

    for index, value in enumerate(table.columns[column]):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise error(column, f" is a string but not JSON: {exc.msg}") from None
            except RecursionError:
                raise error(column, f": {too_deep(value)}") from None
        if value is MISSING:
            raise error(column, " is missing")
        if not isinstance(value, (list, tuple)) or not value:
            what = "an empty list" if isinstance(value, (list, tuple)) else type_name(value)
            raise error(column, f" must be a non-empty list of turns, got {what}")
        turns = []
        for position, turn in enumerate(value):
            where = f"{column}[{position}]"
            if not isinstance(turn, dict):
                raise error(where, f" must be an object, got {type_name(turn)}")
            for key in (role_key, content_key):
                if turn.get(key, MISSING) is MISSING:
                    raise error(f"{where}.{key}", " is missing")
                if not isinstance(turn[key], str):
                    raise error(f"{where}.{key}", f" must be a string, got {type_name(turn[key])}")
            if turn[role_key] not in roles:
                raise error(f"{where}.{role_key}", f": unknown role {turn[role_key]!r} "
                                                   f"(expected one of {', '.join(roles)})")
            if any(key not in (role_key, content_key) and item is not None for key, item in turn.items()):
                dropped_keys.append(table.positions[index])
            turns.append({"role": roles[turn[role_key]], "content": turn[content_key]})
        # The scored pair: the first turn after any system turns must be the user's, the next the assistant's.
        start = next((i for i, turn in enumerate(turns) if turn["role"] != "system"), len(turns))
        if start == len(turns) or turns[start]["role"] != "user":
            got = "only system turns" if start == len(turns) else f"a {turns[start]['role']!r} turn"
            raise error(f"{column}[{start}]", f": the first non-system turn must be from the user, got {got}")
        if start + 1 == len(turns) or turns[start + 1]["role"] != "assistant":
            got = "the end of the conversation" if start + 1 == len(turns) else f"a {turns[start + 1]['role']!r} turn"
            raise error(column, f": no assistant turn after the first user turn (got {got})")
        queries.append(turns[start]["content"])
        responses.append(turns[start + 1]["content"])
        conversations.append(turns)
        n_multi_turn += sum(a["role"] == "user" and b["role"] == "assistant" for a, b in zip(turns, turns[1:])) > 1
    rows = sorted(set(dropped_keys))
    if fmt == "messages" and rows:
        logger.warning("%s: %d conversations had per-turn keys other than role/content, dropped (rows %s)",
                       table.source, len(rows), ", ".join(map(str, rows[:5])) + (", …" if len(rows) > 5 else ""))
    clean = [strip_nan_artifact(q) for q in queries]
    return Records(fmt, clean if fidelity == "paper" else queries, clean, responses, conversations, n_multi_turn)


def _check_unicode(table: RawTable, records: Records) -> None:
    """DataError at the first record (in source order) with a lone surrogate in a value or a key; a conversation
    parsed from a JSON string is checked through its turns."""
    column, content_key = FORMATS[records.format].fields[0], _TURNS.get(records.format, ("", ""))[1]
    for index in range(len(table)):
        record = {name: values[index] for name, values in table.columns.items() if values[index] is not MISSING}
        turns = [{content_key: turn["content"]} for turn in records.messages[index]] if records.messages else []
        found = _lone_surrogate(record, "") or _lone_surrogate(turns, column)
        if found:
            field, char, offset, in_key = found
            shown = field.encode("utf-8", "backslashreplace").decode("utf-8")
            raise table.error(index, f"{'field name' if in_key else 'field'} '{shown}' holds a lone UTF-16 surrogate "
                                     f"\\u{ord(char):04x} (character {offset}), which is not valid Unicode text: a "
                                     "JSON \\uD800-\\uDFFF escape must be one half of a high+low pair; fix or remove "
                                     "it", field=shown)


def _lone_surrogate(value: Any, path: str) -> tuple[str, str, int, bool] | None:
    """``(field path, surrogate, character index, in a key)`` of the first lone surrogate in ``value`` (depth
    first, in order; iterative, as a deeply nested value would overflow a recursive walk)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str) and (match := _LONE_SURROGATE.search(item)):
            return where, match.group(), match.start(), False
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and (match := _LONE_SURROGATE.search(key)):
                    return f"{where}.{key}" if where else key, match.group(), match.start(), True
            stack.extend((f"{where}.{key}" if where else str(key), sub) for key, sub in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", item[i]) for i in range(len(item) - 1, -1, -1))
    return None


def bloom_label(value: Any) -> str | None:
    """The canonical Bloom level of a gold label, ``None`` when unlabelled; ``ValueError`` otherwise.

    >>> bloom_label(" apply "), bloom_label(""), bloom_label(None)
    ('Apply', None, None)
    """
    if value is None or value is MISSING or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and (not value.strip() or value.strip().lower() in _LABEL_LOOKUP):
        return _LABEL_LOOKUP.get(value.strip().lower())
    raise ValueError(f"{value!r} is not a Bloom level (expected one of {', '.join(BLOOM_LABELS)}, in any case; "
                     "empty means unlabelled)")


def _check_labels(table: RawTable) -> int | None:
    """Canonicalise the ``bloom_level`` column in place; the number of unlabelled rows (``None``: no such field).
    Invalid labels fail at the first one, counting and listing (up to 10) all: none leaves the accuracy silently."""
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
            line = table.unit == "line"
            shown = [str(table.positions[i] + line) for i, _ in invalid[:10]]
            detail += (f"; {len(invalid)} rows have invalid labels ({'lines' if line else 'rows'} {', '.join(shown)}"
                       f"{', …' if len(invalid) > 10 else ''})")
        raise table.error(index, f"field {LABEL_COLUMN!r}: {detail}", field=LABEL_COLUMN)
    table.columns[LABEL_COLUMN] = labels
    return labels.count(None)
