"""``load_records``: any supported source → canonical records frame + :class:`LoadReport`, in one pass: read
(:mod:`~thtb.data.readers`), detect the format and normalise (:mod:`~thtb.data.formats`), assign ids
(:mod:`~thtb.data.records`), then the frame and the report. Also where a run's data comes from (``data.path``)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.data.errors import DataError
from thtb.data.formats import FORMATS, normalise
from thtb.data.readers import MISSING, read_source
from thtb.data.records import FIDELITIES, MAX_GROUPS_REPORTED, LoadReport, assign_ids

logger = logging.getLogger("thtb.data")

DEMO_DATA = "demo"
"""The name of the packaged demo set (264 hand-written pairs, ``thtb/resources/demo.jsonl``) in ``data.path``."""
SUBSET_FILE = Path("selection") / "subset.jsonl"
"""The select stage's human-readable subset ``{id, query, response}`` (the first exchange of a conversation)."""
SUBSET_MESSAGES_FILE = Path("selection") / "subset_messages.jsonl"
"""The same subset, same ids and order, as ``{id, messages}``: whole conversations, system and later turns
included. What the train stage reads when it is there (older selections without it: ``subset.jsonl``)."""


def load_records(source: str | os.PathLike[str], *, format: str | None = None, fidelity: str = "reference",
                 split: str = "train", drop_empty: bool = False, limit: int | None = None,
                 dedupe: bool = False) -> tuple[pd.DataFrame, LoadReport]:
    """Load an instruction dataset as canonical records.

    Args:
        source: a file, a URL to one, a ``datasets.save_to_disk`` directory or a Hugging Face hub id such as
            ``"tatsu-lab/alpaca"`` (used only when no local path of that name exists): :mod:`thtb.data.readers`.
        format: ``alpaca | query_response | sharegpt | messages``; detected from the fields when ``None``.
        fidelity: ``reference`` (the authors' query text, ``"\\nnan"`` for an empty Alpaca input) or ``paper``
            (clean query). See :mod:`thtb.data.records`.
        split: split of a ``DatasetDict`` directory or of a hub dataset (ignored for files).
        drop_empty: exclude records whose query or response is empty/whitespace (clean form); by default they
            are kept and reported with a warning. Either way a dataset in which *every* response (or query) is
            empty is a DataError, and so is ``drop_empty`` leaving no record.
        limit: keep only the first ``limit`` records: the file is parsed whole (a JSON syntax error anywhere still
            raises), then records past ``limit`` are set aside before validation, ids and everything else.
        dedupe: the exact-duplicates policy (config ``data.dedupe``). ``False`` (the authors' pipeline) keeps every
            copy with a ``-dupK`` id and counts them (``report.n_duplicates``, ``report.duplicate_ids``); ``True``
            drops the later copies, keeping each first occurrence, and lists them (``report.n_dropped_duplicates``,
            ``report.dropped_duplicate_ids``, in ``n_excluded``).

    Returns:
        ``(frame, report)``. ``frame`` has columns ``id`` (unique content id), ``query``, ``response``, ``row``
        (0-based source position: array index, JSON Lines physical line index, table row), then every source
        field (renamed ``orig_<name>`` on a clash with those four; a query_response source's ``query``/
        ``response`` and a messages source's ``messages`` *are* the canonical values and are not repeated), then
        for conversation sources ``messages`` (the whole conversation as role/content dicts).
        ``len(frame) + report.n_excluded == report.n_rows``.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor a plausible hub id.
        DataError: malformed data (bad JSON/UTF-8, lone surrogates, too-deep nesting, short csv rows, a missing or
            non-string field, a bad conversation or ``bloom_level`` label, …) or every response empty; the message
            names the file, line/row and field.
        ValueError: an unknown ``format``/``fidelity`` or a bad ``limit``.
    """
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")

    # 1. read (the libraries parse; errors name the file and line/row)
    table = read_source(source, split)
    n_source_rows = len(table)
    if limit is not None and limit < n_source_rows:
        table = replace(table, columns={name: values[:limit] for name, values in table.columns.items()},
                        positions=table.positions[:limit])
    positions, label = table.positions, table.source

    # 2. detect the format and normalise every record to (query, clean query, response[, messages])
    texts = normalise(table, format, fidelity)
    fmt = texts.format
    empty_query = [i for i, text in enumerate(texts.clean_queries) if not text.strip()]
    empty_response = [i for i, text in enumerate(texts.responses) if not text.strip()]
    considered = f"all {len(table):,} rows" + (f" (limit={limit})" if len(table) < n_source_rows else "")
    for what, empty in (("response", empty_response), ("query", empty_query)):
        if len(empty) == len(table):
            raise DataError(label, f"{considered} have an empty {what} ({getattr(FORMATS[fmt], what)}); nothing to "
                                   "select or train on. Check the file and the format/field mapping")
    for what, empty in (("query", empty_query), ("response", empty_response)):
        if empty:
            shown = ", ".join(str(positions[i]) for i in empty[:10]) + (", …" if len(empty) > 10 else "")
            logger.warning("%s: %d rows with an empty %s (kept unless drop_empty=True): rows %s",
                           label, len(empty), what, shown)

    # 3. ids: content hashes, -dupK on repeats
    ids, groups = assign_ids(texts.clean_queries, texts.responses)
    row_groups = [[positions[i] for i in group] for group in groups]
    repeats = sorted(i for group in groups for i in group[1:])
    if repeats:
        logger.warning("%s: %d rows repeat an earlier row exactly (%d groups, e.g. rows %s); ids get -dupK suffixes; "
                       "%s", label, len(repeats), len(groups), row_groups[0],
                       "later copies dropped (data.dedupe=true)" if dedupe else "kept (data.dedupe=false)")

    # 4. the frame: canonical columns, the source fields (renamed on a clash), the conversations; then exclusions
    columns: dict[str, Any] = {"id": ids, "query": texts.queries, "response": texts.responses,
                               "row": np.asarray(positions, dtype=np.int64)}
    reserved = {*columns, *(["messages"] if texts.messages is not None else [])}  # a clash becomes orig_<name>
    for name, values in table.columns.items():
        if FORMATS[fmt].canonical and name in FORMATS[fmt].fields:
            continue
        target = name
        while target in reserved or target in columns:
            target = f"orig_{target}"
        columns[target] = [None if v is MISSING else v for v in values] if any(v is MISSING for v in values) else values
    if texts.messages is not None:
        columns["messages"] = texts.messages
    frame = pd.DataFrame(columns)

    dropped_empty = set(empty_query) | set(empty_response) if drop_empty else set()
    if dropped_empty and len(dropped_empty) == len(table):
        raise DataError(label, f"{considered} have an empty query or response; drop_empty=True would leave no records")
    if dropped_empty:
        logger.info("%s: excluded %d rows with an empty query or response", label, len(dropped_empty))
    dropped_repeats = [i for i in repeats if i not in dropped_empty] if dedupe else []
    excluded = sorted(dropped_empty.union(dropped_repeats))
    if excluded:
        frame = frame.drop(index=excluded).reset_index(drop=True)

    report = LoadReport(
        source=label, format=fmt, fidelity=fidelity, n_rows=len(table), n_source_rows=n_source_rows, limit=limit,
        split=table.split, sha256=table.sha256, n_duplicates=len(repeats), n_duplicate_groups=len(groups),
        duplicate_groups=row_groups[:MAX_GROUPS_REPORTED],
        duplicate_ids=[ids[i] for i in repeats[:MAX_GROUPS_REPORTED]],
        dedupe=bool(dedupe), n_dropped_duplicates=len(dropped_repeats),
        dropped_duplicate_ids=[ids[i] for i in dropped_repeats], empty_query_rows=[positions[i] for i in empty_query],
        empty_response_rows=[positions[i] for i in empty_response], n_excluded=len(excluded),
        excluded_rows=[positions[i] for i in excluded], n_multi_turn=texts.n_multi_turn,
        n_unlabelled=texts.n_unlabelled,
    )
    logger.info("%s: loaded %d records (%s, fidelity=%s, %d excluded)", label, len(frame), fmt, fidelity,
                len(excluded))
    return frame, report


