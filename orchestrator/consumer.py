"""The aiokafka consume loop: bounded buffering, per-provider run slots, per-credential ordering, and its commits.

An offset is committed only when every earlier record of its partition has its terminal audit record
acknowledged (at-least-once; a crash redelivers, never skips). Nothing a record holds can stop the loop: every
record, decodable or not, is handed to the pipeline, and a failure inside one record's handling ends that
record alone. A provider waiting out its rate limit holds only its own lane's slots, so the loop keeps
fetching (up to `max_buffered` records held) and a critical exposure for another provider starts at once.
Stopping drains in-flight work first, within the drain timeout, whatever state the broker is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from orchestrator.lanes import Lanes, PrioritySlots
from orchestrator.offsets import OffsetTracker
from orchestrator.pipeline import Origin, Pipeline
from orchestrator.record_batches import UndecodableBatch

log = structlog.get_logger("orchestrator.consumer")

#: Record bytes held (fetched, not finished) before the loop stops fetching, whatever `max_buffered` says.
MAX_BUFFERED_BYTES = 256 * 1024 * 1024
#: How long the final commit and each broker call at shutdown may take when the broker is gone.
SHUTDOWN_CALL_TIMEOUT_S = 5.0
#: After the broker returns, how long commits wait for fresh fetch answers (see `_rewind_new_incarnations`).
RECOVERY_GRACE_S = 3.0
#: Seconds between two log lines about the same recurring broker problem.
_REPEAT_LOG_S = 30.0


class ExposureConsumer:
    """Feeds records from the exposures topic to the pipeline and commits what is finished."""

    def __init__(self, consumer: AIOKafkaConsumer, pipeline: Pipeline, *, topic: str, max_in_flight: int,
                 max_in_flight_per_provider: int | None = None, max_buffered: int | None = None,
                 commit_interval_s: float = 1.0, drain_timeout_s: float = 20.0,
                 broker_outages: Callable[[], int] = lambda: 0,
                 broker_healthy: Callable[[], bool] = lambda: True) -> None:
        self._consumer = consumer
        self._pipeline = pipeline
        self._topic = topic
        self._lanes = Lanes(max_in_flight_per_provider or max_in_flight)
        self._overall = PrioritySlots(max_in_flight)
        self._max_buffered = max(max_buffered or 0, max_in_flight)
        self._commit_interval_s = commit_interval_s
        self._drain_timeout_s = drain_timeout_s
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._buffered_bytes = 0
        self._room = asyncio.Event()
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._stopping = asyncio.Event()
        #: Set after anything that may mean the group's committed offsets were lost (commit or fetch failures,
        #: a broker outage): the next commit first checks that the broker still has what this process committed
        #: and that the offsets fit the partition as it is now.
        self._suspect = False
        self._broker_outages = broker_outages
        self._broker_healthy = broker_healthy
        self._outages_seen = 0
        self._recovered_at = -RECOVERY_GRACE_S
        self._last_logged: dict[str, float] = {}
        self.assigned = asyncio.Event()

    def subscribe(self) -> None:
        """Join the group on the exposures topic."""
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))

    def stop(self) -> None:
        """Stop fetching; `run` drains in-flight work, commits and returns."""
        self._stopping.set()
        self._room.set()

    @property
    def in_flight(self) -> int:
        """Records fetched and not finished: running, or queued for a slot of their provider."""
        return len(self._tasks)

    def waiting_by_provider(self) -> dict[str, int]:
        """Per provider lane, runs queued for a slot."""
        return self._lanes.waiting()

    async def lag(self) -> int:
        """Records on the assigned partitions not fetched yet: high watermark minus position, as last fetched."""
        total = 0
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)
            if highwater is not None:
                try:
                    total += max(0, highwater - await self._consumer.position(partition))
                except IllegalStateError:  # revoked by a rebalance meanwhile
                    continue
        return total

    async def run(self) -> None:
        """Consume until `stop`; then drain, commit and return."""
        last_commit = time.monotonic()
        try:
            while not self._stopping.is_set():
                room = await self._wait_for_room()
                if room == 0:
                    continue
                for partition, records in (await self._fetch(room)).items():
                    for record in records:
                        self._start(partition, record)
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    await self._rewind_new_incarnations()
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self._drain(set(self._tasks.values()))
            try:
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT_S):
                    await self.commit()
            except TimeoutError:
                log.warning("consumer.final_commit_abandoned", reason="broker did not answer")

    async def _wait_for_room(self) -> int:
        """How many more records may be fetched; waits while the buffer is full (returns 0 when stopping)."""
        while not self._stopping.is_set():
            room = self._max_buffered - len(self._tasks)
            if room > 0 and self._buffered_bytes < MAX_BUFFERED_BYTES:
                return min(room, 500)
            self._room.clear()
            await self._room.wait()
        return 0

    async def _fetch(self, max_records: int) -> dict[TopicPartition, list[Any]]:
        """One `getmany`; a broker problem is logged (rarely) and answered with nothing, never raised."""
        try:
            batch: dict[TopicPartition, list[Any]] = await self._consumer.getmany(timeout_ms=100,
                                                                                  max_records=max_records)
            return batch
        except KafkaError as exc:
            self._suspect = True
            self._log_rarely("consumer.fetch_failed", error=type(exc).__name__, detail=str(exc)[:200])
        except Exception as exc:  # noqa: BLE001 - the loop must outlive anything the client raises
            self._log_rarely("consumer.fetch_crashed", error=type(exc).__name__)
        await asyncio.sleep(1.0)
        return {}

    def _start(self, partition: TopicPartition, record: Any) -> None:
        """Hand one fetched record to a task of its own; never raises."""
        if isinstance(record, UndecodableBatch):
            origin = Origin(record.topic, record.partition, record.offset, None, last_offset=record.last_offset)
            admission = self._pipeline.admit_undecodable(record.raw, origin, record.reason)
            offset, size = record.last_offset, len(record.raw)
        else:
            origin = Origin(record.topic, record.partition, record.offset, record.key)
            admission = self._pipeline.admit(record.value, origin, record.headers or ())
            offset, size = record.offset, len(record.value or b"")
        key = admission.ordering_key
        previous = self._tails.get(key)
        tail: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = tail
        epoch = self._offsets.started(partition, offset)
        self._buffered_bytes += size

        async def work() -> None:
            finished = False
            try:
                if previous is not None:
                    await asyncio.shield(previous)
                # Provider lane first, then the overall cap: a queue on one provider never holds overall slots.
                async with self._lanes.slot(admission.lane, admission.priority), \
                        self._overall.slot(admission.priority):
                    await self._pipeline.process(admission)
                finished = True
            except Exception as exc:  # noqa: BLE001 - one record's failure must end that record, not the loop
                finished = await self._pipeline.fail_safe(admission, exc)
            finally:
                tail.set_result(None)
                if self._tails.get(key) is tail:
                    del self._tails[key]
                if finished:
                    self._offsets.finished(partition, offset, epoch)
                self._buffered_bytes -= size
                self._room.set()

        task = asyncio.create_task(work(), name=f"exposure {origin.label}")
        self._tasks[task] = partition
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:  # only if fail_safe itself failed
            log.error("record.crashed", error=type(task.exception()).__name__)

    async def _drain(self, partitions: set[TopicPartition]) -> None:
        """Let in-flight records of `partitions` finish; cancel what is still running at the deadline."""
        tasks = [t for t, p in self._tasks.items() if p in partitions]
        if not tasks:
            return
        log.info("consumer.draining", in_flight=len(tasks), timeout_s=self._drain_timeout_s)
        _, unfinished = await asyncio.wait(tasks, timeout=self._drain_timeout_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.warning("consumer.abandoned", runs=len(unfinished))
            await asyncio.wait(unfinished, timeout=SHUTDOWN_CALL_TIMEOUT_S)

    async def commit(self) -> None:
        """Commit every partition's safe offset that still belongs to the topic as the broker knows it."""
        if not self._broker_healthy():
            # Until the broker is back and its topics re-created (`topics_recreated` voids what was tracked of a
            # lost topic), a commit could land offsets of the old topic on the new one.
            return
        if self._broker_outages() != self._outages_seen:
            self._outages_seen = self._broker_outages()
            self._suspect = True
            self._recovered_at = time.monotonic()
        if time.monotonic() - self._recovered_at < RECOVERY_GRACE_S:
            return  # fetch answers since the broker's return first tell `_rewind_new_incarnations` what it lost
        offsets = self._offsets.to_commit()
        if offsets and self._suspect:
            try:
                async with asyncio.timeout(SHUTDOWN_CALL_TIMEOUT_S):
                    offsets = await self._still_current(offsets)
            except TimeoutError:  # e.g. inside a rebalance callback while the coordinator is being rediscovered
                return
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            self._suspect = True
            self._log_rarely("consumer.commit_failed", error=type(exc).__name__, partitions=len(offsets))
            return
        self._offsets.committed(offsets)

    async def _still_current(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """`offsets` less those of partitions whose group offsets the broker lost (a broker that came back empty).

        Such a partition is a new incarnation: committing what was tracked before would skip its first records.
        """
        current = {}
        deferred = False
        try:
            for partition, offset in offsets.items():
                ours = self._offsets.last_committed(partition)
                theirs = await self._consumer.committed(partition)
                highwater = self._consumer.highwater(partition)
                if highwater is not None and offset > highwater:
                    deferred = True  # past the partition's end as the broker now has it: not committed yet
                    continue
                if ours is not None and (theirs is None or theirs < ours):
                    log.warning("consumer.offsets_lost", partition=f"{partition.topic}/{partition.partition}",
                                committed_before=ours, broker_has=theirs)
                    self._offsets.forget(partition)
                else:
                    current[partition] = offset
        except KafkaError as exc:
            self._log_rarely("consumer.commit_check_failed", error=type(exc).__name__)
            return {}
        self._suspect = deferred
        return current

    async def topics_recreated(self, topics: list[str]) -> None:
        """The broker lost topics and they were created again: if the exposures topic is one, what was tracked
        of it is void and the new incarnation is read from its start."""
        if self._topic in topics:
            await self._rewind([p for p in self._consumer.assignment() if p.topic == self._topic])

    async def _rewind_new_incarnations(self) -> None:
        """Rewind partitions whose fetch position is past the end the broker reports in its fetch answers: the
        topic is a new incarnation (created again by anyone, say auto-created by a client after a broker that
        keeps nothing restarted). Tansu answers a fetch past the end with nothing, not OffsetOutOfRange, so the
        old position would skip the new topic's first records."""
        behind = []
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)  # from fetch answers: right on Tansu, unlike ListOffsets
            with contextlib.suppress(IllegalStateError):
                if highwater is not None and await self._consumer.position(partition) > highwater:
                    behind.append(partition)
        await self._rewind(behind)

    async def _rewind(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        for partition in partitions:
            self._offsets.forget(partition)
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile: a new assignment starts afresh
            await self._consumer.seek_to_beginning(*partitions)
        log.info("consumer.rewound", topic=self._topic, partitions=sorted(p.partition for p in partitions))

    def _log_rarely(self, event: str, **fields: Any) -> None:
        """Log a recurring problem once per `_REPEAT_LOG_S`, not once per attempt."""
        now = time.monotonic()
        if now - self._last_logged.get(event, -_REPEAT_LOG_S) >= _REPEAT_LOG_S:
            self._last_logged[event] = now
            log.warning(event, **fields)

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        await self._drain(partitions)
        await self.commit()
        for partition in partitions:
            self._offsets.forget(partition)

    def _assigned(self, partitions: set[TopicPartition]) -> None:
        log.info("consumer.assigned", partitions=sorted(f"{p.topic}/{p.partition}" for p in partitions))
        if partitions:
            self.assigned.set()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finish and commit revoked partitions' work before another member takes them over."""

    def __init__(self, owner: ExposureConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner._assigned(set(assigned))
