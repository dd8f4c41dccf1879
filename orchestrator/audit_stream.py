"""Reading the audit topic back: follow records (optionally of some exposures) and render them for people."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from orchestrator import kafka
from orchestrator.audit import TERMINAL_EVENTS
from orchestrator.progress import plain

_CAUGHT_UP_MS = 600
_TERMINAL = {event.value for event in TERMINAL_EVENTS}


def is_terminal(record: dict[str, Any]) -> bool:
    """True when the record ends its exposure's history."""
    return record.get("event") in _TERMINAL


async def follow(bootstrap: str, topic: str, *, exposure_ids: Collection[str] | None = None,
                 from_beginning: bool = True, idle_timeout_s: float | None = None,
                 positioned: asyncio.Event | None = None,
                 on_idle: Callable[[], None] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield audit records as they arrive (groupless: reading never disturbs the orchestrator's group).

    With `exposure_ids`, only their records. With `idle_timeout_s`, stop after that long without a record.
    Without `from_beginning`, only records written after `positioned` is set (live progress, no history).
    `on_idle` is called whenever a poll finds nothing new: the reader has caught up with the topic.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        await kafka.start(consumer, bootstrap)  # inside: a consumer that failed to start is still stopped
        await consumer.topics()  # refreshes metadata
        existed = bool(consumer.partitions_for_topic(topic))
        if not existed and positioned is not None:
            positioned.set()  # no topic, nothing written yet: whatever comes is new
        partitions = await _partitions(consumer, topic, idle_timeout_s)
        if not partitions:
            return
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning or not existed:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
            # seek_to_end only asks for the end on the next fetch: resolve it now, so that nothing written
            # after `positioned` is set can be skipped. (Tansu answers the last batch's base offset + 1: a few
            # older records are read again, and filtered out, never a newer one missed.)
            for partition in assigned:
                await consumer.position(partition)
        if positioned is not None:
            positioned.set()
        wanted = {i.encode() for i in exposure_ids} if exposure_ids is not None else None
        idle_ms = 0.0
        while idle_timeout_s is None or idle_ms < idle_timeout_s * 1000:
            batch = await consumer.getmany(timeout_ms=200)
            idle_ms = idle_ms + 200 if not batch else 0.0
            # One empty poll may only mean the first fetch is still on its way: caught up after a few.
            if idle_ms >= _CAUGHT_UP_MS and on_idle is not None:
                on_idle()
            for records in batch.values():
                for record in records:
                    if wanted is not None and record.key not in wanted:
                        continue
                    try:
                        value = json.loads(record.value)
                    except (TypeError, ValueError):
                        continue
                    if isinstance(value, dict):  # anything else on the topic is not an audit record
                        yield value
    finally:
        await consumer.stop()


async def find_end(bootstrap: str, topic: str, exposure_id: str, position: str, content_fingerprint: str, *,
                   idle_s: float = 1.0) -> dict[str, Any] | None:
    """The terminal record of the exposure (with this content) written after `position` (`PARTITION:OFFSET` of
    an earlier record of it, so on its partition), or None once the partition stays quiet for `idle_s`."""
    partition, _, offset = position.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        return None
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    wanted = exposure_id.encode()
    try:
        await kafka.start(consumer, bootstrap)
        assigned = TopicPartition(topic, int(partition))
        consumer.assign([assigned])
        consumer.seek(assigned, int(offset) + 1)
        while batch := await consumer.getmany(assigned, timeout_ms=int(idle_s * 1000)):
            for record in batch.get(assigned, []):
                if record.key != wanted:
                    continue
                try:
                    document = json.loads(record.value)
                except (TypeError, ValueError):
                    continue
                if is_terminal(document) and document.get("content_fingerprint") == content_fingerprint:
                    return document  # type: ignore[no-any-return]
        return None
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float | None) -> set[int]:
    """The topic's partitions, waiting for the topic to exist (a broker that came back empty has none yet)."""
    waited = 0.0
    while not (partitions := consumer.partitions_for_topic(topic) or set()):
        if timeout_s is not None and waited >= timeout_s:
            break
        await consumer.topics()  # refreshes metadata
        if not (partitions := consumer.partitions_for_topic(topic) or set()):
            await asyncio.sleep(0.5)
            waited += 0.5
    return set(partitions)


def render(record: dict[str, Any]) -> str:
    """One audit record as one readable line, escaped (`progress.plain`)."""
    return plain(record)
