"""Content-addressed training artifacts: ``<cache>/artifacts/train/<fingerprint>/{adapter,merged,summary.json}``.

The fingerprint hashes what determines the trained weights (:func:`train_fingerprint`: the training text, the model
and train configs without their logging/checkpointing keys, the seed, the precision, the stage's code and library
versions), so a sweep never trains the same thing twice and a changed recipe or library never returns an old model.
Training happens in ``<fingerprint>.partial/`` (:class:`TrainingWorkspace`), and the finished folder is published
like every stage's artifact (:class:`thtb.artifacts.StageArtifact`), verified before reuse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thtb.artifacts import StageArtifact
from thtb.fingerprint import fingerprint
from thtb.provenance import stage_key_inputs

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process training lock
    fcntl = None

log = logging.getLogger(__name__)

STAGE_VERSION = 2
"""Part of the fingerprint, with the train stage's code digest and library versions
(:func:`thtb.provenance.stage_key_inputs`), which change by themselves."""

NOT_FINGERPRINTED = frozenset({"name", "method", "keep_checkpoints", "dataset", "dataset_format", "dataset_split",
                               "limit"})
"""Train-config keys that do not change the trained weights (the data enters through its ids digest)."""
SFT_NOT_FINGERPRINTED = frozenset({
    "save_strategy", "save_steps", "save_total_limit", "logging_strategy", "logging_steps", "logging_first_step",
    "eval_strategy", "eval_steps", "dataset_num_proc", "per_device_eval_batch_size", "include_num_input_tokens_seen",
    "disable_tqdm"})
"""``train.sft`` (``SFTConfig``) arguments that do not change the trained weights: checkpointing, logging, eval."""
MODEL_NOT_FINGERPRINTED = frozenset({"name", "size"})


def train_fingerprint(*, data_digest: str, model: dict[str, Any], train: dict[str, Any], seed: int,
                      precision: str, loss_mask: str, n_train: int) -> str:
    return fingerprint({
        "version": STAGE_VERSION, "data": data_digest, "n_train": n_train,
        "model": {k: v for k, v in model.items() if k not in MODEL_NOT_FINGERPRINTED},
        "train": {**{k: v for k, v in train.items() if k not in NOT_FINGERPRINTED},
                  "sft": {k: v for k, v in train["sft"].items() if k not in SFT_NOT_FINGERPRINTED}},
        "seed": seed, "precision": precision, "loss_mask": loss_mask, **stage_key_inputs("train"),
    })


class TrainingWorkspace:
    """One training's resumable work folder (``<fingerprint>.partial/``), which :meth:`commit` publishes as the
    ``train`` :class:`thtb.artifacts.StageArtifact`. Unlike a select or eval staging folder, successive runs of one
    fingerprint share it (a killed training resumes from its last complete checkpoint), hence the lock."""

    SUMMARY = "summary.json"

    def __init__(self, cache_dir: str | os.PathLike, key: str):
        self.root = Path(cache_dir).expanduser() / "artifacts" / "train"
        self.key = key
        self.final = self.root / key
        self.partial = self.root / f"{key}.partial"
        self.checkpoints = self.partial / "checkpoints"

    def is_complete(self) -> bool:
        """A committed artifact whose manifest verifies (a damaged one is moved aside and retrained)."""
        return (self.final / self.SUMMARY).is_file() and self._stage_artifact().is_complete()

    def _stage_artifact(self) -> StageArtifact:
        return StageArtifact(self.root.parent.parent, "train", self.key)

    @contextlib.contextmanager
    def lock(self, enabled: bool = True) -> Iterator[None]:
        """Hold ``<fingerprint>.lock`` (``flock``; released by the OS if the process dies) while training, so
        two runs of the same fingerprint never write one partial folder; the second waits, then reuses."""
        if not enabled or fcntl is None:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{self.key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("train: another run is training %s; waiting for it to finish", self.key)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def last_checkpoint(self) -> Path | None:
        """The newest *complete* ``checkpoint-N`` (see :func:`checkpoint_problem`), or ``None``; no side effects."""
        return self.scan_checkpoints()[0]

    def scan_checkpoints(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """``(newest complete checkpoint or None, [(incomplete checkpoint, why), …] newest first)``.

        A run killed while the trainer saved ``checkpoint-N`` leaves it empty or half-written; transformers'
        own ``get_last_checkpoint`` would pick it anyway and every rerun would fail on it."""
        if not self.checkpoints.is_dir():
            return None, []
        found = [(int(match.group(1)), path) for path in self.checkpoints.iterdir()
                 if (match := CHECKPOINT_RE.match(path.name)) and path.is_dir()]
        resume, incomplete = None, []
        for _, path in sorted(found, reverse=True):
            if problem := checkpoint_problem(path):
                incomplete.append((path, problem))
            elif resume is None:
                resume = path
        return resume, incomplete

    def set_aside(self, checkpoint: Path) -> Path:
        """Rename an incomplete ``checkpoint-N`` to ``incomplete-checkpoint-N`` (``.1``, ``.2``… when taken) in
        the same folder: out of sight of transformers' resume and ``save_total_limit`` rotation (both only see
        ``checkpoint-<digits>``), kept for inspection, and dropped with the checkpoints at commit unless
        ``keep_checkpoints``. Returns the new path."""
        target = checkpoint.with_name(f"{INCOMPLETE_PREFIX}{checkpoint.name}")
        n = 0
        while target.exists():
            n += 1
            target = checkpoint.with_name(f"{INCOMPLETE_PREFIX}{checkpoint.name}.{n}")
        os.replace(checkpoint, target)
        return target

    def start(self) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self, keep_checkpoints: bool = False) -> Path:
        """Rename the finished partial folder into place (atomic); checkpoints are dropped unless kept."""
        if not (self.partial / self.SUMMARY).is_file():
            raise RuntimeError(f"{self.partial} has no {self.SUMMARY}: not a finished training")
        if not keep_checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        summary = json.loads((self.partial / self.SUMMARY).read_text(encoding="utf-8"))
        meta = {k: summary.get(k) for k in ("n_train", "steps", "thtb_version")}
        # the same store as select and eval: a manifest of every file (size, digest) written last, then one rename;
        # an intact artifact published first by a concurrent run is kept
        return self._stage_artifact().publish(self.partial, meta)


def training_space_needed(model_path: str, merge: bool) -> int:
    """Bytes a training needs in the cache, estimated before it starts: the merged model (about the base model's
    weight files) when merging, plus 256 MiB for the adapter, checkpoints and logs. A hub id not yet downloaded
    counts 0 for its weights (its size is unknown here)."""
    folder = Path(model_path)
    files = folder.iterdir() if merge and folder.is_dir() else ()
    suffixes = (".safetensors", ".bin", ".gguf", ".pt")
    return sum(p.stat().st_size for p in files if p.is_file() and p.name.endswith(suffixes)) + 256 * 2**20


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
"""transformers' checkpoint folder name (``PREFIX_CHECKPOINT_DIR``), matched as its ``get_last_checkpoint`` does."""
INCOMPLETE_PREFIX = "incomplete-"
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin",
                "model.safetensors.index.json", "pytorch_model.bin.index.json")
