"""What ``pip install .`` (non-editable) delivers: one top-level import name, every module of ``thtb/``, ``train/``
and ``eval/`` under it, the lm-eval task files and resources as package data — and an installed copy that runs
a selection and an MMLU-Pro smoke run from a directory that is not the checkout.

The wheel is built once per session from the checkout (setuptools, no network: ``--no-build-isolation``) and
installed with ``pip install --no-deps --target`` into a temporary folder that is put first on ``PYTHONPATH``;
the dependencies come from the test environment. Python's ``-P`` keeps ``run.py``'s own folder (the checkout) off
``sys.path``, so the installed ``thtb`` is the one that runs, with the checkout's ``conf/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA, shared_file

ROOT = Path(__file__).resolve().parents[1]
MMLU_PRO = SHARED_DATA / "mmlu_pro"
ROOMS = {"thtb": ROOT / "thtb", "thtb/train": ROOT / "train", "thtb/eval": ROOT / "eval"}
"""Where each part of the ``thtb`` package lives in the checkout (pyproject's package-dir)."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the checkout's package sources (setuptools builds in-tree: the copy keeps its
    ``build/`` out of the checkout)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ROOMS.values():
        shutil.copytree(folder, src / folder.name, ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("thtb-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return target


def _env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


def test_the_wheel_has_one_top_level_name_and_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"thtb"}, f"the wheel installs top-level names {sorted(top)}"
    missing = []
    for prefix, folder in ROOMS.items():
        for path in folder.rglob("*"):
            rel = path.relative_to(folder)
            if path.is_dir() or "__pycache__" in rel.parts or path.suffix == ".pyc" or path.name == "README.md":
                continue
            if prefix == "thtb" and rel.parts[0] in ("training", "evaluation") and path.name != "__init__.py":
                continue
            if f"{prefix}/{rel.as_posix()}" not in names:
                missing.append(f"{folder.name}/{rel.as_posix()}")
    assert not missing, f"files of the checkout missing from the wheel (pyproject's packages / package-data): {missing}"
    assert any(n.startswith("thtb/eval/tasks/mmlu_pro_tiger/") and n.endswith(".yaml") for n in names)


def test_installed_copy_imports_from_its_own_folder(installed, tmp_path):
    assert sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")) == ["thtb"]
    code = ("import json, thtb, thtb.train.stage, thtb.eval.stage, thtb.eval.harness as h; "
            "print(json.dumps({'thtb': thtb.__file__, 'train': thtb.train.__file__, 'eval': thtb.eval.__file__, "
            "'tasks': str(h.tasks_dir())}))")
    out = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=_env(installed), check=True,
                         capture_output=True, text=True, timeout=300)
    where = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(Path(p).resolve().is_relative_to(installed.resolve()) for p in where.values()), where


def test_installed_copy_selects_from_another_directory(installed, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-P", str(ROOT / "run.py"), "+experiment=demo", "stages=[select]",
         f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'out'}"],
        cwd=tmp_path, env=_env(installed), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    subset = (run_dir / "selection" / "subset.jsonl").read_text(encoding="utf-8").splitlines()
    summary = json.loads((run_dir / "selection" / "summary.json").read_text(encoding="utf-8"))
    assert len(subset) == summary["n_selected"] > 0


def test_installed_copy_runs_mmlu_pro_from_another_directory(installed, tmp_path):
    shared_file("test.parquet", base=MMLU_PRO)
    from tests.tiny_models import tiny_llama

    model = tiny_llama(tmp_path / "model")
    code = ("import json, sys; from thtb.eval import run_mmlu_pro; "
            "s = run_mmlu_pro(sys.argv[1], data_dir=sys.argv[2], out_dir=sys.argv[3], limit=1, fewshot=0, "
            "max_gen_toks=2); print(json.dumps({'n': s['overall']['n']}))")
    proc = subprocess.run([sys.executable, "-P", "-c", code, str(model), str(MMLU_PRO), str(tmp_path / "out")],
                          cwd=tmp_path, env=_env(installed), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 14  # one question per category
    assert (tmp_path / "out" / "mmlu_pro.json").is_file()
