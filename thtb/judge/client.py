"""OpenAI-compatible LLM judge with a persistent cache, adaptive concurrency and bounded retries.

:class:`OpenAIJudge` sends a :class:`~thtb.judge.prompts.PromptTemplate` rendered for each item to
``POST {base_url}/chat/completions`` through the official :class:`openai.AsyncOpenAI` client (its
own retries disabled), and returns one :class:`JudgeResult` per item, in input order. Keys, cache hits,
``reparse``, re-asks and requests shared with other processes follow :mod:`thtb.judge.base`; the decoding
parameters keyed are the template's, then ``decoding`` overrides, then ``extra_body``.

Per request not in the cache
----------------------------
1. A prompt that cannot fit the judge's context — prompt tokens (the model's tokenizer and chat
   template, where known: ``tokenizer``) + ``max_tokens`` > ``context_len`` (asked from the server's
   ``/v1/models`` when not given; vLLM reports ``max_model_len``) — is not sent: that item fails with
   the reason (``context: …``), not cached.
2. Otherwise it waits for a slot of the :class:`~thtb.judge.flow.AdaptiveLimit` (``concurrency`` at most).
   Each send has a timeout of ``timeout_s + timeout_per_token_s × max_tokens``; a timed-out request is
   cancelled — its connection closed, which makes vLLM abort the generation — never left running while a
   duplicate queues behind it. Timeouts, connection errors, HTTP 408/409/429/5xx are retried with exponential
   backoff (:mod:`tenacity`, ``max_retries`` retries) within the run's :class:`~thtb.judge.flow.SendBudget`.
   Other HTTP errors fail at once, with the server's reason (``HTTP 400: … maximum context length …``).
3. A transport failure after all retries is returned as an error and not cached, so a resumed run retries it.
4. The run stops, resumable, with :class:`~thtb.judge.flow.JudgeStalledError` when the server made no progress
   for ``stall_timeout_s``, and with :class:`~thtb.judge.flow.JudgeServerUnreachableError` (naming the URL and
   how the connections broke) after ``unreachable_after`` requests in a row lost to broken connections
   (:class:`~thtb.judge.flow.StallWatch`).

A request's lease (shared in flight) is taken when it gets a concurrency slot. A request another process is
sending gives its slot back and waits — ``asyncio.sleep`` between looks, so the event loop keeps serving the
other requests — by default at most the longest a request can take under this judge's own timeout, retries and
re-asks (plus a minute).

The API key comes from the environment variable ``api_key_env`` ("EMPTY" when unset, for local
servers). It is kept in a private attribute only: never logged, cached or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from thtb.judge.base import JudgeBackend, JudgeResult, LeaseWait, Messages, plain
from thtb.judge.cache import CACHED, CLAIMED, HELD, RequestCache
from thtb.judge.flow import JudgeServerUnreachableError, JudgeStalledError, SendBudget, ServerLimits, StallWatch
from thtb.judge.prompts import PromptTemplate

__all__ = ["JudgeResult", "JudgeServerUnreachableError", "JudgeStalledError", "NoChoicesError", "OpenAIJudge",
           "describe_exc", "is_transient", "split_base_urls"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429})
_DETAIL_CHARS = 400


class NoChoicesError(RuntimeError):
    """A 200 answer without choices (recorded like a transport failure: not cached, not retried)."""


class SendBudgetSpent(RuntimeError):
    """The run's send budget is spent: the request is not sent again (not cached; a rerun retries it)."""


@dataclass
class _Slot:
    """One request's hold on a slot of a server's :class:`~thtb.judge.flow.AdaptiveLimit`
    (:class:`~thtb.judge.flow.ServerLimits` picks the server, ``index``): taken for a send, given back after it (so
    backoff sleeps and re-ask preparation hold none; the next send is routed again)."""

    limits: ServerLimits
    index: int = 0
    token: int | None = None

    async def take(self) -> None:
        if self.token is None:
            self.index, self.token = await self.limits.acquire()

    def feedback(self, outcome: str) -> None:  # only while taken
        self.limits.feedback(self.index, self.token, outcome)

    def give(self) -> None:
        if self.token is not None:
            self.token = None
            self.limits.release(self.index)


