"""What every LLM-judge backend shares: cache keys, cache hits, reparse, re-asks, counters.

A backend turns ``(template, items)`` into one :class:`JudgeResult` per item, in input order. The
HTTP backend (:class:`~thtb.judge.client.OpenAIJudge`) and the in-process ones
(:class:`~thtb.judge.local.HFJudge`, :class:`~thtb.judge.local.VLLMJudge`) differ only in how an
answer is produced; the rules around it live here, once:

- **key** (:func:`~thtb.judge.cache.make_key`): backend model id, template name + version, rendered
  messages, decoding parameters. Items with the same key in one run are asked once.
- **finished request** = an answer came back (parsed or not after ``max_attempts`` answers): cached
  and committed at once, never asked again. A transport/backend failure is returned as an error and
  **not** cached, so a resumed run retries it.
- **parse failures** are re-asked with the template's stricter follow-up appended to the
  conversation; the last failure is recorded as an error — never replaced by a default.
- **reparse**: the template's parser is re-applied to cached raw text; no answer is ever generated.
  A cached answer parsed by other parser code (its stored parser digest differs) is re-parsed the same
  way on every read, so a parser change never serves a stale parsed value.
- **shared in flight**: processes on one cache file never ask one request twice at the same time. A
  request not in the cache is asked only under its lease (:meth:`RequestCache.claim
  <thtb.judge.cache.RequestCache.claim>`); one whose lease a live owner holds is not asked but waited
  for — polled with a backoff from ``LEASE_POLL_S[0]`` to ``LEASE_POLL_S[1]`` seconds — and its row is
  used like a cache hit (counted as ``shared_in_flight``). When the lease becomes free without a row
  (the owner's request failed, or the owner died) the waiter takes the lease and asks itself. A wait is
  bounded: after ``lease_wait_s`` the waiter takes the lease even from a live owner and asks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thtb.judge.cache import CacheRecord, RequestCache, make_key
from thtb.judge.parsers import ParseError
from thtb.judge.prompts import Messages, PromptTemplate

LEASE_POLL_S = (0.2, 2.0)
"""First and longest delay between two looks at a request another process is asking (doubling)."""


@dataclass
class LeaseWait:
    """The bounded wait for requests another process is asking: backoff delays and the give-up time."""

    limit_s: float
    start: float = field(default_factory=time.monotonic)
    delay: float = LEASE_POLL_S[0]

    def expired(self) -> bool:
        return time.monotonic() - self.start >= self.limit_s

    def next_delay(self) -> float:
        """The next sleep (doubling up to ``LEASE_POLL_S[1]``, never past the give-up time)."""
        delay = self.delay
        self.delay = min(self.delay * 2, LEASE_POLL_S[1])
        return max(0.0, min(delay, self.limit_s - (time.monotonic() - self.start)))

    def reset(self) -> None:
        """Short delays again (progress was made), same give-up time."""
        self.delay = LEASE_POLL_S[0]


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


def plain(obj: Any) -> Any:
    """Mappings/sequences (e.g. OmegaConf containers from Hydra) → plain dicts/lists, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return [plain(v) for v in obj]
    return obj


