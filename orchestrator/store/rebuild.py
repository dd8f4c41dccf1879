"""Rebuilding the store from the audit topic (`orchestrator db rebuild`): folding records into rows. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.audit import AuditEvent
from orchestrator.store.states import EVENT_STATES, REOPENINGS, State, can_move
from orchestrator.store.store import StepRow, as_naive_utc

_STEP_STATES = {"step.succeeded": "succeeded", "step.failed": "failed", "step.skipped": "skipped"}


@dataclass
class Rebuilt:
    """One exposure row (and its steps) as the audit records tell it."""

    values: dict[str, Any]
    steps: dict[tuple[str, str], StepRow] = field(default_factory=dict)

    @property
    def state(self) -> State:
        """The row's state so far."""
        return State(self.values["state"])


def fold(records: Iterable[dict[str, Any]]) -> list[Rebuilt]:
    """Rows from audit records in topic order. Records without `content_fingerprint` (rejected invalid
    records, or written before the store existed) have no identity to deduplicate by and are left out."""
    rows: dict[tuple[str, str], Rebuilt] = {}
    for record in records:
        exposure_id, content = record.get("exposure_id"), record.get("content_fingerprint")
        event, at = record.get("event"), _time(record.get("ts"))
        if not isinstance(exposure_id, str) or not isinstance(content, str) or at is None:
            continue
        row = rows.get((exposure_id, content))
        if row is None:
            row = rows[(exposure_id, content)] = Rebuilt(_new_row(exposure_id, content, record, at))
        if event == AuditEvent.EXPOSURE_REPLAYED and row.state in REOPENINGS:
            # A replay re-opened it: the new run's records tell the rest.
            row.values["state"] = REOPENINGS[row.state].value
            for ended in ("terminal_event", "error", "finished_at"):
                row.values.pop(ended, None)
            continue
        if row.state.terminal:
            continue  # a later report of the same content: the duplicate's record ends nothing here
        _apply(row, str(event), record, at)
    return list(rows.values())


def _new_row(exposure_id: str, content: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"id": exposure_id, "content_fingerprint": content, "dedup_key": f"{exposure_id}:{content}",
            "credential_kind": _str(record, "credential_kind") or "unknown", "credential_owner": None,
            "target": _str(record, "target"), "detector": _str(record, "detector"), "actor": _str(record, "actor"),
            "actor_verified": record.get("actor_verified") is True,
            "severity": _str(record, "severity"), "received_at": at, "state": State.RECEIVED.value,
            "id_reused": bool(record.get("id_reused")), "claimed_by": None, "lease_expires_at": None,
            "credential_id": None, "dead_letter": None, "replay_request": None}


def _apply(row: Rebuilt, event: str, record: dict[str, Any], at: datetime) -> None:
    values = row.values
    for key in ("target", "severity", "playbook"):
        if _str(record, key) and not values.get(key):
            values[key] = _str(record, key)
    run_id = _str(record, "run_id")
    if run_id:
        values["run_id"] = run_id
    target = EVENT_STATES.get(AuditEvent(event)) if event in AuditEvent._value2member_map_ else None
    if target is not None and target is not State.RECEIVED and can_move(row.state, target):
        values["state"] = target.value
        if target is State.RUNNING:
            values.setdefault("started_at", at)
        if target.terminal:
            values.update(finished_at=at, terminal_event=event,
                          error=_str(record, "error") or _str(record, "reason"))
    step = _str(record, "step")
    if event in _STEP_STATES and run_id and step:
        attempt = record.get("attempt")
        # As the live store has it: a dry run's succeeded step was only planned.
        state = "planned" if event == "step.succeeded" and record.get("dry_run") is True else _STEP_STATES[event]
        row.steps[(run_id, step)] = StepRow(step=step, action=_str(record, "action"), state=state,
                                            attempts=attempt if isinstance(attempt, int) else 0,
                                            error=_str(record, "error"), finished_at=at,
                                            undo=json.dumps(record["undo"]) if isinstance(record.get("undo"), dict)
                                            else None)


def _str(record: dict[str, Any], key: str) -> str | None:
    """A text field of the record; None when absent or not text (the topic may hold anything)."""
    value = record.get(key)
    return value if isinstance(value, str) else None


def _time(value: Any) -> datetime | None:
    try:
        return as_naive_utc(datetime.fromisoformat(str(value)))
    except ValueError:
        return None
