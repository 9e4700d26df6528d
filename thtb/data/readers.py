"""Read a source into a column table of plain Python values, with positions for messages.

Source resolution (:func:`read_source`):

* an ``http://`` / ``https://`` URL → downloaded once (:func:`fetch_url`) into
  ``$THTB_CACHE_DIR/downloads/<sha256 of the URL>/<file name>`` (``~/.cache/thtb`` when the variable
  is unset), then read like a local file of that name; messages name the URL;
* an existing directory → ``datasets.load_from_disk`` (a ``DatasetDict`` gives ``split``);
* an existing file, by extension: ``.json`` (a JSON array of objects; a file starting with ``{``
  is read as JSON Lines, which is what ``datasets.Dataset.to_json`` writes), ``.jsonl`` /
  ``.ndjson`` (JSON Lines), ``.parquet`` / ``.pq``, ``.csv``, ``.tsv``;
* a string that is not an existing path and looks like a hub id (``name`` or ``owner/name``,
  no data-file extension) → ``datasets.load_dataset(id, split=split)``;
* anything else → :class:`FileNotFoundError` naming the path.

Text files must be UTF-8 (a leading BOM is accepted); invalid bytes raise a
:class:`~thtb.data.errors.DataError` with the line and byte offset. An empty source (0 bytes,
``[]``, only blank lines, a header-only csv, a 0-row table) raises a ``DataError`` naming it.

Other malformed text, each a ``DataError`` with the file and line/row:

* JSON nested deeper than Python's parser can follow (it would raise ``RecursionError``): the
  JSON Lines line, or the array row and the line it starts on, with the nesting depth;
* a ``.jsonl`` / ``.ndjson`` file holding one JSON array (a ``.json`` file misnamed): the message
  says so and asks for a rename to ``.json``. It is not read as an array: JSON Lines rows are
  numbered by line and array rows by index, so guessing would silently change every location;
* a csv/tsv row with fewer cells than the header (a *short row*, e.g. a line broken by an unquoted
  line break): the row, its line and the missing fields. An explicitly empty cell (``a,,b``) is
  fine and stays ``""``; blank lines are skipped as before;
* a JSON ``\\uD800``-``\\uDFFF`` escape that is not half of a surrogate pair decodes to a *lone
  surrogate*, which is not Unicode text. The readers only flag a file that contains such an escape
  (:attr:`RawTable.maybe_lone_surrogates`, a fast scan of the raw text); the record and field are
  then found by :func:`thtb.data.formats.check_unicode`.
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

TEXT_FIELDS = frozenset({"instruction", "input", "output", "query", "response"})
"""Fields read as text (csv cells of these columns are never turned into missing values)."""

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""Placeholder for a key absent from one JSON record (distinct from ``null``)."""

JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv")
DATA_SUFFIXES = JSON_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A JSON ``\\uD800``-``\\uDFFF`` escape (either half of a UTF-16 surrogate pair)."""

_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
"""JSON strings (skipped) and brackets, to measure nesting depth on the error path."""

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")

logger = logging.getLogger("thtb.data")

URL_SCHEMES = ("http://", "https://")
DOWNLOAD_TIMEOUT_S = 60.0
"""Connect/read timeout of a URL download (seconds without progress, not the total time)."""


@dataclass
class RawTable:
    """Columns of one source before validation.

    ``columns`` maps every field seen (in order of first appearance) to one value per record,
    :data:`MISSING` where a JSON record lacks the key. ``positions[i]`` is record i's 0-based
    position in the source (array index, physical line index, table row).
    """

    source: str
    columns: dict[str, list[Any]]
    positions: list[int]
    unit: RowUnit
    sha256: str | None = None
    split: str | None = None
    maybe_lone_surrogates: bool = False
    """The raw text has a JSON escape of an unpaired UTF-16 surrogate (or something that looks
    like one, e.g. an escaped backslash followed by ``ud800``): records must be checked."""

    def __len__(self) -> int:
        return len(self.positions)

    def head(self, n: int) -> RawTable:
        """The first ``n`` records."""
        return RawTable(
            self.source,
            {name: values[:n] for name, values in self.columns.items()},
            self.positions[:n],
            self.unit,
            self.sha256,
            self.split,
            self.maybe_lone_surrogates,
        )

    def error(self, index: int, detail: str, field: str | None = None) -> DataError:
        """A :class:`DataError` for record ``index`` (a list index, not a source position)."""
        return DataError(self.source, detail, row=self.positions[index], unit=self.unit, field=field)

    def fields_present(self, index: int) -> list[str]:
        """The fields record ``index`` actually has (for 'missing field' messages)."""
        return [name for name, values in self.columns.items() if values[index] is not MISSING]


def looks_like_hub_id(source: str) -> bool:
    """``name`` or ``owner/name`` without a data-file extension (e.g. ``tatsu-lab/alpaca``)."""
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(DATA_SUFFIXES)


def is_url(source: str | os.PathLike[str]) -> bool:
    """``source`` is an ``http://`` or ``https://`` URL."""
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def download_root() -> Path:
    """``$THTB_CACHE_DIR/downloads`` if the variable is set, else ``~/.cache/thtb/downloads``."""
    env = os.environ.get("THTB_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "thtb") / "downloads"


def url_cache_path(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`fetch_url` keeps ``url``: ``<root>/<sha256 of the URL>/<last path segment>``
    (``data`` when the URL path has no file name); the query string is not part of the name."""
    from urllib.parse import unquote, urlsplit

    name = Path(unquote(urlsplit(url).path)).name or "data"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return Path(root if root is not None else download_root()) / digest / name


def fetch_url(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Download ``url`` once and return the local copy (:func:`url_cache_path`).

    A cached copy is returned without any request. A download streams into a temporary file
    beside the target that is renamed onto it only when complete, so an interrupted download never
    leaves a file that looks whole. ``httpx`` does the HTTP (redirects followed, proxies from the
    environment honoured). Any failure (no network, DNS, timeout, an HTTP error status) raises a
    :class:`~thtb.data.errors.DataError` naming the URL.
    """
    target = url_cache_path(url, root)
    if target.is_file():
        return target
    import httpx

    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            with httpx.stream("GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    handle.write(chunk)
    except httpx.HTTPError as exc:
        if isinstance(exc, httpx.HTTPStatusError):
            why = f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
        else:
            why = f"{type(exc).__name__}: {exc}"
        raise DataError(
            url,
            f"download failed ({why}); a URL dataset needs internet access the first "
            f"time (it is then cached under {target.parent}) — or download the file yourself and pass its "
            "local path",
        ) from exc
    return target


def read_source(source: str | os.PathLike[str], split: str) -> RawTable:
    """Read ``source`` (URL, file, HF dataset directory or hub id) into a :class:`RawTable`."""
    label = os.fspath(source)
    if is_url(label):
        suffix = url_cache_path(label, "").suffix.lower()
        if suffix not in DATA_SUFFIXES:  # say so before downloading anything
            raise DataError(label, f"unsupported file type {suffix or '(none)'!r} in the URL's file name; "
                                   f"expected one of {', '.join(DATA_SUFFIXES)}")
        return _read_file(fetch_url(label), label)
    path = Path(label)
    if path.is_dir():
        return _read_hf_disk(path, label, split)
    if path.is_file():
        return _read_file(path, label)
    if isinstance(source, str) and looks_like_hub_id(source):
        return _read_hub(source, split)
    raise not_found(label)


def _read_file(path: Path, label: str) -> RawTable:
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise DataError(
            label, f"unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(DATA_SUFFIXES)}"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise DataError(label, "file is empty (0 bytes)")
    if suffix in PARQUET_SUFFIXES:
        table = _read_parquet(data, label)
    else:
        text = decode_utf8(data, label)
        if suffix in CSV_SUFFIXES:
            table = _read_csv(text, label, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in JSONL_SUFFIXES or text.lstrip().startswith("{"):
            table = _read_jsonl(text, label)
        else:
            table = _read_json_array(text, label)
        table.maybe_lone_surrogates = has_lone_surrogate_escape(text)
    table.sha256 = digest
    return table


def has_lone_surrogate_escape(text: str) -> bool:
    """Whether ``text`` has a JSON ``\\uDXXX`` escape that is not part of a high+low pair.

    A superset test (an escaped backslash before ``ud800`` also counts); valid pairs such as the
    emoji ``\\ud83d\\ude00`` do not count, so clean files skip the record scan. Only JSON escapes
    can produce a lone surrogate: strict UTF-8 decoding never does.
    """
    for match in _SURROGATE_ESCAPE.finditer(text):
        start = match.start()
        code = int(text[start + 2 : start + 6], 16)
        if code < 0xDC00:  # high half: needs a low half right after it
            follower = _SURROGATE_ESCAPE.match(text, start + 6)
            if not (follower and int(text[start + 8 : start + 12], 16) >= 0xDC00):
                return True
        else:  # low half: needs a high half right before it
            leader = _SURROGATE_ESCAPE.match(text, start - 6) if start >= 6 else None
            if not (leader and int(text[start - 4 : start], 16) < 0xDC00):
                return True
    return False


def decode_utf8(data: bytes, label: str) -> str:
    """Decode UTF-8 (a leading BOM dropped); bad bytes → DataError with line and byte offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end].hex()
        raise DataError(
            label, f"not valid UTF-8 (byte 0x{bad}: {exc.reason})", line=line, byte_offset=exc.start
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _read_jsonl(text: str, label: str) -> RawTable:
    """One JSON object per line; blank lines are skipped but keep their line number."""
    records: list[dict[str, Any]] = []
    positions: list[int] = []
    decode = json.JSONDecoder().decode
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if not positions:  # the first record: maybe the whole file is one JSON value
                _reject_top_level_value(text, label)
                if line.lstrip().startswith("["):
                    hint = " (the file starts like a JSON array, but JSON Lines needs one JSON object per line)"
            raise DataError(
                label, f"invalid JSON: {exc.msg}{hint}", row=index, unit="line", column=exc.colno
            ) from None
        except RecursionError:
            raise DataError(label, too_deep(line), row=index, unit="line") from None
        if not isinstance(record, dict):
            if not positions and isinstance(record, list) and not any(rest.strip() for rest in lines[index + 1 :]):
                _reject_top_level_value(text, label)  # a one-line JSON array file
            raise DataError(label, f"record must be a JSON object, got {type_name(record)}", row=index, unit="line")
        records.append(record)
        positions.append(index)
    if not records:
        raise DataError(label, "contains no records (only blank lines)")
    return RawTable(label, _columns(records), positions, "line")


def _reject_top_level_value(text: str, label: str) -> None:
    """A file that is one JSON value is not JSON Lines: say what it is instead of blaming line 1.

    A JSON array gets "rename it to .json"; an object gets its keys listed. Returns (and the
    caller reports the line) when the whole text is not one JSON value either.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return
    if isinstance(value, list):
        suffix = (url_cache_path(label, "") if is_url(label) else Path(label)).suffix or ".jsonl"
        records = f"{len(value):,} record{'' if len(value) == 1 else 's'}"
        raise DataError(
            label,
            f"holds one JSON array of {records}, not one JSON object per line as JSON Lines ({suffix}) "
            "expects; rename it to .json to read it as a JSON array",
        )
    keys = ", ".join(map(str, list(value)[:10])) if isinstance(value, dict) else ""
    raise DataError(
        label,
        f"top-level JSON {type_name(value)} (keys: {keys}); expected a JSON array of records or JSON Lines",
    )


def json_depth(text: str, start: int = 0) -> int:
    """Deepest array/object nesting of the JSON value starting at ``start`` (error path only)."""
    depth = deepest = 0
    for token in _JSON_NESTING.finditer(text, start):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth -= 1
            if depth <= 0:
                break
    return deepest


def too_deep(text: str, start: int = 0) -> str:
    """The message for JSON nested deeper than the parser can follow (it hit ``RecursionError``)."""
    return (
        f"JSON nested too deeply to parse ({json_depth(text, start):,} levels of arrays/objects; "
        f"Python's parser stops near its recursion limit, {sys.getrecursionlimit():,})"
    )


def _deep_array_element(text: str) -> tuple[int, int] | None:
    """``(row, offset)`` of the first element of a top-level JSON array too deep for the parser."""
    decoder = json.JSONDecoder()
    position = _JSON_WHITESPACE.match(text).end()
    if text[position : position + 1] != "[":
        return None
    position = _JSON_WHITESPACE.match(text, position + 1).end()
    row = 0
    while position < len(text):
        try:
            _, end = decoder.raw_decode(text, position)
        except RecursionError:
            return row, position
        except json.JSONDecodeError:
            return None
        position = _JSON_WHITESPACE.match(text, end).end()
        if text[position : position + 1] != ",":
            return None
        position = _JSON_WHITESPACE.match(text, position + 1).end()
        row += 1
    return None


def _read_json_array(text: str, label: str) -> RawTable:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(label, f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno) from None
    except RecursionError:
        found = _deep_array_element(text)
        if found is None:
            raise DataError(label, too_deep(text)) from None
        row, start = found
        line = text.count("\n", 0, start) + 1
        raise DataError(label, f"{too_deep(text, start)}; the record starts on line {line}", row=row) from None
    if not isinstance(value, list):
        raise DataError(label, f"expected a JSON array of records, got {type_name(value)}")
    if not value:
        raise DataError(label, "contains no records (empty JSON array)")
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise DataError(label, f"record must be a JSON object, got {type_name(record)}", row=index)
    return RawTable(label, _columns(value), list(range(len(value))), "row")


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dict records → columns over the union of keys, :data:`MISSING` where a key is absent."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return {name: [record.get(name, MISSING) for record in records] for name in names}


def _read_parquet(data: bytes, label: str) -> RawTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(label, f"cannot read parquet: {exc}") from None
    return _from_pydict(table.to_pydict(), label, table.num_rows)


def _read_csv(text: str, label: str, sep: str) -> RawTable:
    """CSV/TSV with a header. Cells are text: an empty cell of a schema text column is ``""``
    and strings like ``NA``/``nan`` stay literal there; other columns get pandas' usual
    type inference, with empty cells as missing values."""
    import pandas as pd

    try:
        header = pd.read_csv(io.StringIO(text), sep=sep, nrows=0).columns
        text_columns = [name for name in header if name in TEXT_FIELDS]
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype={name: str for name in text_columns},
            keep_default_na=False,
            na_values={name: [""] for name in header if name not in text_columns},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(label, f"cannot parse {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None
    _reject_short_rows(text, label, sep, list(map(str, frame.columns)), len(frame))
    return _from_pydict({name: frame[name].tolist() for name in frame.columns}, label, len(frame))


def _reject_short_rows(text: str, label: str, sep: str, header: list[str], n_rows: int) -> None:
    """DataError at the first data row with fewer cells than the header.

    pandas fills the cells missing from a short row exactly like explicitly empty ones, so the
    cells are counted again with :mod:`csv` (same dialect: ``"`` quoting, doubled quotes). A first
    pass only counts cells; rows are lined up with pandas' only when some record is short. Records
    pandas skips (empty lines, unquoted whitespace-only lines) are skipped here too; should the two
    parsers still disagree on the number of rows, the check is skipped with a warning, never guessed.
    """
    width = len(header)
    try:
        counts = [len(record) for record in csv.reader(io.StringIO(text, newline=""), delimiter=sep)]
        if min((count for count in counts if count), default=width) >= width:
            return
        lines = io.StringIO(text, newline="").readlines()
        reader = csv.reader(lines, delimiter=sep)
        records: list[tuple[int, int]] = []  # (cells, first line) per record, the header first
        end = 0
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record:
                continue
            if len(record) == 1 and not record[0].strip() and '"' not in "".join(lines[start - 1 : end]):
                continue  # an unquoted blank line: pandas skips it
            records.append((len(record), start))
    except csv.Error as exc:
        logger.warning("%s: could not check for short rows (csv: %s)", label, exc)
        return
    if len(records) != n_rows + 1:
        logger.warning("%s: could not check for short rows (%d csv records for %d rows)", label, len(records), n_rows)
        return
    for row, (cells, line) in enumerate(records[1:]):
        if cells < width:
            missing = header[cells:]
            names = ", ".join(f"'{name}'" for name in missing)
            raise DataError(
                label,
                f"field(s) {names} missing: the row has {cells} of {width} cells (line {line}); a short row, "
                "e.g. a line break inside an unquoted cell. An empty cell still needs its separator",
                row=row,
                field=missing[0],
            )


def _from_pydict(columns: dict[str, list[Any]], label: str, n_rows: int, split: str | None = None) -> RawTable:
    if n_rows == 0:
        raise DataError(label, f"contains no records (0 rows; columns: {', '.join(columns) or 'none'})")
    return RawTable(label, {str(k): list(v) for k, v in columns.items()}, list(range(n_rows)), "row", split=split)


def _read_hf_disk(path: Path, label: str, split: str) -> RawTable:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(label, f"not a saved Hugging Face dataset directory ({exc})") from None
    return _from_hf(loaded, label, split)


def _read_hub(dataset_id: str, split: str) -> RawTable:
    from datasets import load_dataset

    try:
        loaded = load_dataset(dataset_id, split=split)
    except Exception as exc:  # hub/network/builder errors: re-raise with the id and the fallback tried
        raise DataError(
            dataset_id,
            f"no local file or directory of that name, and loading it as a Hugging Face hub "
            f"dataset (split {split!r}) failed: {type(exc).__name__}: {exc}",
        ) from exc
    return _from_hf(loaded, dataset_id, split)


def _from_hf(loaded: Any, label: str, split: str) -> RawTable:
    """A ``Dataset`` (or ``DatasetDict`` → ``loaded[split]``) → RawTable."""
    if isinstance(loaded, dict):  # DatasetDict is a dict of splits
        splits = list(loaded.keys())
        if split not in splits:
            raise DataError(label, f"split {split!r} not found; available splits: {', '.join(map(str, splits))}")
        loaded = loaded[split]
    return _from_pydict(loaded.to_dict(), label, loaded.num_rows, split=split)