def resolve_data_path(path: str) -> str:
    """``demo`` → the packaged demo set; anything else is returned unchanged (file, dir or hub id)."""
    if path == DEMO_DATA:
        from importlib import resources

        return str(resources.files("thtb") / "resources" / "demo.jsonl")
    return path


def dataset_source(cfg: dict[str, Any], run_dir: Path) -> str:
    """``train.dataset`` (file, dir, hub id, or ``demo``), or this run's ``selection/subset.jsonl`` (the score
    stage's input; training reads the subset's whole conversations: :func:`thtb.train.data.training_source`)."""
    dataset = cfg["train"].get("dataset")
    if dataset:
        return resolve_data_path(str(dataset))
    subset = Path(run_dir) / SUBSET_FILE
    if not subset.is_file():
        raise FileNotFoundError(f"train: no training data: {subset} does not exist. Run the select stage "
                                "first (stages=[select,train]) or point train.dataset at a file, a dataset folder "
                                "or a hub id")
    return str(subset)


def datasets_offline() -> str | None:
    """The variable that keeps ``datasets`` from the hub (``HF_DATASETS_OFFLINE``, else ``HF_HUB_OFFLINE``, as
    ``datasets.config`` reads them), or ``None`` when it may download."""
    variable = "HF_DATASETS_OFFLINE" if "HF_DATASETS_OFFLINE" in os.environ else "HF_HUB_OFFLINE"
    return variable if os.environ.get(variable, "").strip().upper() in ("1", "ON", "YES", "TRUE") else None


def data_source_problem(source: str) -> str | None:
    """Why ``source`` (a resolved ``data.path``) cannot be read here, found without reading it, or ``None``:
    a path that does not exist; a hub dataset id while the hub is off (:func:`datasets_offline`) that
    ``datasets`` has not cached (``load_dataset`` offline reads only ``<HF_DATASETS_CACHE>/<owner>___<name>/``).
    No request is made: online, a hub id or a URL is left to the loader (which names it when it fails)."""
    from thtb.data.readers import is_url, looks_like_hub_id

    if Path(source).expanduser().exists() or is_url(source):
        return None
    if not looks_like_hub_id(source):
        return "does not exist"
    variable = datasets_offline()
    if variable is None:
        return None
    import glob

    from datasets import config

    cached = Path(config.HF_DATASETS_CACHE) / source.replace("/", "___")
    if any(Path(p).is_dir() for p in glob.glob(os.path.join(glob.escape(str(cached)), "*", "*", "*"))):
        return None
    return (f"is neither a file or folder here nor a Hugging Face hub dataset in the local datasets cache ({cached}),"
            f" and {variable}=1 forbids downloading it: point it at a local copy (an Alpaca .json/.jsonl, "
            f"parquet/csv or a saved dataset folder), or load it once with the hub reachable")
