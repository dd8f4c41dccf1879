"""Replay requests in the consumer: get the failed exposure back, claim its row, run its playbook again.

The row is claimed like any run (`RunStore.claim_replay`): a replay never runs beside another run of the
same exposure, a redelivered request does nothing twice, and a replay whose owner died is resumed. The new
run skips the steps any earlier run succeeded in (`step.skipped`, "already succeeded in an earlier attempt").
Its records carry the requester as `actor` and the request's id as `replay_request`; it opens with
`exposure.replayed` (the reason, the run it follows). A request that cannot run is audited as
`replay.refused` with why; the exposure stays failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator import replay
from orchestrator.audit import AuditEvent, Auditor
from orchestrator.dead_letters import MAX_STORED_BYTES, DeadLetterError
from orchestrator.errors import InvalidExposure
from orchestrator.events import Exposure, decode
from orchestrator.execution import Executor
from orchestrator.playbooks import Playbook
from orchestrator.redaction import REDACTOR
from orchestrator.store import Claim, ClaimOutcome, content_of
from orchestrator.store.tracking import StoreTrail

if TYPE_CHECKING:
    from orchestrator.pipeline import DeadLetters, Origin, Pipeline

log = structlog.get_logger("orchestrator.replay")


class Replayer:
    """Runs replay requests; one per pipeline."""

    def __init__(self, pipeline: Pipeline, *, auditor: Auditor, executor: Executor, playbooks: Sequence[Playbook],
                 dead_letters: DeadLetters) -> None:
        self._pipeline = pipeline
        self._auditor = auditor
        self._executor = executor
        self._playbooks = playbooks
        self._dead_letters = dead_letters

    async def run(self, request: replay.ReplayRequest, *, origin: Origin) -> AuditEvent:
        """Replay the exposure, or audit why not; returns the event that ended the request."""
        store = self._pipeline.store
        row = await store.row(request.row)
        context: dict[str, Any] = {"actor": request.actor, "replay_request": request.request_id}
        if row is None or row["id"] != request.exposure_id:
            unknown = StoreTrail(self._auditor, request.exposure_id, context, store=store, row_id=None)
            return await self._refuse(unknown, request,
                                      f"no exposure {request.exposure_id} (row {request.row}) in the run store")
        context.update(credential_kind=row["credential_kind"], detector=row["detector"],
                       content_fingerprint=row["content_fingerprint"], id_reused=row["id_reused"] or None)
        trail = StoreTrail(self._auditor, request.exposure_id, context, store=store, row_id=None)
        if row["replay_request"] == request.request_id and row["finished_at"] is not None:
            log.info("replay.redelivered", exposure_id=request.exposure_id, request=request.request_id)
            return AuditEvent(row["terminal_event"] or AuditEvent.REPLAY_REFUSED)
        planned = replay.plan({**row, "state": "failed"}, self._playbooks)  # the claim checks the state
        playbook = next((p for p in self._playbooks if p.name == planned.playbook), None)
        if playbook is None:
            return await self._refuse(trail, request, planned.problem or "its playbook is not loaded")
        exposure, problem = await self._exposure(row, playbook)
        if exposure is None:
            return await self._refuse(trail, request, problem or "its exposure cannot be rebuilt")
        claim = await self._claim(request)
        if claim.outcome is ClaimOutcome.DONE:
            return AuditEvent(claim.terminal_event or AuditEvent.REPLAY_REFUSED)
        if claim.outcome not in (ClaimOutcome.NEW, ClaimOutcome.RESUMED):
            why = f"{request.exposure_id} is {claim.state.value}: only failed exposures can be replayed" \
                if claim.outcome is ClaimOutcome.NOT_FAILED else "its row is gone from the run store"
            return await self._refuse(trail, request, why)
        try:
            ended = await self._pipeline.ended_meanwhile(request.exposure_id, row["content_fingerprint"], claim)
        except BaseException:
            await store.release(claim.row_id)  # not left claimed (and renewed) by a request that failed here
            raise
        if ended is not None:
            return ended
        trail.row_id = claim.row_id
        secret = exposure.credential.secret
        REDACTOR.register(secret)
        try:
            return await self._replay(trail, request, exposure, playbook, claim.succeeded_steps, row,
                                      resumed=claim.outcome is ClaimOutcome.RESUMED)
        finally:
            REDACTOR.release(secret)

    async def _replay(self, trail: StoreTrail, request: replay.ReplayRequest, exposure: Exposure,
                      playbook: Playbook, succeeded: frozenset[str], row: dict[str, Any], *,
                      resumed: bool) -> AuditEvent:
        try:
            await trail.record(AuditEvent.EXPOSURE_REPLAYED, reason=request.reason, previous_run_id=row["run_id"],
                               previous_error=row["error"], target=row["target"], resumed=resumed or None,
                               source=f"dead letter {row['dead_letter']}" if row.get("dead_letter") else "store")
            # The requester and their reason are the run's: steps and records see who asked for it and why.
            again = exposure.model_copy(update={"actor": request.actor, "reason": request.reason})
            terminal = await self._executor.run(again, playbook, trail, succeeded=succeeded)
        except asyncio.CancelledError:
            await self._pipeline.interrupted(trail)
            raise
        except Exception as exc:  # the boundary, as for any run
            log.exception("replay.crashed", exposure_id=request.exposure_id)
            if trail.terminal is None:
                await trail.record(AuditEvent.RUN_FAILED, error=f"internal error: {type(exc).__name__}")
            terminal = AuditEvent.RUN_FAILED
        await trail.flush()
        await self._pipeline.settle(trail)
        return terminal

    async def _exposure(self, row: dict[str, Any], playbook: Playbook) -> tuple[Exposure | None, str | None]:
        """The exposure to replay: the original from its encrypted dead letter, else rebuilt from the row."""
        succeeded = replay.succeeded_steps(row["steps"])
        location = row.get("dead_letter")
        fallback = replay.store_problem(row, playbook, succeeded)
        rebuilt = replay.rebuild(row)
        if location:
            why = "no encryption key is configured (ORCHESTRATOR_ENCRYPTION_KEY) to read it"
            if self._dead_letters.encrypted:
                try:
                    original = decode(await self._dead_letters.fetch(location), max_bytes=MAX_STORED_BYTES)
                    if content_of(original).fingerprint == row["content_fingerprint"]:
                        return original, None
                    why = "it holds another exposure"
                except (DeadLetterError, InvalidExposure) as exc:
                    why = str(exc)
                except Exception as exc:  # noqa: BLE001 - Kafka trouble: refused now, the request can be repeated
                    why = f"reading it failed: {type(exc).__name__}"
            if fallback is not None or rebuilt is None:
                return None, f"cannot replay {row['id']}: its original record (dead letter {location}) cannot be " \
                             f"read: {why}"
        elif fallback is not None or rebuilt is None:
            return None, fallback
        return rebuilt.exposure, None

    async def _claim(self, request: replay.ReplayRequest) -> Claim:
        """Claim the row; while another run of the exposure is live, wait for its end or its lease's expiry."""
        store = self._pipeline.store
        pause = 0.0
        while True:
            try:
                claim = await store.claim_replay(request.row, request.exposure_id, request.request_id)
            except Exception as exc:  # noqa: BLE001 - retried: acting without a claim could act twice
                log.warning("store.claim_failed", exposure_id=request.exposure_id, error=type(exc).__name__)
                claim = None
            if claim is not None and claim.outcome is not ClaimOutcome.BUSY:
                return claim
            pause = min(max(pause * 2, 0.05), 1.0, store.lease.total_seconds() / 4)
            await asyncio.sleep(pause)

    async def _refuse(self, trail: StoreTrail, request: replay.ReplayRequest, why: str) -> AuditEvent:
        await trail.record(AuditEvent.REPLAY_REFUSED, reason=request.reason, error=why)
        await trail.flush()
        return AuditEvent.REPLAY_REFUSED
