"""OpenAI-compatible LLM judge with a persistent cache, bounded concurrency and retries.

:class:`OpenAIJudge` sends a :class:`~thtb.judge.prompts.PromptTemplate` rendered for each item to
``POST {base_url}/chat/completions`` through the official :class:`openai.AsyncOpenAI` client (its
own retries disabled), and returns one :class:`JudgeResult` per item, in input order.

Per request
-----------
1. Key (:func:`~thtb.judge.cache.make_key`): model, template name+version, messages, decoding
   parameters (template params, then ``decoding`` overrides, then ``extra_body``). Items with
   the same key in one run are sent once.
2. Cache hit (a finished request): its stored value/error is returned (``from_cache=True``, no
   call). In ``reparse`` mode the template's parser is re-applied to the cached raw text, the row
   is updated and **no** call is ever made (a key missing from the cache is an error).
3. Otherwise, at most ``concurrency`` requests are in flight (an :class:`asyncio.Semaphore`).
   Transport errors — timeouts, connection errors, HTTP 408/409/429/5xx — are retried with
   exponential backoff (:mod:`tenacity`, ``max_retries`` retries). A parse failure is re-asked:
   the bad answer and the template's stricter follow-up are appended to the conversation, up to
   ``max_attempts`` answers in all.
4. The request is *finished* once an answer came back: it is cached (value or parse error) and
   committed at once. A transport failure after all retries is returned as an error and not
   cached, so a resumed run retries it.

The API key comes from the environment variable ``api_key_env`` ("EMPTY" when unset, for local
servers). It is kept in a private attribute only: never logged, cached or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from thtb.judge.cache import CacheRecord, RequestCache, make_key
from thtb.judge.parsers import ParseError
from thtb.judge.prompts import PromptTemplate

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429})


@dataclass
class JudgeResult:
    """The outcome of one item: ``value`` when parsed, else ``error`` (never both)."""

    value: Any = None
    error: str | None = None
    raw: str | None = None
    from_cache: bool = False
    attempts: int = 0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _plain(obj: Any) -> Any:
    """Mappings/sequences (e.g. OmegaConf containers from Hydra) → plain dicts/lists, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return [_plain(v) for v in obj]
    return obj


class NoChoicesError(RuntimeError):
    """A 200 answer without choices (recorded like a transport failure: not cached, not retried)."""


def is_transient(exc: BaseException) -> bool:
    """Timeouts, connection errors and HTTP 408/409/429/5xx are worth retrying."""
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | asyncio.TimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return False


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__


