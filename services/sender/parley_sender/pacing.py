"""Async adapter of the governor: waits for the grants :mod:`domain.governor` computes.

One :class:`NumberPacer` per business number, shared by every consumer of this process. Waiters
are served by priority (replies first, marketing last), then in arrival order. :class:`NumberStates`
holds each number's pacer and pair-rate state, forgets numbers left idle and drops those whose
partition went to another process (their state there moves on without us).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable

from parley_sender.domain.governor import PairRateLimit, ThroughputLimit


class Gate:
    """Whether the records of one partition may still start their Cloud API call.

    Closed when the partition is revoked or the process stops: requests still waiting for a grant
    give up (they were not sent; the next owner of the partition sends them) instead of holding
    the rebalance until their turn comes.
    """

    def __init__(self) -> None:
        self.closed = False
        self._waiters: set[asyncio.Future[bool]] = set()

    def close(self) -> None:
        self.closed = True
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(False)
        self._waiters.clear()


class NumberPacer:
    def __init__(self, limit: ThroughputLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._waiters: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._seq = itertools.count()
        self._pump: asyncio.Task[None] | None = None
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    def on_throttled(self) -> None:
        self.limit.on_throttled(self._clock())

    async def acquire(self, rank: int = 0, gate: Gate | None = None) -> bool:
        """Wait for a grant; False when ``gate`` closed first (no grant was used)."""
        now = self._clock()
        if not self._waiters and self.paused_until <= now and self.limit.reserve(now) == 0.0:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._seq), fut))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run())
        if gate is None:
            return await fut
        gate._waiters.add(fut)
        try:
            return await fut
        finally:
            gate._waiters.discard(fut)

    async def _run(self) -> None:
        while self._waiters:
            now = self._clock()
            if self.paused_until > now:
                await asyncio.sleep(self.paused_until - now)
                continue
            while self._waiters and self._waiters[0][2].done():
                heapq.heappop(self._waiters)
            if not self._waiters:
                return
            wait = self.limit.reserve(now)
            if wait > 0.0:
                await asyncio.sleep(wait)
                continue
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(True)

    @property
    def idle(self) -> bool:
        return not self._waiters and (self._pump is None or self._pump.done())

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


class NumberStates:
    """Per business number: its pacer and its pair-rate state, bounded in memory.

    A number unused for ``idle_s`` (no waiter, nothing owed to any customer) is forgotten, and so is
    every customer with nothing owed; :meth:`drop` forgets the numbers of a revoked partition.
    """

    def __init__(self, *, idle_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.pacers: dict[str, NumberPacer] = {}
        self.pairs: dict[str, PairRateLimit] = {}
        self._used: dict[str, float] = {}
        self._idle_s = idle_s
        self._clock = clock
        self._next_prune = clock() + idle_s

    def pacer(self, number: str, limit: int) -> NumberPacer:
        self._touch(number)
        pacer = self.pacers.get(number)
        if pacer is None:
            pacer = self.pacers[number] = NumberPacer(ThroughputLimit(limit=limit), self._clock)
        elif pacer.limit.limit != limit:
            pacer.limit.set_limit(limit)
        return pacer

    def pair(self, number: str) -> PairRateLimit:
        self._touch(number)
        pairs = self.pairs.get(number)
        if pairs is None:
            pairs = self.pairs[number] = PairRateLimit()
        return pairs

    def _touch(self, number: str) -> None:
        now = self._clock()
        self._used[number] = now
        if now >= self._next_prune:
            self.prune(now)

    def prune(self, now: float) -> None:
        self._next_prune = now + self._idle_s
        for pairs in self.pairs.values():
            pairs.forget_idle(now)
        for number, used in list(self._used.items()):
            pacer = self.pacers.get(number)
            owing = self.pairs[number].owing if number in self.pairs else 0
            if now - used >= self._idle_s and (pacer is None or pacer.idle) and not owing:
                self._forget(number)

    def drop(self, numbers: set[str]) -> None:
        """Forget these numbers (their partition was revoked): a later owner starts afresh."""
        for number in numbers:
            pacer = self.pacers.get(number)
            if pacer is None or pacer.idle:
                self._forget(number)

    def _forget(self, number: str) -> None:
        self.pacers.pop(number, None)
        self.pairs.pop(number, None)
        self._used.pop(number, None)

    async def close(self) -> None:
        for pacer in self.pacers.values():
            await pacer.close()
