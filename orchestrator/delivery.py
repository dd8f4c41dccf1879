"""Delivery through broker outages: a record handed to `Delivery.send` is retried until the broker stores it.

The audit and dead-letter sinks queue records on the shared producer and hand back the producer's
acknowledgement for the caller to await (`AuditTrail.flush`, the pipeline's dead-lettering). aiokafka
fails those acknowledgements once the broker has been away for its request timeout, or at once when a
partition is unknown (a broker that came back empty). Here such a failure does not lose the record: it is
sent again, with backoff, until stored, and the acknowledgement the caller holds resolves only then. Only
errors no later attempt can fix (a refused record, a closed producer) reach the caller. A caller that stops
waiting (the drain deadline cancels its run) cancels the retries too.

With a `health` gate (the `BrokerHealth` probe) retries wait until the broker is back and its topics exist,
and an acknowledgement that arrives while the broker counts as unreachable is not trusted: that record is sent
again once the broker is healthy. Tansu acknowledges a produce to a topic that does not exist (what a client
with metadata from before the restart sends) and keeps nothing of it; with Kafka this costs a duplicate at
worst. A broker that restarts faster than the probe notices can still swallow such a record.

Records are retried independently: a record of one key may be stored after a later record of the same key
that happened to succeed first. Within an outage both fail and are retried in turn, so in practice each
key's records stay in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiokafka.errors import (
    IllegalArgumentError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerClosed,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)

from orchestrator.logs import Throttle

log = structlog.get_logger("orchestrator.delivery")

#: One attempt: queue the record on the producer, return the broker's acknowledgement to await.
Attempt = Callable[[], Awaitable[Awaitable[Any]]]
#: Refusals of the record itself, or of us: sending the same record again cannot help.
FATAL: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError, RecordTooLargeError, InvalidTopicError, TopicAuthorizationFailedError,
    UnsupportedVersionError, IllegalArgumentError, ProducerClosed,
)


def retriable(exc: BaseException) -> bool:
    """True for a Kafka failure a later attempt may not meet (broker away, partition unknown, timed out)."""
    return isinstance(exc, KafkaError) and not isinstance(exc, FATAL)


class HealthGate(Protocol):
    """What delivery needs of `BrokerHealth`."""

    @property
    def healthy(self) -> bool:
        """True while the broker answers and the topics exist."""
        ...

    async def wait_healthy(self) -> None:
        """Return once `healthy`."""
        ...


class _Untrusted(Exception):
    """Acknowledged while the broker counted as unreachable: possibly by a broker that kept nothing."""


class Delivery:
    """Sends to one topic, retrying every retriable failure with capped exponential backoff until stored."""

    def __init__(self, topic: str, *, on_failure: Callable[[], None] | None = None, health: HealthGate | None = None,
                 backoff_s: float = 0.25, max_backoff_s: float = 5.0, throttle: Throttle | None = None) -> None:
        self.topic = topic
        self.health = health
        self._on_failure = on_failure
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._throttle = throttle or Throttle()
        self._retrying: set[asyncio.Task[Any]] = set()

    @property
    def retrying(self) -> int:
        """Records being sent again now."""
        return len(self._retrying)

    async def send(self, attempt: Attempt) -> Awaitable[Any]:
        """Queue the record (one `attempt`); the returned awaitable resolves once the broker stored it."""
        loop = asyncio.get_running_loop()
        try:
            ack = asyncio.ensure_future(await attempt())
        except KafkaError as exc:
            if not retriable(exc):
                raise
            return self._spawn(attempt, exc)
        stored: asyncio.Future[Any] = loop.create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if stored.done():
                return
            if done.cancelled():
                stored.cancel()
            elif (exc := done.exception()) is None:
                if self._trusted():
                    stored.set_result(done.result())
                else:
                    _chain(self._spawn(attempt, _Untrusted()), stored)
            elif retriable(exc):
                _chain(self._spawn(attempt, exc), stored)
            else:
                stored.set_exception(exc)

        ack.add_done_callback(settle)
        return stored

    def _spawn(self, attempt: Attempt, first: BaseException) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._retry(attempt, first), name=f"deliver to {self.topic}")
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)
        return task

    async def _retry(self, attempt: Attempt, error: BaseException) -> Any:
        delay = self._backoff_s
        while True:
            if (held := self._throttle(self.topic)) is not None:
                log.warning("delivery.retrying", topic=self.topic, error=type(error).__name__,
                            retrying=len(self._retrying), held_back=held)
            if self._on_failure is not None:
                self._on_failure()
            await asyncio.sleep(delay)
            delay = min(self._max_backoff_s, delay * 2)
            if self.health is not None:
                await self.health.wait_healthy()
            try:
                result = await (await attempt())
                if self._trusted():
                    return result
                error = _Untrusted()
            except KafkaError as exc:
                if not retriable(exc):
                    raise
                error = exc


    def _trusted(self) -> bool:
        return self.health is None or self.health.healthy


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Settle `target` as `source` settles; cancelling `target` cancels `source`."""

    def forward(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (exc := done.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    source.add_done_callback(forward)
    target.add_done_callback(lambda t: source.cancel() if t.cancelled() else None)
