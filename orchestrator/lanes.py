"""Run slots, one pool per provider: a provider waiting out its rate limit holds only its own lane's slots.

Waiting runs are served by priority (lower first), first come first served within a priority. A run that waits
for a person (an approval, the mass-action brake) steps aside: it gives its slots back while it waits, so held
runs never stop other runs of their provider, nor a responder's own trigger.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class _Hold:
    """One slot a task holds (or has given back while it steps aside)."""

    slots: PrioritySlots
    priority: int
    held: bool = False


#: The slots the current task holds, outermost first.
_holds: ContextVar[tuple[_Hold, ...]] = ContextVar("orchestrator_slot_holds", default=())


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
        """Hold one slot for the duration of the block (unless the task steps aside meanwhile)."""
        hold = _Hold(self, priority)
        await self.acquire(priority)
        hold.held = True
        token = _holds.set((*_holds.get(), hold))
        try:
            yield
        finally:
            _holds.reset(token)
            if hold.held:
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


@asynccontextmanager
async def stepped_aside() -> AsyncIterator[None]:
    """Give back every slot the current task holds for the duration of the block, then take them again in the
    order they were first taken (as every run takes them: no deadlock), at the same priority."""
    holds = [hold for hold in _holds.get() if hold.held]
    for hold in reversed(holds):
        hold.held = False
        hold.slots.release()
    try:
        yield
    finally:
        for hold in holds:  # cancelled on the way: the slots not taken again are not given back twice
            await hold.slots.acquire(hold.priority)
            hold.held = True
