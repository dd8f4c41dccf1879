"""Runs waiting for a person, in the run store: approvals, brake holds, their answers; and the brake's state.

Every answer is one conditional UPDATE (`… WHERE decision IS NULL`): the first answer wins, on SQLite and
PostgreSQL alike, whichever process gives it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, or_, select, update

from orchestrator.store.schema import approvals, brake_state, exposures, steps
from orchestrator.store.store import RunStore, utcnow

BRAKE = "brake"


class GateKind(StrEnum):
    """Why a run waits."""

    APPROVAL = "approval"  # its playbook asks for a second person
    BRAKE = "brake"  # the mass-action brake holds it


class Decision(StrEnum):
    """How a wait ended. `approved` and `released` let the run go on; the others end it."""

    APPROVED = "approved"
    RELEASED = "released"
    DENIED = "denied"
    EXPIRED = "expired"
    DROPPED = "dropped"

    @property
    def goes_on(self) -> bool:
        """True when the run proceeds."""
        return self in (Decision.APPROVED, Decision.RELEASED)


@dataclass(frozen=True)
class Gate:
    """One waiting run."""

    run_id: str
    exposure_id: str
    kind: GateKind
    requester: str
    reason: str | None
    plan: list[dict[str, Any]]
    created_at: datetime
    expires_at: datetime
    decision: Decision | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    why: str | None = None
    position: int = 0

    def document(self) -> dict[str, Any]:
        """As the API and CLI show it: times in ISO 8601 UTC."""
        return {"run_id": self.run_id, "exposure_id": self.exposure_id, "kind": self.kind.value,
                "requester": self.requester, "reason": self.reason, "plan": self.plan,
                "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
                "decision": self.decision.value if self.decision else None, "decided_by": self.decided_by,
                "decided_at": _iso(self.decided_at), "why": self.why, "position": self.position}


class Answer(StrEnum):
    """What became of an answer."""

    TAKEN = "taken"
    OWN_REQUEST = "own_request"  # the requester cannot approve their own run
    ALREADY = "already"  # someone answered first
    UNKNOWN = "unknown"  # no such waiting run


@dataclass(frozen=True)
class Outcome:
    """An answer's fate, and the gate as it stands after it."""

    answer: Answer
    gate: Gate | None = None