class JudgeBackend:
    """Base of the judge backends (see module doc). Subclasses implement :meth:`run`.

    Args:
        model: the model id (part of every cache key).
        max_attempts: answers asked per item when answers do not parse (1 = no re-ask).
        cache: a :class:`RequestCache`, a path to one, or ``None`` (no cache).
        reparse: re-apply parsers to cached raw text; never generate.
        decoding: overrides of the templates' decoding parameters (e.g. ``max_tokens``).
        extra_body: backend-specific extra parameters (part of the cache key).
        progress: show a progress bar.
        model_id: the model's id in cache keys when ``model`` is not a stable name (e.g. a local
            folder of a trained model: pass its content fingerprint); default ``model``.
        lease_wait_s: the longest wait for a request another process is asking (its owner alive and
            renewing its lease) before asking it here too; default :meth:`default_lease_wait_s`.
    """

    backend = "base"

    def __init__(
        self,
        model: str,
        max_attempts: int = 3,
        cache: RequestCache | str | Path | None = None,
        reparse: bool = False,
        decoding: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        progress: bool = True,
        model_id: str | None = None,
        lease_wait_s: float | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.model = str(model)
        self.model_id = str(model_id or model)
        self.max_attempts = int(max_attempts)
        self.cache = RequestCache(cache) if isinstance(cache, str | Path) else cache
        self.reparse = bool(reparse)
        if self.reparse and self.cache is None:
            raise ValueError("reparse mode needs a cache")
        self.decoding = plain(decoding) if decoding else {}
        self.extra_body = plain(extra_body) if extra_body else None
        self.progress = bool(progress)
        if lease_wait_s is not None and lease_wait_s < 0:
            raise ValueError(f"lease_wait_s must be >= 0, got {lease_wait_s}")
        self._lease_wait_s = None if lease_wait_s is None else float(lease_wait_s)
        self._parser_digests: dict[str, str] = {}
        self._counters: dict[str, Any] = {
            "calls": 0, "retries": 0, "reasks": 0, "cache_hits": 0, "reparsed": 0, "failures": 0,
            "parse_failures": 0, "transport_failures": 0, "shared_in_flight": 0, "items": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "wall_s": 0.0,
        }

    def run(self, template: PromptTemplate, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        """Judge every item; results in input order."""
        raise NotImplementedError

    def params(self, template: PromptTemplate) -> dict[str, Any]:
        """The decoding parameters of ``template`` as used (and keyed): overrides, extra_body."""
        params = {**dict(template.params), **self.decoding}
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    def key(self, template: PromptTemplate, item: Mapping[str, Any]) -> str:
        return make_key(self.model_id, template.name, template.version, template.messages(item),
                        self.params(template))

    @property
    def lease_wait_s(self) -> float:
        return self.lease_wait_for(None)

    def lease_wait_for(self, template: PromptTemplate | None) -> float:
        """How long to wait for another process's request of ``template``: ``lease_wait_s`` as given, else
        :meth:`default_lease_wait_s`."""
        return self._lease_wait_s if self._lease_wait_s is not None else self.default_lease_wait_s(template)

    def default_lease_wait_s(self, template: PromptTemplate | None = None) -> float:
        """How long to wait for another process's request by default (subclasses bound their own requests)."""
        return 3600.0

    def stats(self) -> dict[str, Any]:
        """Counters for summary.json: calls (answers generated / HTTP requests), retries, re-asks, cache
        hits, shared_in_flight (requests answered by another process while this one waited), failures
        (items returned with an error), tokens, wall time; plus backend, model, cache."""
        out = {**self._counters, "wall_s": round(self._counters["wall_s"], 3), "backend": self.backend,
               "model": self.model}
        if self.model_id != self.model:
            out["model_id"] = self.model_id
        out["cache"] = str(self.cache.path) if self.cache is not None else None
        return out

    def parser_digest(self, template: PromptTemplate) -> str:
        """Digest of the code that parses ``template``'s answers (its module and what that imports), stored with
        every cached answer: an answer parsed by other code is re-parsed from its raw text when read."""
        digest = self._parser_digests.get(template.id)
        if digest is None:
            from thtb.provenance import code_digest

            digest = f"{template.parser.__module__}.{template.parser.__qualname__}:" + code_digest(
                [template.parser.__module__])
            self._parser_digests[template.id] = digest
        return digest

    def _group(self, template: PromptTemplate,
               items: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[int]], dict[str, Messages]]:
        """Cache key → item positions, and key → rendered messages (duplicates asked once)."""
        groups: dict[str, list[int]] = {}
        messages: dict[str, Messages] = {}
        params = self.params(template)
        for i, item in enumerate(items):
            msgs = template.messages(item)
            k = make_key(self.model_id, template.name, template.version, msgs, params)
            groups.setdefault(k, []).append(i)
            messages[k] = msgs
        return groups, messages

    def _lookup(self, template: PromptTemplate, key: str) -> JudgeResult | None:
        """The cached result of ``key`` (reparsed in reparse mode), or ``None`` when it must be asked."""
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is None:
            return JudgeResult(error="reparse: request not in cache") if self.reparse else None
        if not self.reparse:
            self._counters["cache_hits"] += 1
        return self._from_row(template, key, cached, reparse=self.reparse)

    def _shared(self, template: PromptTemplate, key: str) -> JudgeResult | None:
        """The row another process wrote for ``key`` while it was in flight there (``None``: no row)."""
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is None:
            return None
        self._counters["shared_in_flight"] += 1
        return self._from_row(template, key, cached)

    def _from_row(self, template: PromptTemplate, key: str, cached: CacheRecord,
                  reparse: bool = False) -> JudgeResult:
        """A cached answer's result; its raw text parsed again in reparse mode or when other parser code parsed it
        (the row is updated where that changes it)."""
        digest = self.parser_digest(template)
        if reparse or cached.parser != digest:
            self._counters["reparsed"] += 1
            try:
                value, error = template.parser(cached.raw), None
            except ParseError as exc:
                value, error = None, f"parse: {exc} (reparse)"
            changed = (error, value, digest) != (cached.error, cached.parsed, cached.parser)
            cached.parsed, cached.error, cached.parser = value, error, digest
            if changed and self.cache is not None:
                self.cache.put(key, cached)
        return JudgeResult(cached.parsed if cached.error is None else None, cached.error, cached.raw, True,
                           cached.attempts, cached.latency_s, cached.prompt_tokens, cached.completion_tokens)

    def _take_answer(self, template: PromptTemplate, result: JudgeResult, raw: str, ptok: int, ctok: int,
                     latency: float) -> bool:
        """Fold one answer into ``result``; ``True`` when it parsed (the request is done)."""
        result.attempts += 1
        result.raw = raw
        result.latency_s += latency
        result.prompt_tokens += ptok
        result.completion_tokens += ctok
        self._counters["prompt_tokens"] += ptok
        self._counters["completion_tokens"] += ctok
        try:
            result.value, result.error = template.parser(raw), None
            return True
        except ParseError as exc:
            result.value, result.error = None, f"parse: {exc}"
            return False

    def _chat_template_kwargs(self) -> dict[str, Any]:
        return dict((self.extra_body or {}).get("chat_template_kwargs") or {})

    def _release(self, keys: Sequence[str]) -> None:
        """End this run's leases of ``keys`` that are not finished (failed, or the run stops)."""
        if self.cache is not None and keys:
            self.cache.release(keys)

    def _reask(self, template: PromptTemplate, conversation: Messages, result: JudgeResult) -> Messages:
        """The conversation extended by the unparsable answer and the template's stricter follow-up."""
        self._counters["reasks"] += 1
        detail = (result.error or "").removeprefix("parse: ")
        return [*conversation, {"role": "assistant", "content": result.raw or ""},
                {"role": "user", "content": template.followup_message(detail)}]

    def _finish(self, template: PromptTemplate, key: str, result: JudgeResult) -> JudgeResult:
        """A request that got its last answer: mark an unparsed one, cache it (committed at once)."""
        if result.error is not None:
            self._counters["parse_failures"] += 1
            result.error = f"{result.error} (after {result.attempts} answers)"
        if self.cache is not None:
            self.cache.put(key, CacheRecord(
                raw=result.raw or "", parsed=result.value, error=result.error, latency_s=result.latency_s,
                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                attempts=result.attempts, model=self.model_id, template=template.id,
                parser=self.parser_digest(template)))
        return result

    def _tally(self, groups: Mapping[str, Sequence[int]], done: Mapping[str, JudgeResult],
               start: float) -> list[JudgeResult]:
        """Each item's result, in input order (``groups``: key → item positions); the run counted."""
        at = {i: done[k] for k, positions in groups.items() for i in positions}
        results = [at[i] for i in range(len(at))]
        c = self._counters
        c["items"] += len(results)
        c["failures"] += sum(1 for r in results if r.error is not None)
        c["wall_s"] += time.perf_counter() - start
        return results
