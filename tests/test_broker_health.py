"""The broker health probe as a unit: scripted probe answers, an injected clock, the log lines it writes."""

from __future__ import annotations

from collections.abc import Collection

import pytest
import structlog
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from orchestrator.broker_health import BrokerHealth

TOPICS = ("credentials.exposed", "credentials.audit", "credentials.exposed.dlq")


class Broker:
    """A scripted broker: up or down, the topics it knows, the topics it was asked to create."""

    def __init__(self) -> None:
        self.up = True
        self.topics: set[str] = set(TOPICS)
        self.created: list[list[str]] = []
        self.create_fails = False
        self.now = 1000.0

    async def probe(self) -> Collection[str]:
        if not self.up:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
        return set(self.topics)

    async def recreate(self, missing: list[str]) -> None:
        if self.create_fails:
            raise KafkaTimeoutError()
        self.created.append(missing)
        self.topics.update(missing)

    def health(self) -> BrokerHealth:
        return BrokerHealth(self.probe, self.recreate, TOPICS, clock=lambda: self.now)


async def test_an_outage_is_one_line_and_a_reminder_a_minute() -> None:
    """Two minutes of failed probes every second log `broker.unreachable` once, then a reminder after a minute."""
    broker = Broker()
    health = broker.health()
    broker.up = False
    with structlog.testing.capture_logs() as logs:
        for _ in range(120):
            assert not await health.check()
            broker.now += 1
    events = [entry["event"] for entry in logs]
    assert events == ["broker.unreachable", "broker.still_unreachable"]
    assert not health.healthy and health.outage_started_at == 1000.0


async def test_recovery_recreates_the_lost_topics_before_it_counts_as_healthy() -> None:
    """Back empty: every topic is created again, then one `broker.recovered` with the outage's length."""
    broker = Broker()
    health = broker.health()
    broker.up = False
    await health.check()
    broker.now += 20
    broker.up, broker.topics = True, set()
    with structlog.testing.capture_logs() as logs:
        assert await health.check()
    assert broker.created == [list(TOPICS)]
    assert [(e["event"], e["outage_s"]) for e in logs] == [("broker.recovered", 20.0)]
    assert health.healthy and health.problem() is None


async def test_a_topic_lost_without_a_noticed_outage_is_recreated_and_announced() -> None:
    """A restart quicker than the probe interval still shows as missing topics; listeners hear which."""
    broker = Broker()
    health = broker.health()
    heard: list[list[str]] = []

    async def listener(topics: list[str]) -> None:
        heard.append(topics)

    health.when_recreated(listener)
    broker.topics.discard("credentials.audit")
    assert await health.check()
    assert broker.created == heard == [["credentials.audit"]]


async def test_topics_that_cannot_be_created_yet_keep_it_unready() -> None:
    """The broker answers but creating topics fails: still not ready, with the reason; next probe retries."""
    broker = Broker()
    health = broker.health()
    broker.topics, broker.create_fails = set(), True
    assert not await health.check()
    assert "KafkaTimeoutError" in (health.problem() or "")
    broker.create_fails = False
    assert await health.check()


@pytest.mark.parametrize("seconds", [5, 95])
async def test_readiness_reason_says_for_how_long(seconds: int) -> None:
    """`/readyz`'s reason names the outage's length so far."""
    broker = Broker()
    health = broker.health()
    broker.up = False
    await health.check()
    broker.now += seconds
    assert f"unreachable for {seconds}s" in (health.problem() or "")
