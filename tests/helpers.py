"""Helpers shared by several test modules (a plain module: pytest collects no tests from it).

Test modules import what they share from here, never from one another; fixtures live in ``conftest.py`` and
``serving.py``, tiny model builders in ``tiny_models.py``.

- Paths and config: :data:`ROOT`, :data:`CONF`, :data:`EXPERIMENTS`, :func:`compose_cfg`, :func:`make_cfg`.
- ``../shared`` (real data, the oracles' code): :data:`SHARED_DATA`, :data:`REFERENCE`, :func:`shared_file`,
  :func:`missing` (skips here, fails under ``THTB_REQUIRE_SHARED=1``).
- ``run.py`` in a subprocess: :func:`run_py` (stage artifacts in :func:`session_cache`).
- The train stage's fixture subset: :data:`ROWS`, :func:`write_subset`.
- A fake OpenAI-compatible server (fault injector): :class:`FakeServer`, :func:`completion`,
  :func:`bloom_answer`, :func:`make_judge`.
- A scripted in-process judge: :class:`ScriptedJudge`; pairwise fixtures :func:`longer_wins`, :func:`outputs`.
- Preprocessing edge cases: :data:`TRICKY`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from thtb.judge import OpenAIJudge, RequestCache
from thtb.judge.local import LocalJudge

# ------------------------------------------------------------------------------------- paths and config
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# ------------------------------------------------------------------ ../shared: real data and the oracles' code
#: ``../shared/data`` beside the checkout, or ``$THTB_SHARED_DATA``; the oracles' code is in ``../reference`` beside it
SHARED_DATA = Path(os.environ.get("THTB_SHARED_DATA") or ROOT.parent / "shared" / "data")
REFERENCE = SHARED_DATA.parent / "reference"
REQUIRE_SHARED = "THTB_REQUIRE_SHARED"


def missing(what: str) -> None:
    """A test's shared input (data, an oracle's code, the SmolLM2 weights, alpaca_eval) is absent: skip on a
    developer's machine, fail under ``THTB_REQUIRE_SHARED=1`` (CI sets it, so a reference check never skips there)."""
    import pytest

    if os.environ.get(REQUIRE_SHARED) == "1":
        pytest.fail(f"{what} — {REQUIRE_SHARED}=1: this check must run (CI keeps ../shared beside the clone)",
                    pytrace=False)
    pytest.skip(what)


def shared_file(*parts: str, base: Path | None = None) -> Path:
    """``SHARED_DATA/<parts>`` (or ``base/<parts>``), checked to exist: :func:`missing` names the path otherwise."""
    path = (base or SHARED_DATA).joinpath(*parts)
    if not path.exists():
        missing(f"{path} not found")
    return path


def compose_cfg(overrides: list[str]):
    """``conf/config.yaml`` composed with ``overrides`` (Hydra's compose API, no job: the default run_dir
    interpolates Hydra's runtime dir, so tests resolving it set ``paths.run_dir``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


# ------------------------------------------------------------------------------- servers started for tests
SERVER_STOPS: dict[str, object] = {}
"""Session fixture name → its running server's ``stop`` (``conftest.py`` calls it after the fixture's last test)."""


def stop_after_last_use(fixture: str, stop) -> None:
    """A session-scoped server fixture calls this once its server runs: the server is stopped right after the
    last test of the session that uses ``fixture`` — not at the end of the session, where an idle (or still
    generating) server would hold memory and CPU while every later test runs beside it."""
    SERVER_STOPS[fixture] = stop


# ------------------------------------------------------------------------------------------ run.py
_session_cache: Path | None = None


def session_cache() -> Path:
    """The stage artifacts of this test session (a temp folder made on first use, removed when the session's
    process exits): tests never reuse artifacts in the repository's .cache, nor leave any behind."""
    global _session_cache
    if _session_cache is None:
        _session_cache = Path(tempfile.mkdtemp(prefix="thtb-test-cache-"))
        atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)
    return _session_cache


