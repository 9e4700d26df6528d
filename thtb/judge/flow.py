"""Flow control of the HTTP judge: how much it sends, how fast, and when it gives up.

:class:`AdaptiveLimit`
    The number of requests in flight, adapted to the server (AIMD, as TCP and Netflix's
    concurrency-limits do): halved on a sign of overload (a timeout, HTTP 429 or 5xx, a dropped
    connection) — at most once per round of requests that were already in flight when it came —
    and grown by one after a round of ``limit`` answers, never past the configured ``concurrency``
    nor below ``min_concurrency``. A loaded server thus gets fewer requests, not retries on top of
    requests it is still generating.

:class:`ServerLimits`
    One :class:`AdaptiveLimit` per server when the judge has several (``judge.base_url`` a list): each send goes
    to the server with the most free slots (the first such in the list on a tie), so equal servers share the load
    evenly and a server that shows overload (its limit halved) gets fewer sends; a retry is routed again.

:class:`SendBudget`
    The run's cap on the sends a server may have worked on: each distinct request that needs the server
    brings ``max_attempts`` sends into a shared pool; first sends, re-asks of unparsable answers and
    retries after a timeout each take one. However slow the server, a run sends at most ``distinct
    requests × max_attempts`` of them. Retries after an answer that did no work (HTTP 429/5xx, a refused
    connection) are outside the pool, bounded by ``max_retries`` per answer.

:class:`StallWatch`
    The time since the server last made progress (an answer or a definite refusal). Past
    ``stall_timeout_s`` with requests out (sent, in backoff, or waiting for a slot) the judge stops the run with
    :class:`JudgeStalledError`: finished requests are already cached, so rerunning the same command resumes.
    It also counts the requests that failed in a row on a refused or dropped connection, every retry spent,
    with no answer in between: past ``unreachable_after`` of them the server is gone (died, or not listening),
    and the judge stops with :class:`JudgeServerUnreachableError` instead of failing every request left.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["AdaptiveLimit", "JudgeServerUnreachableError", "JudgeStalledError", "SendBudget", "ServerLimits",
           "StallWatch"]


class JudgeStalledError(RuntimeError):
    """The judge's server made no progress for ``stall_timeout_s``; the run stopped (resumable)."""


class JudgeServerUnreachableError(JudgeStalledError):
    """The server refuses or drops every connection (died, or nothing listens at ``base_url``); stopped (resumable)."""


