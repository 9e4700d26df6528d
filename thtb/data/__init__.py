"""Data layer: load instruction datasets as canonical records with stable ids, and write them.

>>> frame, report = load_records("alpaca_data.json")            # doctest: +SKIP
>>> frame.columns[:4].tolist()                                   # doctest: +SKIP
['id', 'query', 'response', 'row']

Sources: Alpaca (``instruction``/``input``/``output``), the authors' ``{query, response}``, ShareGPT
``conversations`` and ``messages`` conversations, as ``.json``/``.jsonl``/parquet/csv, a URL, a ``save_to_disk``
directory or a hub id. :func:`load_records` (:mod:`thtb.data.loaders`) reads them in one pass:

1. read: :mod:`thtb.data.readers` (``json``, pandas, pyarrow, ``datasets`` parse; ``datasets`` and
   ``pyarrow.parquet`` are imported only when a source needs them);
2. detect the format and normalise: :mod:`thtb.data.formats` (conversations are scored on their first
   user→assistant exchange; gold ``bloom_level`` labels are checked);
3. query text per ``fidelity`` and ids: :mod:`thtb.data.records` (exact duplicates are kept and counted, or
   dropped with ``dedupe=True``, config ``data.dedupe``).

Bad input is a :class:`DataError` naming the file, the line (JSON Lines, 1-based) or row (0-based) and the field
(:mod:`thtb.data.errors`); so is a dataset whose responses are all empty. :mod:`thtb.data.writers` writes records
atomically and byte-deterministically.
"""

from thtb.data.errors import DataError
from thtb.data.loaders import load_records, resolve_data_path
from thtb.data.records import LoadReport, alpaca_query, record_id, strip_nan_artifact
from thtb.data.writers import write_alpaca_json, write_jsonl, write_messages_jsonl

__all__ = [
    "DataError",
    "LoadReport",
    "alpaca_query",
    "load_records",
    "record_id",
    "resolve_data_path",
    "strip_nan_artifact",
    "write_alpaca_json",
    "write_jsonl",
    "write_messages_jsonl",
]
