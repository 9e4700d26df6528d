"""Benchmarks of the LLM-judge client (figures only, no asserts).

Sections (``--only``):

* ``vllm`` — the judge client against a real vLLM server (``thtb.serve``, SmolLM2-135M-Instruct) vs the server's
  own ceiling, the requests a run sends when every send times out, the server's memory (:func:`bench_vllm`).
* ``vllm2`` — the judge over two vLLM servers (``judge.base_url`` a list) vs their joint ceiling, and how its sends
  split between the servers (:func:`bench_vllm2`).
* ``demo`` — the served-judge demo (``run.py +experiment=demo stages=[select] scoring=served``) against
  ``python -m thtb.serve --model smollm2``'s defaults (vLLM): memory, wall time, judge requests (:func:`bench_demo`).
* ``served`` — requests/s and mean latency through :class:`~thtb.judge.client.OpenAIJudge` against a
  local ``transformers serve`` SmolLM2-135M-Instruct server: concurrency 1 (the authors' sequential
  loop) vs concurrency 8, N distinct DISCIPLINES prompts from ``thtb/resources/demo.jsonl``
  (``max_tokens=32``, one answer per item), a fresh temporary cache per run (no hits). Runs against the
  default server and one started with ``--continuous-batching`` (two server starts).
* ``hf`` — requests/s through the in-process :class:`~thtb.judge.local.HFJudge` (transformers' batched
  ``generate``; SmolLM2-135M-Instruct offline by default, ``--model``/``--device`` for others) with
  batch size 1 vs 8 on the same N DISCIPLINES prompts (``max_tokens=32``, no cache).
* ``replay`` — a RequestCache filled with 10,000 synthetic finished records, then one ``run()`` over
  those 10,000 items served entirely from the cache (zero calls). ``--profile`` adds a cProfile of it.
* ``overhead`` — the client's added latency per request: a minimal in-process server (the standard library's
  ``http.server``) on 127.0.0.1 answering ``/v1/chat/completions`` instantly with a canned completion; raw
  ``httpx`` POSTs in a loop vs ``OpenAIJudge.run`` (concurrency 1, no cache); ms per request each and the difference.

Usage::

    python benchmarks/bench_judge.py --only replay --profile
    python benchmarks/bench_judge.py --only served --n 24
    python benchmarks/bench_judge.py --only hf --n 32 --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("WANDB_MODE", "disabled")):
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from thtb.io import read_jsonl  # noqa: E402
from thtb.judge.cache import CacheRecord, RequestCache  # noqa: E402
from thtb.judge.client import OpenAIJudge  # noqa: E402
from thtb.judge.flow import JudgeStalledError  # noqa: E402
from thtb.judge.local import HFJudge  # noqa: E402
from thtb.judge.prompts import BLOOM, DISCIPLINES  # noqa: E402
from thtb.serve import PeakMemory, ServedModel, serving_available  # noqa: E402

DEMO = REPO / "thtb" / "resources" / "demo.jsonl"


def demo_items(n: int) -> list[dict]:
    """The first ``n`` distinct queries (instruction + input) of the packaged demo file."""
    queries = [r.get("instruction", "").strip() + (f"\n\n{r['input'].strip()}" if r.get("input") else "")
               for r in read_jsonl(DEMO)]
    return [{"query": q} for q in list(dict.fromkeys(q for q in queries if q))[:n]]


def _timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), the seconds it took)``."""
    t0 = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t0


