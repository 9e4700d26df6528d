"""Read a source into columns of plain Python values, with every record's position for messages.

The libraries parse: ``json`` (JSON arrays, JSON Lines), pandas (csv/tsv), pyarrow (parquet), ``datasets``
(``save_to_disk`` folders, hub ids). The code here picks the reader and adds what their errors lack: the file,
the line/row and the field (:class:`~thtb.data.errors.DataError`).

* ``.json`` is a JSON array, or JSON Lines when it starts with ``{`` (``Dataset.to_json``); ``.jsonl``/``.ndjson``
  JSON Lines; ``.parquet``/``.pq``; ``.csv``/``.tsv``; a folder → ``datasets.load_from_disk`` (a ``DatasetDict``
  gives ``split``); a URL is downloaded once (:func:`fetch_url`) and read like a file of its name; a name that is
  no path but looks like ``owner/name`` → ``datasets.load_dataset(id, split=split)``; anything else is a
  :class:`FileNotFoundError`.
* Text is UTF-8 (a BOM is accepted). An empty source (0 bytes, ``[]``, blank lines, a header-only csv, 0 rows)
  is an error; so is a ``.jsonl`` holding one JSON array (rename it ``.json``: read as an array its rows would be
  numbered by index, not line, and every location would move).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thtb.data.errors import DataError, RowUnit, not_found, type_name
from thtb.io import atomic_path

logger = logging.getLogger("thtb.data")

TEXT_FIELDS = frozenset({"instruction", "input", "output", "query", "response"})
"""Fields read as text (csv cells of these columns are never turned into missing values)."""

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""Placeholder for a key absent from one JSON record (distinct from ``null``)."""

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = (".json", *JSONL_SUFFIXES, *PARQUET_SUFFIXES, ".csv", ".tsv")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SURROGATE_ESCAPES = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                                r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A JSON escape of a UTF-16 high+low surrogate pair (12 characters), else of one half alone (6)."""
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')
"""JSON strings (skipped), brackets and commas: to measure nesting on the error path."""

DOWNLOAD_TIMEOUT_S = 60.0
"""Connect/read timeout of a URL download (seconds without progress, not the total time)."""


@dataclass
class RawTable:
    """Columns of one source before validation.

    ``columns`` maps every field seen (in order of first appearance) to one value per record, :data:`MISSING`
    where a JSON record lacks the key. ``positions[i]`` is record i's 0-based position in the source (array
    index, physical line index, table row), printed by :meth:`error` per ``unit``.
    """

    source: str
    columns: dict[str, list[Any]]
    positions: list[int]
    unit: RowUnit
    sha256: str | None = None
    split: str | None = None
    maybe_lone_surrogates: bool = False
    """The raw text has a JSON escape of an unpaired UTF-16 surrogate (or looks so, e.g. an escaped backslash
    before ``ud800``): :func:`thtb.data.formats.normalise` looks for the record and field."""

    def __len__(self) -> int:
        return len(self.positions)

    def error(self, index: int, detail: str, field: str | None = None) -> DataError:
        """A :class:`DataError` for record ``index`` (a list index, not a source position)."""
        return DataError(self.source, detail, row=self.positions[index], unit=self.unit, field=field)


def looks_like_hub_id(source: str) -> bool:
    """``name`` or ``owner/name`` without a data-file extension (e.g. ``tatsu-lab/alpaca``)."""
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(DATA_SUFFIXES)


def is_url(source: str | os.PathLike[str]) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def url_cache_path(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`fetch_url` keeps ``url``: ``<root>/<sha256 of the URL>/<last path segment>`` (``data`` when
    the path has no file name; the query string is not part of it). ``root`` defaults to
    ``$THTB_CACHE_DIR/downloads`` (``~/.cache/thtb/downloads`` when the variable is unset)."""
    from urllib.parse import unquote, urlsplit

    if root is None:
        env = os.environ.get("THTB_CACHE_DIR")
        root = (Path(env).expanduser() if env else Path.home() / ".cache" / "thtb") / "downloads"
    name = Path(unquote(urlsplit(url).path)).name or "data"
    return Path(root) / hashlib.sha256(url.encode("utf-8")).hexdigest() / name


