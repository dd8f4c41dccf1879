"""One record's way through: decode → deduplicate → route → execute, ending in exactly one terminal record.

`admit` decodes (so the consumer can order records by credential); `process` does the rest and returns
only once the broker has acknowledged every audit record of the exposure. Nothing here knows Kafka:
the consumer hands in where the record came from, and dead letters go through a `DeadLetters` sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from orchestrator import provenance, replay
from orchestrator.actions import Priority
from orchestrator.audit import AuditEvent, Auditor, AuditTrail
from orchestrator.auth import Role
from orchestrator.errors import InvalidExposure
from orchestrator.events import Exposure, claimed_id, decode
from orchestrator.execution import Executor, priority_of
from orchestrator.playbooks import Playbook
from orchestrator.redaction import REDACTOR
from orchestrator.replaying import Replayer
from orchestrator.routing import UnknownPlaybook, route
from orchestrator.store import Claim, ClaimOutcome, Content, RunStore, State, content_of
from orchestrator.store.states import EVENT_STATES, InvalidTransition
from orchestrator.store.tracking import StoreTrail

log = structlog.get_logger("orchestrator.pipeline")


@dataclass(frozen=True)
class Origin:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    #: Set for a batch that could not be decoded: the last offset of the range it covers.
    last_offset: int | None = None

    @property
    def label(self) -> str:
        """`topic/partition/offset` (or `…/first-last`), the id of a record that has no usable exposure id."""
        offsets = f"{self.offset}-{self.last_offset}" if self.last_offset is not None else str(self.offset)
        return f"{self.topic}/{self.partition}/{offsets}"


@dataclass(frozen=True)
class Admission:
    """A decoded record, or the reason it is invalid; `ordering_key` serialises work on one credential."""

    origin: Origin
    raw: bytes | None
    exposure: Exposure | None = None
    rejection: str | None = None
    #: The publisher's role, when a record header vouches for it (`orchestrator.provenance`).
    role: Role | None = None
    #: True when a verified header vouches for the whole record, so its `actor` was set by the API or the CLI
    #: from who they authenticated; False when it is only what the record claims.
    actor_verified: bool = False
    #: Set instead of `exposure` for a person's request to replay a failed exposure.
    replay: replay.ReplayRequest | None = None

    @property
    def ordering_key(self) -> str:
        """Records with the same key are processed one after the other."""
        if self.replay is not None:
            return self.replay.target
        return self.exposure.credential_key if self.exposure else self.origin.label

    @property
    def lane(self) -> str:
        """The provider family the run acts on (`okta` for `okta.user`): runs wait for that provider's slots."""
        if self.replay is not None:
            return self.replay.kind.partition(".")[0]
        return self.exposure.credential.kind.partition(".")[0] if self.exposure else "invalid"

    @property
    def priority(self) -> int:
        """Lower runs first when a provider's run slots are short."""
        if self.replay is not None:
            # Priority comes only from a role a header vouches for (`orchestrator.provenance`), never from what
            # a record says; a replay request carries none.
            return Priority.NORMAL
        return priority_of(self.exposure, self.role) if self.exposure else 0


class DeadLetters(Protocol):
    """Where invalid records go, with the reason and their origin."""

    async def send(self, raw: bytes | None, *, origin: Origin, reason: str) -> Awaitable[Any]:
        """Queue the record as received (the sink makes it safe); the awaitable resolves once stored, to
        where (`PARTITION:OFFSET`) when known."""
        ...

    @property
    def encrypted(self) -> bool:
        """True when originals are kept whole, encrypted: a replay can take a secret from them."""
        ...

    async def fetch(self, location: str) -> bytes:
        """The original record kept at `location`, decrypted; raises `DeadLetterError` when it cannot be."""
        ...


#: Looks for an exposure's terminal record on the audit topic: (exposure id, position, content fingerprint).
EndFinder = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]


