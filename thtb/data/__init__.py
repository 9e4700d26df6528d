"""Data layer: load instruction datasets as canonical records with stable ids, and write them.

>>> frame, report = load_records("alpaca_data.json")            # doctest: +SKIP
>>> frame.columns[:4].tolist()                                   # doctest: +SKIP
['id', 'query', 'response', 'row']

Sources: Alpaca (``instruction``/``input``/``output``), the authors' ``{query, response}``,
ShareGPT ``conversations`` and ``messages`` conversations, as ``.json``/``.jsonl``/parquet/csv,
a ``save_to_disk`` directory or a hub id. Rules live beside their code:

* query text per ``fidelity`` and the stable id: :mod:`thtb.data.records`;
* formats, detection, conversations (scored on their first user→assistant exchange):
  :mod:`thtb.data.formats`;
* source resolution and file parsing: :mod:`thtb.data.readers`;
* error locations (``line N`` 1-based for JSON Lines, ``row N`` 0-based otherwise):
  :mod:`thtb.data.errors`;
* malformed text (lone surrogates, too-deep JSON, a JSON array named ``.jsonl``, short csv rows)
  and gold ``bloom_level`` labels are DataErrors naming file, line/row and field
  (:mod:`thtb.data.readers`, :mod:`thtb.data.formats`); so is a dataset whose responses are all
  empty (:func:`load_records`);
* exact duplicates are kept and counted, or dropped and listed with ``dedupe=True``
  (config ``data.dedupe``): :mod:`thtb.data.records`;
* atomic, byte-deterministic writers: :mod:`thtb.data.writers`.

``datasets`` and ``pyarrow.parquet`` are imported only when a source needs them.
"""

from thtb.data.errors import DataError
from thtb.data.formats import FORMATS
from thtb.data.loaders import DEMO_DATA, load_records, resolve_data_path
from thtb.data.records import FIDELITIES, LoadReport, alpaca_query, record_id, strip_nan_artifact
from thtb.data.writers import write_alpaca_json, write_jsonl, write_messages_jsonl

__all__ = [
    "DEMO_DATA",
    "resolve_data_path",
    "DataError",
    "FIDELITIES",
    "FORMATS",
    "LoadReport",
    "alpaca_query",
    "load_records",
    "record_id",
    "strip_nan_artifact",
    "write_alpaca_json",
    "write_jsonl",
    "write_messages_jsonl",
]