class _Waiters:
    """Coroutines waiting for a free slot, woken in arrival order."""

    def __init__(self, free) -> None:
        self._free = free  # () -> slots free now
        self._queue: deque[asyncio.Future] = deque()

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._queue:
                self._queue.remove(waiter)
            self.wake()  # a wake-up meant for this one goes to the next
            raise

    def wake(self) -> None:
        free = self._free()
        while free > 0 and self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class AdaptiveLimit:
    """An AIMD limit on sends in flight (see module doc): ``token = await acquire()`` before a send,
    :meth:`feedback` with its outcome, :meth:`release` after it (backoff sleeps hold no slot)."""

    def __init__(self, max_limit: int, min_limit: int = 1) -> None:
        if max_limit < 1 or not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_concurrency <= concurrency, got {min_limit} and {max_limit}")
        self.max_limit = int(max_limit)
        self.min_limit = int(min_limit)
        self.limit = int(max_limit)
        self.in_flight = 0
        self.lowest = self.limit
        self.decreases = 0
        self._epoch = 0  # bumped at each decrease: overload seen by sends made before it is not counted again
        self._good = 0
        self._waiters = _Waiters(lambda: self.limit - self.in_flight)

    async def acquire(self) -> int:
        while self.in_flight >= self.limit:
            await self._waiters.wait()
        self.in_flight += 1
        return self._epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._waiters.wake()

    def feedback(self, token: int, outcome: str) -> None:
        """One send's lesson: ``"ok"`` (an answer), ``"overload"`` (timeout, 429, 5xx, dropped connection)
        or anything else (neutral: a definite refusal such as HTTP 400). ``token``: what :meth:`acquire` gave."""
        if outcome == "overload":
            self._good = 0
            if token == self._epoch:  # the first overload of this round: halve (later ones of the round: no)
                self._epoch += 1
                if self.limit > self.min_limit:
                    self.limit = max(self.min_limit, self.limit // 2)
                    self.lowest = min(self.lowest, self.limit)
                    self.decreases += 1
        elif outcome == "ok":
            self._good += 1
            if self._good >= self.limit and self.limit < self.max_limit:
                self.limit += 1
                self._good = 0
                self._waiters.wake()


class ServerLimits:
    """An :class:`AdaptiveLimit` per server (see module doc): ``index, token = await acquire()`` picks the server
    with the most free slots; :meth:`feedback` and :meth:`release` name that server's index."""

    def __init__(self, servers: int, max_limit: int, min_limit: int = 1) -> None:
        if servers < 1:
            raise ValueError(f"need at least one server, got {servers}")
        self.limits = [AdaptiveLimit(max_limit, min_limit) for _ in range(servers)]
        self._waiters = _Waiters(lambda: sum(max(0, limit.limit - limit.in_flight) for limit in self.limits))

    @property
    def lowest(self) -> int:
        return min(limit.lowest for limit in self.limits)

    @property
    def decreases(self) -> int:
        return sum(limit.decreases for limit in self.limits)

    async def acquire(self) -> tuple[int, int]:
        while True:
            free = [limit.limit - limit.in_flight for limit in self.limits]
            best = free.index(max(free))  # the first of the freest
            if free[best] > 0:
                return best, await self.limits[best].acquire()  # a free slot: returns at once
            await self._waiters.wait()

    def release(self, index: int) -> None:
        self.limits[index].release()
        self._waiters.wake()

    def feedback(self, index: int, token: int, outcome: str) -> None:
        self.limits[index].feedback(token, outcome)
        self._waiters.wake()  # a grown limit frees a slot


class SendBudget:
    """The run's pool of HTTP sends (see module doc)."""

    def __init__(self, per_request: int) -> None:
        self.per_request = int(per_request)
        self.pool = 0
        self.sent = 0
        self.requests = 0
        self.refused = 0

    def register(self) -> None:
        """A distinct request is about to be sent for the first time."""
        self.requests += 1
        self.pool += self.per_request

    def take(self, exempt: bool = False) -> bool:
        """One send (``exempt``: a retry after an answer that did no work, outside the pool); ``False`` when the
        pool is spent."""
        if not exempt and self.sent >= self.pool:
            self.refused += 1
            return False
        if not exempt:
            self.sent += 1
        return True


class StallWatch:
    """Seconds since the last sign of progress; :meth:`stalled` past ``limit_s``. Requests lost in a row to broken
    connections since then; :meth:`unreachable` at ``unreachable_after`` of them (0: never)."""

    def __init__(self, limit_s: float, unreachable_after: int = 0) -> None:
        self.limit_s = float(limit_s)
        self.unreachable_after = int(unreachable_after)
        self.last = time.monotonic()
        self.active = 0  # requests between their first send and their end: only they can stall
        self.lost = 0  # requests that failed on a broken connection since the last progress
        self.lost_how: list[str] = []  # the ways those connections broke ("refused", "dropped"), each once
        self.last_error = ""

    def progress(self) -> None:
        self.last = time.monotonic()
        self.lost = 0
        self.lost_how.clear()

    def connection_lost(self, how: str, error: str) -> None:
        """A request failed, every retry spent, on a connection that was ``how`` (``"refused"``/``"dropped"``)."""
        self.lost += 1
        if how not in self.lost_how:
            self.lost_how.append(how)
        self.last_error = error

    def unreachable(self) -> bool:
        return self.unreachable_after > 0 and self.lost >= self.unreachable_after

    def idle_s(self) -> float:
        return time.monotonic() - self.last

    def stalled(self) -> bool:
        return self.active > 0 and self.idle_s() >= self.limit_s
