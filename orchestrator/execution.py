"""Runs a playbook's steps against the providers, retrying transient failures, auditing every attempt.

No Kafka in here: the caller hands in an `AuditTrail` and gets back the terminal event it wrote.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from orchestrator.actions import ActionSpec, Priority, Provider, StepContext, StepResult
from orchestrator.audit import AuditEvent, AuditTrail
from orchestrator.auth import Role
from orchestrator.errors import NotFound, PermanentError, ProviderError, RateLimited, TransientError
from orchestrator.events import Exposure, Severity
from orchestrator.governor import deadline
from orchestrator.own_credentials import OwnCredentials
from orchestrator.playbooks import OnFailure, Playbook, RetryPolicy, Step
from orchestrator.redaction import REDACTOR
from orchestrator.routing import resolve_params, step_applies

if TYPE_CHECKING:
    from orchestrator.guard import Guard

#: The reason audited for a step a resumed run does not repeat.
ALREADY_SUCCEEDED = "already succeeded in an earlier attempt"


@dataclass(frozen=True)
class _StepOutcome:
    ok: bool
    result: StepResult | None = None


class Executor:
    """Runs playbooks; one per process, shared by every in-flight run."""

    def __init__(self, providers: Mapping[str, Provider], catalog: Mapping[str, ActionSpec], *,
                 step_timeout_s: float = 30.0, guard: Guard | None = None) -> None:
        self.providers = providers
        self.catalog = catalog
        self._step_timeout_s = step_timeout_s
        self.guard = guard
        self._own = OwnCredentials(providers)

    def plan(self, exposure: Exposure, playbook: Playbook,
             succeeded: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """The steps a run would take, without calling anyone: target (non-secret), destructive, reversible."""
        entries = []
        for step in playbook.steps:
            if step.name in succeeded or not step_applies(step, exposure):
                continue
            spec = self.catalog[step.action]
            entries.append({"step": step.name, "action": step.action,
                            "target": spec.describe(resolve_params(step, exposure)),
                            "destructive": spec.destructive, "reversible": spec.undo is not None})
        return entries

    async def run(self, exposure: Exposure, playbook: Playbook, trail: AuditTrail, *,
                  succeeded: frozenset[str] = frozenset(), role: Role | None = None, run_id: str | None = None,
                  row_id: int | None = None, resumed: bool = False) -> AuditEvent:
        """Run every applicable step in order; write `run.completed`, `run.failed`, `run.planned` or `run.denied`.

        Steps named in `succeeded` (a run resumed after its first owner died) are skipped and audited so. The
        guard, when there is one, clears the run first: it may wait for a person, plan only, or deny. `role` is the
        publisher's role when a record header vouches for it (`orchestrator.provenance`): priority, and the brake.
        """
        started = time.monotonic()
        priority = priority_of(exposure, role)
        run_id = run_id or uuid.uuid4().hex
        trail.bind(run_id=run_id, playbook=playbook.name)
        guard = None if exposure.dry_run else self.guard
        planned = self.plan(exposure, playbook, succeeded)
        bypass = guard is not None and guard.bypasses_brake(role) and any(e["destructive"] for e in planned)
        await trail.record(AuditEvent.RUN_STARTED, dry_run=exposure.dry_run or None, reason=exposure.reason,
                           brake=f"bypassed: published with the {role} role (signed)" if bypass and role else None)
        if guard is not None:
            from orchestrator.guard import Verdict

            clearance = await guard.clear(exposure, playbook, planned, trail, run_id=run_id, row_id=row_id,
                                          resumed=resumed, role=role)
            if clearance.verdict is Verdict.PROTECTED:
                await trail.record(AuditEvent.RUN_PLANNED, duration_ms=_elapsed_ms(started), plan=planned,
                                   **clearance.fields)
                return AuditEvent.RUN_PLANNED
            if clearance.verdict is Verdict.DENIED:
                await trail.record(AuditEvent.RUN_DENIED, duration_ms=_elapsed_ms(started), **clearance.fields)
                return AuditEvent.RUN_DENIED
        failed: list[str] = []
        plan: list[dict[str, Any]] = []
        for step in playbook.steps:
            if step.name in succeeded:
                await trail.record(AuditEvent.STEP_SKIPPED, step=step.name, action=step.action,
                                   dry_run=exposure.dry_run or None, reason=ALREADY_SUCCEEDED)
                continue
            outcome = await self._run_step(exposure, playbook, step, trail, priority)
            if outcome.result is not None and exposure.dry_run:
                plan.append({"step": step.name, "action": step.action, "target": outcome.result.target,
                             "calls": list(outcome.result.calls)})
            if not outcome.ok:
                failed.append(step.name)
                if step.on_failure is OnFailure.STOP:
                    break
        duration_ms = _elapsed_ms(started)
        if failed:
            terminal = AuditEvent.RUN_FAILED
            await trail.record(terminal, duration_ms=duration_ms, error=f"failed steps: {', '.join(failed)}")
        elif exposure.dry_run:
            terminal = AuditEvent.RUN_PLANNED
            await trail.record(terminal, duration_ms=duration_ms, plan=plan)
        else:
            terminal = AuditEvent.RUN_COMPLETED
            await trail.record(terminal, duration_ms=duration_ms)
        return terminal

    async def _run_step(self, exposure: Exposure, playbook: Playbook, step: Step, trail: AuditTrail,
                        priority: Priority) -> _StepOutcome:
        spec = self.catalog[step.action]
        # Every step record of a dry run says so: its `step.succeeded` means "planned", not "done".
        base = {"step": step.name, "action": step.action, "dry_run": exposure.dry_run or None}
        if not step_applies(step, exposure):
            await trail.record(AuditEvent.STEP_SKIPPED, **base, reason=f"condition not met: {step.when}")
            return _StepOutcome(ok=True)
        params = resolve_params(step, exposure)
        target = spec.describe(params)
        # A target that does not have its provider's shape (`current`, `..`, a key id of another kind) fails
        # here, before any call: nothing is sent, and retrying cannot help.
        problem = spec.missing(params) or spec.invalid(params)
        provider = self.providers.get(spec.provider)
        if problem is None and provider is None:
            problem = f"provider {spec.provider!r} is not configured; see the README section on {spec.provider}"
        if problem is not None or provider is None:
            await trail.record(AuditEvent.STEP_FAILED, **base, target=target, attempt=0, error=problem)
            return _StepOutcome(ok=False)
        await trail.record(AuditEvent.STEP_STARTED, **base, target=target)
        started = time.monotonic()
        attempts = _Attempts(playbook.retry_for(step))

        async def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            await trail.record(AuditEvent.STEP_RETRYING, **base, target=target, attempt=state.attempt_number,
                               error=_describe(error), retry_in_s=round(state.upcoming_sleep, 3),
                               rate_limited=isinstance(error, RateLimited) or None)

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TransientError), stop=attempts.stop, wait=attempts.wait,
                before_sleep=before_sleep, reraise=True,
            ):
                attempts.count = attempt.retry_state.attempt_number
                with attempt:
                    if refusal := await self._own.refusal(spec, params):
                        raise PermanentError(refusal, code="OwnCredential")
                    result = await self._attempt(provider, step.action, params, _context(exposure, priority))
        except ProviderError as exc:
            await trail.record(AuditEvent.STEP_FAILED, **base, target=target, attempt=attempts.count,
                               duration_ms=_elapsed_ms(started), error=_describe(exc),
                               error_code=exc.code, status=exc.status)
            return _StepOutcome(ok=False)
        undo = {"action": spec.undo, "params": dict(result.undo)} \
            if spec.undo and result.undo and not exposure.dry_run else None
        await trail.record(AuditEvent.STEP_SUCCEEDED, **base, target=result.target, attempt=attempts.count,
                           duration_ms=_elapsed_ms(started), note=result.note,
                           calls=list(result.calls) if exposure.dry_run else None, undo=undo)
        return _StepOutcome(ok=True, result=result)

    async def _attempt(self, provider: Provider, action: str, params: Mapping[str, Any],
                       context: StepContext) -> StepResult:
        try:
            # Waiting for a provider's rate-limit budget is not the provider hanging: the governor stops
            # this clock while the step is queued.
            async with deadline(self._step_timeout_s):
                return await provider.perform(action, params, context)
        except TimeoutError:
            raise TransientError(f"{action} timed out after {self._step_timeout_s:g}s") from None


class _Attempts:
    """Retry accounting for one step: rate-limit waits do not use up attempts, only the elapsed budget."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.count = 0
        self.failures = 0
        self._backoff = wait_random_exponential(multiplier=policy.initial_delay_s, max=policy.max_delay_s)

    def stop(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if not isinstance(error, RateLimited):
            self.failures += 1
        out_of_time = (state.seconds_since_start or 0.0) + self.wait(state) > self.policy.max_elapsed_s
        return self.failures >= self.policy.max_attempts or out_of_time

    def wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited):
            return max(0.0, error.retry_after)
        return float(self._backoff(state))


def priority_of(exposure: Exposure, role: Role | None = None) -> Priority:
    """Who goes first when a provider is short of budget or run slots: from the severity, and from the role of
    the principal that published the record (verified, see `orchestrator.provenance`), never from a field such
    as `actor` that any publisher can write."""
    if role in (Role.RESPONDER, Role.ADMIN) or exposure.severity is Severity.CRITICAL:
        return Priority.URGENT
    if exposure.severity is Severity.LOW:
        return Priority.LOW
    return Priority.NORMAL


def _context(exposure: Exposure, priority: Priority) -> StepContext:
    return StepContext(exposure_id=exposure.id, dry_run=exposure.dry_run, priority=priority)


#: Longest provider error kept in an audit record (cut only after redaction).
ERROR_CHARS = 1000


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    kind = "not found" if isinstance(error, NotFound) else "permanent" if isinstance(error, PermanentError) \
        else "rate limited" if isinstance(error, RateLimited) else "transient"
    return REDACTOR.clip(f"{kind}: {error}", ERROR_CHARS)


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
