"""Resuming an interrupted training only from a complete checkpoint (a kill mid-save must not block reruns)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.helpers import make_cfg, write_subset
from thtb.train.stage import build_trainer, plan_training, run_train
from thtb.train.artifacts import TrainingWorkspace, checkpoint_problem


class Interrupt(RuntimeError):
    pass


def killed_after_save(step: int):
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupt(f"killed after checkpoint-{step}")

    return KillAfterSave()


@pytest.fixture(autouse=True)
def _fixed_code(frozen_code_digest):
    """Every test here reruns a training: its fingerprint must not follow edits made to the tree meanwhile."""


@pytest.fixture
def run_dir(tmp_path):
    write_subset(tmp_path / "run")
    return tmp_path / "run"


def interrupted(tmp_path: Path, run_dir: Path, step: int, *overrides: str) -> tuple[dict, Path]:
    """Train (max_steps 4, save_steps 2) until just after ``checkpoint-<step>`` is saved; the config and the
    partial artifact's ``checkpoints`` folder."""
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(Interrupt):
        run_train(cfg, run_dir, callbacks=[killed_after_save(step)])
    partials = list((tmp_path / "cache" / "artifacts" / "train").glob("*.partial"))
    assert len(partials) == 1
    checkpoints = partials[0] / "checkpoints"
    assert (checkpoints / f"checkpoint-{step}").is_dir()
    return cfg, checkpoints


def cut_mid_save(checkpoint: Path) -> None:
    """What a kill during ``_save_checkpoint`` leaves: weights half-written, no trainer_state.json yet."""
    weights = checkpoint / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    (checkpoint / "trainer_state.json").unlink()


def test_a_checkpoint_cut_mid_save_is_skipped_and_the_previous_one_resumed(tmp_path, run_dir, caplog):
    cfg, checkpoints = interrupted(tmp_path, run_dir, 4, "train.keep_checkpoints=true")
    assert (checkpoints / "checkpoint-2").is_dir()
    cut_mid_save(checkpoints / "checkpoint-4")
    store = TrainingWorkspace(cfg["paths"]["cache_dir"], checkpoints.parent.name.removesuffix(".partial"))
    assert store.last_checkpoint() == checkpoints / "checkpoint-2"  # no side effect: checkpoint-4 stays put

    with caplog.at_level(logging.WARNING, logger="thtb.train.stage"):
        summary = run_train(cfg, run_dir)
    assert summary["resumed_from"].endswith("checkpoint-2")
    [skipped] = summary["skipped_checkpoints"]
    assert skipped["checkpoint"].endswith("checkpoint-4") and "trainer_state.json" in skipped["reason"]
    assert any("checkpoint-4" in r.getMessage() and "incomplete" in r.getMessage() for r in caplog.records)
    assert summary["steps"] == 4 and summary["reused"] is False
    steps_logged = [h["step"] for h in summary["log_history"] if "loss" in h]
    assert steps_logged[-2:] == [3, 4]
    assert json.loads((run_dir / "train" / "summary.json").read_text())["skipped_checkpoints"] == [skipped]
    # committed with its checkpoints (keep_checkpoints): the cut one moved aside, a complete checkpoint-4 written
    kept = Path(summary["artifact"]) / "checkpoints"
    assert Path(skipped["moved_to"]).name == "incomplete-checkpoint-4"
    assert (kept / "incomplete-checkpoint-4").is_dir() and checkpoint_problem(kept / "checkpoint-4") is None
    assert not checkpoints.parent.exists()


def test_an_only_checkpoint_left_empty_means_a_fresh_start(tmp_path, run_dir):
    cfg, checkpoints = interrupted(tmp_path, run_dir, 2)
    for item in (checkpoints / "checkpoint-2").iterdir():  # killed right after the folder was created
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    summary = run_train(cfg, run_dir)
    assert summary["resumed_from"] is None
    assert [s["checkpoint"].rsplit("/", 1)[-1] for s in summary["skipped_checkpoints"]] == ["checkpoint-2"]
    assert summary["steps"] == 4
    assert [h["step"] for h in summary["log_history"] if "loss" in h] == [1, 2, 3, 4]


def test_a_complete_checkpoint_still_resumes_and_reports_nothing_skipped(tmp_path, run_dir):
    cfg, _ = interrupted(tmp_path, run_dir, 2)
    summary = run_train(cfg, run_dir)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["skipped_checkpoints"] == []


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as the trainer writes it for a LoRA model (2 steps of the tiny model)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    write_subset(tmp / "run")
    cfg = make_cfg(tmp, "train.sft.max_steps=2", "train.eval_fraction=0")
    plan = plan_training(cfg, tmp / "run")
    trainer, _ = build_trainer(cfg, plan, tmp / "out")
    trainer.train()
    return tmp / "out" / "checkpoint-2"


def _truncate(name: str, keep: float = 0.5):
    def cut(ckpt: Path) -> None:
        path = ckpt / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return cut


def _remove(name: str):
    return lambda ckpt: (ckpt / name).unlink()


def _state(**changes):
    def edit(ckpt: Path) -> None:
        path = ckpt / "trainer_state.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return edit


def test_what_the_trainer_writes_for_a_lora_model_is_complete(real_checkpoint):
    names = {p.name for p in real_checkpoint.iterdir()}
    assert {"adapter_model.safetensors", "trainer_state.json", "optimizer.pt", "scheduler.pt",
            "rng_state.pth"} <= names, names
    assert checkpoint_problem(real_checkpoint) is None