def bench_served(n: int = 24, concurrencies=(1, 8), max_tokens: int = 32, modes=(False, True)) -> None:
    if reason := serving_available("transformers"):
        print(f"served: skipped ({reason})")
        return
    items = demo_items(n)
    for cb in modes:
        label = "continuous-batching" if cb else "default"
        try:
            server = ServedModel("smollm2", engine="transformers", continuous_batching=cb).start()
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"served {label}: skipped, server did not start ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        try:
            print(f"served {label}: server healthy in {server.startup_s:.1f} s (model {server.model})")
            kw = dict(decoding={"max_tokens": max_tokens}, max_attempts=1, max_retries=0, progress=False, timeout_s=300)
            # One warm-up request (first-call compile/allocation), not counted.
            with tempfile.TemporaryDirectory() as tmp:
                OpenAIJudge(server.model, server.base_url, concurrency=1, cache=Path(tmp) / "warm.sqlite", **kw).run(
                    DISCIPLINES, [{"query": "Warm-up: what is 2 + 2?"}])
            for conc in concurrencies:
                with tempfile.TemporaryDirectory() as tmp:
                    judge = OpenAIJudge(server.model, server.base_url, concurrency=conc,
                                        cache=Path(tmp) / "cache.sqlite", **kw)
                    results, wall = _timed(judge.run, DISCIPLINES, items)
                    judge.cache.close()
                st = judge.stats()
                lat = [r.latency_s for r in results if r.latency_s > 0]
                mean_lat = sum(lat) / len(lat) if lat else float("nan")
                ok = sum(r.ok for r in results)
                print(f"served {label} concurrency={conc}: {len(items)} req in {wall:.2f} s = "
                      f"{len(items) / wall:.2f} req/s, mean latency {mean_lat * 1000:.0f} ms "
                      f"(calls {st['calls']}, cache_hits {st['cache_hits']}, parsed {ok}/{len(items)}, "
                      f"transport_failures {st['transport_failures']}, completion_tokens {st['completion_tokens']})")
        finally:
            server.stop()


def _raw_loop(base_url: str | list[str], model: str, convs: list, params: dict, concurrency: int) -> tuple[float, int]:
    """The servers' ceiling: a bare AsyncOpenAI loop (no cache, no parsing), ``concurrency`` workers per server
    pulling the next prompt from one shared queue (several servers: their joint ceiling); (wall s, tokens)."""
    urls = [base_url] if isinstance(base_url, str) else list(base_url)

    async def go() -> tuple[float, int]:
        clients = [openai.AsyncOpenAI(base_url=u, api_key="EMPTY", max_retries=0, timeout=600) for u in urls]
        pending = iter(convs)  # one queue for every worker: each pulls the next prompt when it is free
        tokens: list[int] = []

        async def worker(client) -> None:
            for messages in pending:
                r = await client.chat.completions.create(model=model, messages=messages, **params)
                tokens.append(r.usage.completion_tokens)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        for client in clients:
            await client.close()
        return wall, sum(tokens)

    return asyncio.run(go())


def _vllm_prompts(section: str, n: int, max_tokens: int) -> tuple[list, dict, list] | None:
    """(items, decoding params, conversations) of ``n`` DISCIPLINES prompts, or ``None`` (said) without vLLM."""
    if reason := serving_available("vllm"):
        print(f"{section}: skipped ({reason})")
        return None
    items = demo_items(n)
    return items, {**dict(DISCIPLINES.params), "max_tokens": max_tokens}, [DISCIPLINES.messages(it) for it in items]


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB ({nbytes / 1e9:.2f} GB)"


