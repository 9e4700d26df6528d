"""The artifact store under concurrent runs, format changes, corruption, dead owners and full disks.

Each test first reproduces a defect a reliability review found, then shows the store handles it: what is
published is what its process computed, two inputs a scorer reads differently never share an artifact, a
damaged artifact is never served, and a crash or a full disk leaves nothing that blocks the next run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from thtb.artifacts import MANIFEST, StageArtifact, check_free_space, remove_stale_staging
from thtb.data import load_records
from thtb.fingerprint import ids_digest, records_digest
from thtb.stages.select import selection_fingerprint


def _run(*overrides: str, quiet: bool = False) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    pipe = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, "run.py", *overrides], cwd=ROOT, env=env, stdout=pipe, stderr=pipe,
                            text=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _lines(path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


# ------------------------------------------------------------------------------- concurrent runs, one run dir
@pytest.mark.slow
def test_two_concurrent_runs_sharing_a_run_dir_publish_what_each_computed(tmp_path):
    cache, shared_dir = tmp_path / "cache", tmp_path / "same-run-dir"
    procs = [_run("+experiment=demo", "stages=[select]", f"selection.budget={b}", f"hydra.run.dir={shared_dir}",
                  f"paths.cache_dir={cache}") for b in (0.05, 0.10)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    published = sorted(p for p in (cache / "artifacts" / "select").iterdir() if (p / MANIFEST).is_file())
    assert len(published) == 2
    for folder in published:
        summary = json.loads((folder / "summary.json").read_text())
        manifest = json.loads((folder / MANIFEST).read_text())
        assert _lines(folder / "subset.jsonl") == summary["n_selected"] == manifest["n_selected"]
        assert not StageArtifact(cache, "select", folder.name).verify()
    assert sorted(json.loads((f / "summary.json").read_text())["n_selected"] for f in published) == [13, 26]
    # a later, separate run reuses the right artifact and gets its own budget's rows
    again = _run("+experiment=demo", "stages=[select]", "selection.budget=0.05", f"hydra.run.dir={tmp_path / 'later'}",
                 f"paths.cache_dir={cache}")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert "select reused" in out + err
    assert _lines(tmp_path / "later" / "selection" / "subset.jsonl") == 13
    assert not list((cache / "artifacts" / "select").glob("*.staging-*"))  # no leftovers


def test_default_run_dirs_are_unique_per_process():
    import run  # registers the resolver the default hydra.run.dir uses
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": "${thtb_run_suffix:}"})
    suffix = cfg.a
    assert suffix.endswith(f"-{os.getpid()}") and cfg.a == suffix  # stable within the process
    assert "${thtb_run_suffix:}" in (ROOT / "conf" / "config.yaml").read_text()
    assert run.STAGES


# ------------------------------------------------------------------------------- what the scorers read
def test_same_ids_different_text_never_share_a_fingerprint(tmp_path):
    """A CRLF Alpaca file and a messages file holding the same pairs get the same ids (content hashes of the clean
    text) but the Alpaca query carries the authors' "\\nnan" under reference fidelity: different digests."""
    rows = [{"instruction": f"Name a colour number {i}.", "input": "", "output": f"Colour {i} is red."} for i in range(4)]
    alpaca = tmp_path / "a.json"
    alpaca.write_bytes(json.dumps(rows, indent=1).replace("\n", "\r\n").encode())
    messages = tmp_path / "m.jsonl"
    messages.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["instruction"]},
                                                         {"role": "assistant", "content": r["output"]}]}) + "\n"
                                for r in rows))
    a, ra = load_records(str(alpaca), fidelity="reference")
    m, rm = load_records(str(messages), fidelity="reference")
    assert a["id"].tolist() == m["id"].tolist() and ids_digest(a["id"]) == ids_digest(m["id"])  # the old key
    assert a["query"].str.endswith("\nnan").all() and not m["query"].str.endswith("nan").any()
    assert records_digest(a, ra.format) != records_digest(m, rm.format)
    cfg = {"selection": {"_target_": "thtb.methods.random.RandomSelection", "name": "random"}, "fidelity": "reference",
           "seed": 42}
    assert selection_fingerprint(cfg, records_digest(a, ra.format)) != selection_fingerprint(
        cfg, records_digest(m, rm.format))  # the select stage's key: the two never share an artifact