class OpenAIJudge:
    """Judge over an OpenAI-compatible chat-completions endpoint (see module doc).

    Args:
        model: the served model id (part of every cache key).
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable holding the API key ("EMPTY" when unset).
        concurrency: most requests in flight.
        timeout_s: per-request timeout.
        max_retries: transport retries per answer (so ``max_retries + 1`` tries).
        max_attempts: answers asked per item when answers do not parse (1 = no re-ask).
        extra_body: extra JSON fields for the server (e.g. ``{"chat_template_kwargs":
            {"enable_thinking": False}}``); part of the cache key.
        cache: a :class:`RequestCache`, a path to one, or ``None`` (no cache).
        reparse: re-apply parsers to cached raw text; never call the server.
        decoding: overrides of the templates' decoding parameters (e.g. ``max_tokens``).
        backoff_initial_s, backoff_max_s: exponential backoff bounds of transport retries.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        max_attempts: int = 3,
        extra_body: Mapping[str, Any] | None = None,
        cache: RequestCache | str | Path | None = None,
        reparse: bool = False,
        decoding: Mapping[str, Any] | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        progress: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = str(model)
        self.base_url = str(base_url)
        self.api_key_env = api_key_env
        self.__api_key = os.environ.get(api_key_env) or "EMPTY"
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.max_attempts = int(max_attempts)
        self.extra_body = _plain(extra_body) if extra_body else None
        self.cache = RequestCache(cache) if isinstance(cache, str | Path) else cache
        self.reparse = bool(reparse)
        if self.reparse and self.cache is None:
            raise ValueError("reparse mode needs a cache")
        self.decoding = _plain(decoding) if decoding else {}
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.progress = bool(progress)
        self._counters = {
            "calls": 0, "retries": 0, "reasks": 0, "cache_hits": 0, "reparsed": 0, "failures": 0,
            "parse_failures": 0, "transport_failures": 0, "items": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "wall_s": 0.0,
        }

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency}, cache={self.cache!r}, reparse={self.reparse})"
        )

    # ------------------------------------------------------------------------------- public
    def params(self, template: PromptTemplate) -> dict[str, Any]:
        """The decoding parameters of ``template`` as sent (and keyed): overrides, extra_body."""
        params = {**dict(template.params), **self.decoding}
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    def key(self, template: PromptTemplate, item: Mapping[str, Any]) -> str:
        return make_key(self.model, template.name, template.version, template.messages(item), self.params(template))

    def run(self, template: PromptTemplate, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        """Judge every item (sync wrapper over :meth:`arun`); results in input order."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(template, items))
        box: dict[str, Any] = {}

        def target() -> None:  # called from inside a running loop (e.g. Jupyter): own thread
            try:
                box["out"] = asyncio.run(self.arun(template, items))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                box["exc"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "exc" in box:
            raise box["exc"]
        return box["out"]

    async def arun(self, template: PromptTemplate, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        start = time.perf_counter()
        groups: dict[str, list[int]] = {}
        messages: dict[str, list[dict[str, str]]] = {}
        for i, item in enumerate(items):
            msgs = template.messages(item)
            k = make_key(self.model, template.name, template.version, msgs, self.params(template))
            groups.setdefault(k, []).append(i)
            messages[k] = msgs
        results: list[JudgeResult | None] = [None] * len(items)
        client = None
        if not self.reparse:
            client = openai.AsyncOpenAI(
                api_key=self.__api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
            )
        semaphore = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=len(items), desc=f"judge:{template.name}", disable=not self.progress, leave=False)

        async def one(k: str) -> None:
            result = await self._one(client, semaphore, template, k, messages[k])
            for i in groups[k]:
                results[i] = result
            bar.update(len(groups[k]))

        try:
            await asyncio.gather(*(one(k) for k in groups))
        finally:
            bar.close()
            if client is not None:
                await client.close()
        c = self._counters
        c["items"] += len(items)
        c["failures"] += sum(1 for r in results if r is not None and r.error is not None)
        c["wall_s"] += time.perf_counter() - start
        return [r for r in results if r is not None]

    def stats(self) -> dict[str, Any]:
        """Counters for summary.json: calls (HTTP requests), retries, re-asks, cache hits, failures
        (items returned with an error), tokens, wall time; plus the model and cache file."""
        out: dict[str, Any] = dict(self._counters)
        out["wall_s"] = round(out["wall_s"], 3)
        out["model"] = self.model
        out["cache"] = str(self.cache.path) if self.cache is not None else None
        return out

    # ----------------------------------------------------------------------------- internals
    async def _one(
        self,
        client: openai.AsyncOpenAI | None,
        semaphore: asyncio.Semaphore,
        template: PromptTemplate,
        key: str,
        msgs: list[dict[str, str]],
    ) -> JudgeResult:
        cached = self.cache.get(key) if self.cache is not None else None
        if self.reparse:
            if cached is None:
                return JudgeResult(error="reparse: request not in cache")
            return self._reparse(template, key, cached)
        if cached is not None:
            self._counters["cache_hits"] += 1
            return JudgeResult(
                value=cached.parsed if cached.error is None else None, error=cached.error, raw=cached.raw,
                from_cache=True, attempts=cached.attempts, latency_s=cached.latency_s,
                prompt_tokens=cached.prompt_tokens, completion_tokens=cached.completion_tokens,
            )
        assert client is not None
        conversation = list(msgs)
        result = JudgeResult()
        async with semaphore:
            for attempt in range(1, self.max_attempts + 1):
                result.attempts = attempt
                try:
                    raw, ptok, ctok, latency = await self._call(client, template, conversation)
                except Exception as exc:  # noqa: BLE001 - every transport failure is recorded
                    self._counters["transport_failures"] += 1
                    log.warning("judge %s: request failed after retries: %s", template.name, _describe_exc(exc))
                    result.error = f"transport: {_describe_exc(exc)} after {self.max_retries + 1} tries"
                    return result  # not finished: not cached
                result.raw = raw
                result.latency_s += latency
                result.prompt_tokens += ptok
                result.completion_tokens += ctok
                try:
                    result.value, result.error = template.parser(raw), None
                    break
                except ParseError as exc:
                    result.value, result.error = None, f"parse: {exc}"
                    if attempt < self.max_attempts:
                        self._counters["reasks"] += 1
                        conversation = [
                            *conversation,
                            {"role": "assistant", "content": raw},
                            {"role": "user", "content": template.followup_message(str(exc))},
                        ]
        if result.error is not None:
            self._counters["parse_failures"] += 1
            result.error = f"{result.error} (after {result.attempts} answers)"
        if self.cache is not None:
            self.cache.put(
                key,
                CacheRecord(
                    raw=result.raw or "", parsed=result.value, error=result.error, latency_s=result.latency_s,
                    prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                    attempts=result.attempts, model=self.model, template=template.id,
                ),
            )
        return result

    def _reparse(self, template: PromptTemplate, key: str, cached: CacheRecord) -> JudgeResult:
        self._counters["reparsed"] += 1
        try:
            value, error = template.parser(cached.raw), None
        except ParseError as exc:
            value, error = None, f"parse: {exc} (reparse)"
        if self.cache is not None and (error != cached.error or value != cached.parsed):
            cached.parsed, cached.error = value, error
            self.cache.put(key, cached)
        return JudgeResult(
            value=value, error=error, raw=cached.raw, from_cache=True, attempts=cached.attempts,
            latency_s=cached.latency_s, prompt_tokens=cached.prompt_tokens, completion_tokens=cached.completion_tokens,
        )

    async def _call(
        self, client: openai.AsyncOpenAI, template: PromptTemplate, conversation: list[dict[str, str]]
    ) -> tuple[str, int, int, float]:
        """One answer (with transport retries): raw text, prompt/completion tokens, latency."""
        params = {**dict(template.params), **self.decoding}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self._counters["retries"] += 1
                self._counters["calls"] += 1
                t0 = time.perf_counter()
                response = await client.chat.completions.create(
                    model=self.model, messages=conversation, extra_body=self.extra_body, **params
                )
                latency = time.perf_counter() - t0
                if not response.choices:
                    raise NoChoicesError("the server returned no choices")
                content = response.choices[0].message.content
                usage = response.usage
                ptok = int(getattr(usage, "prompt_tokens", 0) or 0)
                ctok = int(getattr(usage, "completion_tokens", 0) or 0)
                self._counters["prompt_tokens"] += ptok
                self._counters["completion_tokens"] += ctok
                return (content or "", ptok, ctok, latency)
        raise AssertionError("unreachable")
