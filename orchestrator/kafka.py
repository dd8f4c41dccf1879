"""Kafka plumbing: client factories with our defaults, topic creation, and the dead-letter sink."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
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
                 health: HealthGate | None = None, bootstrap: str | None = None) -> None:
        self._producer = producer
        self._topic = topic
        self._key = key
        self._delivery = Delivery(topic, health=health)
        self._bootstrap = bootstrap

    @property
    def encrypted(self) -> bool:
        """True when originals are stored whole, encrypted (a key is configured): a replay can use them."""
        return self._key is not None

    async def fetch(self, location: str) -> bytes:
        """The original record of the dead letter at `PARTITION:OFFSET`, decrypted; `DeadLetterError` when it
        cannot be (gone with the topic's retention, another key, altered)."""
        if self._key is None or self._bootstrap is None:
            raise dead_letters.DeadLetterError("no encryption key is configured (ORCHESTRATOR_ENCRYPTION_KEY)")
        partition, _, offset = location.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise dead_letters.DeadLetterError(f"{location!r} is not a dead letter's PARTITION:OFFSET")
        pieces = await _read_letter(self._bootstrap, TopicPartition(self._topic, int(partition)), int(offset))
        if not pieces:
            raise dead_letters.DeadLetterError(f"dead letter {location} is no longer on {self._topic}")
        value = dead_letters.assemble(pieces)
        if value is None:
            raise dead_letters.DeadLetterError(f"dead letter {location} has no body")
        return dead_letters.unseal(value, pieces[0][1], self._key)

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
                      size: bytes) -> str | None:
        """Wait for every record of the letter; return where its first record is (`PARTITION:OFFSET`)."""
        location = None
        for ack in acks:
            try:
                stored = await ack
            except _TOO_LARGE:  # the broker's own limit is lower than ours
                log.warning("dead_letter.too_large", topic=self._topic, size=int(size))
                await (await self._headers_only(key, headers, size))
                return None
            if location is None and hasattr(stored, "offset"):
                location = f"{stored.partition}:{stored.offset}"
        return location

    async def _headers_only(self, key: bytes, headers: list[tuple[str, bytes]], size: bytes) -> Awaitable[Any]:
        return await self._queue(None, key, [*headers, ("truncated", b"true"), ("original.size", size),
                                             ("redaction", b"body-dropped")])


async def _read_letter(bootstrap: str, partition: TopicPartition, offset: int,
                       timeout_s: float = 10.0) -> list[tuple[bytes | None, dict[str, bytes]]]:
    """The records of the dead letter starting at `offset` (one, or all its chunks); [] when not there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await start(consumer, bootstrap)
    pieces: list[tuple[bytes | None, dict[str, bytes]]] = []
    try:
        consumer.assign([partition])
        consumer.seek(partition, offset)
        empty = 0
        async with asyncio.timeout(timeout_s):
            while True:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                empty = 0 if batch else empty + 1
                if empty >= 3 and not pieces:
                    return []
                for record in batch.get(partition, []):
                    headers = {k: v for k, v in record.headers}
                    if not pieces and record.offset != offset:
                        return []  # the letter's offset is gone (retention): the first one read is another
                    if pieces and headers.get("chunk.id") != pieces[0][1].get("chunk.id"):
                        continue  # another letter's record between this one's chunks
                    pieces.append((record.value, headers))
                    if len(pieces) >= int(pieces[0][1].get("chunk.count", b"1")):
                        return pieces
    except TimeoutError:
        return pieces
    finally:
        await consumer.stop()


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

