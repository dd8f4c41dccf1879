"""Audit records: the closed set of events, the structlog pipeline that renders them, and their Kafka sink.

Every record is a JSON object keyed by exposure id on the audit topic, rendered by structlog
(timestamp → redaction of values → JSON) and echoed to the process log. Fields: `ts`, `event`, `exposure_id`, and
where they apply `run_id`, `playbook`, `step`, `action`, `target`, `attempt`, `duration_ms`, `error`,
`actor`, `credential_kind`, `detector` (plus a few documented extras such as `reason`, `note`, `calls`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any, Protocol

import orjson
import structlog
from aiokafka.partitioner import murmur2
from pydantic import SecretStr

from orchestrator.delivery import Delivery, HealthGate
from orchestrator.redaction import MASK, REDACTOR, Redactor


class AuditEvent(StrEnum):
    """What an audit record reports."""

    EXPOSURE_RECEIVED = "exposure.received"
    EXPOSURE_REJECTED = "exposure.rejected"
    EXPOSURE_DUPLICATE = "exposure.duplicate"
    EXPOSURE_UNMATCHED = "exposure.unmatched"
    RUN_STARTED = "run.started"
    STEP_STARTED = "step.started"
    STEP_RETRYING = "step.retrying"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    STEP_SKIPPED = "step.skipped"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_PLANNED = "run.planned"
    #: The run waits for a person (two-person approval, or the mass-action brake); its plan is in the record.
    RUN_AWAITING_APPROVAL = "run.awaiting_approval"
    #: A responder approved it, or an admin released the brake: the run goes on.
    RUN_APPROVED = "run.approved"
    #: Denied, expired, or dropped by the brake's timeout policy: ends the exposure, nothing revoked.
    RUN_DENIED = "run.denied"
    #: `orchestrator undo`: a reversal of a run's reversible steps started, each reversed step, and its end.
    UNDO_STARTED = "undo.started"
    UNDO_STEP_SUCCEEDED = "undo.step_succeeded"
    UNDO_STEP_FAILED = "undo.step_failed"
    UNDO_COMPLETED = "undo.completed"
    UNDO_FAILED = "undo.failed"
    EXPOSURE_REPLAYED = "exposure.replayed"
    REPLAY_REFUSED = "replay.refused"

    @property
    def terminal(self) -> bool:
        """True for the one record that ends an exposure's history."""
        return self in TERMINAL_EVENTS

    @property
    def log_level(self) -> str:
        """The level its echo in the process log gets: failures at error/warning, waits at warning, else info."""
        return _LOG_LEVELS.get(self, "info")


TERMINAL_EVENTS = frozenset(
    {AuditEvent.EXPOSURE_REJECTED, AuditEvent.EXPOSURE_DUPLICATE, AuditEvent.EXPOSURE_UNMATCHED,
     AuditEvent.RUN_COMPLETED, AuditEvent.RUN_FAILED, AuditEvent.RUN_PLANNED, AuditEvent.RUN_DENIED}
)


_LOG_LEVELS = {AuditEvent.RUN_FAILED: "error", AuditEvent.STEP_FAILED: "warning",
               AuditEvent.EXPOSURE_REJECTED: "warning", AuditEvent.EXPOSURE_UNMATCHED: "warning",
               AuditEvent.STEP_RETRYING: "warning"}

#: Receives every audit record, as the dict written to the audit topic (already redacted).
AuditObserver = Callable[[dict[str, Any]], None]


class AuditSink(Protocol):
    """Where rendered audit records go. `write` returns once queued; the awaitable resolves once stored."""

    async def write(self, key: str, record: bytes) -> Awaitable[Any]:
        """Queue one record; return an awaitable that resolves when the broker acknowledged it."""
        ...


class KafkaAuditSink:
    """Writes audit records to a Kafka topic through a shared producer (acks=all), through broker outages."""

    def __init__(self, producer: Any, topic: str, *, health: HealthGate | None = None) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions: list[int] = []
        # A failed send may mean the topic came back with another partition count: look it up again.
        self._delivery = Delivery(topic, on_failure=self._partitions.clear, health=health)

    async def write(self, key: str, record: bytes) -> Awaitable[Any]:
        """Queue the record; the returned awaitable resolves once the broker stored it (retried until then)."""
        raw_key = key.encode()
        return await self._delivery.send(lambda: self._send(raw_key, record))

    async def _send(self, raw_key: bytes, record: bytes) -> Awaitable[Any]:
        if not self._partitions:
            self._partitions[:] = sorted(await self._producer.partitions_for(self._topic))
        # The Java client's key hash, as aiokafka's default partitioner computes it; passing the partition
        # spares the producer rebuilding the topic's available-partition set on every send.
        partition = self._partitions[(murmur2(raw_key) & 0x7FFFFFFF) % len(self._partitions)]
        future: Awaitable[Any] = await self._producer.send(self._topic, value=record, key=raw_key,
                                                           partition=partition)
        return future