class ApprovalBook:
    """Reads and writes the approvals and brake tables through a run store's threads."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.engine: Engine = store.engine

    # -- waiting runs ---------------------------------------------------------------------------------------

    async def open(self, *, run_id: str, exposure_id: str, row_id: int | None, kind: GateKind, requester: str,
                   reason: str | None, plan: list[dict[str, Any]], expires_at: datetime) -> Gate:
        """Record that a run waits (the existing gate when the run already waited: a restart resumed it)."""
        return await self.store.in_thread(self._open, run_id, exposure_id, row_id, kind, requester, reason, plan,
                                          expires_at)

    def _open(self, run_id: str, exposure_id: str, row_id: int | None, kind: GateKind, requester: str,
              reason: str | None, plan: list[dict[str, Any]], expires_at: datetime) -> Gate:
        with self.engine.begin() as conn:
            existing = conn.execute(select(approvals).where(approvals.c.run_id == run_id)).one_or_none()
            if existing is None:
                conn.execute(approvals.insert().values(
                    run_id=run_id, exposure_id=exposure_id, exposure_row=row_id, kind=kind.value,
                    requester=requester, reason=reason, plan=json.dumps(plan), created_at=utcnow(),
                    expires_at=expires_at))
                existing = conn.execute(select(approvals).where(approvals.c.run_id == run_id)).one()
            return _gate(existing)

    async def get(self, run_or_exposure_id: str) -> Gate | None:
        """The newest gate of a run id, or of an exposure id."""
        return await self.store.in_thread(self.get_sync, run_or_exposure_id)

    def get_sync(self, run_or_exposure_id: str) -> Gate | None:
        """`get`, blocking."""
        with self.engine.connect().execution_options(read_only=True) as conn:
            row = conn.execute(select(approvals).where(or_(approvals.c.run_id == run_or_exposure_id,
                                                           approvals.c.exposure_id == run_or_exposure_id))
                               .order_by(approvals.c.row_id.desc()).limit(1)).one_or_none()
        return _gate(row) if row is not None else None

    async def for_row(self, row_id: int) -> Gate | None:
        """The newest gate of an exposure row (a run resumed after a crash finds the answer its first run got)."""
        return await self.store.in_thread(self._for_row, row_id)

    def _for_row(self, row_id: int) -> Gate | None:
        with self.engine.connect().execution_options(read_only=True) as conn:
            row = conn.execute(select(approvals).where(approvals.c.exposure_row == row_id)
                               .order_by(approvals.c.row_id.desc()).limit(1)).one_or_none()
        return _gate(row) if row is not None else None

    async def decisions(self, run_ids: Sequence[str]) -> dict[str, Gate]:
        """The gates among `run_ids` that have been answered."""
        return await self.store.in_thread(self._decisions, list(run_ids))

    def _decisions(self, run_ids: list[str]) -> dict[str, Gate]:
        found: dict[str, Gate] = {}
        with self.engine.connect().execution_options(read_only=True) as conn:
            for start in range(0, len(run_ids), 500):
                rows = conn.execute(select(approvals).where(approvals.c.run_id.in_(run_ids[start:start + 500]),
                                                            approvals.c.decision.is_not(None)))
                found.update((row.run_id, _gate(row)) for row in rows)
        return found

    async def pending(self, kind: GateKind | None = None) -> list[Gate]:
        """Waiting runs, oldest first."""
        return await self.store.in_thread(self.pending_sync, kind)

    def pending_sync(self, kind: GateKind | None = None) -> list[Gate]:
        """`pending`, blocking."""
        query = select(approvals).where(approvals.c.decision.is_(None))
        if kind is not None:
            query = query.where(approvals.c.kind == kind.value)
        with self.engine.connect().execution_options(read_only=True) as conn:
            return [_gate(r) for r in conn.execute(query.order_by(approvals.c.row_id))]

    async def answer(self, run_or_exposure_id: str, decision: Decision, *, by: str, why: str | None,
                     refuse_requester: bool = True) -> Outcome:
        """Answer a waiting run; the first answer wins; the requester may not answer their own run."""
        return await self.store.in_thread(self.answer_sync, run_or_exposure_id, decision, by, why, refuse_requester)

    def answer_sync(self, run_or_exposure_id: str, decision: Decision, by: str, why: str | None,
                    refuse_requester: bool = True) -> Outcome:
        """`answer`, blocking."""
        gate = self.get_sync(run_or_exposure_id)
        if gate is None:
            return Outcome(Answer.UNKNOWN)
        if refuse_requester and by.strip().casefold() == gate.requester.strip().casefold():
            return Outcome(Answer.OWN_REQUEST, gate)
        with self.engine.begin() as conn:
            taken = conn.execute(update(approvals).where(approvals.c.run_id == gate.run_id,
                                                         approvals.c.decision.is_(None))
                                 .values(decision=decision.value, decided_by=by, decided_at=utcnow(),
                                         why=why)).rowcount
        after = self.get_sync(gate.run_id)
        return Outcome(Answer.TAKEN if taken else Answer.ALREADY, after)

    async def expire(self, now: datetime | None = None) -> list[Gate]:
        """End approvals pending past their expiry (as `expired`); return those this call ended."""
        return await self.store.in_thread(self._expire, now or utcnow())

    def _expire(self, now: datetime) -> list[Gate]:
        ended = []
        for gate in self.pending_sync(GateKind.APPROVAL):
            if gate.expires_at <= now:
                outcome = self.answer_sync(gate.run_id, Decision.EXPIRED, "expiry", "no answer before it expired",
                                           refuse_requester=False)
                if outcome.answer is Answer.TAKEN and outcome.gate is not None:
                    ended.append(outcome.gate)
        return ended

    # -- the brake ------------------------------------------------------------------------------------------

    async def release_brake(self, *, by: str, why: str | None, decision: Decision = Decision.RELEASED) -> list[Gate]:
        """Release (or drop) every run the brake holds, oldest first; clear a hold. Returns them in order."""
        return await self.store.in_thread(self.release_brake_sync, by, why, decision)

    def release_brake_sync(self, by: str, why: str | None, decision: Decision = Decision.RELEASED) -> list[Gate]:
        """`release_brake`, blocking."""
        released = []
        for gate in self.pending_sync(GateKind.BRAKE):
            outcome = self.answer_sync(gate.run_id, decision, by, why, refuse_requester=False)
            if outcome.answer is Answer.TAKEN and outcome.gate is not None:
                released.append(outcome.gate)
        if decision is Decision.RELEASED:
            self._set_brake(held=False, released=True, by=by, why=why)
        return released

    async def hold_brake(self, *, by: str, why: str | None) -> None:
        """Hold the brake: every run that would act waits until released."""
        await self.store.in_thread(self._set_brake, True, False, by, why)

    def hold_brake_sync(self, by: str, why: str | None) -> None:
        """`hold_brake`, blocking."""
        self._set_brake(True, False, by, why)

    def _set_brake(self, held: bool, released: bool, by: str, why: str | None) -> None:
        now = utcnow()
        values: dict[str, Any] = {"held": held, "updated_by": by, "updated_at": now, "why": why}
        if released:
            values["released_at"] = now
        with self.engine.begin() as conn:
            changed = conn.execute(update(brake_state).where(brake_state.c.name == BRAKE).values(**values)).rowcount
            if not changed:
                conn.execute(brake_state.insert().values(name=BRAKE, **values))

    async def extend_brake(self, expires_at: datetime) -> None:
        """Give every run the brake holds a new deadline (the `wait` timeout policy, after paging again)."""
        await self.store.in_thread(self._extend, expires_at)

    def _extend(self, expires_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(approvals).where(approvals.c.decision.is_(None), approvals.c.kind == BRAKE)
                         .values(expires_at=expires_at))

    async def brake_state(self) -> dict[str, Any]:
        """`held`, `released_at`, who changed it last and why."""
        return await self.store.in_thread(self.brake_state_sync)

    def brake_state_sync(self) -> dict[str, Any]:
        """`brake_state`, blocking."""
        with self.engine.connect().execution_options(read_only=True) as conn:
            row = conn.execute(select(brake_state).where(brake_state.c.name == BRAKE)).one_or_none()
        if row is None:
            return {"held": False, "released_at": None, "updated_by": None, "updated_at": None, "why": None}
        return {"held": bool(row.held), "released_at": row.released_at, "updated_by": row.updated_by,
                "updated_at": row.updated_at, "why": row.why}

    # -- undo -----------------------------------------------------------------------------------------------

    async def reversible_steps(self, run_or_exposure_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The run's exposure row and its succeeded steps that can be undone, newest first."""
        return await self.store.in_thread(self._reversible, run_or_exposure_id)

    def _reversible(self, key: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        with self.engine.connect().execution_options(read_only=True) as conn:
            row = conn.execute(select(exposures).where(or_(exposures.c.run_id == key, exposures.c.id == key))
                               .order_by(exposures.c.row_id.desc()).limit(1)).one_or_none()
            if row is None:
                return None, []
            found = conn.execute(select(steps).where(steps.c.exposure_row == row.row_id,
                                                     steps.c.run_id == row.run_id)
                                 .order_by(steps.c.row_id.desc()))
            return dict(row._mapping), [dict(s._mapping) for s in found]

    async def mark_undone(self, row_id: int, run_id: str, step: str) -> None:
        """Remember that a step was reversed, so a second `undo` does not reverse it again."""
        await self.store.in_thread(self._mark_undone, row_id, run_id, step)

    def _mark_undone(self, row_id: int, run_id: str, step: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(steps).where(steps.c.exposure_row == row_id, steps.c.run_id == run_id,
                                             steps.c.step == step).values(state="undone"))


def _gate(row: Any) -> Gate:
    return Gate(run_id=row.run_id, exposure_id=row.exposure_id, kind=GateKind(row.kind), requester=row.requester,
                reason=row.reason, plan=json.loads(row.plan), created_at=row.created_at, expires_at=row.expires_at,
                decision=Decision(row.decision) if row.decision else None, decided_by=row.decided_by,
                decided_at=row.decided_at, why=row.why, position=int(row.row_id))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() + "Z" if moment is not None else None