"""The weight files transformers' ``_load_from_checkpoint`` accepts (a PEFT model's trainer writes the
adapter ones), in the order checked here."""


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the trainer cannot resume from checkpoint folder ``path``, or ``None`` when it is complete.

    Complete means every file the trainer writes there is present and whole, checked without loading any
    tensor: ``trainer_state.json`` (written last by ``Trainer._save_checkpoint``) parses and its
    ``global_step`` is the folder's N; the weights (``adapter_model.safetensors`` for a LoRA model, or any
    other layout transformers loads) are non-empty with every byte their header promises; ``optimizer.pt``,
    ``scheduler.pt`` and ``rng_state*.pth`` are present, non-empty and complete zip archives (``torch.save``'s
    format, whose directory sits at the end of the file). A DeepSpeed checkpoint (``global_step*/``) is
    checked for its ``.pt`` files instead of ``optimizer.pt``/``scheduler.pt``; an FSDP one for an
    ``optimizer*`` entry instead of ``optimizer.pt``."""
    path = Path(path)
    match = CHECKPOINT_RE.match(path.name)
    if not path.is_dir():
        return "not a folder"
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE} (the trainer writes it last: the save was cut short)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{TRAINER_STATE} does not parse ({err})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE} has no global_step"
    if match and state["global_step"] != int(match.group(1)):
        return f"{TRAINER_STATE} says global_step {state['global_step']}, not {match.group(1)}"

    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()][:1]  # the first layout found
    weights += [d / n for d in path.iterdir() if d.is_dir() for n in WEIGHT_FILES[:2] if (d / n).is_file()]  # adapters
    deepspeed = sorted(d for d in path.glob("global_step*") if d.is_dir())
    fsdp = [d for d in path.iterdir() if d.name.startswith("pytorch_model_fsdp")]
    if not (weights or deepspeed or fsdp):
        return f"no model or adapter weights ({', '.join(WEIGHT_FILES[:2])}, …)"
    if problem := next(filter(None, map(_weights_problem, weights)), None):
        return problem

    if deepspeed:  # the engine's own files hold the optimizer (and its scheduler)
        parts, required = [p for d in deepspeed for p in sorted(d.glob("*.pt"))], []
        if not parts:
            return f"{deepspeed[-1].name}/ holds no .pt files"
    elif fsdp:  # FSDP saves its optimizer as optimizer_<i>(.bin or a sharded folder)
        if not any(p.name.startswith("optimizer") for p in path.iterdir()):
            return "no FSDP optimizer state"
        parts, required = [], ["scheduler.pt"]
    else:
        parts, required = [], ["optimizer.pt", "scheduler.pt"]
    for name in required:
        if not (path / name).is_file():
            return f"no {name}"
        parts.append(path / name)
    rng = sorted(path.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state.pth"
    scaler = [path / "scaler.pt"] if (path / "scaler.pt").is_file() else []
    return next(filter(None, map(_torch_file_problem, parts + rng + scaler)), None)  # the first problem


def _weights_problem(file: Path) -> str | None:
    if file.name.endswith(".index.json"):
        try:
            shards = set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            return f"{file.name} does not parse ({err})"
        for shard in sorted(shards):
            if not (file.parent / shard).is_file():
                return f"{file.name} names {shard}, which is missing"
            if problem := _weights_problem(file.parent / shard):
                return problem
        return None
    if file.suffix == ".safetensors":
        return _safetensors_problem(file)
    return _torch_file_problem(file)


def _safetensors_problem(file: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes: the header
    must parse and the file must hold every byte up to the largest ``data_offsets`` end."""
    size = file.stat().st_size
    if size == 0:
        return f"{file.name} is empty"
    try:
        with open(file, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n > size - 8:
                return f"{file.name} is truncated ({size} bytes, header alone needs {n + 8})"
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError) as err:
        return f"{file.name} has an unreadable header ({err})"
    if size < 8 + n + end:
        return f"{file.name} is truncated ({size} of {8 + n + end} bytes)"
    return None


