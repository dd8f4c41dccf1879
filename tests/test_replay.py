"""Replays: what a replay would do (pure), its request record (properties), its claim in the store (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import replay
from orchestrator.events import Exposure
from orchestrator.pipeline import Origin, Pipeline
from orchestrator.playbooks import load_playbooks
from orchestrator.providers import catalog
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR, StoreSettings
from orchestrator.store import ClaimOutcome, RunStore, State, StepRow, content_of
from orchestrator.store.states import InvalidTransition, reopen
from orchestrator.store.store import utcnow

PLAYBOOKS = load_playbooks(DEFAULT_PLAYBOOKS_DIR, catalog())


def _row(event: dict[str, Any], *, state: str = "failed", playbook: str | None = None,
         steps: tuple[tuple[str, str], ...] = (), dead_letter: str | None = None) -> dict[str, Any]:
    """A store row as `lookup` returns it, for the exposure `event`."""
    exposure = Exposure.model_validate(event)
    content = content_of(exposure)
    return {"row_id": 7, "id": content.id, "content_fingerprint": content.fingerprint, "credential_kind": content.kind,
            "credential_id": content.credential_id, "credential_owner": content.owner, "target": content.target,
            "detector": content.detector, "actor": content.actor, "severity": content.severity, "state": state,
            "playbook": playbook, "run_id": "r1", "error": "failed steps: x", "dead_letter": dead_letter,
            "steps": [{"step": name, "state": outcome} for name, outcome in steps]}


def test_a_failed_exposure_without_a_secret_is_rebuilt_from_the_store_skipping_its_succeeded_steps() -> None:
    """okta-user failed in reset-factors: the replay skips the two steps that succeeded and runs that one."""
    row = _row({"id": "e1", "credential": {"kind": "okta.user", "owner": "sam@example.com"}, "severity": "critical"},
               playbook="okta-user", steps=(("clear-sessions", "succeeded"), ("reset-factors", "failed"),
                                            ("suspend", "succeeded")))
    plan = replay.plan(row, PLAYBOOKS)
    assert plan.possible and plan.source == "store"
    assert plan.skip == ("suspend", "clear-sessions") and plan.run == ("reset-factors",)
    rebuilt = replay.rebuild(row)
    assert rebuilt is not None and rebuilt.exact and rebuilt.exposure.credential.owner == "sam@example.com"


def test_a_step_that_needs_the_secret_cannot_be_replayed_without_an_encrypted_dead_letter() -> None:
    """The store keeps no secret: without the original's encrypted dead letter the replay says it cannot, and why."""
    event = {"id": "e2", "credential": {"kind": "github.token", "secret": "ghp_" + "x" * 36}}
    plan = replay.plan(_row(event, playbook="github-token"), PLAYBOOKS)
    assert not plan.possible and plan.problem is not None
    assert "revoke-token need the raw secret" in plan.problem and "ORCHESTRATOR_ENCRYPTION_KEY" in plan.problem
    kept = replay.plan(_row(event, playbook="github-token", dead_letter="0:12"), PLAYBOOKS)
    assert kept.possible and kept.source == "dead letter 0:12"


def test_a_secret_no_step_still_needs_does_not_stop_a_replay() -> None:
    """An okta.session that came with the cookie's value: its step acts on the owner, so the replay runs without
    the value (the exposure is rebuilt, not exactly)."""
    row = _row({"id": "e3", "credential": {"kind": "okta.session", "owner": "u1", "secret": "s" * 20}},
               playbook="okta-session")
    assert replay.plan(row, PLAYBOOKS).possible
    rebuilt = replay.rebuild(row)
    assert rebuilt is not None and not rebuilt.exact and rebuilt.exposure.credential.secret is None


@pytest.mark.parametrize(("state", "playbook", "expected"), [
    ("completed", "okta-user", "is completed: only failed exposures can be replayed"),
    ("running", "okta-user", "is running"),
    ("failed", None, "failed before a playbook ran"),
    ("failed", "gone-playbook", "'gone-playbook', which is not loaded"),
])
def test_only_a_failed_exposure_with_a_loaded_playbook_can_be_replayed(state: str, playbook: str | None,
                                                                       expected: str) -> None:
    """Any other state, no playbook, or one no longer loaded: a one-line reason."""
    row = _row({"id": "e4", "credential": {"kind": "okta.user", "owner": "u"}}, state=state, playbook=playbook)
    plan = replay.plan(row, PLAYBOOKS)
    assert not plan.possible and plan.problem is not None and expected in plan.problem


def test_only_a_failed_state_reopens() -> None:
    """The state machine's one way out of an end: failed → received, by a replay."""
    assert reopen(State.FAILED) is State.RECEIVED
    for state in State:
        if state is not State.FAILED:
            with pytest.raises(InvalidTransition):
                reopen(state)