class Pipeline:
    """Handles records; one per process, shared by every in-flight record."""

    def __init__(self, *, auditor: Auditor, executor: Executor, playbooks: Sequence[Playbook],
                 dead_letters: DeadLetters, max_event_bytes: int, store: RunStore | None = None,
                 find_end: EndFinder | None = None) -> None:
        self._auditor = auditor
        self._executor = executor
        self._playbooks = playbooks
        self._dead_letters = dead_letters
        self._max_event_bytes = max_event_bytes
        #: Claims, states and steps of every exposure; a private in-memory one when none is handed in.
        self.store = store or RunStore.in_memory()
        self._claims: dict[Origin, int] = {}  # rows claimed by records in flight, for `fail_safe`
        self._find_end = find_end
        self._finding = asyncio.Semaphore(8)  # takeovers of runs that died ending: each reads the audit topic
        #: Runs the replay requests read from the topic.
        self.replays = Replayer(self, auditor=auditor, executor=executor, playbooks=playbooks,
                                dead_letters=dead_letters)

    def admit(self, raw: bytes | None, origin: Origin,
              headers: Sequence[tuple[str, bytes | None]] = ()) -> Admission:
        """Decode the record (a CloudEvent too, as its `headers` tell) and check who vouches for it; never raises."""
        try:
            if replay.is_request(raw):
                assert raw is not None
                return Admission(origin, raw, replay=replay.decode(raw))
            exposure = decode(raw, max_bytes=self._max_event_bytes, headers=headers)
            publisher = provenance.verified_publisher(raw, headers)
            return Admission(origin, raw, exposure=exposure,
                             role=publisher if publisher in provenance.RAISING else None,
                             actor_verified=publisher is not None and exposure.actor is not None)
        except InvalidExposure as exc:
            return Admission(origin, raw, rejection=str(exc))
        except Exception as exc:  # noqa: BLE001 - a decoder bug rejects this record, it must not stop the loop
            return Admission(origin, raw, rejection=f"internal error while decoding: {type(exc).__name__}")

    def admit_undecodable(self, raw: bytes, origin: Origin, reason: str) -> Admission:
        """A batch the Kafka client could not decode, covering `origin.offset`..`origin.last_offset`."""
        return Admission(origin, raw, rejection=f"undecodable batch at offsets {origin.offset}-{origin.last_offset} "
                                                f"of partition {origin.partition}: {reason}")

    async def process(self, admission: Admission) -> AuditEvent:
        """Take the record to its terminal audit record, acknowledged by the broker, and stored."""
        if admission.replay is not None:
            return await self.replays.run(admission.replay, origin=admission.origin)
        exposure = admission.exposure
        if exposure is None:
            return await self._reject(admission, admission.rejection or "invalid record")
        REDACTOR.register(exposure.credential.secret)
        try:
            content = content_of(exposure, actor_verified=admission.actor_verified)
            claim = await self._claim(admission, content)
            origin = admission.origin
            if claim.outcome is ClaimOutcome.DUPLICATE and claim.source == (origin.topic, origin.partition,
                                                                            origin.offset):
                # The very record that ended this exposure, delivered again (a restart or a rebalance before
                # its offset was committed): its terminal record exists, a second one would be a lie.
                log.info("exposure.redelivered", exposure_id=exposure.id, state=claim.state.value)
                return AuditEvent(claim.terminal_event or AuditEvent.EXPOSURE_DUPLICATE)
            if (ended := await self.ended_meanwhile(exposure.id, content.fingerprint, claim)) is not None:
                return ended
            owned = claim.outcome in (ClaimOutcome.NEW, ClaimOutcome.RESUMED)
            trail = StoreTrail(
                self._auditor, exposure.id,
                {"credential_kind": exposure.credential.kind, "detector": exposure.source.detector,
                 "actor": exposure.actor, "actor_verified": admission.actor_verified,
                 "id_reused": claim.id_reused or None,
                 "content_fingerprint": content.fingerprint},
                store=self.store, row_id=claim.row_id if owned else None)
            if owned:
                self._claims[origin] = claim.row_id
            try:
                terminal = await self._handle(exposure, admission, trail, claim)
            except asyncio.CancelledError:
                self._claims.pop(origin, None)
                await self._interrupted(trail)
                raise
            except Exception as exc:  # the boundary: a bug in one run must not kill the consumer
                log.exception("run.crashed", exposure_id=exposure.id)
                if trail.terminal is None:
                    reason = f"internal error: {type(exc).__name__}"  # its message may hold the input: not audited
                    await trail.record(AuditEvent.RUN_FAILED, error=reason,
                                       dead_letter=await self._dead_letter(admission, reason))
                await trail.flush()  # if this raises, the claim stays in `_claims` for `fail_safe` to end
                await self._settle(trail)
                terminal = AuditEvent.RUN_FAILED
            self._claims.pop(origin, None)
            return terminal
        finally:
            REDACTOR.release(exposure.credential.secret)

    async def ended_meanwhile(self, exposure_id: str, content_fingerprint: str, claim: Claim) -> AuditEvent | None:
        """A row taken over from an owner that died while writing its terminal record: if the audit topic has
        that record, store the end it tells and return its event (nothing is run or written again); else None
        (the record was never written: the run resumes and writes it)."""
        if claim.outcome is not ClaimOutcome.RESUMED or claim.ending is None or claim.audit_position is None:
            return None
        found = None
        if self._find_end is not None:
            try:
                async with self._finding:
                    found = await self._find_end(exposure_id, claim.audit_position, content_fingerprint)
            except Exception as exc:  # noqa: BLE001 - then resumed; a second end is the lesser evil than none
                log.warning("audit.find_end_failed", exposure_id=exposure_id, error=type(exc).__name__)
        if found is None:
            return None
        event = AuditEvent(found["event"])
        log.info("exposure.end_recovered", exposure_id=exposure_id, terminal=event.value)
        reason = found.get("error") or found.get("reason")
        await self.store.finish(claim.row_id, EVENT_STATES[event], terminal_event=event.value,
                                error=REDACTOR.text(str(reason)) if reason else None, run_id=found.get("run_id"),
                                playbook=found.get("playbook"))
        return event

    async def _claim(self, admission: Admission, content: Content) -> Claim:
        """Claim the exposure; while another live owner runs it, wait (for its end or its lease's expiry).
        A store that cannot be reached holds the record back (it stays uncommitted) until it answers."""
        assert admission.exposure is not None
        origin = admission.origin
        pause = 0.0
        while True:
            try:
                claim = await self.store.claim(content, source=(origin.topic, origin.partition, origin.offset))
            except Exception as exc:  # noqa: BLE001 - retried: acting without a claim could act twice
                log.warning("store.claim_failed", exposure_id=admission.exposure.id, error=type(exc).__name__)
                claim = None
            if claim is not None and claim.outcome is not ClaimOutcome.BUSY:
                return claim
            pause = min(max(pause * 2, 0.05), 1.0, self.store.lease.total_seconds() / 4)
            await asyncio.sleep(pause)

    async def _handle(self, exposure: Exposure, admission: Admission, trail: StoreTrail, claim: Claim) -> AuditEvent:
        await trail.record(AuditEvent.EXPOSURE_RECEIVED, severity=exposure.severity.value,
                           target=exposure.credential_key, dry_run=exposure.dry_run or None,
                           resumed=(claim.outcome is ClaimOutcome.RESUMED) or None)
        if claim.outcome is ClaimOutcome.DUPLICATE:
            return await self._end(trail, AuditEvent.EXPOSURE_DUPLICATE,
                                   reason="an exposure with this id and content was already handled")
        try:
            playbook = route(exposure, self._playbooks)
        except UnknownPlaybook as exc:
            reason = f"unknown playbook {exc.args[0]!r}; known: {', '.join(p.name for p in self._playbooks)}"
            await self._dead_letter(admission, reason)
            return await self._end(trail, AuditEvent.EXPOSURE_REJECTED, reason=reason)
        if playbook is None:
            return await self._end(trail, AuditEvent.EXPOSURE_UNMATCHED,
                                   reason=f"no playbook matches kind {exposure.credential.kind!r}")
        waiting = claim.outcome is ClaimOutcome.RESUMED and claim.state is State.AWAITING_APPROVAL
        # A run resumed while it waited keeps its id: it is still the run responders were asked to approve.
        terminal = await self._executor.run(exposure, playbook, trail, succeeded=claim.succeeded_steps,
                                            role=admission.role, run_id=claim.run_id if waiting else None,
                                            row_id=trail.row_id, resumed=claim.outcome is ClaimOutcome.RESUMED)
        await trail.flush()
        if terminal is AuditEvent.RUN_FAILED and exposure.credential.secret is not None:
            trail.dead_letter = await self.keep_original(admission.raw, admission.origin, trail.error)
        await self._settle(trail)
        return terminal

    async def keep_original(self, raw: bytes | None, origin: Origin, error: str | None) -> str | None:
        """Keep a failed run's original record, encrypted, on the dead-letter topic, for a replay to take its
        secret from (the run store keeps none); where it is, or None without a key or when it failed."""
        if not self._dead_letters.encrypted:
            return None
        try:
            stored = await self._dead_letters.send(raw, origin=origin, reason=REDACTOR.text(
                f"run failed, kept for replay: {error or 'failed'}"))
            location = await stored
        except Exception as exc:  # noqa: BLE001 - the run's end is still stored; only a replay will lack it
            log.error("dead_letter.failed", record=origin.label, error=type(exc).__name__)
            return None
        return location if isinstance(location, str) else None

    async def settle(self, trail: AuditTrail) -> None:
        """See `_settle`."""
        await self._settle(trail)

    async def interrupted(self, trail: StoreTrail) -> None:
        """See `_interrupted`."""
        await self._interrupted(trail)

    async def _settle(self, trail: AuditTrail) -> None:
        """Store the trail's end (after its records were acknowledged). The audit is the record of truth: a
        store that fails here is logged, and the run's lease lapses so a redelivery finds it resumable."""
        if not isinstance(trail, StoreTrail):
            return
        try:
            await trail.settle()
        except InvalidTransition as exc:
            log.warning("store.invalid_transition", exposure_id=trail.exposure_id, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - see above
            log.error("store.settle_failed", exposure_id=trail.exposure_id, error=type(exc).__name__)

    async def _end(self, trail: AuditTrail, event: AuditEvent, **fields: Any) -> AuditEvent:
        await trail.record(event, **fields)
        await trail.flush()
        await self._settle(trail)
        return event

    async def fail_safe(self, admission: Admission, error: BaseException) -> bool:
        """End a record whose handling raised: one terminal record naming the error's type (its text may hold
        input), and a dead letter. True once the terminal record is stored; False if even that failed."""
        reason = f"internal error: {type(error).__name__}"
        log.error("record.crashed", record=admission.origin.label, error=type(error).__name__)
        try:
            if admission.replay is not None:  # a request, not an exposure: refused, nothing to dead-letter
                request = admission.replay
                trail = self._auditor.trail(request.exposure_id, actor=request.actor,
                                            replay_request=request.request_id)
                await trail.record(AuditEvent.REPLAY_REFUSED, reason=request.reason, error=reason)
                await trail.flush()
                return True
            if admission.exposure is not None:
                trail = StoreTrail(self._auditor, admission.exposure.id, {}, store=self.store,
                                   row_id=self._claims.pop(admission.origin, None))
                await trail.record(AuditEvent.RUN_FAILED, error=reason,
                                   dead_letter=await self._dead_letter(admission, reason))
                await trail.flush()
                await self._settle(trail)
                return True
            await self._reject(admission, reason)
            return True
        except Exception as exc:  # noqa: BLE001 - reported, and the record stays uncommitted
            log.error("record.unrecorded", record=admission.origin.label, error=type(exc).__name__)
            return False

    async def _reject(self, admission: Admission, reason: str) -> AuditEvent:
        dead_letter = await self._dead_letter(admission, reason)
        origin = admission.origin
        claimed = _claimed_id(admission.raw) if origin.last_offset is None else None
        trail = self._auditor.trail(claimed or origin.label)
        return await self._end(trail, AuditEvent.EXPOSURE_REJECTED, reason=reason, dead_letter=dead_letter,
                               source_topic=origin.topic, source_partition=origin.partition,
                               source_offset=origin.offset, source_last_offset=origin.last_offset)

    async def _dead_letter(self, admission: Admission, reason: str) -> str | None:
        """Store the record on the dead-letter topic; None when stored, else why it could not be."""
        try:
            # The sink seals the original (encrypted, or its secrets dropped): it needs the bytes as received.
            stored = await self._dead_letters.send(admission.raw, origin=admission.origin,
                                                   reason=REDACTOR.text(reason))
            await stored
        except Exception as exc:  # noqa: BLE001 - the rejection is still audited, with this failure
            log.error("dead_letter.failed", record=admission.origin.label, error=type(exc).__name__)
            return f"not stored: {type(exc).__name__}"
        return None

    async def _interrupted(self, trail: StoreTrail) -> None:
        """Shutdown cut the run short. No terminal record: it has not ended. Its records so far are flushed,
        its claim released (the lease lapses at once) and its record left uncommitted: the next delivery,
        here after a restart or in another instance, resumes it and skips the steps already succeeded."""
        try:
            async with asyncio.timeout(5):
                await trail.flush()
                if trail.row_id is not None:
                    await self.store.release(trail.row_id)
        except (TimeoutError, asyncio.CancelledError):
            log.warning("audit.flush_abandoned", exposure_id=trail.exposure_id)
        except Exception as exc:  # noqa: BLE001 - the lease then lapses on its own
            log.warning("store.release_failed", exposure_id=trail.exposure_id, error=type(exc).__name__)


def _claimed_id(raw: bytes | None) -> str | None:
    """The `id` an invalid record claims, if it is a usable one, so its rejection is findable by that id."""
    claimed = claimed_id(raw)
    if claimed is not None and 0 < len(claimed.strip()) <= 200:
        return REDACTOR.text(claimed.strip())
    return None