def _torch_file_problem(file: Path) -> str | None:
    """``torch.save`` writes a zip archive; a cut file lacks the central directory at its end."""
    name = f"{file.parent.name}/{file.name}" if file.parent.name.startswith("global_step") else file.name
    if file.stat().st_size == 0:
        return f"{name} is empty"
    if not zipfile.is_zipfile(file):
        return f"{name} is truncated (not a complete torch.save archive)"
    return None


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
"""``<cache>/artifacts/train/index.jsonl``: one line per finished or reused training — which experiment, method,
model and seed produced which artifact — so later stages can find, e.g., the full-data model of the same size."""


def record_artifact(cache_dir: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Append ``entry`` (needs ``fingerprint``) to the store's index (one short ``O_APPEND`` write)."""
    root = Path(cache_dir).expanduser() / "artifacts" / "train"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / INDEX, "a", encoding="utf-8") as index:
        index.write(json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def find_artifact(cache_dir: str | os.PathLike, **match: Any) -> Path | None:
    """The most recently recorded *complete* artifact whose index entry has every ``match`` field equal."""
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
            if (candidate / TrainingWorkspace.SUMMARY).is_file():
                found = candidate
    return found


def training_provenance(cfg: dict[str, Any], summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """What made a trained model, for run lines and tables: the recipe, base model, data and the artifact's
    fingerprints (``summary``: the train stage's summary)."""
    train, model = cfg.get("train") or {}, cfg.get("model") or {}
    summary = summary or {}
    return {"recipe": train.get("name"), "model": model.get("name"), "model_path": model.get("path"),
            "model_revision": (summary.get("model") or {}).get("revision"),
            "dataset": train.get("dataset") or "selection", "fingerprint": summary.get("fingerprint"),
            "subset_fingerprint": summary.get("subset_fingerprint")}