def fetch_url(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Download ``url`` once (``httpx``: redirects followed, proxies from the environment) and return the local
    copy (:func:`url_cache_path`); a cached copy is returned without any request. The download is renamed onto
    its name only when complete. Any failure is a :class:`DataError` naming the URL."""
    target = url_cache_path(url, root)
    if target.is_file():
        return target
    import httpx

    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            with httpx.stream("GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S) as response:
                response.raise_for_status()
                handle.writelines(response.iter_bytes())
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.HTTPStatusError):
            why = f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
        raise DataError(url, f"download failed ({why}); a URL dataset needs internet access the first time (it "
                             f"is then cached under {target.parent}) — or download the file yourself and pass "
                             "its local path") from exc
    return target


def read_source(source: str | os.PathLike[str], split: str) -> RawTable:
    """Read ``source`` (URL, file, HF dataset directory or hub id) into a :class:`RawTable`."""
    label = os.fspath(source)
    path = url_cache_path(label, "") if is_url(label) else Path(label)
    if is_url(label) or path.is_file():
        suffix = path.suffix.lower()
        if suffix not in DATA_SUFFIXES:  # for a URL, before downloading anything
            where = " in the URL's file name" if is_url(label) else ""
            raise DataError(label, f"unsupported file type {suffix or '(none)'!r}{where}; "
                                   f"expected one of {', '.join(DATA_SUFFIXES)}")
        return _read_file(fetch_url(label) if is_url(label) else path, label, suffix)
    if path.is_dir() or (isinstance(source, str) and looks_like_hub_id(source)):
        return _read_datasets(label, split, hub=not path.is_dir())
    raise not_found(label)


def _read_file(path: Path, label: str, suffix: str) -> RawTable:
    data = path.read_bytes()
    if not data:
        raise DataError(label, "file is empty (0 bytes)")
    if suffix in PARQUET_SUFFIXES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(label, f"cannot read parquet: {exc}") from None
        table = _table(label, parquet.to_pydict(), parquet.num_rows)
    else:
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:  # the codec gives the byte offset; the line is counted here
            line = data.count(b"\n", 0, exc.start) + 1
            raise DataError(label, f"not valid UTF-8 (byte 0x{data[exc.start:exc.end].hex()}: {exc.reason})",
                            line=line, byte_offset=exc.start) from None
        if suffix in (".csv", ".tsv"):
            table = _read_csv(text, label, "\t" if suffix == ".tsv" else ",")
        elif suffix in JSONL_SUFFIXES or text.lstrip().startswith("{"):
            table = _read_json_lines(text, label)
        else:
            table = _read_json_array(text, label)
        # json decodes an escape of half a surrogate pair to a lone surrogate, which is not Unicode text, without
        # a word; a fast scan of the raw text flags the (rare) file that has one, whose records are then checked.
        table.maybe_lone_surrogates = any(len(m.group()) == 6 for m in _SURROGATE_ESCAPES.finditer(text))
    table.sha256 = hashlib.sha256(data).hexdigest()
    return table


def _read_json_lines(text: str, label: str) -> RawTable:
    """One JSON object per line, parsed line by line with ``json``, so an error names its physical line (blank
    lines count). pyarrow's JSON reader is not used: it numbers rows within a block and skips blank lines, and it
    turns an absent key into ``null``."""
    decode = json.JSONDecoder().decode
    records: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if not records:  # the first record: maybe the whole file is one JSON value
                _reject_one_value(text, label)
                if line.lstrip().startswith("["):
                    hint = " (the file starts like a JSON array, but JSON Lines needs one JSON object per line)"
            raise DataError(label, f"invalid JSON: {exc.msg}{hint}", row=index, unit="line",
                            column=exc.colno) from None
        except RecursionError:
            raise DataError(label, too_deep(line), row=index, unit="line") from None
        if not isinstance(record, dict):
            if not records and isinstance(record, list):
                _reject_one_value(text, label)  # a one-line JSON array file
            raise DataError(label, f"record must be a JSON object, got {type_name(record)}", row=index, unit="line")
        records.append(record)
        positions.append(index)
    if not records:
        raise DataError(label, "contains no records (only blank lines)")
    return RawTable(label, _columns(records), positions, "line")


def _reject_one_value(text: str, label: str) -> None:
    """A JSON Lines file that is one JSON value: say what it is instead of blaming its first line (returns when
    the text is not one JSON value either)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return
    if isinstance(value, list):
        suffix = (url_cache_path(label, "") if is_url(label) else Path(label)).suffix or ".jsonl"
        raise DataError(label, f"holds one JSON array of {len(value):,} record{'' if len(value) == 1 else 's'}, "
                               f"not one JSON object per line as JSON Lines ({suffix}) expects; rename it to .json "
                               "to read it as a JSON array")
    keys = ", ".join(map(str, list(value)[:10])) if isinstance(value, dict) else ""
    raise DataError(label, f"top-level JSON {type_name(value)} (keys: {keys}); "
                           "expected a JSON array of records or JSON Lines")


def _read_json_array(text: str, label: str) -> RawTable:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(label, f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno) from None
    except RecursionError:  # only an array (a .json not starting with "{") can be that deep: name its record
        for row, (start, end) in enumerate(_elements(text)):
            try:
                json.loads(f"[{text[start:end]}]")  # the record alone, as deep as in the array
            except RecursionError:
                line = text.count("\n", 0, end - len(text[start:end].lstrip())) + 1
                raise DataError(label, f"{too_deep(text[start:end])}; the record starts on line {line}",
                                row=row) from None
        raise DataError(label, too_deep(text)) from None
    if not isinstance(value, list):
        raise DataError(label, f"expected a JSON array of records, got {type_name(value)}")
    if not value:
        raise DataError(label, "contains no records (empty JSON array)")
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise DataError(label, f"record must be a JSON object, got {type_name(record)}", row=index)
    return RawTable(label, _columns(value), list(range(len(value))), "row")


def _elements(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every element of the JSON array ``text``: brackets and commas are counted, strings
    skipped (``json`` says only ``RecursionError``)."""
    depth, start, spans = 0, 0, []
    for token in _JSON_TOKENS.finditer(text):
        char = token.group()
        if depth == 1 and char in ",]":
            spans.append((start, token.start()))
            start = token.end()
        depth += (char in "[{") - (char in "]}")
        if depth == 1 and char == "[":  # the array opens
            start = token.end()
    return spans


def too_deep(text: str) -> str:
    """The message for JSON ``text`` nested deeper than ``json`` can follow (it raised ``RecursionError``)."""
    depth = deepest = 0
    for token in _JSON_TOKENS.finditer(text):
        depth += (token.group() in "[{") - (token.group() in "]}")
        deepest = max(deepest, depth)
    return (f"JSON nested too deeply to parse ({deepest:,} levels of arrays/objects; "
            f"Python's parser stops near its recursion limit, {sys.getrecursionlimit():,})")


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = dict.fromkeys(name for record in records for name in record)
    return {name: [record.get(name, MISSING) for record in records] for name in names}


def _read_csv(text: str, label: str, sep: str) -> RawTable:
    """pandas reads csv/tsv with a header. Cells of :data:`TEXT_FIELDS` stay text (``""``, ``NA``, ``nan``
    literal); other columns get pandas' type inference, an empty cell being a missing value."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, na_values=[""],
                            dtype=dict.fromkeys(TEXT_FIELDS, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(label, f"cannot parse {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None
    _reject_short_rows(text, label, sep, list(map(str, frame.columns)), len(frame))
    columns = {name: (frame[name].fillna("") if name in TEXT_FIELDS else frame[name]).tolist() for name in frame}
    return _table(label, columns, len(frame))


def _reject_short_rows(text: str, label: str, sep: str, header: list[str], n_rows: int) -> None:
    """DataError at the first data row with fewer cells than the header (e.g. a line broken in an unquoted cell).
    pandas fills a short row's cells like empty ones, with no option to flag it (pyarrow's csv reader flags it but
    gives no physical line, and infers dates), so :mod:`csv` counts the cells again, skipping what pandas skips
    (empty and unquoted blank lines); should the two disagree on the rows, a warning says so, nothing is guessed."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, delimiter=sep)
    row, end, short = -1, 0, None  # the header is row -1
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip() and '"' not in "".join(lines[start - 1:end])):
                continue
            if short is None and row >= 0 and len(record) < len(header):
                short = (row, len(record), start)
            row += 1
    except csv.Error as exc:
        logger.warning("%s: could not check for short rows (csv: %s)", label, exc)
        return
    if short is not None and row != n_rows:
        logger.warning("%s: could not check for short rows (%d csv records for %d rows)", label, row, n_rows)
    elif short is not None:
        row, cells, line = short
        names = ", ".join(f"'{name}'" for name in header[cells:])
        raise DataError(label, f"field(s) {names} missing: the row has {cells} of {len(header)} cells (line {line}); "
                               "a short row, e.g. a line break inside an unquoted cell. An empty cell still needs "
                               "its separator", row=row, field=header[cells])


def _read_datasets(label: str, split: str, hub: bool) -> RawTable:
    """A ``save_to_disk`` folder or a hub id, read by ``datasets`` (a ``DatasetDict`` gives ``split``)."""
    import datasets

    try:
        loaded = datasets.load_dataset(label, split=split) if hub else datasets.load_from_disk(label)
    except Exception as exc:  # hub, network and builder errors name neither the id nor what was tried
        if hub:
            raise DataError(label, "no local file or directory of that name, and loading it as a Hugging Face hub "
                                   f"dataset (split {split!r}) failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(exc, FileNotFoundError):
            raise DataError(label, f"not a saved Hugging Face dataset directory ({exc})") from None
        raise
    if isinstance(loaded, dict):  # a DatasetDict, whose KeyError would not list the splits
        if split not in loaded:
            raise DataError(label, f"split {split!r} not found; available splits: {', '.join(map(str, loaded))}")
        loaded = loaded[split]
    return _table(label, loaded.to_dict(), loaded.num_rows, split=split)


def _table(label: str, columns: dict[str, list[Any]], n_rows: int, split: str | None = None) -> RawTable:
    if n_rows == 0:
        raise DataError(label, f"contains no records (0 rows; columns: {', '.join(columns) or 'none'})")
    return RawTable(label, {str(k): list(v) for k, v in columns.items()}, list(range(n_rows)), "row", split=split)
