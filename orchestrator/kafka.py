"""Kafka plumbing: client factories with our defaults, topic creation, and the dead-letter sink."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from orchestrator import record_batches
from orchestrator.delivery import Delivery, HealthGate
from orchestrator.errors import ConfigurationError
from orchestrator.pipeline import Origin
from orchestrator.redaction import REDACTOR
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.kafka")

#: How often clients refresh topic metadata, and so notice new partitions or re-created topics.
METADATA_MAX_AGE_MS = 10_000


def make_producer(bootstrap_servers: str) -> AIOKafkaProducer:
    """A producer whose sends resolve only once every in-sync replica has the record.

    Not idempotent: Tansu (the embedded broker) rejects InitProducerId. Ordering per key still holds
    because one producer sends each key's records in order over one connection per broker.
    """
    return AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=False,
                            linger_ms=5, max_batch_size=256 * 1024, request_timeout_ms=30_000,
                            metadata_max_age_ms=METADATA_MAX_AGE_MS)


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group consumer that never commits on its own (`ExposureConsumer` commits finished work) and that no
    batch can make raise (see `record_batches`)."""
    record_batches.install()
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=settings.group_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms, heartbeat_interval_ms=settings.heartbeat_interval_ms,
        # Far above the session timeout: at or below it, two members were seen owning one partition.
        max_poll_interval_ms=max(300_000, settings.session_timeout_ms * 10),
        max_partition_fetch_bytes=4 * 1024 * 1024,
        # aiokafka's default, 5 minutes, is how long partitions added to the topic (or a topic re-created with
        # more of them after a broker came back empty) would go unconsumed.
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


async def start(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient, bootstrap: str) -> None:
    """Start a client, turning "no broker there" into one clear line for the operator.

    aiokafka logs each refused bootstrap connection at ERROR before raising; during start-up that would be a
    second, noisier line saying the same, so its logger is held at CRITICAL until the client is up.
    """
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await client.start()
    except KafkaConnectionError:
        raise ConfigurationError(
            f"cannot reach Kafka at {bootstrap}; check KAFKA_BOOTSTRAP_SERVERS and that the broker is up"
        ) from None
    finally:
        aiokafka_log.setLevel(level)


async def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int = 6, replication: int = 1) -> None:
    """Create the topics that do not exist yet; at start-up, where failing to is fatal (ConfigurationError)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await start(admin, bootstrap)
    try:
        await _create_missing(admin, topics, partitions=partitions, replication=replication)
    except KafkaError as exc:
        raise ConfigurationError(f"cannot create topics {topics} on {bootstrap}: {exc}") from None
    finally:
        await admin.close()


async def recreate_topics(bootstrap: str, topics: list[str], *, partitions: int = 6,
                          replication: int = 1) -> list[str]:
    """Create the topics that do not exist (any more) and return them; raises KafkaError, for the caller to
    try again later: a broker that came back empty (Tansu keeps nothing) lost every topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    await admin.start()
    try:
        return await _create_missing(admin, topics, partitions=partitions, replication=replication)
    finally:
        await admin.close()


async def _create_missing(admin: AIOKafkaAdminClient, topics: list[str], *, partitions: int,
                          replication: int) -> list[str]:
    existing = set(await admin.list_topics())
    missing = [t for t in topics if t not in existing]
    if missing:
        try:
            await admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=replication)
                                       for t in missing])
        except TopicAlreadyExistsError:
            pass
        log.info("topics.created", topics=missing, partitions=partitions)
    return missing


class KafkaDeadLetters:
    """Sends rejected records to the dead-letter topic with `error` and `source.*` headers."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, health: HealthGate | None = None) -> None:
        self._producer = producer
        self._topic = topic
        self._delivery = Delivery(topic, health=health)

    async def send(self, raw: bytes | None, *, origin: Origin, reason: str) -> Awaitable[Any]:
        """Queue the record; the awaitable resolves once the broker stored it."""
        headers = [
            ("error", reason.encode()),
            ("source.topic", origin.topic.encode()),
            ("source.partition", str(origin.partition).encode()),
            ("source.offset", str(origin.offset).encode()),
        ]
        key = REDACTOR.text(origin.key.decode(errors="replace")).encode() if origin.key else None
        return await self._delivery.send(
            lambda: self._producer.send(self._topic, value=raw, key=key, headers=headers))