def bench_vllm(n: int = 64, max_tokens: int = 64, concurrencies=(4, 8, 16, 32), storm_n: int = 12,
               max_num_seqs: int | None = None, kv_cache_gb: float | None = None) -> None:
    """OpenAIJudge vs the vLLM server's own ceiling on the same prompts, and the request count under timeouts.

    One vLLM server (``thtb.serve``, SmolLM2, prefix caching off so repeated prompts cost the same each round;
    its KV cache as ``thtb.serve`` sizes it unless ``max_num_seqs``/``kv_cache_gb``). Ceiling: the best of a raw
    async loop over ``concurrencies``; then the judge (no cache, one answer per item) at that concurrency, then the
    raw loop again — the ratio is judge / mean(raw best, raw again). Storm: BLOOM prompts at max_tokens 512 with a
    1 s send timeout (every send times out), max_attempts 3: requests sent vs distinct × 3, and vLLM's running
    requests 2 s after the stop (cancelled sends are aborted). Memory: the server tree's resident memory when
    ready and its peak over the whole run (:class:`thtb.serve.PeakMemory`: PSS, shared pages split between the
    processes, and RSS summed per process)."""
    prompts = _vllm_prompts("vllm", n, max_tokens)
    if prompts is None:
        return
    items, params, convs = prompts
    with ServedModel("smollm2", engine="vllm", max_model_len=2048, dtype="bfloat16", max_num_seqs=max_num_seqs,
                     kv_cache_gb=kv_cache_gb, extra_args=["--no-enable-prefix-caching"]) as server, \
            PeakMemory(server.pid) as memory:
        print(f"vllm: server healthy in {server.startup_s:.1f} s (model {server.model}, max_model_len "
              f"{server.max_model_len}, max_num_seqs {server.effective_max_num_seqs()}); KV cache "
              f"{server.kv_cache_plan().describe()}, vLLM: {server.kv_cache_tokens} tokens")
        ready = memory.sample()
        _raw_loop(server.base_url, server.model, convs[:8], params, 8)  # warm-up, not counted
        best = (0.0, None)
        for conc in concurrencies:
            wall, toks = _raw_loop(server.base_url, server.model, convs, params, conc)
            print(f"vllm raw loop concurrency={conc}: {n / wall:.2f} req/s, {toks / wall:.0f} generated tok/s")
            if n / wall > best[0]:
                best = (n / wall, conc)
        conc = best[1]
        judge = OpenAIJudge(server.model, server.base_url, concurrency=conc, cache=None, decoding={"max_tokens": max_tokens},
                            max_attempts=1, progress=False)
        # one-time set-up, like the raw loop's warm-up: the context check's tokenizer and /v1/models, once per judge
        _, setup = _timed(judge.run, DISCIPLINES, [{"query": "Warm-up: what is 2 + 2?"}])
        print(f"vllm judge set-up (tokenizer + /v1/models + one request): {setup:.2f} s")
        calls0, toks0 = judge.stats()["calls"], judge.stats()["completion_tokens"]
        results, jwall = _timed(judge.run, DISCIPLINES, items)
        st = judge.stats()
        st["calls"] -= calls0
        st["completion_tokens"] -= toks0
        again, _ = _raw_loop(server.base_url, server.model, convs, params, conc)
        ceiling = (best[0] + n / again) / 2
        print(f"vllm judge concurrency={conc}: {n / jwall:.2f} req/s ({st['completion_tokens'] / jwall:.0f} tok/s, "
              f"calls {st['calls']}, parsed {sum(r.ok for r in results)}/{n}, lowest limit {st['concurrency_lowest']}) "
              f"vs ceiling {ceiling:.2f} req/s (raw best {best[0]:.2f}, raw again {n / again:.2f}): "
              f"**{100 * n / jwall / ceiling:.0f}%** (target ≥ 90%)")
        # storm: every send times out
        storm = [{"query": f"Write a long, detailed essay about topic {i}.", "response": "…"} for i in range(storm_n)]
        with tempfile.TemporaryDirectory() as tmp:
            judge = OpenAIJudge(server.model, server.base_url, concurrency=8, timeout_s=1.0, timeout_per_token_s=0.0,
                                stall_timeout_s=20.0, max_retries=5, max_attempts=3, backoff_initial_s=0.5,
                                cache=Path(tmp) / "storm.sqlite", decoding={"max_tokens": 512, "temperature": 0.0},
                                context_len=0, progress=False)
            t0 = time.perf_counter()
            try:
                out = judge.run(BLOOM, storm)
                outcome = f"finished ({sum(r.ok for r in out)} answered)"
            except JudgeStalledError:
                outcome = "stopped: no progress (JudgeStalledError)"
            took = time.perf_counter() - t0
            judge.cache.close()
        st = judge.stats()
        time.sleep(2.0)
        running = server.metrics().get("num_requests_running", float("nan"))
        print(f"vllm storm: {st['calls']} requests sent for {storm_n} distinct (cap {storm_n * 3}), "
              f"{st['timeouts']} timed out, lowest limit {st['concurrency_lowest']}, {outcome} after {took:.1f} s; "
              f"vLLM running 2 s later: {running:.0f}")
    peak = memory.peak
    print(f"vllm server memory, whole tree ({peak['processes']} processes: the supervisor, API server, EngineCore, "
          f"worker...): ready {_gib(ready['pss'])} PSS; **peak {_gib(peak['pss'])} PSS** over the run "
          f"({memory.samples} samples; RSS summed per process, shared pages counted in each: ready "
          f"{_gib(ready['rss'])}, peak {_gib(peak['rss'])})")


