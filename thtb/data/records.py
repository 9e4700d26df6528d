"""Canonical record rules: query text per fidelity, stable content ids, the load report.

Query text (docs/METHOD.md "Input text"): an Alpaca row's query is ``instruction + "\\n" + input``. In
``fidelity="reference"`` (default, the authors' artefact) an empty input (``""``) is written ``nan``:
``"Explain X.\\nnan"``; a whitespace-only input is not empty there and is kept. In ``fidelity="paper"`` an empty or
whitespace-only input drops the separator too: ``"Explain X."``. A source with no ``input`` field at all has
``query = instruction`` in both. ``{query, response}`` and conversation sources carry the query as is; ``paper``
removes the authors' trailing ``"\\nnan"`` (:func:`strip_nan_artifact`).

Stable id: ``sha256(json.dumps([q, r], ensure_ascii=False))[:16]``, ``q`` the *clean* query and ``r`` the response,
both Unicode-NFC normalised and ``.strip()``-ed (:func:`record_id`). The clean query depends on neither fidelity nor
source format, so an Alpaca sample gets the same id from ``alpaca_data.json`` and from the authors' jsonl. The k-th
repeat of the same normalised pair gets ``f"{h}-dup{k}"`` (:func:`assign_ids`): ids are unique and deterministic
given the row order. ``load_records(dedupe=True)`` (config ``data.dedupe``) drops those repeats; by default they are
kept, as the authors' pipeline did, and counted in :class:`LoadReport`.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Fidelity = Literal["reference", "paper"]
FIDELITIES: tuple[str, ...] = ("reference", "paper")

NAN_ARTIFACT = "\nnan"
"""What the authors' pipeline appended to a query whose Alpaca input was empty."""

_encode_string = json.encoder.encode_basestring
"""JSON string literal with ``ensure_ascii=False`` (the C-accelerated encoder json.dumps uses)."""

MAX_GROUPS_REPORTED = 20
"""How many duplicate groups, and example duplicate ids, :class:`LoadReport` lists (all are counted)."""


def alpaca_query(instruction: str, input_text: str, fidelity: Fidelity) -> str:
    """Alpaca query text: ``instruction + "\\n" + input`` with the fidelity's empty-input rule.

    >>> alpaca_query("Explain X.", "", "reference"), alpaca_query("Explain X.", " ", "paper")
    ('Explain X.\\nnan', 'Explain X.')
    """
    if fidelity == "reference":
        return f"{instruction}\n{input_text if input_text != '' else 'nan'}"
    return f"{instruction}\n{input_text}" if input_text.strip() else instruction


def strip_nan_artifact(query: str) -> str:
    """Remove the authors' trailing ``"\\nnan"`` (after trailing whitespace) if present.

    >>> strip_nan_artifact("Explain X.\\nnan"), strip_nan_artifact("Is it a nan")
    ('Explain X.', 'Is it a nan')
    """
    trimmed = query.rstrip()
    return trimmed[: -len(NAN_ARTIFACT)] if trimmed.endswith(NAN_ARTIFACT) else query


def record_id(query_clean: str, response: str) -> str:
    """Content id of a sample: first 16 hex of sha256 of ``json.dumps([q, r], ensure_ascii=False)``, ``q``/``r``
    NFC-normalised and stripped. Pass the *clean* query; repeats are told apart by :func:`assign_ids`."""
    query = unicodedata.normalize("NFC", query_clean).strip()
    response = unicodedata.normalize("NFC", response).strip()
    # The text of json.dumps([q, r], ensure_ascii=False), without its per-call encoder setup.
    payload = f"[{_encode_string(query)}, {_encode_string(response)}]"
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def assign_ids(clean_queries: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """Ids for aligned rows, ``-dup{k}`` on exact repeats; and, for every repeated content, the positions of all
    its occurrences (first occurrence first, groups in order of first occurrence)."""
    ids: list[str] = []
    seen: dict[str, list[int]] = {}
    for position, base in enumerate(map(record_id, clean_queries, responses)):
        occurrences = seen.setdefault(base, [])
        ids.append(f"{base}-dup{len(occurrences)}" if occurrences else base)
        occurrences.append(position)
    return ids, [positions for positions in seen.values() if len(positions) > 1]


@dataclass
class LoadReport:
    """What :func:`thtb.data.load_records` read and found; ``len(frame) + n_excluded == n_rows``.

    ``n_rows`` counts the records considered, after ``limit`` (``n_source_rows``: before it). ``n_excluded`` is the
    rows dropped as empty (``drop_empty``) plus ``n_dropped_duplicates`` (``dedupe``); the two never overlap (a copy
    of an empty row is empty too). Rows are the frame's 0-based ``row`` values (JSON Lines: line = row + 1).
    """

    source: str
    format: str
    fidelity: str
    n_rows: int
    n_source_rows: int
    limit: int | None = None
    split: str | None = None
    sha256: str | None = None
    """sha256 of the file's bytes when the source is a single file, else ``None``."""
    n_duplicates: int = 0
    """Rows that repeat an earlier row's normalised (query, response); they got ``-dupK`` ids."""
    n_duplicate_groups: int = 0
    duplicate_groups: list[list[int]] = field(default_factory=list)
    """The first :data:`MAX_GROUPS_REPORTED` groups, each the rows of one repeated content."""
    duplicate_ids: list[str] = field(default_factory=list)
    """Ids of the first :data:`MAX_GROUPS_REPORTED` repeats (``<hash>-dupK``), in row order."""
    dedupe: bool = False
    """The duplicates policy: ``False`` keeps every copy, ``True`` drops the later ones."""
    n_dropped_duplicates: int = 0
    dropped_duplicate_ids: list[str] = field(default_factory=list)
    """Every repeat dropped by ``dedupe=True`` (all of them, in row order)."""
    empty_query_rows: list[int] = field(default_factory=list)
    empty_response_rows: list[int] = field(default_factory=list)
    n_excluded: int = 0
    excluded_rows: list[int] = field(default_factory=list)
    n_multi_turn: int = 0
    """Conversations with more than one user→assistant exchange (scored on the first one)."""
    n_unlabelled: int | None = None
    """Rows whose ``bloom_level`` gold label is empty or absent; ``None`` when the source has no such field."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for manifests)."""
        return asdict(self)