def is_transient(exc: BaseException) -> bool:
    """Timeouts, connection errors and HTTP 408/409/429/5xx are worth retrying."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | asyncio.TimeoutError)  # APITimeoutError included


def _timed_out(exc: BaseException | None) -> bool:
    return isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (up to an earlier try's failure, which is no cause)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
        if isinstance(exc, openai.APIError):
            break
    return out


def _broken_connection(exc: BaseException) -> str | None:
    """How a connection error broke: ``"refused"`` (nothing listens there), ``"not made"`` (another reason no
    connection could be made: the host unknown or unreachable) or ``"dropped"`` (closed before the answer: the
    server went away mid-request); ``None`` for anything else, timeouts included."""
    if not isinstance(exc, openai.APIConnectionError) or isinstance(exc, openai.APITimeoutError):
        return None
    if any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
        return "refused"
    return "not made" if type(exc.__cause__).__name__ == "ConnectError" else "dropped"


def _server_detail(exc: openai.APIStatusError) -> str:
    """The server's own reason from an error response (``{"error": {"message": …}}``, ``{"message": …}``,
    ``{"detail": …}`` or plain text), on one line and at most ``_DETAIL_CHARS`` characters."""
    body: Any = exc.body
    detail: Any = None
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            detail = inner.get("message")
        elif isinstance(inner, str):
            detail = inner
        detail = detail or body.get("message") or body.get("detail")
    elif isinstance(body, str):
        detail = body
    if not detail:
        try:
            detail = exc.response.text
        except Exception:  # noqa: BLE001 - a body that cannot be read leaves only the status
            detail = ""
    text = " ".join(str(detail).split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:_DETAIL_CHARS]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_exc(exc: BaseException) -> str:
    """A failure as the judge log and the sample's error say it: ``HTTP 400: <the server's reason>``,
    ``timeout``, ``connection error: ConnectError: All connection attempts failed (ConnectionRefusedError: …)``."""
    if isinstance(exc, SendBudgetSpent):
        return str(exc)
    if isinstance(exc, openai.APIStatusError):
        detail = _server_detail(exc)
        return f"HTTP {exc.status_code}: {detail}" if detail else f"HTTP {exc.status_code}"
    if _timed_out(exc):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        chain = _chain(exc)[1:]
        if not chain:
            return "connection error"
        root = next((e for e in reversed(chain) if isinstance(e, OSError) and e.errno), None)
        return f"connection error: {_one_line(chain[0])}" + (f" ({_one_line(root)})" if root is not None else "")
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OpenAIJudge(JudgeBackend):
    """Judge over an OpenAI-compatible chat-completions endpoint (see module doc).

    Args:
        model: the served model id (part of every cache key).
        base_url: e.g. ``http://127.0.0.1:8000/v1``; or several servers of the same model — a list, or one string
            separated by commas — each send going to the one with the most free slots (``concurrency`` each), so
            the load splits over them; the cache key is the same whichever server answered.
        api_key_env: environment variable holding the API key ("EMPTY" when unset).
        concurrency: most requests in flight per server (the adaptive limit starts here and never exceeds it).
        min_concurrency: the adaptive limit's floor.
        timeout_s: per-send timeout before generation (connection, queueing, the prompt; see module doc).
        timeout_per_token_s: seconds allowed per requested completion token.
        stall_timeout_s: stop the run when the server made no progress for this long while requests
            are out (never shorter than two send timeouts).
        unreachable_after: stop the run once this many requests in a row failed on a broken connection (see
            module doc); 0: never (each such request fails on its own, against the run's failure budget).
        max_retries: transport retries per answer (so ``max_retries + 1`` tries), within the send budget.
        max_attempts: answers asked per item when answers do not parse (1 = no re-ask); also the
            run's budget of sends per distinct request that the server may have worked on (first sends,
            re-asks, retries after a timeout).
        context_len: the judge's context in tokens; ``None``: ask the server (``/v1/models``,
            ``max_model_len``); ``0``: do not check.
        guided_json: constrain answers to the template's JSON schema where it has one (Bloom, disciplines) with
            ``response_format`` (structured outputs), and to its closed set of answers where it has one (the
            pairwise verdicts) with vLLM's ``structured_outputs: {choice: […]}`` request field; part of the
            cache key. Off by default: the authors' judge answered unconstrained (and hosted APIs do not know
            ``structured_outputs``).
        tokenizer: the tokenizer that counts prompt tokens for that check: ``"auto"`` (the model's, when
            it is available locally — a folder, ``smollm2``, the Hugging Face cache), a hub id or
            folder, or ``None`` (do not check).
        extra_body: extra JSON fields for the server (e.g. ``{"chat_template_kwargs": {"enable_thinking": False}}``);
            part of the cache key.
        backoff_initial_s, backoff_max_s: exponential backoff bounds of transport retries.
        cache, reparse, decoding, progress, lease_wait_s: see :class:`~thtb.judge.base.JudgeBackend`.
    """

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str],
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
        min_concurrency: int = 1,
        timeout_per_token_s: float = 0.1,
        stall_timeout_s: float = 600.0,
        context_len: int | None = None,
        tokenizer: str | None = "auto",
        guided_json: bool = False,
        unreachable_after: int = 8,
    ) -> None:
        if concurrency < 1 or not 1 <= min_concurrency <= concurrency:
            raise ValueError(f"need 1 <= min_concurrency <= concurrency, got {min_concurrency} and {concurrency}")
        if max_retries < 0 or unreachable_after < 0:
            raise ValueError(f"max_retries and unreachable_after must be >= 0, got {max_retries} and "
                             f"{unreachable_after}")
        if timeout_s <= 0 or timeout_per_token_s < 0 or stall_timeout_s <= 0:
            raise ValueError("timeout_s and stall_timeout_s must be > 0 and timeout_per_token_s >= 0, got "
                             f"{timeout_s}, {stall_timeout_s} and {timeout_per_token_s}")
        super().__init__(model, max_attempts=max_attempts, cache=cache, reparse=reparse, decoding=decoding,
                         extra_body=extra_body, progress=progress, lease_wait_s=lease_wait_s)
        self.base_urls = split_base_urls(base_url)
        self.base_url = ", ".join(self.base_urls)
        """The server (or the servers, comma-separated) as messages name it."""
        self.api_key_env = api_key_env
        self.__api_key = os.environ.get(api_key_env) or "EMPTY"
        self.concurrency = int(concurrency)
        self.min_concurrency = int(min_concurrency)
        self.timeout_s = float(timeout_s)
        self.timeout_per_token_s = float(timeout_per_token_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.unreachable_after = int(unreachable_after)
        self.max_retries = int(max_retries)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.context_len = None if context_len is None else int(context_len)
        self.tokenizer = tokenizer
        self.guided_json = bool(guided_json)
        self._context: tuple[Any, int] | None = None  # (tokenizer, context length), looked up once
        self._context_known = False
        self._context_lock: asyncio.Lock | None = None
        self._counters.update({"timeouts": 0, "context_overflows": 0, "sends_refused": 0,
                               "concurrency_lowest": self.concurrency, "concurrency_decreases": 0})
        self._server_calls = [0] * len(self.base_urls)

    def __repr__(self) -> str:
        return (f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
                f"concurrency={self.concurrency}, cache={self.cache!r}, reparse={self.reparse})")

    def params(self, template: PromptTemplate) -> dict[str, Any]:
        """The decoding parameters as keyed: the base ones, plus the JSON schema when ``guided_json``."""
        return {**super().params(template), **self._guided(template)}

    def _guided(self, template: PromptTemplate) -> dict[str, Any]:
        """The request fields of ``guided_json``: ``response_format`` (OpenAI's structured outputs; vLLM, SGLang and
        hosted APIs accept it) and ``structured_outputs`` (a vLLM request field, sent in the request body)."""
        if not self.guided_json:
            return {}
        out: dict[str, Any] = {}
        if template.json_schema is not None:
            out["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": template.name, "schema": plain(template.json_schema)}}
        if template.choices:
            out["structured_outputs"] = {"choice": list(template.choices)}
        return out

    def stats(self) -> dict[str, Any]:
        """The base counters, plus whether answers were constrained to the templates' JSON schemas."""
        out = {**super().stats(), "guided_json": self.guided_json}
        if len(self.base_urls) > 1:  # how the sends split over the servers
            out["server_calls"] = dict(zip(self.base_urls, self._server_calls))
        return out

    def send_timeout_s(self, params: Mapping[str, Any]) -> float:
        """The timeout of one send with these decoding parameters: ``timeout_s + timeout_per_token_s × max_tokens``."""
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens") or 0
        return self.timeout_s + self.timeout_per_token_s * float(max_tokens)

    def _template_timeout_s(self, template: PromptTemplate) -> float:
        return self.send_timeout_s({**dict(template.params), **self.decoding})

    def default_lease_wait_s(self, template: PromptTemplate | None = None) -> float:
        """The longest one request of ``template`` can take here — every try timing out, every backoff at its
        longest, ``max_attempts`` answers — plus a minute (no template: with the base send timeout)."""
        timeout = max(self.timeout_s, self._template_timeout_s(template) if template else 0.0)
        backoffs = sum(min(self.backoff_initial_s * 2 ** i, self.backoff_max_s) for i in range(self.max_retries))
        return ((self.max_retries + 1) * timeout + backoffs) * self.max_attempts + 60.0

    def run(self, template: PromptTemplate, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        """Judge every item (sync wrapper over :meth:`arun`); results in input order."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(template, items))
        with ThreadPoolExecutor(1) as pool:  # called from inside a running loop (e.g. Jupyter): own thread
            return pool.submit(asyncio.run, self.arun(template, items)).result()

    async def arun(self, template: PromptTemplate, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        start = time.perf_counter()
        groups, messages = self._group(template, items)
        done: dict[str, JudgeResult] = {}
        clients = [] if self.reparse else [openai.AsyncOpenAI(api_key=self.__api_key, base_url=url, max_retries=0,
                                                              timeout=self.timeout_s) for url in self.base_urls]
        limit = ServerLimits(len(self.base_urls), self.concurrency, self.min_concurrency)
        budget = SendBudget(self.max_attempts)
        stall_s = max(self.stall_timeout_s, 2 * self._template_timeout_s(template))
        watch = StallWatch(stall_s, self.unreachable_after)
        bar = tqdm(total=len(items), desc=f"judge:{template.name}", disable=not self.progress, leave=False)
        answered = 0

        async def one(k: str) -> None:
            nonlocal answered
            result = done[k] = await self._one(clients, limit, budget, watch, template, k, messages[k])
            if result.ok or result.raw is not None:
                answered += 1
                watch.progress()  # answered (now, earlier, or by another process); a failure is no progress
            bar.update(len(groups[k]))
            if watch.unreachable():
                self._counters["unreachable"] = 1
                raise JudgeServerUnreachableError(self._unreachable_message(template, watch, budget, answered,
                                                                            len(groups)))

        tasks = [asyncio.create_task(one(k)) for k in groups]
        try:
            pending: set[asyncio.Task] = set(tasks)
            while pending:
                ended, pending = await asyncio.wait(pending, timeout=min(5.0, stall_s / 4),
                                                    return_when=asyncio.FIRST_EXCEPTION)
                for task in ended:
                    task.result()  # an unexpected error: raised (the others are cancelled below)
                if pending and watch.stalled():
                    self._counters["stalled"] = 1
                    raise JudgeStalledError(self._stall_message(template, watch, budget, len(groups) - len(pending),
                                                                len(groups)))
        finally:
            for task in tasks:
                task.cancel()  # a cancelled send closes its connection: the server aborts that generation
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
            self._counters["concurrency_lowest"] = min(self._counters["concurrency_lowest"], limit.lowest)
            self._counters["concurrency_decreases"] += limit.decreases
            for client in clients:
                await client.close()
        return self._tally(groups, done, start)

    def _stall_message(self, template: PromptTemplate, watch: StallWatch, budget: SendBudget, finished: int,
                       total: int) -> str:
        c = self._counters
        where = f"cached in {self.cache.path}" if self.cache is not None else "not cached (no judge.cache)"
        return (
            f"judge {template.name}: the server at {self.base_url} (model {self.model}) made no progress for "
            f"{watch.idle_s():.0f} s (stall_timeout_s={self.stall_timeout_s:g}); stopped. This run sent "
            f"{budget.sent} requests for {budget.requests} distinct ones: {c['timeouts']} timed out (send timeout "
            f"{self._template_timeout_s(template):.0f} s), {c['transport_failures']} failed after retries. "
            f"{finished}/{total} distinct requests are finished and {where}: rerun the same command to resume. "
            "The server is overloaded or stuck: check its log (vLLM: /metrics), lower judge.concurrency, or raise "
            "judge.timeout_s / judge.timeout_per_token_s."
        )

    def _unreachable_message(self, template: PromptTemplate, watch: StallWatch, budget: SendBudget, answered: int,
                             total: int) -> str:
        where = f"cached in {self.cache.path}" if self.cache is not None else "not cached (no judge.cache)"
        return (
            f"judge {template.name}: the server at {self.base_url} is unreachable: {watch.lost} requests in a row "
            f"failed, each after {self.max_retries + 1} tries, their connections {' or '.join(watch.lost_how)}, with "
            f"no answer in between (last: {watch.last_error}). It has died or is not listening there: check the "
            "server's log and whether it is still running (python -m thtb.serve says which of its processes died "
            "and how, e.g. killed by the kernel's OOM killer), or judge.base_url. Stopped: this run sent "
            f"{budget.sent} requests for {budget.requests} distinct ones; {answered}/{total} distinct requests are "
            f"answered and {where}: rerun the same command to resume once the server is back."
        )

    async def _one(self, clients: list[openai.AsyncOpenAI], limit: ServerLimits, budget: SendBudget, watch: StallWatch,
                   template: PromptTemplate, key: str, msgs: Messages) -> JudgeResult:
        hit = self._lookup(template, key)
        if hit is not None:
            return hit
        assert clients
        wait: LeaseWait | None = None
        force = False
        while True:
            slot = _Slot(limit)
            await slot.take()  # the lease is taken with a slot: a run claims only what it can send now
            try:
                state = CLAIMED if self.cache is None else self.cache.claim([key], force=(key,) if force else ())[key]
                if state == CACHED and (shared := self._shared(template, key)) is not None:
                    return shared
                if state == CLAIMED or force:  # forced: ours, unless a row came and went — asked anyway
                    try:
                        return await self._ask(clients, slot, budget, watch, template, msgs, key)
                    finally:  # failed (transport errors are not cached) or interrupted: a waiting process takes
                        self._release([key])  # it over; a no-op once its row is written
            finally:
                slot.give()
            # another live process is sending it: wait outside the slot for its row, or for the lease to free up
            wait = wait or LeaseWait(self.lease_wait_for(template))
            wait.reset()
            while True:
                if wait.expired():
                    log.warning("judge %s: waited %.0f s for a request another process is sending; sending it here",
                                template.name, wait.limit_s)
                    force = True
                    break
                await asyncio.sleep(wait.next_delay())
                state = self.cache.lease_states([key])[key]
                if state == CACHED and (shared := self._shared(template, key)) is not None:
                    return shared
                if state != HELD:
                    break

    async def _ask(self, clients: list[openai.AsyncOpenAI], slot: _Slot, budget: SendBudget, watch: StallWatch,
                   template: PromptTemplate, msgs: Messages, key: str) -> JudgeResult:
        """Send one request (re-asked while its answers do not parse); cache it once finished."""
        conversation = list(msgs)
        result = JudgeResult()
        budget.register()
        watch.active += 1
        try:
            while True:
                too_long = await self._too_long(clients[0], template, conversation)
                if too_long:
                    self._counters["context_overflows"] += 1
                    log.warning("judge %s: not sent: %s", template.name, too_long)
                    result.error = f"context: {too_long}"
                    return result  # not an answer: not cached
                try:
                    raw, ptok, ctok, latency = await self._call(clients, slot, budget, watch, template, conversation)
                except Exception as exc:  # noqa: BLE001 - every transport failure is recorded
                    self._counters["transport_failures"] += 1
                    tries = "" if isinstance(exc, SendBudgetSpent) else f" after {self.max_retries + 1} tries"
                    log.warning("judge %s: request failed%s: %s", template.name, tries, describe_exc(exc))
                    result.attempts += 1
                    result.error = f"transport: {describe_exc(exc)}{tries}"
                    how = _broken_connection(exc)
                    if how is not None:
                        watch.connection_lost(how, describe_exc(exc))
                    return result  # not finished: not cached
                if (self._take_answer(template, result, raw, ptok, ctok, latency)
                        or result.attempts >= self.max_attempts):
                    break
                conversation = self._reask(template, conversation, result)
            return self._finish(template, key, result)
        finally:
            watch.active -= 1

    async def _call(self, clients: list[openai.AsyncOpenAI], slot: _Slot, budget: SendBudget, watch: StallWatch,
                    template: PromptTemplate, conversation: Messages) -> tuple[str, int, int, float]:
        """One answer (with transport retries, each send in a slot of the adaptive limit; backoff outside it):
        raw text, prompt/completion tokens, latency."""
        params = {**dict(template.params), **self.decoding, **self._guided(template)}
        structured = params.pop("structured_outputs", None)  # not an openai-client argument: in the body
        extra_body = {**(self.extra_body or {}), **({"structured_outputs": structured} if structured else {})} or None
        timeout = self.send_timeout_s(params)
        retrying = AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), retry=retry_if_exception(is_transient),
                                 wait=wait_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s),
                                 reraise=True)
        last: BaseException | None = None
        async for attempt in retrying:
            with attempt:
                retry = attempt.retry_state.attempt_number > 1
                if not budget.take(exempt=retry and not _timed_out(last)):
                    self._counters["sends_refused"] += 1
                    raise SendBudgetSpent(
                        f"{describe_exc(last) + '; not sent again' if last else 'not sent'}: the run's send budget "
                        f"is spent ({budget.sent} sends for {budget.requests} requests × max_attempts "
                        f"{self.max_attempts})")
                if retry:
                    self._counters["retries"] += 1
                await slot.take()
                try:
                    self._counters["calls"] += 1
                    self._server_calls[slot.index] += 1
                    t0 = time.perf_counter()
                    try:
                        response = await clients[slot.index].chat.completions.create(
                            model=self.model, messages=conversation, extra_body=extra_body, timeout=timeout,
                            **params,
                        )
                    except Exception as exc:
                        last = exc
                        if _timed_out(exc):
                            self._counters["timeouts"] += 1
                        if is_transient(exc):  # a sign that the server has more than it can do: the limit halves
                            slot.feedback("overload")
                        else:
                            slot.feedback("neutral")
                            if isinstance(exc, openai.APIStatusError):
                                watch.progress()  # a definite answer (e.g. HTTP 400): the server is working
                        raise
                    latency = time.perf_counter() - t0
                    watch.progress()
                    if not response.choices:
                        slot.feedback("neutral")
                        raise NoChoicesError("the server returned no choices")
                    slot.feedback("ok")
                finally:
                    slot.give()
                usage = response.usage
                return (response.choices[0].message.content or "", int(getattr(usage, "prompt_tokens", 0) or 0),
                        int(getattr(usage, "completion_tokens", 0) or 0), latency)
        raise AssertionError("unreachable")

    async def _too_long(self, client: openai.AsyncOpenAI, template: PromptTemplate,
                        conversation: Messages) -> str | None:
        """Why ``conversation`` cannot fit the judge's context (``None``: it fits, or it cannot be told)."""
        if not self._context_known:
            self._context_lock = self._context_lock or asyncio.Lock()
            async with self._context_lock:  # looked up once; the other requests wait for it
                if not self._context_known:
                    self._context = await self._lookup_context(client)
                    self._context_known = True
        if self._context is None:
            return None
        tokenizer, context_len = self._context
        params = {**dict(template.params), **self.decoding}
        max_tokens = int(params.get("max_tokens") or params.get("max_completion_tokens") or 0)
        n_prompt = _count_chat_tokens(tokenizer, conversation, self._chat_template_kwargs())
        if n_prompt + max_tokens > context_len:
            return (f"the prompt has {n_prompt} tokens; with max_tokens {max_tokens} that is "
                    f"{n_prompt + max_tokens} > the judge's context of {context_len} tokens")
        return None

    async def _lookup_context(self, client: openai.AsyncOpenAI) -> tuple[Any, int] | None:
        """(tokenizer, context length) for the prompt check, or ``None`` when either is unknown."""
        if self.context_len == 0 or self.tokenizer is None:
            return None
        tokenizer = await asyncio.to_thread(self._load_tokenizer)
        if tokenizer is None:
            return None
        context_len = self.context_len
        if context_len is None:
            try:
                page = await client.models.list()
                for entry in page.data:
                    if entry.id == self.model:
                        extra = getattr(entry, "model_extra", None) or {}
                        context_len = extra.get("max_model_len") or getattr(entry, "max_model_len", None)
            except Exception as exc:  # noqa: BLE001 - servers without /models: no check, said once
                log.info("judge: %s/models did not say the context length (%s); prompts are not checked",
                         self.base_urls[0], describe_exc(exc))
        return (tokenizer, int(context_len)) if context_len else None

    def _load_tokenizer(self) -> Any:
        """The tokenizer named by ``tokenizer`` (``"auto"``: the model's, only when available locally)."""
        auto = self.tokenizer == "auto"
        name = self.model if auto else str(self.tokenizer)
        if auto and not _available_locally(name):
            log.info("judge: no local tokenizer for %r; prompts are not checked against the context", name)
            return None
        from transformers import AutoTokenizer

        from thtb.models import resolve_model_name

        try:
            return AutoTokenizer.from_pretrained(resolve_model_name(name),
                                                 **({"local_files_only": True} if auto else {}))
        except Exception as exc:  # noqa: BLE001 - auto: not available here → no check
            if not auto:
                raise ValueError(f"judge.tokenizer={name!r} could not be loaded: {exc}") from exc
            log.info("judge: no local tokenizer for %r (%s); prompts are not checked against the context",
                     name, type(exc).__name__)
            return None


def split_base_urls(base_url: str | Sequence[str]) -> tuple[str, ...]:
    """The servers of ``base_url``: one URL, a list of them, or one string separated by commas (what an environment
    variable can hold); each once, in order."""
    items = base_url.split(",") if isinstance(base_url, str) else [str(u) for u in base_url]
    urls = tuple(dict.fromkeys(u.strip() for u in items if u.strip()))
    if not urls:
        raise ValueError(f"judge base_url names no server: {base_url!r}")
    return urls


def _available_locally(name: str) -> bool:
    """Whether ``name``'s tokenizer can be loaded without a download: ``smollm2``, a folder, or a hub id in the
    Hugging Face cache (checked without importing transformers)."""
    from thtb.models import is_smollm2_alias

    if is_smollm2_alias(name) or Path(name).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "tokenizer_config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id
        return False


def _count_chat_tokens(tokenizer: Any, conversation: Messages, kwargs: Mapping[str, Any]) -> int:
    """Prompt tokens of ``conversation`` under the tokenizer's chat template (generation prompt included)."""
    try:
        out = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, **kwargs)
    except Exception:  # noqa: BLE001 - no chat template: count the plain text
        return len(tokenizer("\n".join(m["content"] for m in conversation))["input_ids"])
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return len(out)
