"""Kafka plumbing: client factories with our defaults, topic creation, and the dead-letter sink."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)

from orchestrator import dead_letters, record_batches
from orchestrator.delivery import Delivery, HealthGate
from orchestrator.errors import ConfigurationError
from orchestrator.events import claimed_id, fingerprint
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
    """Sends rejected records to the dead-letter topic, sealed (`orchestrator.dead_letters`), with `error`
    and `source.*` headers, retried through broker outages (`Delivery`). With `key`, originals are stored
    encrypted; without, their secrets are dropped."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, key: bytes | None = None,
                 health: HealthGate | None = None) -> None:
        self._producer = producer
        self._topic = topic
        self._key = key
        self._delivery = Delivery(topic, health=health)

    async def send(self, raw: bytes | None, *, origin: Origin, reason: str) -> Awaitable[Any]:
        """Queue the record's dead letter(s); the awaitable resolves once the broker stored them.

        Never raises for the record's size or content: what the producer or broker refuses as too large
        is sent again as headers only, saying so.
        """
        headers = [
            ("error", REDACTOR.text(reason).encode("utf-8", "replace")),
            ("source.topic", origin.topic.encode()),
            ("source.partition", str(origin.partition).encode()),
            ("source.offset", str(origin.offset).encode()),
        ]
        key = _safe_key(origin, raw)
        size = b"0" if raw is None else str(len(raw)).encode()
        pieces = dead_letters.seal(raw, key=self._key, redactor=REDACTOR)
        acks = []
        for piece in pieces:
            try:
                acks.append(await self._queue(piece.value, key, headers + piece.headers))
            except _TOO_LARGE:  # below even one chunk: keep what the letter was, not its body
                acks.append(await self._headers_only(key, headers, size))
                break
        return asyncio.ensure_future(self._stored(acks, key, headers, size))

    async def _queue(self, value: bytes | None, key: bytes, headers: list[tuple[str, bytes]]) -> Awaitable[Any]:
        # Every chunk of a letter has its key, so they share one partition and `dlq show` finds them in order.
        return await self._delivery.send(lambda: self._producer.send(self._topic, value=value, key=key,
                                                                     headers=headers))

    async def _stored(self, acks: list[Awaitable[Any]], key: bytes, headers: list[tuple[str, bytes]],
                      size: bytes) -> None:
        for ack in acks:
            try:
                await ack
            except _TOO_LARGE:  # the broker's own limit is lower than ours
                log.warning("dead_letter.too_large", topic=self._topic, size=int(size))
                await (await self._headers_only(key, headers, size))

    async def _headers_only(self, key: bytes, headers: list[tuple[str, bytes]], size: bytes) -> Awaitable[Any]:
        return await self._queue(None, key, [*headers, ("truncated", b"true"), ("original.size", size),
                                             ("redaction", b"body-dropped")])


#: The producer's or the broker's "this record is too large".
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


def _safe_key(origin: Origin, raw: bytes | None) -> bytes:
    """The dead letter's key: the original record's when it is the exposure id the record claims (ids are audited
    as they are, and a dead letter is found by it), else the key's keyed fingerprint, since a publisher may put
    anything there; a record with no key is keyed by where it was read (a tombstone needs a key)."""
    if not origin.key:
        return origin.label.encode()
    text = origin.key.decode(errors="replace")
    if text != claimed_id(raw):
        return f"key {fingerprint(origin.key.decode(errors='surrogateescape'))}".encode()
    return text.encode("utf-8", "replace")

