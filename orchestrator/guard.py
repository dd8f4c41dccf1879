"""What stands between a planned run and its destructive steps: protected principals, two-person approval and
the mass-action brake. One `Guard` per process; the executor asks it to clear each run before acting.

A run that must wait records `run.awaiting_approval` (with its plan) and stays in flight, its record
uncommitted: the exposure (secret included) stays on the topic, never in the store, and a restart redelivers
it, finds the same run waiting in the store, and waits on. Answers come from any process through the store;
one poller per process reads them for every waiting run and wakes them oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import structlog

from orchestrator import provenance
from orchestrator.audit import AuditEvent, AuditTrail
from orchestrator.auth import Role
from orchestrator.brake import Admission, RateBrake
from orchestrator.errors import ProviderError
from orchestrator.events import Exposure
from orchestrator.lanes import stepped_aside
from orchestrator.playbooks import Playbook
from orchestrator.policy import OnTimeout, Policy
from orchestrator.redaction import REDACTOR
from orchestrator.store.approvals import ApprovalBook, Decision, Gate, GateKind
from orchestrator.store.store import utcnow

log = structlog.get_logger("orchestrator.guard")

class Pager(Protocol):
    """Pages on-call (the configured webhook)."""

    def page(self, event: str, fields: Mapping[str, Any]) -> None:
        """Schedule one page; never raises."""
        ...


@runtime_checkable
class Directory(Protocol):
    """A provider that can tell which of its groups a user is in (Okta), for `protected.<provider>.groups`."""

    async def member_groups(self, user: str | None, session_id: str | None, *, exposure_id: str) -> tuple[str, ...]:
        """Names and ids of the groups the user (else the session's owner) is in now; raises when it cannot tell."""
        ...


#: Kinds whose `credential.id` is a session id, from which the user is resolved when no owner is given.
_SESSION_KINDS = frozenset({"okta.session", "okta.user"})


class Verdict(StrEnum):
    """What the executor does with a run the guard looked at."""

    GO = "go"  # act
    PROTECTED = "protected"  # record the plan only (`run.planned`, reason protected)
    DENIED = "denied"  # end it (`run.denied`)


@dataclass(frozen=True)
class Clearance:
    """The guard's answer, with the fields the executor's closing record carries."""

    verdict: Verdict
    fields: Mapping[str, Any]


def requester_of(exposure: Exposure) -> str:
    """Who asked for the run: the actor of a manual trigger, else the detector that published it."""
    return exposure.actor or exposure.source.detector or "unknown"


def destructive_counts(plan: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Destructive planned steps by provider."""
    counts: dict[str, int] = {}
    for entry in plan:
        if entry.get("destructive"):
            provider = str(entry["action"]).split(".", 1)[0]
            counts[provider] = counts.get(provider, 0) + 1
    return counts


class Guard:
    """Clears runs; owns the brake's window and the poller that hears answers."""

    def __init__(self, policy: Policy, book: ApprovalBook | None = None, pager: Pager | None = None, *,
                 poll_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 directories: Mapping[str, Directory] | None = None) -> None:
        self.policy = policy
        self._directories = dict(directories or {})
        self.book = book
        self._pager = pager
        self._poll_s = poll_s
        self.brake = RateBrake(policy.brake, clock=clock)
        self._waiters: dict[str, tuple[asyncio.Future[Gate], Gate]] = {}
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._seen_release: datetime | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the poller; a release or hold already in the store applies from now."""
        if self.book is not None:
            state = await self.book.brake_state()
            self._seen_release = state["released_at"]
            if state["held"]:
                self.brake.hold()
            self._poller = asyncio.create_task(self._poll_loop(), name="guard-poller")

    async def close(self) -> None:
        """Stop the poller (waiting runs are ended by the consumer's drain)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    def interrupt(self) -> None:
        """Shutdown: stop every wait now rather than at the drain deadline. Each waiting run is interrupted like
        any run cut short (its record stays uncommitted, its claim released), and waits again after a restart."""
        self._stopping = True
        for future, _ in self._waiters.values():
            future.cancel()

    def wake(self) -> None:
        """Poll now (an answer was just given in this process)."""
        self._wake.set()

    def bypasses_brake(self, role: Role | None) -> bool:
        """A responder's own trigger is not a storm: it goes on whatever the rate (audited so). Only a role vouched
        for by a signed record header counts (`orchestrator.provenance`): any publisher can write `actor`."""
        return role in provenance.RAISING

    async def clear(self, exposure: Exposure, playbook: Playbook, plan: list[dict[str, Any]], trail: AuditTrail,
                    *, run_id: str, row_id: int | None, resumed: bool = False,
                    role: Role | None = None) -> Clearance:
        """Decide whether the run acts; waits (recording `run.awaiting_approval`) when a person must answer."""
        counts = destructive_counts(plan)
        if not counts:
            return Clearance(Verdict.GO, {})
        rule = self.policy.protects(exposure.credential.kind, exposure.credential.owner, exposure.credential.id)
        protection = {"protected_by": rule} if rule is not None else await self._protected_member(exposure)
        if protection is not None:
            return Clearance(Verdict.PROTECTED, {"reason": "protected", **protection})
        if self.book is None:
            return self._brake_only(role, counts)
        gate = None
        if resumed:  # a fresh run has no gate yet: no store read on the hot path
            gate = await self.book.get(run_id)
            if gate is None and row_id is not None:
                # Resumed after a crash under a new run id: an answer its first run got still stands.
                gate = await self.book.for_row(row_id)
        if gate is None and playbook.approval_needed(exposure, plan):
            gate = await self._open(exposure, run_id, row_id, GateKind.APPROVAL, plan,
                                    f"playbook {playbook.name} requires a second person's approval",
                                    self.policy.approval.timeout_s)
            self._page("run.awaiting_approval", exposure, run_id, gate)
        if gate is None:
            admission = self._brake_admission(role, counts)
            if admission is None:
                return Clearance(Verdict.GO, {})
            gate = await self._open(exposure, run_id, row_id, GateKind.BRAKE, plan, admission.reason,
                                    self.policy.brake.timeout_s)
            if admission.engaged_now:
                self._page_brake("brake.engaged", admission.reason)
        if gate.decision is None:
            await trail.record(AuditEvent.RUN_AWAITING_APPROVAL, kind=gate.kind.value, reason=gate.reason,
                               requester=gate.requester, expires_at=gate.expires_at.isoformat() + "Z", plan=plan)
            gate = await self._wait(gate)
        return await self._answered(gate, counts, trail)

    def _brake_admission(self, role: Role | None, counts: dict[str, int]) -> Admission | None:
        """None when the run may go on (a responder's or admin's bypass, counted; or under the rate), else the
        brake's answer holding it."""
        if self.bypasses_brake(role):
            self.brake.count(counts)
            return None
        admission = self.brake.admit(counts)
        return None if admission.go else admission

    def _brake_only(self, role: Role | None, counts: dict[str, int]) -> Clearance:
        """Without a store there is nowhere to wait: over the rate, the run ends denied (nothing acted)."""
        admission = self._brake_admission(role, counts)
        if admission is None:
            return Clearance(Verdict.GO, {})
        if admission.engaged_now:
            self._page_brake("brake.engaged", admission.reason)
        return Clearance(Verdict.DENIED, {"reason": f"brake: {admission.reason}", "decision": "dropped"})

    async def _protected_member(self, exposure: Exposure) -> dict[str, str] | None:
        """`protected_by` (and a `note`) when the exposure's user is in a protected provider group now, or when
        that cannot be checked (fail safe: a lookup that fails protects); None when the user is in none."""
        kind = exposure.credential.kind
        patterns = self.policy.directory_groups(kind)
        if not patterns:
            return None
        provider = kind.partition(".")[0]
        owner = exposure.credential.owner
        session_id = exposure.credential.id if kind in _SESSION_KINDS else None
        if owner is None and session_id is None:
            return None  # the exposure names no user: there is no membership to check
        directory = self._directories.get(provider)
        try:
            if directory is None:
                raise LookupError(f"{provider} is not configured")
            member_of = await directory.member_groups(owner, session_id, exposure_id=exposure.id)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the user may be protected: act as if it were
            why = REDACTOR.text(str(exc)) if isinstance(exc, (ProviderError, LookupError)) else type(exc).__name__
            log.warning("guard.membership_unchecked", exposure_id=exposure.id, provider=provider, error=why)
            return {"protected_by": f"{provider} groups {', '.join(patterns)}",
                    "note": f"group membership could not be checked ({why}): treated as protected"}
        rule = self.policy.protects_member(kind, member_of)
        return {"protected_by": rule} if rule is not None else None

    async def _answered(self, gate: Gate, counts: dict[str, int], trail: AuditTrail) -> Clearance:
        assert gate.decision is not None
        answer = {"kind": gate.kind.value, "decision": gate.decision.value, "decided_by": gate.decided_by,
                  "decided_at": gate.decided_at.isoformat() + "Z" if gate.decided_at else None, "why": gate.why}
        if gate.decision.goes_on:
            self.brake.count(counts)  # approved or released by a person: counted, never held again
            await trail.record(AuditEvent.RUN_APPROVED, **answer)
            return Clearance(Verdict.GO, {})
        reason = {Decision.EXPIRED: "approval expired", Decision.DROPPED: "dropped by the brake's timeout policy"
                  }.get(gate.decision, "denied")
        return Clearance(Verdict.DENIED, {**answer, "reason": reason})

    async def _open(self, exposure: Exposure, run_id: str, row_id: int | None, kind: GateKind,
                    plan: list[dict[str, Any]], reason: str | None, timeout_s: float) -> Gate:
        assert self.book is not None
        return await self.book.open(run_id=run_id, exposure_id=exposure.id, row_id=row_id, kind=kind,
                                    requester=requester_of(exposure), reason=reason, plan=plan,
                                    expires_at=utcnow() + timedelta(seconds=timeout_s))

    async def _wait(self, gate: Gate) -> Gate:
        if self._stopping:
            raise asyncio.CancelledError  # interrupted like the runs that already waited: resumed after a restart
        future: asyncio.Future[Gate] = asyncio.get_running_loop().create_future()
        self._waiters[gate.run_id] = (future, gate)
        self._wake.set()
        try:
            # Waiting for a person holds no run slot: the provider's other runs (and responders' triggers) go on.
            async with stepped_aside():
                return await future
        finally:
            self._waiters.pop(gate.run_id, None)

    # -- the poller -------------------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.poll()
            except Exception as exc:  # noqa: BLE001 - the store may be away for a moment: poll again later
                log.warning("guard.poll_failed", error=type(exc).__name__)

    async def poll(self) -> None:
        """Hear answers, expire approvals, apply the brake's state and timeout policy; wake answered runs."""
        assert self.book is not None
        await self._follow_brake()
        if not self._waiters:
            return
        if any(g.kind is GateKind.APPROVAL and g.expires_at <= utcnow() for _, g in self._waiters.values()):
            await self.book.expire()
        await self._brake_timeout()
        answered = await self.book.decisions(list(self._waiters))
        for gate in sorted(answered.values(), key=lambda g: g.position):  # oldest first: released in order
            entry = self._waiters.pop(gate.run_id, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(gate)

    async def _follow_brake(self) -> None:
        assert self.book is not None
        state = await self.book.brake_state()
        released = state["released_at"]
        if released is not None and released != self._seen_release:
            self._seen_release = released
            self.brake.release()
            log.info("brake.released", by=state["updated_by"])
        if state["held"] and not self.brake.held:
            self.brake.hold()
            log.info("brake.held", by=state["updated_by"])

    async def _brake_timeout(self) -> None:
        assert self.book is not None
        now = utcnow()
        expired = [g for _, g in self._waiters.values() if g.kind is GateKind.BRAKE and g.expires_at <= now]
        if not expired or self.brake.held:  # a held brake waits for its admin, whatever the time
            return
        policy = self.policy.brake
        if policy.on_timeout is OnTimeout.WAIT:
            deadline = now + timedelta(seconds=policy.timeout_s)
            await self.book.extend_brake(deadline)
            for run_id, (future, gate) in list(self._waiters.items()):
                if gate.kind is GateKind.BRAKE:
                    self._waiters[run_id] = (future, _with_expiry(gate, deadline))
            self._page_brake("brake.still_engaged", f"{len(expired)} runs still wait for an admin")
            return
        decision = Decision.RELEASED if policy.on_timeout is OnTimeout.RELEASE else Decision.DROPPED
        await self.book.release_brake(by="brake-timeout", why=f"left alone past {policy.timeout_s:g}s",
                                      decision=decision)

    # -- paging -----------------------------------------------------------------------------------------------

    def _page(self, event: str, exposure: Exposure, run_id: str, gate: Gate) -> None:
        if self._pager is not None:
            self._pager.page(event, {"exposure_id": exposure.id, "run_id": run_id, "kind": gate.kind.value,
                                     "reason": gate.reason, "requester": gate.requester,
                                     "credential_kind": exposure.credential.kind})

    def _page_brake(self, event: str, reason: str | None) -> None:
        log.warning(event, reason=reason)
        if self._pager is not None:
            self._pager.page(event, {"reason": reason, "waiting": len(self._waiters) + 1,
                                     "follow_up": "orchestrator brake status"})


def _with_expiry(gate: Gate, expires_at: datetime) -> Gate:
    return replace(gate, expires_at=expires_at)
