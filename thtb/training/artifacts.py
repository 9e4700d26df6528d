"""Content-addressed training artifacts: ``<cache>/artifacts/train/<fingerprint>/{adapter,merged,summary.json}``.

The fingerprint hashes what determines the trained weights — the subset's ids digest, the model config, the
train config without its logging/checkpointing keys, the seed, the precision, the train stage's code and the
versions of torch, transformers, TRL, PEFT, accelerate and datasets — so a sweep never trains the same thing
twice, and a changed recipe or library never returns an old model. Training happens in ``<fingerprint>.partial/`` (checkpoints under
``checkpoints/``, from which an interrupted run resumes); the finished folder is renamed into place, so a
folder under the final name is always complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from thtb.fingerprint import fingerprint
from thtb.provenance import stage_key_inputs

STAGE_VERSION = 2
"""Part of the fingerprint, with the train stage's code digest and library versions
(:func:`thtb.provenance.stage_key_inputs`), which change by themselves."""

NOT_FINGERPRINTED = frozenset({
    "name", "method", "save_steps", "save_total_limit", "logging_steps", "eval_strategy", "eval_steps",
    "keep_checkpoints", "dataset_num_proc", "per_device_eval_batch_size", "dataset", "dataset_format",
    "dataset_split", "limit",
})
"""Train-config keys that do not change the trained weights (the data enters through its ids digest)."""
MODEL_NOT_FINGERPRINTED = frozenset({"name", "size"})


def train_fingerprint(*, data_digest: str, model: dict[str, Any], train: dict[str, Any], seed: int,
                      precision: str, loss_mask: str, n_train: int) -> str:
    return fingerprint({
        "version": STAGE_VERSION,
        "data": data_digest,
        "n_train": n_train,
        "model": {k: v for k, v in model.items() if k not in MODEL_NOT_FINGERPRINTED},
        "train": {k: v for k, v in train.items() if k not in NOT_FINGERPRINTED},
        "seed": seed,
        "precision": precision,
        "loss_mask": loss_mask,
        **stage_key_inputs("train"),
    })


class ArtifactStore:
    """Where one training's artifact lives, and its life cycle (partial → complete)."""

    SUMMARY = "summary.json"

    def __init__(self, cache_dir: str | os.PathLike, key: str):
        self.root = Path(cache_dir).expanduser() / "artifacts" / "train"
        self.key = key
        self.final = self.root / key
        self.partial = self.root / f"{key}.partial"
        self.checkpoints = self.partial / "checkpoints"

    def is_complete(self) -> bool:
        return (self.final / self.SUMMARY).is_file()

    def last_checkpoint(self) -> Path | None:
        from transformers.trainer_utils import get_last_checkpoint

        if not self.checkpoints.is_dir():
            return None
        found = get_last_checkpoint(str(self.checkpoints))
        return Path(found) if found else None

    def start(self) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self, keep_checkpoints: bool = False) -> Path:
        """Rename the finished partial folder into place (atomic); checkpoints are dropped unless kept."""
        if not (self.partial / self.SUMMARY).is_file():
            raise RuntimeError(f"{self.partial} has no {self.SUMMARY}: not a finished training")
        if not keep_checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        if self.final.exists():  # a concurrent run finished first: keep theirs
            shutil.rmtree(self.partial, ignore_errors=True)
            return self.final
        os.replace(self.partial, self.final)
        return self.final


def link_outputs(artifact: Path, out_dir: Path, names: tuple[str, ...] = ("adapter", "merged")) -> None:
    """Point ``out_dir/<name>`` at the artifact's folders (symlinks; a copy where links are not possible)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dst = artifact / name, out_dir / name
        if not src.exists():
            continue
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.is_dir():
            shutil.rmtree(dst)
        try:
            dst.symlink_to(src.resolve(), target_is_directory=True)
        except OSError:
            shutil.copytree(src, dst)


INDEX = "index.jsonl"
"""``<cache>/artifacts/train/index.jsonl``: one line per finished or reused training — which experiment,
method, model and seed produced which artifact — so later stages can find, e.g., the full-data model of the
same size to compare against."""


def record_artifact(cache_dir: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Append ``entry`` (needs ``fingerprint``) to the store's index (one short ``O_APPEND`` write)."""
    import json

    root = Path(cache_dir).expanduser() / "artifacts" / "train"
    root.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    fd = os.open(root / INDEX, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def find_artifact(cache_dir: str | os.PathLike, **match: Any) -> Path | None:
    """The most recently recorded *complete* artifact whose index entry has every ``match`` field equal."""
    import json

    root = Path(cache_dir).expanduser() / "artifacts" / "train"
    index = root / INDEX
    if not index.is_file():
        return None
    found = None
    for line in index.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: ignore it, the others stand
            continue
        if all(entry.get(k) == v for k, v in match.items()):
            candidate = root / str(entry.get("fingerprint"))
            if (candidate / ArtifactStore.SUMMARY).is_file():
                found = candidate
    return found
