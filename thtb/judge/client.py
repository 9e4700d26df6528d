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

Runs in other processes on the same cache file: a request is sent only under its lease, taken when
it gets a concurrency slot (:mod:`thtb.judge.base`, "shared in flight"). A request another process is
sending gives its slot back and waits — ``asyncio.sleep`` between looks, so the event loop keeps
serving the other requests — for the row that process writes, or for the lease to become free (that
process failed or died: then it is sent here). The wait is bounded by ``lease_wait_s``, by default
the longest a request can take under this judge's own timeout, retries and re-asks (plus a minute).

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
from pathlib import Path
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from thtb.judge.base import JudgeBackend, JudgeResult, LeaseWait, Messages
from thtb.judge.cache import CACHED, CLAIMED, HELD, RequestCache
from thtb.judge.prompts import PromptTemplate

__all__ = ["JudgeResult", "NoChoicesError", "OpenAIJudge", "is_transient"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429})


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


class OpenAIJudge(JudgeBackend):
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
        lease_wait_s: the longest wait for a request another process is sending (see module doc).
    """

    backend = "openai"

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
        lease_wait_s: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        super().__init__(model, max_attempts=max_attempts, cache=cache, reparse=reparse, decoding=decoding,
                         extra_body=extra_body, progress=progress, lease_wait_s=lease_wait_s)
        self.base_url = str(base_url)
        self.api_key_env = api_key_env
        self.__api_key = os.environ.get(api_key_env) or "EMPTY"
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency}, cache={self.cache!r}, reparse={self.reparse})"
        )

    def default_lease_wait_s(self) -> float:
        """The longest one request can take here — every try timing out, every backoff at its longest,
        ``max_attempts`` answers — plus a minute."""
        backoffs = sum(min(self.backoff_initial_s * 2 ** i, self.backoff_max_s) for i in range(self.max_retries))
        return ((self.max_retries + 1) * self.timeout_s + backoffs) * self.max_attempts + 60.0

    # ------------------------------------------------------------------------------- public
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
        groups, messages = self._group(template, items)
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
        return self._tally(results, len(items), start)

    # ----------------------------------------------------------------------------- internals
    async def _one(
        self,
        client: openai.AsyncOpenAI | None,
        semaphore: asyncio.Semaphore,
        template: PromptTemplate,
        key: str,
        msgs: Messages,
    ) -> JudgeResult:
        hit = self._lookup(template, key)
        if hit is not None:
            return hit
        assert client is not None
        if self.cache is None:
            async with semaphore:
                return await self._ask(client, template, key, msgs)
        wait: LeaseWait | None = None
        force = False
        while True:
            async with semaphore:
                state = self.cache.claim([key], force=(key,) if force else ())[key]
                if state == CACHED:
                    shared = self._shared(template, key)
                    if shared is not None:
                        return shared
                if state == CLAIMED or force:  # forced: ours, unless a row came and went — asked anyway
                    try:
                        return await self._ask(client, template, key, msgs)
                    finally:  # failed (transport errors are not cached) or interrupted: a waiting process takes
                        self._release([key])  # it over; a no-op once its row is written
            # another live process is sending it: wait outside the slot for its row, or for the lease to free up
            if wait is None:
                wait = LeaseWait(self.lease_wait_s)
            wait.reset()
            while True:
                if wait.expired():
                    log.warning("judge %s: waited %.0f s for a request another process is sending; sending it here",
                                template.name, wait.limit_s)
                    force = True
                    break
                await asyncio.sleep(wait.next_delay())
                state = self.cache.lease_states([key])[key]
                if state == CACHED:
                    shared = self._shared(template, key)
                    if shared is not None:
                        return shared
                if state != HELD:
                    break

    async def _ask(self, client: openai.AsyncOpenAI, template: PromptTemplate, key: str, msgs: Messages) -> JudgeResult:
        """Send one request (re-asked while its answers do not parse); cache it once finished."""
        conversation = list(msgs)
        result = JudgeResult()
        while True:
            try:
                raw, ptok, ctok, latency = await self._call(client, template, conversation)
            except Exception as exc:  # noqa: BLE001 - every transport failure is recorded
                self._counters["transport_failures"] += 1
                log.warning("judge %s: request failed after retries: %s", template.name, _describe_exc(exc))
                result.attempts += 1
                result.error = f"transport: {_describe_exc(exc)} after {self.max_retries + 1} tries"
                return result  # not finished: not cached
            if self._take_answer(template, result, raw, ptok, ctok, latency) or result.attempts >= self.max_attempts:
                break
            conversation = self._reask(template, conversation, result)
        return self._finish(template, key, result)

    async def _call(
        self, client: openai.AsyncOpenAI, template: PromptTemplate, conversation: Messages
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