def test_multi_turn_and_single_turn_with_the_same_first_exchange_differ(tmp_path):
    first = [{"role": "user", "content": "Hi, who wrote Hamlet?"}, {"role": "assistant", "content": "Shakespeare."}]
    more = [{"role": "user", "content": "When?"}, {"role": "assistant", "content": "Around 1600."}]
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    one.write_text(json.dumps({"messages": first}) + "\n")
    many.write_text(json.dumps({"messages": first + more}) + "\n")
    r1, p1 = load_records(str(one))
    r2, p2 = load_records(str(many))
    assert r1["query"].tolist() == r2["query"].tolist() and r1["response"].tolist() == r2["response"].tolist()
    assert records_digest(r1, p1.format) != records_digest(r2, p2.format)


# ------------------------------------------------------------------------------- damaged and stale artifacts
def _publish(cache, key="k" * 16, text="data\n"):
    art = StageArtifact(cache, "select", key)
    work = art.staging()
    (work / "subset.jsonl").write_text(text)
    (work / "summary.json").write_text('{"n_selected": 1}\n')
    art.publish(work, {"n_selected": 1})
    return art


def test_a_damaged_artifact_is_moved_aside_not_served(tmp_path):
    art = _publish(tmp_path)
    assert art.is_complete() and not art.verify()
    (art.path / "subset.jsonl").write_text("data, edited by hand or cut by a disk error\n")
    assert "subset.jsonl" in art.verify()[0]
    assert not art.is_complete()
    assert not art.path.exists() and list(art.root.glob(f"{art.key}.corrupt-*"))
    art = _publish(tmp_path)  # recomputed and published again
    assert art.is_complete()
    (art.path / "summary.json").unlink()
    assert not StageArtifact(tmp_path, "select", art.key).is_complete()


def test_an_artifact_without_a_file_list_is_not_trusted(tmp_path):
    art = StageArtifact(tmp_path, "select", "old")
    art.path.mkdir(parents=True)
    (art.path / "subset.jsonl").write_text("x\n")
    (art.path / MANIFEST).write_text('{"stage": "select"}')  # an older version's manifest: no file list
    assert not art.is_complete()


def test_staging_of_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path):
    art = StageArtifact(tmp_path, "select", "k" * 16)
    mine = art.staging()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = mine.name.split(".staging-", 1)[1].split("-")[0]
    leftovers = [art.root / f"{art.key}.staging-{host}-{dead_pid}-abcd", art.root / f"{art.key}.partial-{dead_pid}"]
    for p in leftovers:
        (p / "sub").mkdir(parents=True)
    other_host = art.root / f"{art.key}.staging-elsewhere-{dead_pid}-abcd"
    other_host.mkdir()
    removed = remove_stale_staging(art.root)
    assert sorted(removed) == sorted(leftovers) and mine.is_dir() and other_host.is_dir()
    StageArtifact(tmp_path, "select", "x")  # opening the store cleans up too
    assert not any(p.exists() for p in leftovers)


