"""The exposure state machine: no invalid move is accepted, terminal states are final (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.audit import TERMINAL_EVENTS
from orchestrator.store.states import EVENT_STATES, EXIT_CODES, TRANSITIONS, InvalidTransition, State, move

states = st.sampled_from(list(State))


@given(st.lists(states, max_size=12))
def test_any_sequence_of_moves_only_follows_the_table_and_never_leaves_a_terminal_state(targets: list[State]) -> None:
    current = State.RECEIVED
    for target in targets:
        allowed = target in TRANSITIONS.get(current, frozenset())
        if allowed:
            assert move(current, target) is target
            current = target
        else:
            with pytest.raises(InvalidTransition):
                move(current, target)
    if current.terminal:
        for target in State:
            with pytest.raises(InvalidTransition):
                move(current, target)


@given(states)
def test_terminal_states_have_no_way_out(state: State) -> None:
    assert state.terminal == (state not in TRANSITIONS)


def test_received_leads_to_running_or_an_end_and_running_to_a_run_outcome() -> None:
    assert move(State.RECEIVED, State.RUNNING) is State.RUNNING
    assert {State.COMPLETED, State.FAILED, State.PLANNED} <= TRANSITIONS[State.RUNNING]
    with pytest.raises(InvalidTransition):
        move(State.RECEIVED, State.COMPLETED)


def test_every_terminal_audit_event_ends_in_a_terminal_state_and_every_state_has_an_exit_code() -> None:
    assert {EVENT_STATES[e] for e in TERMINAL_EVENTS} == {s for s in State if s.terminal}
    assert set(EXIT_CODES) == set(State)
