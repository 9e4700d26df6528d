"""The pool a selection scores: its records, and what the driver keeps of them.

The cascade reads the pool through one small interface, whichever the executor:

- :meth:`~FramePool.texts` — the query/response texts of some rows (what a scorer is handed);
- :meth:`~FramePool.keys` — each row's content key for a set of columns (:func:`row_key`: sha256 of the texts
  a scorer sees), which keys the score cache and the Ray executor's stored parts;
- :meth:`~FramePool.lengths` — text lengths in code points (stage 3's expansion index, the ``longest`` baseline);
- :meth:`~FramePool.frame` — whole records of some rows (the subset's files).

:class:`FramePool` holds the records frame in this process (``executor=local``). :class:`ArrowPool` keeps them in
an Arrow IPC file, memory-mapped; of its own memory it spends per row only the id (its content keys and lengths
are read in place from the mapped file), so a Ray driver's memory grows with the rows, not with their text: the
records are read and the file written by a Ray task (:func:`store_pool`), the actors read their rows' texts from
the file, and the driver reads texts only where it computes on them itself — stage 3's queries and the selected
rows it writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thtb.io import atomic_path

POOL_VERSION = 2
"""Part of a stored pool's file name: a change in what the file holds never reads an older one."""

KEY_COLUMNS = {("query",): "key_q", ("query", "response"): "key_qr"}
"""The column sets scorers read, and the key column that identifies each row's texts for that set."""

TEXT_COLUMNS = ("id", "query", "response")
EXTRA_COLUMN = "record"
"""The other fields of a record, as one JSON object per row (the subset's writers read ``instruction``,
``input`` and ``messages`` from them)."""


