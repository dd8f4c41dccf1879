"""The exposure state machine, as pure code: which state follows which, and what an audit event moves to."""

from __future__ import annotations

from enum import StrEnum

from orchestrator.audit import AuditEvent


class State(StrEnum):
    """Where an exposure is. `received`, `running` and `awaiting_approval` are live; every other state is final."""

    RECEIVED = "received"
    RUNNING = "running"
    #: Planned, waiting for a second person (approval) or for the mass-action brake to be released.
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    PLANNED = "planned"
    REJECTED = "rejected"
    UNMATCHED = "unmatched"
    DUPLICATE = "duplicate"
    #: Denied by a responder, expired before anyone answered, or dropped by the brake's timeout policy.
    DENIED = "denied"

    @property
    def terminal(self) -> bool:
        """True once nothing can change it."""
        return self not in LIVE_STATES


LIVE_STATES = frozenset({State.RECEIVED, State.RUNNING, State.AWAITING_APPROVAL})

#: Every allowed move. `running → running` is a takeover: a new owner resumes a run whose owner died.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.RUNNING, State.REJECTED, State.UNMATCHED, State.DUPLICATE, State.FAILED}),
    State.RUNNING: frozenset({State.RUNNING, State.COMPLETED, State.FAILED, State.PLANNED, State.AWAITING_APPROVAL,
                              State.DENIED}),
    # Approved or released: running again (also when a restart resumes it); denied or expired: ended. A crash
    # while waiting ends as failed, like any run.
    State.AWAITING_APPROVAL: frozenset({State.RUNNING, State.DENIED, State.FAILED, State.AWAITING_APPROVAL}),
}


#: The one way out of a final state: a replay (asked for by a person) re-opens a failed exposure for a new run.
#: Kept apart from `TRANSITIONS`, which is what the pipeline's own records may do.
REOPENINGS: dict[State, State] = {State.FAILED: State.RECEIVED}


class InvalidTransition(ValueError):
    """A move the state machine does not allow (a bug in the caller)."""


def can_move(current: State, target: State) -> bool:
    """True when `current → target` is allowed."""
    return target in TRANSITIONS.get(current, frozenset())


def move(current: State, target: State) -> State:
    """`target`, or `InvalidTransition` when the move is not allowed (terminal states are final)."""
    if not can_move(current, target):
        raise InvalidTransition(f"{current.value} → {target.value} is not allowed")
    return target


def reopen(current: State) -> State:
    """The state a replay moves `current` to, or `InvalidTransition` (only a failed exposure is replayed)."""
    if current not in REOPENINGS:
        raise InvalidTransition(f"{current.value} cannot be replayed: only failed exposures can")
    return REOPENINGS[current]


#: The state an audit event puts its exposure in; events not listed leave the state as it is.
EVENT_STATES: dict[AuditEvent, State] = {
    AuditEvent.EXPOSURE_RECEIVED: State.RECEIVED,
    AuditEvent.RUN_STARTED: State.RUNNING,
    AuditEvent.RUN_COMPLETED: State.COMPLETED,
    AuditEvent.RUN_FAILED: State.FAILED,
    AuditEvent.RUN_PLANNED: State.PLANNED,
    AuditEvent.EXPOSURE_REJECTED: State.REJECTED,
    AuditEvent.EXPOSURE_UNMATCHED: State.UNMATCHED,
    AuditEvent.EXPOSURE_DUPLICATE: State.DUPLICATE,
    AuditEvent.RUN_AWAITING_APPROVAL: State.AWAITING_APPROVAL,
    AuditEvent.RUN_APPROVED: State.RUNNING,
    AuditEvent.RUN_DENIED: State.DENIED,
}

#: `orchestrator status` exit codes by state.
EXIT_CODES: dict[State, int] = {
    State.COMPLETED: 0, State.PLANNED: 0, State.DUPLICATE: 0,
    State.FAILED: 1, State.REJECTED: 1, State.UNMATCHED: 1,
    State.RECEIVED: 4, State.RUNNING: 4, State.AWAITING_APPROVAL: 4, State.DENIED: 1,
}
