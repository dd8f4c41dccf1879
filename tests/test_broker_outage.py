"""A broker outage is survived: the orchestrator keeps running, says so briefly, and resumes when it returns.

This test runs its own Tansu broker on a fixed port, stops it for a while and starts it again, empty (Tansu
keeps data in memory only), on the same port.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import ExitStack

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator import embedded, kafka
from orchestrator.audit import KafkaAuditSink
from orchestrator.broker_health import BrokerHealth
from orchestrator.embedded import free_port
from tests.support import Harness, captured_logs, exposure, isolated_settings, read_all

pytestmark = pytest.mark.integration

#: Lines the whole test may log (start-up, outage, recovery); without throttling aiokafka logs thousands.
MAX_LOG_LINES = 100
OUTAGE_S = 12.0


class Broker:
    """A Tansu broker on a fixed port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self._stack: ExitStack | None = None

    def start(self) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(embedded.tansu(self.port))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A broker of this test's own."""
    own = Broker()
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The process logging as `orchestrator run` sets it up (JSON lines), into a buffer; restored after."""
    with captured_logs() as stream:
        yield stream


@pytest.fixture
async def running(broker: Broker, log_lines: io.StringIO) -> AsyncIterator[Harness]:
    """The orchestrator with its HTTP API, on the test's broker."""
    settings = isolated_settings(broker.url, http_listen=f"127.0.0.1:{free_port()}", drain_timeout_s=3.0)
    async with Harness(settings) as harness:
        yield harness


async def _readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    response = await http.get("/readyz")
    return response.status_code, response.json()


async def _until_status(http: httpx.AsyncClient, status: int, timeout_s: float) -> dict[str, str]:
    async with asyncio.timeout(timeout_s):
        while True:
            code, body = await _readiness(http)
            if code == status:
                return body
            await asyncio.sleep(0.2)


async def _values(bootstrap: str, topic: str) -> list[bytes]:
    """The topic's record values, read until there are some (a fresh broker may answer the first fetch empty)."""
    async with asyncio.timeout(15):
        while True:
            if records := await read_all(bootstrap, topic):
                return [record.value for record in records]
            await asyncio.sleep(0.5)


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_outage_is_survived_and_everything_published_after_it_is_processed(
        broker: Broker, running: Harness, log_lines: io.StringIO) -> None:
    """Broker gone 12 s and back empty: /readyz 503 then 200, topics back, new exposures audited, few lines."""
    settings = running.settings
    before = exposure("test.unmatched", credential={"id": "key-1"})
    await running.publish(before)
    await running.collect(before["id"])
    assert running.orchestrator.api_url is not None
    async with httpx.AsyncClient(base_url=running.orchestrator.api_url, timeout=5) as http:
        assert (await _readiness(http))[0] == 200

        broker.stop()
        stopped = time.monotonic()
        body = await _until_status(http, 503, timeout_s=5)
        assert "unreachable" in body["reason"]
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        assert (await _readiness(http))[0] == 503

        broker.start()
        await _until_status(http, 200, timeout_s=15)
        assert {settings.exposures_topic, settings.audit_topic, settings.dlq_topic} <= await _topics(broker.url)

        after = [exposure("test.unmatched", credential={"id": "key-1"}) for _ in range(5)]
        await running.publish(*after)
        trails = await running.collect(*(e["id"] for e in after), timeout_s=30)
    assert all(trail[-1]["event"] == "exposure.unmatched" for trail in trails.values())

    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert len(lines) < MAX_LOG_LINES, f"{len(lines)} log lines: {[line.get('event') for line in lines][:40]}"
    events = [line.get("event") for line in lines]
    assert events.count("broker.unreachable") == 1
    assert events.count("broker.recovered") == 1


async def test_an_audit_record_written_during_an_outage_is_stored_once_the_broker_returns(
        broker: Broker, log_lines: io.StringIO) -> None:
    """The write's acknowledgement waits out the outage and the topic's re-creation with another partition
    count, and resolves once the record is stored: not when Tansu acknowledges it into a topic it lost."""
    topic = f"test.{uuid.uuid4().hex[:8]}.audit"
    await kafka.ensure_topics(broker.url, [topic], partitions=3)
    # A short request timeout, so that aiokafka gives the first attempt up while the broker is away.
    producer = AIOKafkaProducer(bootstrap_servers=broker.url, acks="all", request_timeout_ms=2_000)
    await producer.start()

    async def probe() -> Collection[str]:
        return (await producer.client.fetch_all_metadata()).topics()  # type: ignore[no-any-return]

    async def recreate(missing: list[str]) -> None:
        await kafka.recreate_topics(broker.url, missing, partitions=2)

    try:
        async with BrokerHealth(probe, recreate, [topic], interval_s=0.5).running() as health:
            sink = KafkaAuditSink(producer, topic, health=health)
            await (await sink.write("exp-before", b'{"event":"before"}'))

            broker.stop()
            stored = asyncio.ensure_future(await sink.write("exp-during", b'{"event":"during"}'))
            await asyncio.sleep(3)
            assert not stored.done() and not health.healthy
            broker.start()
            async with asyncio.timeout(20):
                await stored
    finally:
        await producer.stop()
    assert await _values(broker.url, topic) == [b'{"event":"during"}']
    assert "delivery.retrying" in log_lines.getvalue()