@pytest.mark.parametrize(("damage", "reason"), [
    pytest.param(_remove("trainer_state.json"), "trainer_state.json", id="no-trainer-state"),
    pytest.param(_truncate("trainer_state.json"), "trainer_state.json", id="cut-trainer-state"),
    pytest.param(_state(global_step=1), "global_step", id="wrong-global-step"),
    pytest.param(_remove("adapter_model.safetensors"), "weights", id="no-weights"),
    pytest.param(_truncate("adapter_model.safetensors", 0.0), "adapter_model.safetensors", id="empty-weights"),
    pytest.param(_truncate("adapter_model.safetensors", 0.9), "adapter_model.safetensors", id="cut-weights"),
    pytest.param(_truncate("optimizer.pt"), "optimizer.pt", id="cut-optimizer"),
    pytest.param(_remove("optimizer.pt"), "optimizer.pt", id="no-optimizer"),
    pytest.param(_remove("scheduler.pt"), "scheduler.pt", id="no-scheduler"),
    pytest.param(_truncate("rng_state.pth", 0.0), "rng_state.pth", id="empty-rng-state"),
    pytest.param(_remove("rng_state.pth"), "rng_state", id="no-rng-state"),
])
def test_a_damaged_checkpoint_is_not_resumable(real_checkpoint, tmp_path, damage, reason):
    ckpt = tmp_path / "checkpoint-2"
    shutil.copytree(real_checkpoint, ckpt)
    assert checkpoint_problem(ckpt) is None
    damage(ckpt)
    problem = checkpoint_problem(ckpt)
    assert problem and reason in problem, problem


def test_the_newest_complete_checkpoint_is_chosen_and_incomplete_ones_listed(real_checkpoint, tmp_path):
    store = TrainingWorkspace(tmp_path / "cache", "k")
    store.start()
    for step in (2, 4, 6):
        shutil.copytree(real_checkpoint, store.checkpoints / f"checkpoint-{step}")
        _state(global_step=step)(store.checkpoints / f"checkpoint-{step}")
    (store.checkpoints / "checkpoint-8").mkdir()
    _truncate("adapter_model.safetensors")(store.checkpoints / "checkpoint-6")
    resume, incomplete = store.scan_checkpoints()
    assert resume == store.checkpoints / "checkpoint-4"
    assert [p.name for p, _ in incomplete] == ["checkpoint-8", "checkpoint-6"]
    moved = [store.set_aside(p) for p, _ in incomplete]
    assert [p.name for p in moved] == ["incomplete-checkpoint-8", "incomplete-checkpoint-6"]
    (store.checkpoints / "checkpoint-8").mkdir()  # cut again at the same step: a second folder aside
    assert store.set_aside(store.checkpoints / "checkpoint-8").name == "incomplete-checkpoint-8.1"
    from transformers.trainer_utils import get_last_checkpoint

    assert Path(get_last_checkpoint(str(store.checkpoints))) == store.checkpoints / "checkpoint-4"
    assert store.last_checkpoint() == store.checkpoints / "checkpoint-4"
    assert TrainingWorkspace(tmp_path / "cache", "none").last_checkpoint() is None


# ------------------------------------------------------------------------ the finished artifact, verified
@pytest.mark.usefixtures("frozen_code_digest")
def test_a_damaged_training_artifact_is_retrained_not_reused(tmp_path, run_dir):
    from thtb.artifacts import MANIFEST
    from thtb.train.stage import run_train

    cfg = make_cfg(tmp_path)
    first = run_train(cfg, run_dir)
    artifact = Path(first["artifact"])
    manifest = json.loads((artifact / MANIFEST).read_text())
    assert "adapter/adapter_model.safetensors" in manifest["files"] and "merged/model.safetensors" in manifest["files"]
    weights = artifact / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk error cut it
    again = run_train(cfg, run_dir)
    assert again["reused"] is False and again["fingerprint"] == first["fingerprint"]
    assert list(artifact.parent.glob(f"{artifact.name}.corrupt-*"))  # moved aside, kept for inspection
    assert run_train(cfg, run_dir)["reused"] is True


@pytest.mark.usefixtures("frozen_code_digest")
def test_a_second_process_training_the_same_fingerprint_waits_then_reuses(tmp_path, run_dir):
    """While another process holds the fingerprint's lock (it is training it), a run of the same fingerprint does
    not write the same partial folder: it waits; when the holder is gone it trains (or reuses what it left)."""
    import subprocess
    import sys
    import threading

    from thtb.train.stage import plan_training, run_train
    from thtb.train.artifacts import TrainingWorkspace

    cfg = make_cfg(tmp_path)
    store = TrainingWorkspace(cfg["paths"]["cache_dir"], plan_training(cfg, run_dir).key)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(store.root), store.key],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = {}
        thread = threading.Thread(target=lambda: result.update(run_train(cfg, run_dir)), daemon=True)
        thread.start()
        thread.join(3)
        assert thread.is_alive() and not store.partial.exists()  # waiting, not training into the shared folder
    finally:
        holder.kill()  # the holder dies: the OS releases its lock
        holder.wait(10)
    thread.join(300)
    assert not thread.is_alive() and result["reused"] is False and store.is_complete()


_HOLD_LOCK = """
import fcntl, sys, time, pathlib
root, key = pathlib.Path(sys.argv[1]), sys.argv[2]
root.mkdir(parents=True, exist_ok=True)
handle = open(root / f"{key}.lock", "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""
