"""How much of a selected subset overlaps the evaluation sets it will be judged on (``conf/contamination/``).

"Hard" rows are where leaked benchmark items hide: a subset that copies MMLU-Pro questions or AlpacaEval prompts
wins on them for the wrong reason. Every selection reports, per evaluation set, the rows of the subset that share a
word n-gram (13 words, as GPT-3's decontamination) with any item of the set, the same rate over the whole pool for
comparison, and the flagged rows with the first n-gram each shares.

- Text: lower-cased, split into words (``\\w+``); a row's text is its query and response, an item's the configured
  columns (list values, e.g. MMLU-Pro's options, joined).
- An item shorter than ``ngram`` words contributes its whole word sequence when it has at least ``min_tokens`` words;
  shorter items are counted (``n_items_too_short``) and not checked, never dropped silently.
- A set that cannot be read here (a hub id offline, a missing file) is reported as not checked, with the reason.
- The pool's scan is the cost (minutes at a million rows): with a :class:`PoolScans` store, each set's pool matches are
  kept under a key of the pool's digest, the set file's sha256 and columns, the n-gram settings and this module's
  code, so a reused selection or a re-cut of the same pool checks its new subset without reading the pool again.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thtb.fingerprint import fingerprint
from thtb.io import atomic_write_text

log = logging.getLogger(__name__)

WORD = re.compile(r"\w+")
CHUNK = 4096
"""Pool rows read (and checked) at a time."""


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def item_text(values: Sequence[Any]) -> str:
    """One evaluation item's text from its column values (lists joined by newlines, missing values skipped)."""
    parts = []
    for value in values:
        if isinstance(value, list | tuple | np.ndarray):
            parts.append("\n".join(map(str, value)))
        elif isinstance(value, str | int | float):
            parts.append(str(value))
    return "\n".join(parts)


class NgramIndex:
    """The word n-grams of an evaluation set's items (``ngram`` words; a shorter item of at least ``min_tokens``
    words: its whole sequence)."""

    def __init__(self, texts: Iterable[str], ngram: int = 13, min_tokens: int = 8) -> None:
        if ngram < 1 or not 1 <= min_tokens <= ngram:
            raise ValueError(f"contamination: need ngram >= 1 and 1 <= min_tokens <= ngram, got {ngram}, {min_tokens}")
        self.ngram, self.min_tokens = ngram, min_tokens
        self.grams: dict[int, set[tuple[str, ...]]] = {}  # gram length → grams (word tuples)
        self.n_items = self.n_too_short = 0
        vocabulary: dict[str, str] = {}  # one str object per word: the tuples share them
        for text in texts:
            self.n_items += 1
            w = [vocabulary.setdefault(word, word) for word in words(text)]
            if len(w) < min_tokens:
                self.n_too_short += 1
                continue
            self.grams.setdefault(min(ngram, len(w)), set()).update(_grams(w, min(ngram, len(w))))
        self.sizes = sorted(self.grams, reverse=True)

    def first_match(self, text: str) -> str | None:
        """The first n-gram of ``text`` found in the set (``None``: no overlap): the longest grams first, then by
        position. A row without overlap, nearly every row, costs one C-level ``isdisjoint`` per gram length."""
        return self.match(words(text), {})

    def match(self, w: list[str], row_grams: dict[int, list[tuple[str, ...]]]) -> str | None:
        """:meth:`first_match` of the words ``w``; ``row_grams`` (their grams by length) is filled here as needed and
        shared by the indexes that check the same row."""
        for size in self.sizes:
            if size not in row_grams:
                row_grams[size] = list(_grams(w, size))
            grams = self.grams[size]
            if not grams.isdisjoint(row_grams[size]):
                return " ".join(next(g for g in row_grams[size] if g in grams))
        return None


def _grams(w: list[str], size: int):
    """The word tuples of ``w`` of ``size`` words, in order (none when ``w`` is shorter)."""
    return zip(*(w[i:] for i in range(size)))


class PoolScans:
    """Each set's matches in one pool, stored as JSON under ``root`` keyed by ``base`` (what the caller knows the
    scan depends on: the pool's digest, the code) and the set's own file sha256, columns and n-gram settings."""

    def __init__(self, root: str | Path, base: Mapping[str, Any]) -> None:
        self.root, self.base = Path(root), dict(base)

    def path(self, spec: Mapping[str, Any], sha256: str | None, ngram: int, min_tokens: int) -> Path | None:
        if sha256 is None:  # a set without a file digest (a hub dataset): no key that would see it change
            return None
        key = fingerprint({**self.base, "set_sha256": sha256, "columns": list(spec["columns"]),
                           "split": str(spec.get("split", "test")), "ngram": ngram, "min_tokens": min_tokens}, 32)
        return self.root / f"{key}.json"

    def get(self, path: Path | None) -> dict[str, Any] | None:
        """The stored scan, or ``None``: none stored, or one that cannot be read (said, then the pool is read again
        and the file rewritten)."""
        if path is None or not path.is_file():
            return None
        try:
            scan = json.loads(path.read_text(encoding="utf-8"))
            if len(scan["rows"]) != len(scan["grams"]) or not {"n_items", "n_items_too_short"} <= set(scan):
                raise ValueError("rows and grams differ in length, or n_items is missing")
            return scan
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("contamination: stored pool scan %s unreadable (%s): reading the pool again", path, exc)
            return None

    def put(self, path: Path | None, scan: dict[str, Any]) -> None:
        if path is not None:
            atomic_write_text(path, json.dumps(scan, ensure_ascii=False) + "\n")