def bench_vllm2(n: int = 64, max_tokens: int = 64, concurrencies=(4, 8)) -> None:
    """OpenAIJudge over two vLLM servers (``thtb.serve``'s defaults, SmolLM2) vs their joint ceiling on the same
    prompts (one run): the best raw loop over ``concurrencies`` (workers per server, pulling from one queue), the
    judge at that concurrency per server, the raw loop again; ratio = judge / mean(raw best, raw again)."""
    prompts = _vllm_prompts("vllm2", n, max_tokens)
    if prompts is None:
        return
    items, params, convs = prompts
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ServedModel("smollm2", engine="vllm", env={"VLLM_CPU_KVCACHE_SPACE": ""},
                                                   extra_args=["--no-enable-prefix-caching"])) for _ in range(2)]
        urls = [s.base_url for s in servers]
        model = servers[0].model
        print(f"vllm2: two servers healthy in {', '.join(f'{s.startup_s:.1f}' for s in servers)} s "
              f"(executor {servers[0].info()['executor']}, max_num_seqs {servers[0].effective_max_num_seqs()} each)")
        for url in urls:
            _raw_loop(url, model, convs[:8], params, 8)  # warm-up, not counted
        best = (0.0, None)
        for conc in concurrencies:
            wall, toks = _raw_loop(urls, model, convs, params, conc)
            print(f"vllm2 raw loop over both, {conc} per server: {n / wall:.2f} req/s, {toks / wall:.0f} tok/s")
            if n / wall > best[0]:
                best = (n / wall, conc)
        conc = best[1]
        judge = OpenAIJudge(model, urls, concurrency=conc, cache=None, decoding={"max_tokens": max_tokens},
                            max_attempts=1, progress=False)
        judge.run(DISCIPLINES, [{"query": "Warm-up: what is 2 + 2?"}])  # tokenizer + /v1/models, once per judge
        calls0 = dict(judge.stats()["server_calls"])
        results, jwall = _timed(judge.run, DISCIPLINES, items)
        split = [judge.stats()["server_calls"][u] - calls0[u] for u in urls]
        again, _ = _raw_loop(urls, model, convs, params, conc)
    ceiling = (best[0] + n / again) / 2
    print(f"vllm2 judge over both, concurrency {conc} per server: {n / jwall:.2f} req/s (sends {split[0]} + {split[1]}, "
          f"parsed {sum(r.ok for r in results)}/{n}) vs joint ceiling {ceiling:.2f} req/s (raw best {best[0]:.2f}, "
          f"raw again {n / again:.2f}): **{100 * n / jwall / ceiling:.0f}%** (goal ≥ 90%)")


def bench_demo() -> None:
    """The served-judge demo against the project's vLLM server as ``python -m thtb.serve --model smollm2`` starts
    it (no option given): the server tree's PSS when ready and its peak while the demo runs (sampled every 0.2 s),
    where the model runs (``executor``), the demo's wall time, judge requests and whether it selected."""
    if reason := serving_available("vllm"):
        print(f"demo: skipped ({reason})")
        return
    env = {"VLLM_CPU_KVCACHE_SPACE": ""}  # the server's own sizing, as the CLI does without the variable
    with tempfile.TemporaryDirectory() as tmp, ServedModel("smollm2", engine="vllm", env=env) as server:
        info = server.info()
        with PeakMemory(server.pid, interval_s=0.2) as memory:
            ready = memory.sample()
            proc, wall = _timed(
                subprocess.run,
                [sys.executable, str(REPO / "run.py"), "+experiment=demo", "stages=[select]", "scoring=served",
                 f"judge.base_url={server.base_url}", f"judge.model={server.model}", f"judge.cache={tmp}/judge.sqlite",
                 "judge.failure_budget=1000", "reuse=false", f"hydra.run.dir={tmp}/run", f"paths.cache_dir={tmp}/cache"],
                capture_output=True, text=True, cwd=REPO)
        peak = memory.peak
        if proc.returncode != 0:
            print(f"demo: run.py exited {proc.returncode}:\n{proc.stderr[-2000:]}")
            return
        summary = json.loads((Path(tmp) / "run" / "selection" / "summary.json").read_text())
    judge = summary["scorers"]["judge"]
    print(f"demo: served-judge demo against thtb.serve's vLLM defaults (executor {info['executor']}, KV cache "
          f"{info['kv_cache_gib']} GiB, max_num_seqs {info['max_num_seqs']}): {wall:.0f} s wall, {judge['calls']} "
          f"judge requests, {judge['failures']} failed, {summary['n_selected']} selected")
    print(f"demo: vllm server memory, whole tree ({peak['processes']} processes): ready {_gib(ready['pss'])} PSS; "
          f"**peak {_gib(peak['pss'])} PSS** over the demo ({memory.samples} samples; RSS "
          f"summed per process: ready {_gib(ready['rss'])}, peak {_gib(peak['rss'])})")


