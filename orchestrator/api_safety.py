"""Approvals, the brake and undo over HTTP: the routes `orchestrator approve|deny|brake|undo` call.

The authenticated principal is who answers: an approval by the run's requester is refused (403), a run already
answered gives 409 naming the first answer, and every accepted answer is audited on the run's trail by the
waiting run itself (who, when, why).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import api_examples as ex
from orchestrator.actions import Provider
from orchestrator.audit import Auditor
from orchestrator.auth import Principal
from orchestrator.guard import Guard
from orchestrator.store.approvals import Answer, Decision, GateKind
from orchestrator.undo import UnknownRun, undo_run


class Why(BaseModel):
    """An answer's reason, recorded in the audit trail."""

    model_config = ConfigDict(extra="forbid")

    why: str | None = Field(default=None, max_length=2000, description="why; recorded in the audit trail")


def add_routes(app: FastAPI, guard: Guard, auditor: Auditor, providers: Mapping[str, Provider], *,
               as_responder: Any, as_admin: Any) -> None:
    """Register the approval (role responder), brake and undo (role admin) routes."""
    book = guard.book
    assert book is not None

    async def answer(run_id: str, decision: Decision, body: Why | None, principal: Principal) -> dict[str, Any]:
        waiting = await book.get(run_id)
        if waiting is not None and waiting.kind is GateKind.BRAKE:
            raise HTTPException(409, "this run is held by the brake, not waiting for approval: an admin releases "
                                     "it (`orchestrator brake release`)")
        outcome = await book.answer(run_id, decision, by=principal.name, why=body.why if body else None)
        if outcome.answer is Answer.UNKNOWN:
            raise HTTPException(404, "no run waiting for approval with this run id or exposure id")
        gate = outcome.gate
        assert gate is not None
        if outcome.answer is Answer.OWN_REQUEST:
            raise HTTPException(403, f"{principal.name} requested this run and cannot approve or deny it: "
                                     "a second person must answer")
        if outcome.answer is Answer.ALREADY:
            raise HTTPException(409, f"already answered: {gate.decision} by {gate.decided_by}")
        guard.wake()
        return gate.document()

    @app.get("/v1/approvals", tags=["safety"], responses={200: ex.APPROVALS})
    async def list_approvals(_: Principal = as_responder) -> dict[str, Any]:
        """Runs waiting for a person, oldest first (approvals and brake holds)."""
        return {"waiting": [g.document() for g in await book.pending()]}

    @app.post("/v1/runs/{run_id}/approve", tags=["safety"],
              responses={200: ex.ANSWERED, 403: {"description": "own request"}, 404: {"description": "unknown"},
                         409: {"description": "already answered"}})
    async def approve(run_id: str, body: Why | None = None, principal: Principal = as_responder) -> dict[str, Any]:
        """Approve a waiting run (by run id or exposure id): it goes on. Not by its requester."""
        return await answer(run_id, Decision.APPROVED, body, principal)

    @app.post("/v1/runs/{run_id}/deny", tags=["safety"],
              responses={200: ex.ANSWERED, 403: {"description": "own request"}, 404: {"description": "unknown"},
                         409: {"description": "already answered"}})
    async def deny(run_id: str, body: Why | None = None, principal: Principal = as_responder) -> dict[str, Any]:
        """Deny a waiting run: it ends (`run.denied`), nothing revoked. Not by its requester."""
        return await answer(run_id, Decision.DENIED, body, principal)

    @app.get("/v1/brake", tags=["safety"], responses={200: ex.BRAKE})
    async def brake_status(_: Principal = as_admin) -> dict[str, Any]:
        """The brake: engaged or held, this instance's window, and the runs it holds (oldest first)."""
        state = await book.brake_state()
        waiting = await book.pending(GateKind.BRAKE)
        return {**guard.brake.status(), "held": state["held"] or guard.brake.held,
                "updated_by": state["updated_by"], "why": state["why"],
                "waiting": [g.document() for g in waiting]}

    @app.post("/v1/brake/release", tags=["safety"], responses={200: ex.RELEASED})
    async def brake_release(body: Why | None = None, principal: Principal = as_admin) -> dict[str, Any]:
        """Release every run the brake holds, oldest first; the storm goes on through."""
        released = await book.release_brake(by=principal.name, why=body.why if body else None)
        guard.wake()
        return {"released": [g.run_id for g in released], "by": principal.name}

    @app.post("/v1/brake/hold", tags=["safety"], responses={200: ex.HELD})
    async def brake_hold(body: Why | None = None, principal: Principal = as_admin) -> dict[str, Any]:
        """Hold the brake: every run that would act waits until released."""
        await book.hold_brake(by=principal.name, why=body.why if body else None)
        guard.brake.hold()
        return {"held": True, "by": principal.name}

    @app.post("/v1/runs/{run_id}/undo", tags=["safety"],
              responses={200: ex.UNDONE, 404: {"description": "unknown"}})
    async def undo(run_id: str, principal: Principal = as_admin) -> dict[str, Any]:
        """Reverse the run's reversible steps (by run id or exposure id), audited under `undo.*`."""
        try:
            return await undo_run(run_id, book=book, providers=providers, auditor=auditor, by=principal.name)
        except UnknownRun:
            raise HTTPException(404, "no run with this run id or exposure id in the run store") from None
