"""The aiokafka consume loop: bounded concurrency, per-credential ordering, and its commit policy.

An offset is committed only when every earlier record of its partition has its terminal audit record
acknowledged (at-least-once; a crash redelivers, never skips). Stopping drains in-flight work first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from orchestrator.offsets import OffsetTracker
from orchestrator.pipeline import Origin, Pipeline

log = structlog.get_logger("orchestrator.consumer")


class ExposureConsumer:
    """Feeds records from the exposures topic to the pipeline and commits what is finished."""

    def __init__(self, consumer: AIOKafkaConsumer, pipeline: Pipeline, *, topic: str, max_in_flight: int,
                 commit_interval_s: float = 1.0, drain_timeout_s: float = 20.0) -> None:
        self._consumer = consumer
        self._pipeline = pipeline
        self._topic = topic
        self._slots = asyncio.Semaphore(max_in_flight)
        self._commit_interval_s = commit_interval_s
        self._drain_timeout_s = drain_timeout_s
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()

    def subscribe(self) -> None:
        """Join the group on the exposures topic."""
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))

    def stop(self) -> None:
        """Stop fetching; `run` drains in-flight work, commits and returns."""
        self._stopping.set()

    @property
    def in_flight(self) -> int:
        """Records being processed now."""
        return len(self._tasks)

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
                batch = await self._consumer.getmany(timeout_ms=100, max_records=500)
                for partition, records in batch.items():
                    for record in records:
                        await self._slots.acquire()
                        self._start(partition, record)
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self._drain(set(self._tasks.values()))
            await self.commit()

    def _start(self, partition: TopicPartition, record: Any) -> None:
        origin = Origin(record.topic, record.partition, record.offset, record.key)
        admission = self._pipeline.admit(record.value, origin)
        key = admission.ordering_key
        previous = self._tails.get(key)
        tail: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = tail
        self._offsets.started(partition, record.offset)

        async def work() -> None:
            completed = False
            try:
                if previous is not None:
                    await asyncio.shield(previous)
                await self._pipeline.process(admission)
                completed = True
            finally:
                tail.set_result(None)
                if self._tails.get(key) is tail:
                    del self._tails[key]
                if completed:
                    self._offsets.finished(partition, record.offset)
                self._slots.release()

        task = asyncio.create_task(work(), name=f"exposure {origin.label}")
        self._tasks[task] = partition
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("record.crashed", error=repr(task.exception()))

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
            await asyncio.wait(unfinished, timeout=10)

    async def commit(self) -> None:
        """Commit every partition's safe offset."""
        offsets = self._offsets.to_commit()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("consumer.commit_failed", error=repr(exc), partitions=len(offsets))
            return
        self._offsets.committed(offsets)

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