def bench_hf(n: int = 24, batch_sizes=(1, 8), max_tokens: int = 32, model: str = "smollm2",
             device: str = "auto") -> None:
    items = demo_items(n)
    judge = HFJudge(model, device=device, batch_size=1, decoding={"max_tokens": max_tokens}, max_attempts=1,
                    progress=False)
    (_, loaded), load_s = _timed(judge._load)
    print(f"hf: {model} loaded on {loaded.device} ({loaded.dtype}) in {load_s:.1f} s")
    judge.run(DISCIPLINES, [{"query": "Warm-up: what is 2 + 2?"}])
    for bs in batch_sizes:
        judge.batch_size = bs
        before = judge.stats()["completion_tokens"]
        results, wall = _timed(judge.run, DISCIPLINES, items)
        ctok = judge.stats()["completion_tokens"] - before
        ok = sum(r.ok for r in results)
        print(f"hf batch_size={bs}: {len(items)} req in {wall:.2f} s = {len(items) / wall:.2f} req/s, "
              f"{ctok / wall:.0f} generated tok/s (parsed {ok}/{len(items)})")


def bench_replay(n: int = 10_000, profile: bool = False, top: int = 25) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = RequestCache(Path(tmp) / "replay.sqlite")
        judge = OpenAIJudge("synthetic-model", "http://127.0.0.1:9/v1", concurrency=8, cache=cache, progress=False)
        items = [{"query": f"Synthetic question number {i}: explain topic {i % 97} in detail."} for i in range(n)]
        t0 = time.perf_counter()
        for item in items:
            cache.put(judge.key(DISCIPLINES, item),
                      CacheRecord(raw="physics, mathematics", parsed=["physics", "mathematics"], latency_s=0.5,
                                  prompt_tokens=100, completion_tokens=5, model=judge.model, template=DISCIPLINES.id))
        fill = time.perf_counter() - t0
        print(f"replay: filled {len(cache):,} records in {fill:.2f} s (one commit per put, not counted)")

        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        with prof or contextlib.nullcontext():  # a Profile is a context manager: enabled inside, disabled after
            results = judge.run(DISCIPLINES, items)
        wall = time.perf_counter() - t0
        st = judge.stats()
        hits = sum(r.from_cache for r in results)
        print(f"replay: run() over {n:,} cached items in {wall:.2f} s ({wall / n * 1e6:.0f} us/item; "
              f"calls {st['calls']}, cache_hits {st['cache_hits']}, from_cache {hits}/{n})"
              + (" [under cProfile]" if profile else ""))
        # Break-down without the event loop: key computation and cache lookups alone.
        keys, t_keys = _timed(lambda: [judge.key(DISCIPLINES, it) for it in items])
        _, t_get = _timed(lambda: [cache.get(k) for k in keys])
        print(f"replay: keys alone {t_keys:.2f} s, cache.get alone {t_get:.2f} s ({t_get / n * 1e6:.0f} us/get)")
        for order in ("cumulative", "tottime") if prof is not None else ():
            print(f"replay profile ({order}):")
            pstats.Stats(prof, stream=sys.stdout).sort_stats(order).print_stats(top)
            print()
        cache.close()


_CANNED = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "physics, mathematics"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
}