def test_a_full_disk_names_the_path_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import thtb.artifacts as artifacts

    art = StageArtifact(tmp_path, "select", "k" * 16)
    work = art.staging()
    (work / "subset.jsonl").write_text("x\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "replace", full)
    with pytest.raises(OSError) as err:
        art.publish(work, {})
    assert err.value.errno == errno.ENOSPC and str(art.path) in str(err.value) and "disk is full" in str(err.value)
    assert not work.exists() and not art.path.exists()
    monkeypatch.undo()
    assert _publish(tmp_path).is_complete()  # the rerun publishes normally


def test_free_space_is_checked_before_long_work(tmp_path):
    check_free_space(tmp_path / "not" / "yet", 1, "a test")
    with pytest.raises(OSError, match=r"needs about .* MiB under .*, but only .* MiB are free") as err:
        check_free_space(tmp_path, 2**62, "training")
    assert err.value.errno == errno.ENOSPC


@pytest.mark.slow
def test_a_run_killed_mid_selection_leaves_nothing_that_looks_whole(tmp_path):
    """kill -9 at a few points of a selection, then rerun: the subset is byte-identical to an uninterrupted run's,
    and no half-written artifact or staging folder is left behind."""
    import signal
    import time

    cache = tmp_path / "cache"
    clean = _run("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / 'clean'}",
                 f"paths.cache_dir={tmp_path / 'other-cache'}")
    _finish(clean)
    for i, delay in enumerate((4.0, 9.0)):
        victim = _run("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / f'killed{i}'}",
                      f"paths.cache_dir={cache}", quiet=True)
        time.sleep(delay)
        victim.send_signal(signal.SIGKILL)
        victim.wait(60)
        folders = list((cache / "artifacts" / "select").glob("*")) if (cache / "artifacts" / "select").exists() else []
        for folder in folders:  # whatever is under a final name verifies; anything else is a staging folder
            if ".staging-" not in folder.name:
                assert not StageArtifact(cache, "select", folder.name).verify(), folder
    again = _run("+experiment=demo", "stages=[select]", f"hydra.run.dir={tmp_path / 'again'}", f"paths.cache_dir={cache}")
    _finish(again)
    assert (tmp_path / "again" / "selection" / "subset.jsonl").read_bytes() == (
        tmp_path / "clean" / "selection" / "subset.jsonl").read_bytes()
    assert not list((cache / "artifacts" / "select").glob("*.staging-*"))  # the dead runs' staging was removed


def test_a_full_disk_while_writing_a_result_file_names_it(tmp_path):
    """pyarrow reports ENOSPC as "[Errno 28] Error writing bytes to file" with no path: the error names the file,
    and nothing half-written is left under its name."""
    from thtb.io import atomic_path

    target = tmp_path / "selection" / "scores.parquet"
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "Error writing bytes to file")
    assert err.value.errno == errno.ENOSPC and str(target) in str(err.value) and "disk is full" in str(err.value)
    assert not target.exists() and not list(target.parent.glob(".scores.parquet.*"))


def test_a_bad_jsonl_line_is_named(tmp_path):
    from thtb.eval.mmlu_pro_scoring import load_samples

    path = tmp_path / "mmlu_pro_samples.jsonl"
    path.write_text('{"question_id": 1, "category": "math", "target": "A", "response": "x"}\n{"question_id": 2,\n')
    with pytest.raises(ValueError, match=r"mmlu_pro_samples\.jsonl: line 2: not valid JSON"):
        load_samples(path)


def test_a_trained_models_identity_comes_from_its_manifest_wherever_it_lies(tmp_path):
    """eval keys a trained model by its training artifact's fingerprint (read from the manifest), in the store or
    copied elsewhere; a folder without a train manifest is keyed by its content."""
    import shutil

    from thtb.artifacts import StageArtifact
    from thtb.eval.stage import model_identity

    art = StageArtifact(tmp_path / "cache", "train", "fp42")
    staging = art.staging()
    (staging / "merged").mkdir()
    (staging / "merged" / "config.json").write_text("{}")
    art.publish(staging, {})
    assert model_identity(str(art.path / "merged")) == "train:fp42"
    moved = tmp_path / "elsewhere"
    shutil.copytree(art.path, moved)
    assert model_identity(str(moved / "merged")) == "train:fp42"
    (moved / "manifest.json").unlink()  # no manifest: the folder's content decides
    assert not model_identity(str(moved / "merged")).startswith("train:")
