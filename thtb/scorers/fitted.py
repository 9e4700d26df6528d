"""Fitted offline proxies as resources: where their parameters and held-out record live, how they are checked
and named by digest, and the figures a summary shows beside a scorer.

Kept apart from the scorers that use them (:mod:`~thtb.scorers.proxy` and the hand-built
:mod:`~thtb.scorers.bloom`, :mod:`~thtb.scorers.disciplines`, :mod:`~thtb.scorers.quality`, which report their
own held-out agreement through :func:`hand_built_calibration`) so that none of them imports another to read a
record. Written by ``python -m thtb.calibration``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

FORMAT = "thtb-proxy/1"
"""Version of the resource layout below (a change of features or model bumps it)."""
HELD_OUT_FORMAT = "thtb-held-out/1"
"""Version of the held-out record's layout (``held_out.json``, :func:`load_held_out`)."""
PROXY_KINDS = ("bloom", "disciplines", "quality")
LABELS_PROVENANCE = ("labels written by AI assistants reading each pair under calibration/README.md's guideline; "
                     "one reader per pair, no double annotation")
"""Who wrote the calibration labels, as the resources and the summaries say it (``calibration/README.md``)."""


def proxy_path(name: str) -> Path:
    """The packaged parameters of proxy ``name`` (``bloom``, ``disciplines``, ``quality``)."""
    return Path(str(resources.files("thtb") / "resources" / "proxies" / f"{name}.json"))


def held_out_path() -> Path:
    """The packaged held-out record (``python -m thtb.calibration evaluate --write``)."""
    return proxy_path("held_out")


def params_digest(params: dict[str, Any]) -> str:
    """sha256 of a proxy's parameters as canonical JSON (sorted keys, no whitespace): what the held-out record
    names the parameters it was measured with by. Any change of the parameter file, a refit above all, changes
    it."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_held_out(path: str | Path | None = None) -> dict[str, Any] | None:
    """The held-out record (``None`` when there is none), checked for its format."""
    path = Path(path) if path else held_out_path()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if record.get("format") != HELD_OUT_FORMAT:
        raise ValueError(f"{path}: expected a {HELD_OUT_FORMAT} record, got format={record.get('format')!r}")
    return record


def held_out_figures(kind: str, params: dict[str, Any] | None, record: dict[str, Any] | None = None,
                     ) -> dict[str, Any]:
    """The held-out figures recorded for proxy ``kind``, as a summary shows them: ``{"held_out": {split, n,
    params_sha256, proxy, hand_built}}`` when the record was measured with exactly ``params``; otherwise
    ``{"held_out": None, "held_out_stale": why}`` (a refit since, other parameters, or no record). With
    ``params=None`` (a hand-built scorer) only the hand-built figures are given, whatever the proxy's digest.
    A record of ``fit --against`` (:func:`is_fitted_against`) holds its rows per proxy (each kind has its own
    held-out rows: stage 2 sees fewer than stage 1), its figures against the run's scorer, and the shipped
    reader-calibrated proxy's figures on the same rows (``reader_proxy``)."""
    record = load_held_out() if record is None else record
    entry = (record or {}).get("proxies", {}).get(kind)
    remedy = ("rerun `python -m thtb.calibration fit --against`" if params is not None and is_fitted_against(params)
              else "measure one with `python -m thtb.calibration evaluate --write`")
    if entry is None:
        return {"held_out": None, "held_out_stale": f"no held-out record for the {kind} proxy; {remedy}"}
    base = {"split": entry.get("split", record["split"]), "n": entry.get("n", record["n"]),
            "test_labels_sha256": entry.get("labels_sha256", record.get("test_labels_sha256"))}
    if params is None:
        return {"held_out": {**base, "hand_built": entry["hand_built"]}}
    digest = params_digest(params)
    if entry["params_sha256"] != digest:
        return {"held_out": None,
                "held_out_stale": f"the held-out record was measured with {kind} parameters sha256 "
                                  f"{entry['params_sha256'][:16]}…, these are {digest[:16]}…; {remedy}"}
    extra = {"reader_proxy": entry["reader_proxy"]} if "reader_proxy" in entry else {}
    return {"held_out": {**base, "params_sha256": digest, "proxy": entry["proxy"], "hand_built": entry["hand_built"],
                         **extra}}