class _Canned(BaseHTTPRequestHandler):
    """Answers ``POST /v1/chat/completions`` at once with :data:`_CANNED` (HTTP/1.1 keep-alive, no log lines); the
    standard library's threading server runs it (:func:`_canned_server`)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK wait between them
    body = json.dumps(_CANNED).encode()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _canned_server():
    """The canned server on 127.0.0.1 (a free port) in a thread of its own; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def bench_overhead(n: int = 500, repeats: int = 3) -> None:
    items = [{"query": f"Overhead probe {i}: what field studies topic {i}?"} for i in range(n)]
    with _canned_server() as base_url:
        url = f"{base_url}/chat/completions"
        judge0 = OpenAIJudge("canned", base_url, concurrency=1, cache=None, progress=False)
        payloads = [{"model": "canned", "messages": DISCIPLINES.messages(it), **judge0.params(DISCIPLINES)}
                    for it in items]
        raw_ms, judge_ms = [], []
        for _ in range(repeats):
            with httpx.Client(timeout=30) as client:
                client.post(url, json=payloads[0]).raise_for_status()  # connect, not counted
                t0 = time.perf_counter()
                for p in payloads:
                    r = client.post(url, json=p)
                    r.raise_for_status()
                    r.json()
                raw_ms.append((time.perf_counter() - t0) / n * 1000)
            judge = OpenAIJudge("canned", base_url, concurrency=1, cache=None, progress=False, max_attempts=1)
            results, seconds = _timed(judge.run, DISCIPLINES, items)
            judge_ms.append(seconds / n * 1000)
        ok = sum(r.ok for r in results)
        raw, jm = min(raw_ms), min(judge_ms)
        print(f"overhead: raw httpx POST loop {raw:.2f} ms/request (best of {repeats} x {n}; all {', '.join(f'{x:.2f}' for x in raw_ms)})")
        print(f"overhead: OpenAIJudge.run concurrency=1 no cache {jm:.2f} ms/request (best of {repeats} x {n}; "
              f"all {', '.join(f'{x:.2f}' for x in judge_ms)}; calls {judge.stats()['calls']}, parsed {ok}/{n})")
        print(f"overhead: client adds {jm - raw:.2f} ms/request over raw httpx")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sections = ("vllm", "vllm2", "demo", "served", "hf", "replay", "overhead")
    parser.add_argument("--only", choices=[*sections, "all"], default="all")
    parser.add_argument("--n", type=int, default=24, help="served: distinct prompts")
    parser.add_argument("--n-vllm", type=int, default=64, help="vllm: distinct prompts")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="vllm: the server's (default thtb.serve's)")
    parser.add_argument("--kv-cache-gb", type=float, default=None, help="vllm: the server's KV cache, GiB "
                        "(default thtb.serve's: what max-num-seqs sequences of 2048 tokens need)")
    parser.add_argument("--max-tokens", type=int, default=32, help="served: max_tokens override")
    parser.add_argument("--modes", default="default,continuous-batching", help="served: server modes to run")
    parser.add_argument("--model", default="smollm2", help="hf: model id, folder or smollm2")
    parser.add_argument("--device", default="auto", help="hf: auto | cpu | cuda")
    parser.add_argument("--n-replay", type=int, default=10_000, help="replay: cached records")
    parser.add_argument("--profile", action="store_true", help="replay: cProfile the run() and print the top")
    parser.add_argument("--n-overhead", type=int, default=500, help="overhead: requests per repeat")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() == "continuous-batching" for m in args.modes.split(",") if m.strip())
    benches = {
        "vllm": lambda: bench_vllm(n=args.n_vllm, max_num_seqs=args.max_num_seqs, kv_cache_gb=args.kv_cache_gb),
        "vllm2": lambda: bench_vllm2(n=args.n_vllm),
        "demo": bench_demo,
        "served": lambda: bench_served(n=args.n, max_tokens=args.max_tokens, modes=modes),
        "hf": lambda: bench_hf(n=args.n, max_tokens=args.max_tokens, model=args.model, device=args.device),
        "replay": lambda: bench_replay(n=args.n_replay, profile=args.profile),
        "overhead": lambda: bench_overhead(n=args.n_overhead),
    }
    for name in sections if args.only == "all" else [args.only]:
        benches[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
