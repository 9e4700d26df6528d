"""``load_records``: any supported source → canonical records frame + :class:`LoadReport`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from thtb.data.formats import CONSUMED_FIELDS, Extracted, check_format, detect_format, extract
from thtb.data.readers import MISSING, RawTable, read_source
from thtb.data.records import (
    MAX_GROUPS_REPORTED,
    LoadReport,
    assign_ids,
    check_fidelity,
    empty_positions,
)

logger = logging.getLogger("thtb.data")

CANONICAL_COLUMNS: tuple[str, ...] = ("id", "query", "response", "row")
"""The first columns of every records frame; a source field of the same name becomes ``orig_<name>``."""


def load_records(
    source: str | os.PathLike[str],
    *,
    format: str | None = None,
    fidelity: str = "reference",
    split: str = "train",
    drop_empty: bool = False,
    limit: int | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Load an instruction dataset as canonical records.

    Args:
        source: a file (``.json`` array or JSON Lines, ``.jsonl``, ``.parquet``, ``.csv``,
            ``.tsv``), a directory saved with ``datasets.save_to_disk``, or a Hugging Face hub
            id such as ``"tatsu-lab/alpaca"`` (used only when no local path of that name exists).
        format: ``alpaca | query_response | sharegpt | messages``; detected from the fields
            when ``None`` (see :mod:`thtb.data.formats`).
        fidelity: ``reference`` (the authors' query text, ``"\\nnan"`` for an empty Alpaca
            input) or ``paper`` (clean query). See :mod:`thtb.data.records`.
        split: split of a ``DatasetDict`` directory or of a hub dataset (ignored for files).
        drop_empty: exclude records whose query or response is empty/whitespace (clean form);
            by default they are kept and reported with a warning.
        limit: keep only the first ``limit`` records: the file is parsed whole (a JSON syntax
            error anywhere still raises), then records past ``limit`` are set aside before
            validation, ids and everything else.

    Returns:
        ``(frame, report)``. ``frame`` has columns ``id`` (unique content id), ``query``,
        ``response``, ``row`` (0-based source position: array index, JSON Lines physical line
        index, table row), then every source field (a clash with those four names is renamed
        ``orig_<name>``; ``query``/``response`` of a query_response source and ``messages`` of a
        messages source *are* the canonical values and are not repeated), and for conversation
        sources ``messages`` (the whole conversation as role/content dicts). Conversations are
        scored on their first user→assistant exchange. ``len(frame) + report.n_excluded ==
        report.n_rows``.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor a plausible hub id.
        DataError: the data is malformed; the message names the file, line/row and field.
        ValueError: an unknown ``format``/``fidelity`` or a bad ``limit``.
    """
    fidelity_ = check_fidelity(fidelity)
    if format is not None:
        check_format(format)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")

    table = read_source(source, split)
    n_source_rows = len(table)
    if limit is not None and limit < n_source_rows:
        table = table.head(limit)
    fmt = format or detect_format(table)
    texts = extract(table, fmt, fidelity_)
    ids, groups = assign_ids(texts.clean_queries, texts.responses)
    frame = build_frame(table, fmt, texts, ids)

    positions = table.positions
    empty_query = [positions[i] for i in empty_positions(texts.clean_queries)]
    empty_response = [positions[i] for i in empty_positions(texts.responses)]
    _warn_rows(table.source, "an empty query", empty_query)
    _warn_rows(table.source, "an empty response", empty_response)
    row_groups = [[positions[i] for i in group] for group in groups]
    n_duplicates = sum(len(group) - 1 for group in groups)
    if n_duplicates:
        logger.warning(
            "%s: %d rows repeat an earlier row exactly (%d groups, e.g. rows %s); ids get -dupK suffixes",
            table.source, n_duplicates, len(groups), row_groups[0],
        )

    excluded: list[int] = []
    if drop_empty:
        excluded = sorted(set(empty_query) | set(empty_response))
        if excluded:
            frame = frame[~frame["row"].isin(excluded)].reset_index(drop=True)
            logger.info("%s: excluded %d rows with an empty query or response", table.source, len(excluded))

    report = LoadReport(
        source=table.source,
        format=fmt,
        fidelity=fidelity_,
        n_rows=len(table),
        n_source_rows=n_source_rows,
        limit=limit,
        split=table.split,
        sha256=table.sha256,
        n_duplicates=n_duplicates,
        n_duplicate_groups=len(groups),
        duplicate_groups=row_groups[:MAX_GROUPS_REPORTED],
        empty_query_rows=empty_query,
        empty_response_rows=empty_response,
        n_excluded=len(excluded),
        excluded_rows=excluded,
        n_multi_turn=texts.n_multi_turn,
    )
    logger.info(
        "%s: loaded %d records (%s, fidelity=%s, %d excluded)",
        table.source, len(frame), fmt, fidelity_, len(excluded),
    )
    return frame, report


def build_frame(table: RawTable, fmt: str, texts: Extracted, ids: Sequence[str]) -> pd.DataFrame:
    """Canonical columns first, then the source fields (renamed on clash), then ``messages``."""
    columns: dict[str, Any] = {
        "id": ids,
        "query": texts.queries,
        "response": texts.responses,
        "row": np.asarray(table.positions, dtype=np.int64),
    }
    consumed = CONSUMED_FIELDS[fmt]
    reserved = set(CANONICAL_COLUMNS) | ({"messages"} if texts.messages is not None else set())
    for name, values in table.columns.items():
        if name in consumed:
            continue
        target = name
        while target in reserved or target in columns:
            target = f"orig_{target}"
        columns[target] = _fill_missing(values)
    if texts.messages is not None:
        columns["messages"] = texts.messages
    return pd.DataFrame(columns)


def _fill_missing(values: list[Any]) -> list[Any]:
    """:data:`MISSING` (key absent from a JSON record) → ``None``."""
    if any(value is MISSING for value in values):
        return [None if value is MISSING else value for value in values]
    return values


def _warn_rows(source: str, what: str, rows: Sequence[int], n_shown: int = 10) -> None:
    if rows:
        shown = ", ".join(map(str, rows[:n_shown])) + (", …" if len(rows) > n_shown else "")
        logger.warning("%s: %d rows with %s (kept unless drop_empty=True): rows %s", source, len(rows), what, shown)