def is_fitted_against(params: dict[str, Any]) -> bool:
    """Whether a proxy's parameters were fitted to a run's real scorer (``fit --against``: they carry
    ``imitates`` and ``source``) rather than to the calibration labels."""
    return "source" in params and "imitates" in params


def held_out_record_for(params_path: str | Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The held-out record that measured the parameters in ``params_path``: the ``held_out.json`` beside them when
    there is one (``fit --against`` writes it there; the packaged parameters' is the packaged record), else the
    packaged record — except for parameters fitted against a run, which only their own record measured
    (``None`` without it)."""
    beside = Path(params_path).with_name("held_out.json")
    if beside.is_file():
        return load_held_out(beside)
    return None if is_fitted_against(params) else load_held_out()


def fitted_params_identity(cfg: Any) -> dict[str, Any]:
    """What a scorer config's ``params_path`` (a proxy's parameters outside the package, e.g. a ``fit --against``
    resource) adds to its identity: ``{"params": {<where>: {"path", "sha256"}}}`` for each one set — the
    select stage's keys hash the package's resources, not a file named by a path; ``{}`` when none is set (the
    packaged parameters), so the default identities stay as they were."""
    found: dict[str, Any] = {}

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, Mapping):
            return
        path = node.get("params_path")
        if path:
            file = Path(str(path)).expanduser()  # a missing file is the scorer's error to name when it loads
            digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
            found[where or "params_path"] = {"path": str(path), "sha256": digest}
        for key, value in node.items():
            walk(value, f"{where}.{key}" if where else str(key))

    walk(cfg, "")
    return {"params": found} if found else {}


def cv_setting(params: dict[str, Any]) -> tuple[str, str]:
    """The hyper-parameter setting the fit chose, as ``(cv table name, key in it)``."""
    model = params["model"]
    if params["kind"] == "bloom":
        return "by_C", str(model["C"])
    if params["kind"] == "disciplines":
        return "by_setting", f"C={model['C']},threshold={params['threshold']}"
    return "by_alpha", str(model["alpha"])


def cv_figures(params: dict[str, Any]) -> dict[str, Any] | None:
    """The cross-validated (train split) figures of the chosen setting (``None`` when no CV was recorded)."""
    table, key = cv_setting(params)
    return ((params.get("cv") or {}).get(table) or {}).get(key)


def load_params(path: str | Path, kind: str) -> dict[str, Any]:
    """A proxy's parameters, checked for its format and kind (a clear error naming the file otherwise)."""
    path = Path(path)
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no fitted {kind} proxy; fit one with `python -m thtb.calibration fit`") \
            from exc
    if params.get("format") != FORMAT or params.get("kind") != kind:
        raise ValueError(f"{path}: expected a {FORMAT} {kind!r} proxy, got format={params.get('format')!r} "
                         f"kind={params.get('kind')!r}")
    return params


def hand_built_calibration(kind: str) -> dict[str, Any] | None:
    """A hand-built offline scorer's held-out agreement with the calibration labels, as measured beside the
    ``kind`` proxy by ``python -m thtb.calibration evaluate --write`` (``None`` when there is no such record)."""
    try:
        figures = held_out_figures(kind, None)
    except (ValueError, KeyError):
        return None
    return {"kind": kind, **figures} if figures["held_out"] else None


def labels_digest(rows: pd.DataFrame, columns: Sequence[str]) -> str:
    """sha256 of the training rows' ids and the labels a proxy was fitted on (what the resource records)."""
    h = hashlib.sha256()
    for _, row in rows.sort_values("row").iterrows():
        h.update(json.dumps([row["id"], *[row[c] for c in columns]], default=list, sort_keys=True).encode())
    return h.hexdigest()
