"""Run a real OpenAI-compatible HTTP server (``transformers serve``) for a local model.

    from thtb.serve import ServedModel
    with ServedModel("smollm2") as server:          # or a model folder / Hub id
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        client.chat.completions.create(model=server.model, messages=[...])

The server runs as a subprocess in its own process group on 127.0.0.1 and a free port; it is pinned to the
one model (``transformers serve <model>``), so a request naming another model gets HTTP 400. Its log goes to
a file (``server.log_path``). On exit the whole process group gets SIGTERM, then SIGKILL after a grace period.

CLI (serves until Ctrl-C)::

    python -m thtb.serve --model smollm2 [--port 8000] [--continuous-batching]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ServedModel", "ServerStartError", "free_port", "resolve_model", "serving_available"]

# `python -c` instead of the `transformers` console script: works whatever bin/ the interpreter lives in.
_LAUNCH = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"

# Names that resolve to a packaged local model (see thtb.models).
_ALIASES = {"smollm2", "smollm2-135m-instruct"}


class ServerStartError(RuntimeError):
    """The server process exited or did not become healthy in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serving_available() -> str | None:
    """``None`` when ``transformers serve`` can run here, else the reason it cannot."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "starlette", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return f"serving extras not installed ({', '.join(missing)}): pip install 'transformers[serving]'"
    return None


def resolve_model(model: str | os.PathLike) -> str:
    """``"smollm2"`` -> the converted local folder (see :func:`thtb.models.smollm2_path`); else unchanged."""
    if str(model).lower() in _ALIASES:
        from thtb.models import smollm2_path

        return str(smollm2_path())
    return str(model)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ServedModel:
    """Context manager running ``transformers serve`` for one model.

    Args:
        model: a local model folder, a Hub id (needs the Hub cache offline) or ``"smollm2"``.
        port: defaults to a free port.
        host: listen address (default ``127.0.0.1``).
        continuous_batching: pass ``--continuous-batching``.
        startup_timeout: seconds to wait for ``/health`` (model loading included).
        log_path: where the server's stdout+stderr go; default a temp file (kept after exit).
        log_level: the server's ``--log-level``.
        extra_args: more ``transformers serve`` options (e.g. ``["--dtype", "bfloat16"]``).
        env: extra environment variables for the server (``HF_HUB_OFFLINE=1`` is set by default).
        grace_period: seconds between SIGTERM and SIGKILL on exit.

    Attributes (once started): ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model`` (the name to send in
    requests), ``port``, ``log_path``, ``startup_s`` (seconds from spawn to healthy), ``process``.
    """

    def __init__(
        self,
        model: str | os.PathLike = "smollm2",
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        continuous_batching: bool = False,
        startup_timeout: float = 180.0,
        log_path: str | os.PathLike | None = None,
        log_level: str = "info",
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        grace_period: float = 10.0,
    ) -> None:
        self.model_path = resolve_model(model)
        self.host = host
        self.port = port
        self.continuous_batching = continuous_batching
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.log_level = log_level
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.grace_period = grace_period
        self.process: subprocess.Popen | None = None
        self.model: str = self.model_path
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

    def command(self) -> list[str]:
        cmd = [sys.executable, "-c", _LAUNCH, "serve", self.model_path, "--host", self.host, "--port", str(self.port)]
        cmd += ["--log-level", self.log_level]
        if self.continuous_batching:
            cmd.append("--continuous-batching")
        return cmd + self.extra_args

    def log_tail(self, n_chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n_chars:]

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> ServedModel:
        reason = serving_available()
        if reason:
            raise ServerStartError(reason)
        if self.process is not None:
            raise RuntimeError("server already started")
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"thtb-serve-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._log_file = open(self.log_path, "ab")
        start = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: we can kill the server and anything it spawns
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            self._wait_healthy(start)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        self.model = self._served_name()
        return self

    def _wait_healthy(self, start: float) -> None:
        deadline = start + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"transformers serve exited with code {code} before becoming healthy; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.root_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.perf_counter() > deadline:
                raise ServerStartError(
                    f"transformers serve not healthy after {self.startup_timeout:.0f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def _served_name(self) -> str:
        """The model id the server answers to (from ``/v1/models``), falling back to the path we gave it."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=10) as resp:
                data = json.load(resp).get("data") or []
            if len(data) == 1 and data[0].get("id"):
                return data[0]["id"]
        except (urllib.error.URLError, OSError, ValueError):
            pass
        return self.model_path

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace_period`` seconds."""
        proc = self.process
        if proc is not None:
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            if pgid is not None:
                _signal_group(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.grace_period)
                except subprocess.TimeoutExpired:
                    pass
                # Also kill any straggler children left in the group, then reap.
                _signal_group(pgid, signal.SIGKILL)
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
        return f"ServedModel(model={self.model!r}, base_url={self.base_url!r}, {state})"


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the process that started us dies (Linux ``prctl``).

    So a server is not orphaned when pytest or the CLI is SIGKILLed. (Fires when the *thread* that started the
    server exits: start long-lived servers from the main thread.) SIGKILL, not SIGTERM: uvicorn's graceful
    shutdown waits for in-flight generations, which kept orphaned servers busy for minutes; the server holds
    no state worth a clean exit.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - best effort
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thtb.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="'smollm2' (packaged), a model folder or a Hub id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--log", default=None, help="server log file (default: a temp file)")
    args = parser.parse_args(argv)

    server = ServedModel(
        args.model,
        host=args.host,
        port=args.port,
        continuous_batching=args.continuous_batching,
        startup_timeout=args.startup_timeout,
        log_path=args.log,
    )
    def _interrupt(signum, frame):  # `kill PID` stops the server as cleanly as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with `&` from a script
        signal.signal(signal.SIGINT, _interrupt)
    print(f"starting transformers serve for {server.model_path} ...", file=sys.stderr, flush=True)
    with server:
        print(f"base_url: {server.base_url}")
        print(f"model:    {server.model}")
        print(f"log:      {server.log_path}  (started in {server.startup_s:.1f}s; Ctrl-C to stop)", flush=True)
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
            return 0
    print(f"server exited; log: {server.log_path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
