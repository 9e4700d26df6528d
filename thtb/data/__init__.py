"""Data layer: load instruction datasets as canonical records with stable ids, and write them.

>>> frame, report = load_records("alpaca_data.json")            # doctest: +SKIP
>>> frame.columns[:4].tolist()                                   # doctest: +SKIP
['id', 'query', 'response', 'row']

Sources: Alpaca (``instruction``/``input``/``output``), the authors' ``{query, response}``, ShareGPT
``conversations`` and ``messages`` conversations, as ``.json``/``.jsonl``/parquet/csv, a URL, a ``save_to_disk``
directory or a hub id. :func:`load_records` (:mod:`thtb.data.loaders`) reads them (:mod:`~thtb.data.readers`),
detects the format and normalises (:mod:`~thtb.data.formats`), and builds query texts and ids
(:mod:`~thtb.data.records`) in one pass. Bad input is a :class:`DataError` naming the file, the line (JSON Lines,
1-based) or row (0-based) and the field (:mod:`~thtb.data.errors`). :mod:`~thtb.data.writers` writes records
atomically and byte-deterministically.
"""

from thtb.data.errors import DataError
from thtb.data.loaders import load_records, resolve_data_path
from thtb.data.records import LoadReport, alpaca_query, record_id, strip_nan_artifact
from thtb.data.writers import write_alpaca_json, write_jsonl, write_messages_jsonl

__all__ = ["DataError", "LoadReport", "alpaca_query", "load_records", "record_id", "resolve_data_path",
           "strip_nan_artifact", "write_alpaca_json", "write_jsonl", "write_messages_jsonl"]
