"""`orchestrator undo RUN_ID`: reverse a run's reversible steps, newest first, with an audit trail of its own.

What each step changed is in the run store (`steps.undo`: the undo action and the resolved ids it needs),
written when the step succeeded; a step that found its target already in the end state changed nothing and
has nothing to undo. Reversed steps are marked `undone`: a second undo does not reverse them again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any

from orchestrator.actions import Priority, Provider, StepContext
from orchestrator.audit import AuditEvent, Auditor
from orchestrator.errors import ProviderError, TransientError
from orchestrator.redaction import REDACTOR
from orchestrator.store.approvals import ApprovalBook

#: Attempts per undo step (transient failures only), and the pause between them.
ATTEMPTS = 3
PAUSE_S = 0.5


class UnknownRun(LookupError):
    """No run with that id (or exposure id) in the run store."""


async def undo_run(key: str, *, book: ApprovalBook, providers: Mapping[str, Provider], auditor: Auditor,
                   by: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Reverse the run's reversible steps; return what was reversed, skipped and failed."""
    row, steps = await book.reversible_steps(key)
    if row is None or row.get("run_id") is None:
        raise UnknownRun(key)
    if row.get("state") == "planned":
        # A dry run (or a run the guard only planned) called no provider: there is nothing to reverse, and
        # answering with its planned steps as "cannot be undone" would say they were done.
        return {"run_id": row["run_id"], "exposure_id": row["id"], "undo_id": None, "by": by, "planned": True,
                "reversed": [], "failed": [], "already_undone": [], "irreversible": []}
    undo_id = uuid.uuid4().hex
    trail = auditor.trail(row["id"], run_id=row["run_id"], undo_id=undo_id, playbook=row.get("playbook"),
                          actor=by)
    todo = [s for s in steps if s["state"] == "succeeded" and s.get("undo")]
    skipped = [s["step"] for s in steps if s["state"] == "undone"]
    await trail.record(AuditEvent.UNDO_STARTED, steps=[s["step"] for s in todo], already_undone=skipped or None)
    reversed_steps: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    from orchestrator.providers import catalog

    actions = catalog()
    for step in todo:
        spec = json.loads(step["undo"])
        action, params = str(spec["action"]), {k: str(v) for k, v in spec["params"].items()}
        base = {"step": step["step"], "action": action}
        provider = providers.get(action.split(".", 1)[0])
        try:
            if action not in actions:
                raise ProviderError(f"unknown undo action {action}")
            # Checked like any step's target: the store is ours, but nothing malformed reaches a provider.
            if problem := actions[action].missing(params) or actions[action].invalid(params):
                raise ProviderError(problem)
            if provider is None:
                raise ProviderError(f"provider of {action} is not configured")
            result = await _perform(provider, action, params, StepContext(exposure_id=row["id"],
                                                                          priority=Priority.URGENT), timeout_s)
        except ProviderError as exc:
            error = REDACTOR.clip(str(exc), 500)
            failed.append({**base, "error": error})
            await trail.record(AuditEvent.UNDO_STEP_FAILED, **base, error=error)
            continue
        await book.mark_undone(row["row_id"], row["run_id"], step["step"])
        reversed_steps.append({**base, "target": result.target, "calls": list(result.calls), "note": result.note})
        await trail.record(AuditEvent.UNDO_STEP_SUCCEEDED, **base, target=result.target, calls=list(result.calls),
                           note=result.note)
    end = AuditEvent.UNDO_FAILED if failed else AuditEvent.UNDO_COMPLETED
    await trail.record(end, reversed=[s["step"] for s in reversed_steps],
                       failed=[s["step"] for s in failed] or None)
    await trail.flush()
    return {"run_id": row["run_id"], "exposure_id": row["id"], "undo_id": undo_id, "by": by,
            "reversed": reversed_steps, "failed": failed, "already_undone": skipped,
            "irreversible": [s["step"] for s in steps if s["state"] == "succeeded" and not s.get("undo")]}


async def _perform(provider: Provider, action: str, params: dict[str, str], context: StepContext,
                   timeout_s: float) -> Any:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with asyncio.timeout(timeout_s):
                return await provider.perform(action, params, context)
        except TimeoutError:
            error: ProviderError = TransientError(f"{action} timed out after {timeout_s:g}s")
        except TransientError as exc:
            error = exc
        if attempt == ATTEMPTS:
            raise error
        await asyncio.sleep(PAUSE_S * attempt)
    raise AssertionError("unreachable")
