"""Run slots, one pool per provider: a provider waiting out its rate limit holds only its own lane's slots.

Waiting runs are served by priority (lower first), first come first served within a priority.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PrioritySlots:
    """A semaphore whose waiters are woken lowest priority value first."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        """Acquirers still queued."""
        return sum(1 for *_, future in self._waiters if not future.done())

    async def acquire(self, priority: int) -> None:
        """Take a slot, waiting behind every acquirer of lower priority value."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot in the same tick it was cancelled: pass it on
            raise

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Give a slot back: to the first waiter, or to the pool."""
        while self._waiters:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class Lanes:
    """One `PrioritySlots` of `capacity` per lane name, created on first use."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lanes: dict[str, PrioritySlots] = {}

    @asynccontextmanager
    async def slot(self, lane: str, priority: int) -> AsyncIterator[None]:
        """Hold one of `lane`'s slots for the duration of the block."""
        async with self._lanes.setdefault(lane, PrioritySlots(self._capacity)).slot(priority):
            yield

    def waiting(self) -> dict[str, int]:
        """Per lane, runs queued for a slot."""
        return {name: slots.waiting for name, slots in self._lanes.items() if slots.waiting}