def row_key(texts: Sequence[Any]) -> str:
    """A row's content key: sha256 of the texts a scorer sees, in order (never a position or a Ray block)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(str(text).encode("utf-8") + b"\0")
    return h.hexdigest()[:32]


def _key_column(columns: Sequence[str]) -> str:
    try:
        return KEY_COLUMNS[tuple(columns)]
    except KeyError:
        raise ValueError(f"scorers read {list(KEY_COLUMNS)} of a pool, not {tuple(columns)}") from None


class FramePool:
    """The records frame of :func:`thtb.data.load_records`, in this process."""

    path: Path | None = None

    def __init__(self, records: pd.DataFrame) -> None:
        if not records["id"].is_unique:
            raise ValueError("record ids must be unique (the data layer suffixes duplicates)")
        self.records = records.reset_index(drop=True)
        self._keys: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> np.ndarray:
        return self.records["id"].to_numpy()

    def texts(self, rows: np.ndarray, columns: Sequence[str]) -> list[list[str]]:
        return [self.records[c].to_numpy()[rows].tolist() for c in columns]

    def keys(self, rows: np.ndarray, columns: Sequence[str]) -> list[str]:
        name = _key_column(columns)
        if name not in self._keys:
            self._keys[name] = np.array([row_key(t) for t in zip(*self.texts(np.arange(len(self)), columns))],
                                        dtype=object)
        return self._keys[name][rows].tolist()

    def lengths(self, rows: np.ndarray, column: str) -> np.ndarray:
        return np.fromiter((len(s) for s in self.records[column].to_numpy()[rows]), np.int64, len(rows))

    def column(self, name: str) -> pd.Series | None:
        """A small per-row column of the source (e.g. gold ``bloom_level`` labels), or ``None``."""
        return self.records[name] if name in self.records else None

    def frame(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        return self.records if rows is None else self.records.iloc[rows].reset_index(drop=True)

    def text_arrays(self) -> dict[str, Any]:
        """The query and response columns as Arrow arrays (the score card's text)."""
        import pyarrow as pa

        return {c: pa.array(self.records[c].tolist(), pa.large_string()) for c in ("query", "response")}


class ArrowPool:
    """The records in an Arrow IPC file (:func:`store_pool`), memory-mapped; in this process's memory: the ids."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._table = open_table(self.path)  # zero-copy: pages read on use
        self._ids = np.array(self._table.column("id").to_pylist(), dtype=object)
        self._index = {name: _mapped(self._table.column(name)) for name in
                       (*KEY_COLUMNS.values(), "query_len", "response_len")}  # views of the file, not copies
        self._labels = (self._table.column("bloom_level").to_pandas() if "bloom_level" in self._table.column_names
                        else None)

    def __len__(self) -> int:
        return self._table.num_rows

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def texts(self, rows: np.ndarray, columns: Sequence[str]) -> list[list[str]]:
        return read_texts(self._table, rows, columns)

    def keys(self, rows: np.ndarray, columns: Sequence[str]) -> list[str]:
        return np.char.decode(self._index[_key_column(columns)][rows], "ascii").tolist()

    def lengths(self, rows: np.ndarray, column: str) -> np.ndarray:
        return self._index[f"{column}_len"][rows].astype(np.int64)

    def column(self, name: str) -> pd.Series | None:
        if name != "bloom_level":
            raise ValueError(f"an ArrowPool keeps only the bloom_level labels of its source, not {name!r}")
        return self._labels

    def frame(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        texts = dict(zip(TEXT_COLUMNS, self.texts(rows, TEXT_COLUMNS), strict=True))
        extras = [json.loads(s) for s in self.texts(rows, [EXTRA_COLUMN])[0]]
        frame = pd.DataFrame(texts)
        for name in dict.fromkeys(k for e in extras for k in e):
            frame[name] = pd.Series([e.get(name) for e in extras], dtype=object)
        return frame

    def text_arrays(self) -> dict[str, Any]:
        return {c: self._table.column(c) for c in ("query", "response")}  # views of the mapped file


def _mapped(column: Any) -> np.ndarray:
    """A fixed-width column of the mapped file as a numpy array over its buffer (keys: ``S32``, lengths: int64),
    copied only when the file holds it in several chunks."""
    import pyarrow as pa

    arrays = []
    for chunk in column.chunks:
        if pa.types.is_fixed_size_binary(chunk.type):
            data = np.frombuffer(chunk.buffers()[1], dtype=f"S{chunk.type.byte_width}")
            arrays.append(data[chunk.offset:chunk.offset + len(chunk)])
        else:
            arrays.append(chunk.to_numpy(zero_copy_only=True))
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def read_texts(table: Any, rows: np.ndarray, columns: Sequence[str]) -> list[list[str]]:
    import pyarrow as pa

    index = pa.array(np.asarray(rows, dtype=np.int64))
    return [table.column(c).take(index).to_pylist() for c in columns]


_OPEN: dict[str, Any] = {}


def open_table(path: str | Path) -> Any:
    """A pool file's Arrow table, memory-mapped once per process (the Ray actors' reads)."""
    import pyarrow as pa

    key = str(path)
    if key not in _OPEN:
        _OPEN[key] = pa.ipc.open_file(pa.memory_map(key)).read_all()
    return _OPEN[key]


def store_pool(records: pd.DataFrame, folder: str | Path, digest: str) -> Path:
    """Write ``records`` as a pool file in ``folder``: id, query, response, the other fields as JSON (``record``),
    both content keys and both lengths, and gold ``bloom_level`` labels when the source has them. Its name is
    ``digest`` (:func:`thtb.fingerprint.records_digest`: ids, texts, conversations) and a hash of the other fields,
    so a source that differs only in a label or another field gets a file of its own. Written to a temporary name
    and renamed: a killed task leaves no file under the final name; an existing file of that name is kept."""
    import pyarrow as pa

    from thtb.score_cache import _plain

    other = [c for c in records.columns if c not in TEXT_COLUMNS]
    extras = [json.dumps({c: _plain(v) for c, v in zip(other, values, strict=True)}, ensure_ascii=False,
                         default=_plain) for values in records[other].itertuples(index=False, name=None)]
    rest = hashlib.sha256("\n".join(extras).encode("utf-8")).hexdigest()[:12]
    path = Path(folder) / f"pool-v{POOL_VERSION}-{digest}-{rest}.arrow"
    if path.is_file():
        return path
    pool = FramePool(records)
    every = np.arange(len(pool))
    columns = {c: pa.array(records[c].tolist(), pa.large_string()) for c in TEXT_COLUMNS}
    columns[EXTRA_COLUMN] = pa.array(extras, pa.large_string())
    for cols, name in KEY_COLUMNS.items():  # 32 ASCII hex digits, fixed width: mapped without a copy
        columns[name] = pa.array([k.encode("ascii") for k in pool.keys(every, cols)], pa.binary(32))
    for c in ("query", "response"):
        columns[f"{c}_len"] = pa.array(pool.lengths(every, c), pa.int64())
    if "bloom_level" in records:
        columns["bloom_level"] = pa.array([v if isinstance(v, str) else None for v in records["bloom_level"]],
                                          pa.string())
    table = pa.table(columns)
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path
