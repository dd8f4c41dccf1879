"""An audit trail that keeps the run store in step: what the broker has acknowledged, the store records."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from orchestrator.audit import AuditEvent, Auditor, AuditTrail
from orchestrator.redaction import REDACTOR
from orchestrator.store.states import EVENT_STATES, State
from orchestrator.store.store import RunStore, StepRow, utcnow

_STEP_STATES = {AuditEvent.STEP_SUCCEEDED: "succeeded", AuditEvent.STEP_FAILED: "failed",
                AuditEvent.STEP_SKIPPED: "skipped"}
_LIVE_MOVES = {AuditEvent.RUN_AWAITING_APPROVAL: State.AWAITING_APPROVAL, AuditEvent.RUN_APPROVED: State.RUNNING}


class StoreTrail(AuditTrail):
    """The audit records of one claimed exposure, mirrored into its store row.

    A succeeded step is stored only once its audit record is acknowledged (the audit topic stays the record
    of truth), and before the run moves on: a run resumed after a crash skips exactly the steps stored.
    """

    def __init__(self, auditor: Auditor, exposure_id: str, context: dict[str, Any], *, store: RunStore,
                 row_id: int | None) -> None:
        super().__init__(auditor, exposure_id, context)
        self._store = store
        #: The claimed row; None when this trail only reports on another row (a duplicate).
        self.row_id = row_id
        self._started: dict[str, Any] = {}
        self.error: str | None = None
        #: Where the original record was kept (encrypted) when the run failed: stored with the end.
        self.dead_letter: str | None = None

    @property
    def run_id(self) -> str | None:
        """The run id bound by the executor, once the run started."""
        value = self._context.get("run_id")
        return value if isinstance(value, str) else None

    async def record(self, event: AuditEvent, **fields: Any) -> None:
        """Write the audit record, then tell the store what it changes. A terminal record of a claimed row is
        announced in the store first, after every earlier record is acknowledged: an owner dying between the
        record and the row's end leaves its successor where to look for it (never a second terminal record)."""
        if event.terminal and self.row_id is not None and self.terminal is None:
            await self.flush()
            await self._store.ending(self.row_id, event.value, self.position)
        await super().record(event, **fields)
        if event.terminal:
            reason = fields.get("error") or fields.get("reason")
            self.error = REDACTOR.text(str(reason)) if reason else None
        if self.row_id is None:
            return
        run_id = self.run_id
        if event is AuditEvent.RUN_STARTED and run_id is not None:
            self._store.started(self.row_id, run_id=run_id, playbook=str(self._context.get("playbook")))
        elif event in _LIVE_MOVES:
            await self.flush()  # the waiting (or going on) is on the audit topic before the store says so
            self._store.move(self.row_id, _LIVE_MOVES[event])
        elif event is AuditEvent.STEP_STARTED:
            self._started[str(fields.get("step"))] = utcnow()
        elif event in _STEP_STATES and run_id is not None:
            name = str(fields.get("step"))
            # A dry run's step that "succeeded" only resolved its target and planned its calls.
            planned = event is AuditEvent.STEP_SUCCEEDED and bool(fields.get("dry_run"))
            if event is AuditEvent.STEP_SUCCEEDED and not planned:
                await self.flush()
            error = fields.get("error")
            stored = self._store.step(self.row_id, run_id, StepRow(
                step=name, action=fields.get("action"), state="planned" if planned else _STEP_STATES[event],
                attempts=int(fields.get("attempt") or 0), error=REDACTOR.text(str(error)) if error else None,
                started_at=self._started.pop(name, None), finished_at=utcnow(),
                undo=json.dumps(fields["undo"]) if fields.get("undo") else None))
            if event is AuditEvent.STEP_SUCCEEDED and not planned:
                # Stored before the run moves on: a resumed run never repeats a step that succeeded. A store
                # failing here is logged by its writer; the run goes on (the audit is the record of truth).
                await asyncio.gather(stored, return_exceptions=True)

    async def settle(self) -> None:
        """After `flush`: store the terminal state this trail ended in (the claim ends with it)."""
        if self.row_id is None or self.terminal is None:
            return
        state: State = EVENT_STATES[self.terminal]
        await self._store.finish(self.row_id, state, terminal_event=self.terminal.value, error=self.error,
                                 run_id=self.run_id, playbook=_text(self._context.get("playbook")),
                                 dead_letter=self.dead_letter)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