def run_py(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python run.py *overrides`` offline; stage artifacts go to :func:`session_cache` unless the test names a
    cache (``paths.cache_dir=…``), so tests that compare two runs see reuse only when they ask for it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    if not any(o.startswith("paths.cache_dir=") for o in overrides):
        overrides = (*overrides, f"paths.cache_dir={session_cache()}")
    return subprocess.run(
        [sys.executable, "run.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------------------------------ train stage
ROWS = [
    ("explain the theory of relativity in simple terms .", "the answer is three ."),
    ("write a poem about the sea and the sky .", "red blue yellow . the sea and the sky ."),
    ("compare the economic policies of two countries .", "evaluate the argument carefully ."),
    ("what is the capital of france ?", "paris ."),
    ("solve the equation x plus two equals five .", "the answer is three ."),
    ("list three primary colours :", "red blue yellow ."),
    ("design a research plan for measuring air quality in cities .", "measuring air quality in cities ."),
    ("evaluate the argument carefully .", "the theory is simple ."),
    ("explain the sea in simple terms .", "the sea and the sky ."),
    ("write a plan for two cities .", "design a research plan ."),
]
"""A ten-row subset the tiny model learns in a few steps."""


def write_subset(run_dir: Path, rows=ROWS) -> Path:
    """``rows`` as the select stage's ``run_dir/selection/subset.jsonl``."""
    path = run_dir / "selection" / "subset.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"s{i}", "query": q, "response": r}) + "\n"
                            for i, (q, r) in enumerate(rows)))
    return path


def make_cfg(tmp_path: Path, *overrides: str) -> dict:
    """The demo experiment's select + train config on the tiny random model (4 steps), resolved."""
    cfg = compose_cfg([
        "+experiment=demo", "stages=[select,train]", "model=tiny_random", "train=cpu_smoke",
        f"paths.run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
        "train.sft.max_length=64", "train.eval_fraction=0.1", "train.sft.max_steps=4", "logger=none", *overrides,
    ])
    return OmegaConf.to_container(cfg, resolve=True)


# ------------------------------------------------------------------ fake OpenAI-compatible server
def completion(text: str, ptok: int = 11, ctok: int = 5) -> dict:
    """An OpenAI chat-completion response body answering ``text``."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok},
    }


def bloom_answer(body: dict) -> str:
    """A deterministic valid Bloom answer depending on the prompt."""
    content = body["messages"][-1]["content"]
    sample = content.split("### Instruction", 1)[-1]
    if "poem" in sample:
        return '{"level": "Create", "score": "10+8", "reasoning": "writes something new"}'
    return '{"level": "Remember", "score": 2, "reasoning": "recall"}'


class FakeServer:
    """An in-process fake OpenAI-compatible server (aiohttp, 127.0.0.1, free port, own thread) used as a fault
    injector: it answers POST /v1/chat/completions from ``script(n, body) -> (status, text | dict, delay_s)``
    and records every request, the maximum number in flight and the headers it saw. ``close()`` when done."""

    def __init__(self) -> None:
        self.script = lambda n, body: (200, bloom_answer(body), 0.0)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_log: list[int] = []  # requests in flight as each request arrived
        self.disconnected = 0  # requests whose client closed the connection before the answer
        self.context_len: int | None = None  # reported by GET /v1/models as vLLM does (max_model_len)
        self.model_name = "fake-judge"
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.in_flight_log.append(self.in_flight)
        try:
            status, payload, delay = self.script(n, body)
            end = time.monotonic() + delay
            while time.monotonic() < end:  # "generating": notice a client that went away, as vLLM does
                await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))
                if request.transport is None or request.transport.is_closing():
                    with self._lock:
                        self.disconnected += 1
                    return web.Response(status=499)
            if isinstance(payload, str) and status == 200:
                payload = completion(payload)
            if isinstance(payload, dict):
                return web.json_response(payload, status=status)
            return web.Response(text=payload, status=status)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _models(self, request: web.Request) -> web.Response:
        entry = {"id": self.model_name, "object": "model", "owned_by": "test"}
        if self.context_len is not None:
            entry["max_model_len"] = self.context_len
        return web.json_response({"object": "list", "data": [entry]})

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def make_judge(server: FakeServer, tmp_path: Path, **kw) -> OpenAIJudge:
    """An :class:`OpenAIJudge` on ``server`` with a fresh cache in ``tmp_path`` and fast retries/backoff."""
    args = dict(model="fake-judge", base_url=server.base_url, cache=RequestCache(tmp_path / "judge.sqlite"),
                concurrency=4, timeout_s=2.0, timeout_per_token_s=0.0, max_retries=3, max_attempts=3,
                backoff_initial_s=0.01, backoff_max_s=0.05, progress=False)
    args.update(kw)
    return OpenAIJudge(**args)


# ---------------------------------------------------------------------------- scripted judges
class ScriptedJudge(LocalJudge):
    """A LocalJudge whose "model" answers from a script: ``answer(conversation) -> text`` (or raises)."""

    backend = "scripted"

    def __init__(self, answer, **kwargs):
        kwargs.setdefault("progress", False)
        super().__init__("scripted-model", **kwargs)
        self.answer = answer
        self.chunks: list[list[list[dict]]] = []

    def _generate(self, conversations, params, template):
        self.chunks.append([list(c) for c in conversations])
        return [(self.answer(c), 10, 3) for c in conversations]


def pairwise_side(conv, tag):
    """The output shown as (a) or (b) in a pairwise prompt."""
    text = conv[1]["content"]
    a = text.split("## Output (a)\n", 1)[1].split("\n\n## Output (b)", 1)[0]
    b = text.split("## Output (b)\n", 1)[1].split("\n\nWhich output", 1)[0]
    return a if tag == "a" else b


def longer_wins(conv):
    """A pairwise judge's answer preferring the longer output (a tie for equal lengths)."""
    a, b = pairwise_side(conv, "a"), pairwise_side(conv, "b")
    verdict = "Output (a)" if len(a) > len(b) else "Output (b)" if len(b) > len(a) else "Tie"
    return f"{verdict}\nIt has more detail."


def outputs(name, texts):
    """A model's pairwise :class:`~thtb.eval.pairwise.Outputs` (no errors; fingerprint = name)."""
    from thtb.eval.pairwise import Outputs

    return Outputs(name=name, text=list(texts), error=[None] * len(texts), fingerprint=name, stats={})


# ------------------------------------------------------------------------------- preprocessing
TRICKY = [
    "snake_case_name and __dunder__",  # `_` is a word character: it survives
    "Explain “quoted” and ‘single’ text — please…",  # non-ASCII punctuation → space
    "Add ٣ and ３ apples 2 times",  # Unicode digits → space
    "abcd中",  # exactly 80% ASCII: not *more* than 80% → jieba
    "abcdefghi中",  # 90% ASCII → English path, 中 kept
    "",  # empty → jieba path → ""
    "   \t\n ",  # whitespace only → English path → ""
    "Café naïve résumé, déjà vu!",
    "tab\tnew\nline\x0bvt\x1cfs\x00nul\x07bell",  # ASCII controls: \x1c is whitespace, \x00 is not
    "non\u00a0breaking\u3000ideographic\u2028space",
    "İstanbul ǅemal ß ﬁne",  # lower() changes the length
    "e\u0301 combining mark",  # U+0301 is not \w: becomes a space
    "Explain X.\nnan",
    "我爱北京天安门，请解释一下。",
    "Translate 'hola' into English: 你好",
]
"""Query-preprocessing edge cases (the authors' rule vs ours, see test_maths_silhouette / test_oracle_authors)."""


# ------------------------------------------------------------------------------------------ markdown
def section(text: str, title: str) -> str:
    """The body of the section headed ``title`` (up to the next heading of the same or a higher level)."""
    lines, fenced, level, body = text.splitlines(), False, None, []
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^(#{1,6})\s+(.+?)\s*$", line)
        if level is None:
            if m and m.group(2) == title:
                level = len(m.group(1))
            continue
        if m and len(m.group(1)) <= level:
            break
        body.append(line)
    if level is None:
        raise AssertionError(f"no section {title!r}")
    return "\n".join(body)


def fenced_block(text: str) -> list[str]:
    """The lines of the first fenced code block in ``text``."""
    m = re.search(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert m, "no fenced code block"
    return m.group(1).splitlines()