requests = st.builds(
    replay.ReplayRequest, request_id=st.text(min_size=1, max_size=64), exposure_id=st.text(min_size=1, max_size=200),
    row=st.integers(0, 2**40), target=st.text(min_size=1, max_size=100), kind=st.text(min_size=1, max_size=100),
    actor=st.text(min_size=1, max_size=200), reason=st.text(min_size=1, max_size=300),
    requested_at=st.datetimes(timezones=st.just(UTC)))


@given(requests)
@settings(max_examples=60, deadline=None)
def test_a_replay_request_survives_its_record(request: replay.ReplayRequest) -> None:
    """encode → decode is the identity, and the record is told from an exposure by its first bytes."""
    raw = replay.encode(request)
    assert replay.is_request(raw) and replay.decode(raw) == request


@given(st.binary(max_size=300) | st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                                              | st.text(max_size=20),
                                              lambda inner: st.lists(inner, max_size=3)
                                              | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                                              max_leaves=12).map(orjson.dumps))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_record_starting_like_a_replay_request_is_admitted_or_rejected_never_raises(body: bytes) -> None:
    """Input boundary: whatever follows `{"replay":`, admission gives a request or a reason, never an exception."""
    admission = _PIPELINE.admit(replay.PREFIX + body, Origin("t", 0, 1))
    assert (admission.replay is None) == (admission.rejection is not None)
    assert admission.exposure is None


_PIPELINE = Pipeline(auditor=None, executor=None, playbooks=(), dead_letters=None,  # type: ignore[arg-type]
                     max_event_bytes=65536, store=RunStore.in_memory())


# -- the store's replay claim, on both backends ----------------------------------------------------------------


async def _failed(store: RunStore) -> int:
    exposure = Exposure.model_validate({"id": f"exp-{datetime.now(UTC).timestamp()}",
                                        "credential": {"kind": "okta.user", "owner": "bob"}})
    claim = await store.claim(content_of(exposure))
    store.started(claim.row_id, run_id="r1", playbook="okta-user")
    store.step(claim.row_id, "r1", StepRow("clear-sessions", "okta.clear_user_sessions", "succeeded", 1))
    store.step(claim.row_id, "r1", StepRow("reset-factors", "okta.reset_factors", "failed", 1))
    await store.finish(claim.row_id, State.FAILED, terminal_event="run.failed", error="failed steps: reset-factors")
    return claim.row_id


async def test_a_replay_claim_reopens_a_failed_row_once_and_holds_off_every_other_run(
        store: RunStore, store_settings: StoreSettings) -> None:
    """NEW with the succeeded steps; meanwhile another request or process is BUSY; the same request after its
    end is DONE; a completed row is NOT_FAILED."""
    row_id = await _failed(store)
    row = await store.row(row_id)
    assert row is not None
    claim = await store.claim_replay(row_id, row["id"], "req-1")
    assert claim.outcome is ClaimOutcome.NEW and claim.succeeded_steps == {"clear-sessions"}
    assert claim.state is State.RECEIVED
    other = RunStore.open(store_settings, owner="other", migrate=False)
    try:
        assert (await other.claim_replay(row_id, row["id"], "req-2")).outcome is ClaimOutcome.BUSY
        again = Exposure.model_validate({"id": row["id"], "credential": {"kind": "okta.user", "owner": "bob"}})
        assert (await other.claim(content_of(again))).outcome is ClaimOutcome.BUSY
        later = utcnow() + store.lease + timedelta(seconds=1)
        assert (await other.claim_replay(row_id, row["id"], "req-2", now=later)).outcome is ClaimOutcome.BUSY
        taken = await other.claim_replay(row_id, row["id"], "req-1", now=later)
        assert taken.outcome is ClaimOutcome.RESUMED and taken.succeeded_steps == {"clear-sessions"}
        other.started(row_id, run_id="r2", playbook="okta-user")
        await other.finish(row_id, State.COMPLETED, terminal_event="run.completed", run_id="r2")
    finally:
        await other.close()
    assert (await store.claim_replay(row_id, row["id"], "req-1")).outcome is ClaimOutcome.DONE
    assert (await store.claim_replay(row_id, row["id"], "req-3")).outcome is ClaimOutcome.NOT_FAILED
    assert (await store.claim_replay(row_id, "another-id", "req-3")).outcome is ClaimOutcome.UNKNOWN
    ended = await store.row(row_id)
    assert ended is not None and ended["state"] == "completed" and ended["replay_request"] == "req-1"


@pytest.mark.parametrize(("args", "says"), [
    ([], "give either --exposure ID or --state failed --since T"),
    (["--exposure", "x", "--state", "failed", "--since", "1h"], "give either"),
    (["--state", "completed", "--since", "1h"], "only failed exposures can be replayed"),
    (["--state", "failed"], "--state failed needs --since T"),
    (["--state", "failed", "--since", "yesterday"], "expected e.g. 15m, 2h, 1d"),
])
def test_a_mistyped_replay_is_one_line_and_exit_2(args: list[str], says: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever is wrong with the flags: one line naming what to do, exit 2, nothing read or published."""
    from orchestrator.cli import main

    monkeypatch.setattr("sys.argv", ["orchestrator", "replay", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err
