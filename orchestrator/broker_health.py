"""Whether the Kafka broker answers now: a periodic metadata probe, outage logging, and topic re-creation.

`BrokerHealth.run` asks the broker for its metadata every `interval_s` (through the producer's client, so
no extra connection). A probe that fails or times out starts an outage: one `broker.unreachable` line, then
at most one `broker.still_unreachable` reminder a minute, and `/readyz` answers 503. When the broker answers
again, and whenever one of our topics is missing from its metadata (a broker that restarted empty: Tansu
keeps nothing), the missing topics are created again before the broker counts as healthy, so nothing is
published into a topic the broker auto-created with its own partition count. Then one `broker.recovered`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import structlog
from aiokafka.errors import KafkaError

from orchestrator.logs import Throttle

log = structlog.get_logger("orchestrator.broker")

#: Fetch the broker's metadata and return the topic names it knows; raises KafkaError or TimeoutError.
Probe = Callable[[], Awaitable[Collection[str]]]
#: Create the topics given that do not exist; raises KafkaError.
Recreate = Callable[[list[str]], Awaitable[object]]
#: Told which topics were just created again (the broker lost them): whatever was read of them is gone.
RecreatedListener = Callable[[list[str]], Awaitable[None]]


@dataclass(frozen=True)
class Outage:
    """An outage in progress: since when (epoch seconds) and the last reason a probe gave."""

    started_at: float
    reason: str


class BrokerHealth:
    """Tracks the broker's reachability; `healthy` is what `/readyz` reports."""

    def __init__(self, probe: Probe, recreate: Recreate, topics: Collection[str], *, interval_s: float = 1.0,
                 timeout_s: float = 3.0, remind_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._probe = probe
        self._recreate = recreate
        self._topics = list(topics)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._remind = Throttle(remind_s, clock=clock)
        self._listeners: list[RecreatedListener] = []
        self._up = asyncio.Event()
        self._up.set()
        #: The outage in progress, or None while the broker answers.
        self.outage: Outage | None = None
        #: Outages begun since start: a change tells the consumer the group's offsets may have been lost.
        self.outages = 0

    def when_recreated(self, listener: RecreatedListener) -> None:
        """Call `listener` with the topics re-created, after each re-creation and before `healthy` is True."""
        self._listeners.append(listener)

    @property
    def healthy(self) -> bool:
        """True while the broker answers and our topics exist."""
        return self.outage is None

    async def wait_healthy(self) -> None:
        """Return once the broker answers and our topics exist (at once when they do now)."""
        await self._up.wait()

    @property
    def outage_started_at(self) -> float | None:
        """When the outage in progress began (epoch seconds), or None."""
        return self.outage.started_at if self.outage is not None else None

    def problem(self) -> str | None:
        """Why the broker is not usable now, for `/readyz`; None when it is."""
        if self.outage is None:
            return None
        return f"the Kafka broker has been unreachable for {self._clock() - self.outage.started_at:.0f}s " \
               f"({self.outage.reason})"

    async def check(self) -> bool:
        """Probe once, re-create missing topics, update `healthy`, log a change of state; return `healthy`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                known = set(await self._probe())
                missing = [t for t in self._topics if t not in known]
                if missing:
                    await self._recreate(missing)
                    for listener in self._listeners:
                        await listener(missing)
        except (KafkaError, TimeoutError) as exc:
            self._failed(type(exc).__name__ if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}")
            return False
        if self.outage is not None:
            log.info("broker.recovered", outage_s=round(self._clock() - self.outage.started_at, 1),
                     recreated_topics=missing)
            self.outage = None
            self._up.set()
        return True

    def _failed(self, reason: str) -> None:
        if self.outage is None:
            self.outage = Outage(self._clock(), reason)
            self._up.clear()
            self.outages += 1
            self._remind("outage")  # the first line is the one below; reminders start a full interval later
            log.warning("broker.unreachable", reason=reason)
        elif self._remind("outage") is not None:
            log.warning("broker.still_unreachable", outage_s=round(self._clock() - self.outage.started_at),
                        reason=reason)

    async def run(self) -> None:
        """Probe every `interval_s` until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[BrokerHealth]:
        """Probe in a background task for the duration of the block."""
        task = asyncio.create_task(self.run(), name="broker health")
        try:
            yield self
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
