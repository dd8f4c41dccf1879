"""One record's way through: decode → deduplicate → route → execute, ending in exactly one terminal record.

`admit` decodes (so the consumer can order records by credential); `process` does the rest and returns
only once the broker has acknowledged every audit record of the exposure. Nothing here knows Kafka:
the consumer hands in where the record came from, and dead letters go through a `DeadLetters` sink.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from orchestrator.audit import AuditEvent, Auditor, AuditTrail
from orchestrator.errors import InvalidExposure
from orchestrator.events import Exposure, decode
from orchestrator.execution import Executor
from orchestrator.playbooks import Playbook
from orchestrator.redaction import REDACTOR
from orchestrator.routing import UnknownPlaybook, route

log = structlog.get_logger("orchestrator.pipeline")


@dataclass(frozen=True)
class Origin:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None

    @property
    def label(self) -> str:
        """`topic/partition/offset`, the id of a record that has no usable exposure id."""
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Admission:
    """A decoded record, or the reason it is invalid; `ordering_key` serialises work on one credential."""

    origin: Origin
    raw: bytes | None
    exposure: Exposure | None = None
    rejection: str | None = None

    @property
    def ordering_key(self) -> str:
        """Records with the same key are processed one after the other."""
        return self.exposure.credential_key if self.exposure else self.origin.label


class DeadLetters(Protocol):
    """Where invalid records go, with the reason and their origin."""

    async def send(self, raw: bytes | None, *, origin: Origin, reason: str) -> Awaitable[Any]:
        """Queue the record as received (the sink makes it safe); the awaitable resolves once stored."""
        ...


class Pipeline:
    """Handles records; one per process, shared by every in-flight record."""

    def __init__(self, *, auditor: Auditor, executor: Executor, playbooks: Sequence[Playbook],
                 dead_letters: DeadLetters, max_event_bytes: int, dedup_window: int = 100_000) -> None:
        self._auditor = auditor
        self._executor = executor
        self._playbooks = playbooks
        self._dead_letters = dead_letters
        self._max_event_bytes = max_event_bytes
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_window = dedup_window

    def admit(self, raw: bytes | None, origin: Origin) -> Admission:
        """Decode the record; never raises."""
        try:
            return Admission(origin, raw, exposure=decode(raw, max_bytes=self._max_event_bytes))
        except InvalidExposure as exc:
            return Admission(origin, raw, rejection=str(exc))

    async def process(self, admission: Admission) -> AuditEvent:
        """Take the record to its terminal audit record, acknowledged by the broker."""
        exposure = admission.exposure
        if exposure is None:
            return await self._reject(admission, admission.rejection or "invalid record")
        REDACTOR.register(exposure.credential.secret)
        trail = self._auditor.trail(
            exposure.id, credential_kind=exposure.credential.kind, detector=exposure.source.detector,
            actor=exposure.actor,
        )
        try:
            return await self._handle(exposure, admission, trail)
        except asyncio.CancelledError:
            await self._interrupted(trail)
            raise
        except Exception as exc:  # the boundary: a bug in one run must not kill the consumer
            log.exception("run.crashed", exposure_id=exposure.id)
            if trail.terminal is None:
                await trail.record(AuditEvent.RUN_FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
            await trail.flush()
            return AuditEvent.RUN_FAILED
        finally:
            REDACTOR.release(exposure.credential.secret)

    async def _handle(self, exposure: Exposure, admission: Admission, trail: AuditTrail) -> AuditEvent:
        await trail.record(AuditEvent.EXPOSURE_RECEIVED, severity=exposure.severity.value,
                           target=exposure.credential_key, dry_run=exposure.dry_run or None)
        if self._already_seen(exposure.id):
            return await self._end(trail, AuditEvent.EXPOSURE_DUPLICATE,
                                   reason="an exposure with this id was already handled")
        try:
            playbook = route(exposure, self._playbooks)
        except UnknownPlaybook as exc:
            reason = f"unknown playbook {exc.args[0]!r}; known: {', '.join(p.name for p in self._playbooks)}"
            await self._dead_letter(admission, reason)
            return await self._end(trail, AuditEvent.EXPOSURE_REJECTED, reason=reason)
        if playbook is None:
            return await self._end(trail, AuditEvent.EXPOSURE_UNMATCHED,
                                   reason=f"no playbook matches kind {exposure.credential.kind!r}")
        terminal = await self._executor.run(exposure, playbook, trail)
        await trail.flush()
        return terminal

    async def _end(self, trail: AuditTrail, event: AuditEvent, **fields: Any) -> AuditEvent:
        await trail.record(event, **fields)
        await trail.flush()
        return event

    async def _reject(self, admission: Admission, reason: str) -> AuditEvent:
        await self._dead_letter(admission, reason)
        trail = self._auditor.trail(_claimed_id(admission.raw) or admission.origin.label)
        return await self._end(trail, AuditEvent.EXPOSURE_REJECTED, reason=reason,
                               source_topic=admission.origin.topic, source_partition=admission.origin.partition,
                               source_offset=admission.origin.offset)

    async def _dead_letter(self, admission: Admission, reason: str) -> None:
        # The sink seals the original (encrypted, or its secrets dropped): it needs the bytes as received.
        stored = await self._dead_letters.send(admission.raw, origin=admission.origin, reason=REDACTOR.text(reason))
        await stored

    async def _interrupted(self, trail: AuditTrail) -> None:
        """Shutdown cut the run short: say so; the record stays uncommitted and will be delivered again."""
        if trail.terminal is None:
            await trail.record(AuditEvent.RUN_FAILED,
                               error="interrupted by shutdown; left uncommitted, it will be redelivered")
        try:
            async with asyncio.timeout(5):
                await trail.flush()
        except (TimeoutError, asyncio.CancelledError):
            log.warning("audit.flush_abandoned", exposure_id=trail.exposure_id)

    def _already_seen(self, exposure_id: str) -> bool:
        if exposure_id in self._seen:
            self._seen.move_to_end(exposure_id)
            return True
        self._seen[exposure_id] = None
        if len(self._seen) > self._dedup_window:
            self._seen.popitem(last=False)
        return False


def _claimed_id(raw: bytes | None) -> str | None:
    """The `id` an invalid record claims, if it is a usable one, so its rejection is findable by that id."""
    try:
        document = json.loads(raw or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    claimed = document.get("id") if isinstance(document, dict) else None
    if isinstance(claimed, str) and 0 < len(claimed.strip()) <= 200:
        return REDACTOR.text(claimed.strip())
    return None
