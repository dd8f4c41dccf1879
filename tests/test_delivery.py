"""Sends retried through outages, as a unit: scripted attempts fail the way aiokafka's sends fail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
)

from orchestrator.delivery import Delivery


class Attempts:
    """Each call queues one send: the first ones fail as scripted (on queueing or on acknowledgement)."""

    def __init__(self, *failures: tuple[str, BaseException]) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.refreshed = 0

    async def __call__(self) -> Awaitable[Any]:
        self.calls += 1
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures:
            where, exc = self.failures.pop(0)
            if where == "queue":
                raise exc
            ack.set_exception(exc)
        else:
            ack.set_result(f"stored on attempt {self.calls}")
        return ack


def delivery(attempts: Attempts) -> Delivery:
    def refresh() -> None:
        attempts.refreshed += 1

    return Delivery("t", on_failure=refresh, backoff_s=0.01, max_backoff_s=0.02)


async def test_a_send_that_works_resolves_as_the_broker_acknowledged() -> None:
    """No failure: one attempt, its acknowledgement."""
    attempts = Attempts()
    assert await (await delivery(attempts).send(attempts)) == "stored on attempt 1"


async def test_failed_acknowledgements_are_sent_again_until_stored() -> None:
    """Timeouts, an unknown partition and a moved leader: the record is sent again each time."""
    attempts = Attempts(("ack", KafkaTimeoutError()), ("ack", UnknownTopicOrPartitionError()),
                        ("queue", KafkaTimeoutError()), ("ack", NotLeaderForPartitionError()))
    assert await (await delivery(attempts).send(attempts)) == "stored on attempt 5"
    assert attempts.refreshed == 4


async def test_a_failure_while_queueing_is_retried_too() -> None:
    """aiokafka raising out of `send` itself (no metadata within its timeout) does not lose the record."""
    attempts = Attempts(("queue", KafkaTimeoutError()))
    assert await (await delivery(attempts).send(attempts)) == "stored on attempt 2"


@pytest.mark.parametrize("where", ["queue", "ack"])
async def test_a_refused_record_is_not_retried(where: str) -> None:
    """A record the broker will never take (too large) fails the caller at once."""
    attempts = Attempts((where, MessageSizeTooLargeError()))
    with pytest.raises(MessageSizeTooLargeError):
        await (await delivery(attempts).send(attempts))
    assert attempts.calls == 1


async def test_a_caller_that_stops_waiting_stops_the_retries() -> None:
    """Cancelling the acknowledgement (a run abandoned at the drain deadline) ends its retries."""
    attempts = Attempts(*[("ack", KafkaTimeoutError())] * 1000)
    sender = delivery(attempts)
    stored = asyncio.ensure_future(await sender.send(attempts))
    await asyncio.sleep(0.1)
    assert sender.retrying == 1
    stored.cancel()
    await asyncio.sleep(0.05)
    calls = attempts.calls
    await asyncio.sleep(0.1)
    assert sender.retrying == 0 and attempts.calls == calls


class Gate:
    """A broker health that the test turns on and off."""

    def __init__(self) -> None:
        self.up = asyncio.Event()

    @property
    def healthy(self) -> bool:
        return self.up.is_set()

    async def wait_healthy(self) -> None:
        await self.up.wait()


async def test_an_acknowledgement_during_an_outage_is_not_trusted() -> None:
    """Acknowledged while the broker counts as unreachable (Tansu acks into a lost topic): sent again once the
    broker is healthy, and only then resolved."""
    attempts, gate = Attempts(), Gate()
    sender = Delivery("t", health=gate, backoff_s=0.01)
    stored = asyncio.ensure_future(await sender.send(attempts))
    await asyncio.sleep(0.1)
    assert not stored.done() and attempts.calls == 1
    gate.up.set()
    assert await stored == "stored on attempt 2"
