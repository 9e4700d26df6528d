"""Errors raised for bad input data, each naming the file, the place in it and the field.

Location conventions (used by every message, and by :attr:`DataError.row`):

* ``row`` is always a **0-based** position in the source, the same number the canonical frame stores in its
  ``row`` column: the JSON array index, the JSON Lines *physical line* index (blank lines count), the parquet /
  csv data row, the HF dataset row.
* JSON Lines sources are addressed by line in messages, **1-based** like an editor: ``row=17`` is ``line 18``.
* Array and table sources are printed as ``row N`` with the same 0-based ``N`` as ``row``.
* Errors found before records exist (invalid JSON in an array file, invalid UTF-8) carry ``line`` (1-based) and
  ``column`` (1-based) or ``byte_offset`` (0-based) instead of ``row``.

Example: ``alpaca_data.json: row 17: field 'output' must be a string, got int``.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any, Literal

RowUnit = Literal["row", "line"]
"""How a source addresses its records in messages: ``line`` (JSON Lines) or ``row``."""


class DataError(ValueError):
    """Bad instruction data: the message names the file, the line/row and the field.

    Attributes: ``path`` (the file, directory or hub id as the caller gave it), ``row``, ``line``, ``column``,
    ``byte_offset`` (module docstring; ``None`` when unknown, ``line`` always set for JSON Lines rows), ``field``
    (the offending field: ``"output"``, ``"conversations[2].from"``, or ``None``) and ``detail`` (the message
    without the path and location prefix).
    """

    def __init__(self, path: str | os.PathLike[str], detail: str, *, row: int | None = None, unit: RowUnit = "row",
                 field: str | None = None, line: int | None = None, column: int | None = None,
                 byte_offset: int | None = None) -> None:
        self.path, self.detail, self.row, self.unit, self.field = os.fspath(path), detail, row, unit, field
        self.line = row + 1 if (line is None and row is not None and unit == "line") else line
        self.column, self.byte_offset = column, byte_offset
        where = f"row {row}" if row is not None and unit == "row" else ""
        where = where or (f"line {self.line}" if self.line is not None else "")
        where += f", column {column}" if where and column is not None else ""
        where += f", byte offset {byte_offset}" if where and byte_offset is not None else ""
        super().__init__(f"{self.path}: {where}: {detail}" if where else f"{self.path}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its keyword arguments (a Ray task that reads the data raises it in the driver as it is)."""
        return functools.partial(DataError, row=self.row, unit=self.unit, field=self.field, line=self.line,
                                 column=self.column, byte_offset=self.byte_offset), (self.path, self.detail)


def type_name(value: Any) -> str:
    """JSON-flavoured name of a value's type for messages: ``null``, ``int``, ``list``…"""
    return "null" if value is None else type(value).__name__


def not_found(path: str | os.PathLike[str], what: str = "instruction dataset") -> FileNotFoundError:
    """A :class:`FileNotFoundError` whose message and ``filename`` carry the path."""
    return FileNotFoundError(errno.ENOENT, f"{what} not found", os.fspath(path))