def load_items(spec: Mapping[str, Any], nonempty: bool = False) -> tuple[list[str], str | None]:
    """A set's item texts and its file's sha256, from ``{path, columns, split}``; ``nonempty``: an empty item or set
    is a :class:`~thtb.data.DataError` naming the row."""
    from thtb.data.loaders import resolve_data_path
    from thtb.data.readers import read_source

    table = read_source(resolve_data_path(str(spec["path"])), str(spec.get("split", "test")))
    columns = list(spec["columns"])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise table.error(0, f"no column {missing[0]!r} (columns: {list(table.columns)})", field=missing[0])
    texts = [item_text([table.columns[c][i] for c in columns]) for i in range(len(table))]
    if nonempty:  # (read_source already rejects a set with no rows)
        for i, text in enumerate(texts):
            if not text.strip():
                raise table.error(i, f"empty text in {columns}", field=columns[0])
    return texts, table.sha256


def check(pool: Any, selected_rows: np.ndarray, sets: Mapping[str, Mapping[str, Any]], ngram: int = 13,
          min_tokens: int = 8, scans: PoolScans | None = None) -> dict[str, Any]:
    """The contamination report of a selection: per set, the subset's flagged rows and rate, the pool's rate. With
    ``scans``, a set's pool matches stored before are used instead of reading the pool (module doc)."""
    selected = set(np.asarray(selected_rows, dtype=np.int64).tolist())
    unread: dict[str, dict[str, Any]] = {}
    found: dict[str, dict[str, Any]] = {}  # set → {n_items, n_items_too_short, rows, grams} over the whole pool
    indexes: dict[str, NgramIndex] = {}
    digests: dict[str, str | None] = {}
    for name, spec in sets.items():
        try:
            items, digests[name] = load_items(spec)
        except (OSError, ValueError) as exc:  # DataError is a ValueError: a set we cannot read is said, not skipped
            unread[name] = {"source": str(spec.get("path")), "checked": False, "why": str(exc)}
            log.warning("contamination: %s not checked: %s", name, exc)
            continue
        stored = scans.get(scans.path(spec, digests[name], ngram, min_tokens)) if scans is not None else None
        if stored is not None:
            found[name] = stored
        else:
            indexes[name] = NgramIndex(items, ngram, min_tokens)
            found[name] = {"n_items": indexes[name].n_items, "n_items_too_short": indexes[name].n_too_short,
                           "rows": [], "grams": []}
    if indexes:  # one pass over the pool: each row read and split into words once for the sets not stored
        for start in range(0, len(pool), CHUNK):
            rows = np.arange(start, min(start + CHUNK, len(pool)))
            queries, responses = pool.texts(rows, ["query", "response"])
            for row, q, r in zip(rows.tolist(), queries, responses, strict=True):
                w, row_grams = words(f"{q}\n{r}"), {}
                for name, index in indexes.items():
                    gram = index.match(w, row_grams)
                    if gram is not None:
                        found[name]["rows"].append(row)
                        found[name]["grams"].append(gram)
        if scans is not None:
            for name in indexes:
                scans.put(scans.path(sets[name], digests[name], ngram, min_tokens), found[name])
    report: dict[str, Any] = {"ngram": ngram, "min_tokens": min_tokens, "sets": {}}
    for name, spec in sets.items():
        if name in unread:
            report["sets"][name] = unread[name]
            continue
        scan = found[name]
        hits = [{"id": pool.ids[row], "ngram": gram} for row, gram in zip(scan["rows"], scan["grams"], strict=True)
                if row in selected]
        n_pool = len(scan["rows"])
        report["sets"][name] = {
            "source": str(spec.get("path")), "sha256": digests[name], "checked": True, "n_items": scan["n_items"],
            "n_items_too_short": scan["n_items_too_short"], "n_selected": len(selected), "n_flagged": len(hits),
            "rate": round(len(hits) / len(selected), 6) if selected else None,
            "pool_n_flagged": n_pool, "pool_rate": round(n_pool / len(pool), 6) if len(pool) else None,
            "flagged": hits, "pool_scan": "stored" if name not in indexes else "read",
        }
        if hits:
            log.warning("contamination: %d of %d selected rows share a %d-gram with %s (%d of %d in the pool)",
                        len(hits), len(selected), ngram, name, n_pool, len(pool))
    return report