def _render_pipeline(redactor: Redactor) -> Any:
    """timestamp → values redacted (identifier fields kept as they are) → JSON (a `SecretStr` as its mask).

    Redaction works on values, never on the rendered text: whatever the secrets are, the record stays
    valid JSON with the same fields, and its event and ids are never rewritten.
    """

    def jsonable(value: Any) -> str:  # what orjson cannot render natively: its text, redacted too
        return MASK if isinstance(value, SecretStr) else redactor.text(str(value))

    def render(_logger: Any, _method: str, event_dict: Any) -> bytes:
        fields = redactor.fields(event_dict)
        try:
            return orjson.dumps(fields, default=jsonable)
        except TypeError:  # a lone surrogate (from a JSON `\ud800` escape) is not UTF-8: show it as U+FFFD
            return orjson.dumps(_scrub(fields), default=jsonable)

    # bind() turns the lazy proxy into a concrete logger once, instead of on every record.
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"), render],
        wrapper_class=structlog.BoundLogger,
    ).bind()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class Auditor:
    """Renders audit records and hands them to the sink; one per process."""

    def __init__(self, sink: AuditSink, *, redactor: Redactor = REDACTOR, echo: bool = True,
                 observers: Sequence[AuditObserver] = ()) -> None:
        self._sink = sink
        self._render = _render_pipeline(redactor)
        self._log = structlog.get_logger("orchestrator.audit") if echo else None
        #: Called with each record as written (after redaction), e.g. metrics and the on-call webhook.
        #: They run inline on the audit path: they must be quick and must not raise.
        self.observers: list[AuditObserver] = list(observers)

    def trail(self, exposure_id: str, **context: Any) -> AuditTrail:
        """A trail for one exposure: records carry `exposure_id` and `context` and can be awaited together."""
        return AuditTrail(self, exposure_id, context)

    async def _write(self, exposure_id: str, event: AuditEvent, fields: dict[str, Any]) -> Awaitable[Any]:
        clean = {k: v for k, v in fields.items() if v is not None}
        rendered: bytes = self._render.msg(event.value, exposure_id=exposure_id, **clean)
        if self._log is not None:
            getattr(self._log, event.log_level)(event.value, exposure_id=exposure_id, **clean)
        stored = await self._sink.write(exposure_id, rendered)
        if self.observers:
            record = orjson.loads(rendered)
            for observer in self.observers:
                observer(record)
        return stored


class AuditTrail:
    """The audit records of one exposure. `flush` waits until the broker has every one of them."""

    def __init__(self, auditor: Auditor, exposure_id: str, context: dict[str, Any]) -> None:
        self._auditor = auditor
        self.exposure_id = exposure_id
        self._context = context
        self._pending: list[Awaitable[Any]] = []
        self.terminal: AuditEvent | None = None
        #: `PARTITION:OFFSET` of the last record the broker acknowledged (after a `flush`), when known.
        self.position: str | None = None

    def bind(self, **context: Any) -> None:
        """Add fields to every later record of this trail."""
        self._context.update(context)

    async def record(self, event: AuditEvent, **fields: Any) -> None:
        """Write one record. A second terminal record for the same trail is a bug and raises."""
        if event.terminal:
            if self.terminal is not None:
                raise RuntimeError(f"{self.exposure_id} already ended with {self.terminal}")
            self.terminal = event
        self._pending.append(await self._auditor._write(self.exposure_id, event, {**self._context, **fields}))

    async def flush(self) -> None:
        """Wait for the broker to acknowledge every record written so far."""
        pending, self._pending = self._pending, []
        for stored in await asyncio.gather(*pending):
            if hasattr(stored, "offset") and hasattr(stored, "partition"):
                self.position = f"{stored.partition}:{stored.offset}"
