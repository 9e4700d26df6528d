"""Canonical record rules: query text per fidelity, stable content ids, the load report.

Query text (docs/METHOD.md "Input text")
----------------------------------------
Alpaca rows become ``query = instruction + "\\n" + input``.

* ``fidelity="reference"`` (default) reproduces the authors' artefact: an empty input (``""``)
  is written as the literal ``nan``, so ``"Explain X."`` with no input becomes
  ``"Explain X.\\nnan"``. A whitespace-only input is *not* empty in the authors' code and is kept.
* ``fidelity="paper"`` (clean): when the input is empty or whitespace-only the separator and the
  input are dropped, ``"Explain X."``.

A source with no ``input`` field at all has ``query = instruction`` in both fidelities.

``{query, response}`` and conversation sources carry the query as is; in ``paper`` fidelity the
authors' trailing ``"\\nnan"`` is removed (:func:`strip_nan_artifact`).

Stable id
---------
``id = sha256(json.dumps([q, r], ensure_ascii=False))[:16]`` with ``q`` the *clean* query and
``r`` the response, both Unicode-NFC normalised and ``.strip()``-ed (:func:`record_id`). The clean
query does not depend on fidelity or on the source format, so the same Alpaca sample gets the
same id from ``alpaca_data.json`` and from the authors' ``{query, response}`` jsonl. Exact
duplicates (same normalised pair) get ``f"{h}-dup{k}"`` for their k-th repeat (k = 1, 2, …), the
first occurrence keeping the plain hash: ids are unique and deterministic given the row order.

Duplicates policy (``load_records(dedupe=...)``, config ``data.dedupe``): by default every copy is
kept, as the authors' pipeline did, and counted (``LoadReport.n_duplicates``, example ids in
``duplicate_ids``); ``dedupe=True`` drops the later copies, keeping the first occurrence, and
lists every dropped id (``dropped_duplicate_ids``).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Fidelity = Literal["reference", "paper"]
FIDELITIES: tuple[str, ...] = ("reference", "paper")

NAN_ARTIFACT = "\nnan"
"""What the authors' pipeline appended to a query whose Alpaca input was empty."""

_encode_string = json.encoder.encode_basestring
"""JSON string literal with ``ensure_ascii=False`` (the C-accelerated encoder json.dumps uses)."""

ID_LENGTH = 16
"""Hex characters of the sha256 kept in an id (64 bits)."""


def check_fidelity(fidelity: str) -> Fidelity:
    """Return ``fidelity`` if it is ``reference`` or ``paper``; raise ``ValueError`` otherwise."""
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")
    return fidelity  # type: ignore[return-value]


def alpaca_query(instruction: str, input_text: str, fidelity: Fidelity) -> str:
    """Alpaca query text: ``instruction + "\\n" + input`` with the fidelity's empty-input rule.

    >>> alpaca_query("Explain X.", "", "reference")
    'Explain X.\\nnan'
    >>> alpaca_query("Explain X.", " ", "paper")
    'Explain X.'
    >>> alpaca_query("Sum.", "1 2", "paper")
    'Sum.\\n1 2'
    """
    if fidelity == "reference":
        return f"{instruction}\n{input_text if input_text != '' else 'nan'}"
    return f"{instruction}\n{input_text}" if input_text.strip() else instruction


def strip_nan_artifact(query: str) -> str:
    """Remove the authors' trailing ``"\\nnan"`` (after trailing whitespace) if present.

    >>> strip_nan_artifact("Explain X.\\nnan")
    'Explain X.'
    >>> strip_nan_artifact("Is it a nan")
    'Is it a nan'
    """
    trimmed = query.rstrip()
    return trimmed[: -len(NAN_ARTIFACT)] if trimmed.endswith(NAN_ARTIFACT) else query


def normalize_text(text: str) -> str:
    """The id normalisation of one text: Unicode NFC, then ``.strip()``."""
    return unicodedata.normalize("NFC", text).strip()


def record_id(query_clean: str, response: str) -> str:
    """Content id of a sample: first 16 hex of sha256 of ``json.dumps([q, r])``.

    ``q`` / ``r`` are ``query_clean`` / ``response`` after :func:`normalize_text`. Pass the
    *clean* query (no ``"\\nnan"`` artefact, no separator for an empty input); the id then does
    not depend on fidelity or source format. Duplicates are disambiguated by :func:`assign_ids`.
    """
    # Same text as json.dumps([q, r], ensure_ascii=False), without the per-call encoder setup.
    payload = f"[{_encode_string(normalize_text(query_clean))}, {_encode_string(normalize_text(response))}]"
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:ID_LENGTH]


def assign_ids(
    clean_queries: Sequence[str], responses: Sequence[str]
) -> tuple[list[str], list[list[int]]]:
    """Ids for aligned rows, with ``-dup{k}`` suffixes on exact repeats.

    Returns ``(ids, groups)`` where ``groups`` lists, for every duplicated content, the
    positions (indices into the inputs) of all its occurrences, first occurrence first, in order
    of first occurrence.
    """
    ids: list[str] = []
    seen: dict[str, list[int]] = {}
    for position, (query, response) in enumerate(zip(clean_queries, responses, strict=True)):
        base = record_id(query, response)
        occurrences = seen.setdefault(base, [])
        ids.append(f"{base}-dup{len(occurrences)}" if occurrences else base)
        occurrences.append(position)
    groups = [positions for positions in seen.values() if len(positions) > 1]
    return ids, groups


def empty_positions(texts: Iterable[str]) -> list[int]:
    """Positions whose text is empty after :func:`normalize_text` (whitespace counts as empty)."""
    return [i for i, text in enumerate(texts) if not text.strip()]


MAX_GROUPS_REPORTED = 20
"""How many duplicate groups, and example duplicate ids, :class:`LoadReport` lists (all are counted)."""


@dataclass
class LoadReport:
    """What :func:`thtb.data.load_records` read and what it found; counts always add up.

    ``len(frame) + n_excluded == n_rows``; ``n_rows`` counts the records considered, i.e. after
    ``limit`` (``n_source_rows`` is the count before it). ``n_excluded`` is the rows dropped as
    empty (``drop_empty``) plus ``n_dropped_duplicates`` (``dedupe``); the two never overlap (a copy
    of an empty row is empty too). Row numbers are the frame's 0-based ``row`` values (for JSON
    Lines: physical line index, 1-based line = row + 1).
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
    """Rows whose ``bloom_level`` gold label is empty or absent; ``None`` when the source has no
    such field (invalid labels are a DataError at load)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for manifests)."""
        return asdict(self)
