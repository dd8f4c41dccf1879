"""The run store, against SQLite and a real PostgreSQL server: the same cases on both backends."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from orchestrator.settings import StoreSettings
from orchestrator.store import ClaimOutcome, Content, RunStore, State, StepRow
from orchestrator.store.states import InvalidTransition
from orchestrator.store.store import AmbiguousPrefix, utcnow


def content(exposure_id: str = "exp-1", fingerprint: str = "a" * 64, kind: str = "okta.user",
            owner: str = "bob") -> Content:
    return Content(id=exposure_id, fingerprint=fingerprint, kind=kind, target=f"{kind}:{owner}", owner=owner,
                   detector="trufflehog", actor=None, severity="high", playbook=None)


async def test_a_new_exposure_is_claimed_then_a_duplicate_once_it_ended(store: RunStore) -> None:
    first = await store.claim(content())
    assert first.outcome is ClaimOutcome.NEW and not first.id_reused
    store.started(first.row_id, run_id="r1", playbook="okta-user")
    await store.finish(first.row_id, State.COMPLETED, terminal_event="run.completed", run_id="r1")
    again = await store.claim(content())
    assert again.outcome is ClaimOutcome.DUPLICATE and again.row_id == first.row_id
    assert again.state is State.COMPLETED and again.terminal_event == "run.completed"


async def test_the_same_id_with_other_content_runs_and_is_flagged_as_reused(store: RunStore) -> None:
    bogus = await store.claim(content(fingerprint="b" * 64, kind="zzz"))
    await store.finish(bogus.row_id, State.UNMATCHED, terminal_event="exposure.unmatched")
    real = await store.claim(content())
    assert real.outcome is ClaimOutcome.NEW and real.id_reused
    assert real.row_id != bogus.row_id


async def test_a_live_claim_of_another_owner_is_busy_and_taken_over_once_its_lease_expired(
        store: RunStore, store_settings: StoreSettings) -> None:
    other = RunStore.open(store_settings, owner="other", migrate=False)
    theirs = await other.claim(content())
    other.started(theirs.row_id, run_id="r1", playbook="p")
    other.step(theirs.row_id, "r1", StepRow("revoke", "okta.revoke", "succeeded", attempts=1))
    other.step(theirs.row_id, "r1", StepRow("notify", "slack.post", "failed", attempts=3))
    await other.flush()
    assert (await store.claim(content())).outcome is ClaimOutcome.BUSY
    later = utcnow() + store.lease + timedelta(seconds=1)
    resumed = await store.claim(content(), now=later)
    assert resumed.outcome is ClaimOutcome.RESUMED and resumed.succeeded_steps == {"revoke"}
    # The old owner's lease is gone: it may not take it back while the new owner holds it.
    assert (await other.claim(content(), now=later)).outcome is ClaimOutcome.BUSY
    await other.close()


async def test_a_released_claim_is_resumed_at_once(store: RunStore, store_settings: StoreSettings) -> None:
    first = await store.claim(content())
    await store.release(first.row_id)
    restarted = RunStore.open(store_settings, owner="restarted", migrate=False)
    try:
        assert (await restarted.claim(content())).outcome is ClaimOutcome.RESUMED
    finally:
        await restarted.close()


async def test_terminal_states_are_final(store: RunStore) -> None:
    claim = await store.claim(content())
    store.started(claim.row_id, run_id="r1", playbook="p")
    await store.finish(claim.row_id, State.COMPLETED, terminal_event="run.completed")
    with pytest.raises(InvalidTransition):
        await store.finish(claim.row_id, State.FAILED, terminal_event="run.failed")
    [row] = await store.lookup("exp-1")
    assert row["state"] == "completed" and row["terminal_event"] == "run.completed"


async def test_a_run_waits_for_approval_and_goes_on_running(store: RunStore) -> None:
    """running → awaiting_approval → running is applied, and neither move is reported as refused."""
    claim = await store.claim(content())
    store.started(claim.row_id, run_id="r1", playbook="p")
    await store.move(claim.row_id, State.AWAITING_APPROVAL)
    assert (await store.lookup("exp-1"))[0]["state"] == "awaiting_approval"
    await store.move(claim.row_id, State.RUNNING)
    assert (await store.lookup("exp-1"))[0]["state"] == "running"
    with pytest.raises(InvalidTransition):
        await store.move(claim.row_id, State.RECEIVED)


async def test_outside_the_dedup_window_the_same_content_runs_again(store: RunStore) -> None:
    first = await store.claim(content())
    await store.finish(first.row_id, State.FAILED, terminal_event="run.failed")
    later = utcnow() + store.dedup_window + timedelta(days=1)
    again = await store.claim(content(), now=later)
    assert again.outcome is ClaimOutcome.NEW and again.row_id != first.row_id
    assert [r["state"] for r in await store.lookup("exp-1")] == ["received", "failed"]


async def test_two_claimers_racing_for_one_exposure_exactly_one_wins(store_settings: StoreSettings) -> None:
    claimers = [RunStore.open(store_settings, owner=f"owner-{i}", migrate=(i == 0)) for i in range(4)]
    outcomes: list[ClaimOutcome] = []
    lock = threading.Lock()
    start = threading.Barrier(len(claimers))

    def race(claimer: RunStore, exposure: Content) -> None:
        start.wait()
        outcome = claimer._claim(exposure, (None, None, None), utcnow()).outcome
        with lock:
            outcomes.append(outcome)

    for n in range(10):
        exposure = content(exposure_id=f"race-{n}")
        outcomes.clear()
        threads = [threading.Thread(target=race, args=(c, exposure)) for c in claimers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == sorted([ClaimOutcome.NEW] + [ClaimOutcome.BUSY] * (len(claimers) - 1))
    await asyncio.gather(*(c.close() for c in claimers))


async def test_lookup_takes_a_unique_prefix_and_refuses_an_ambiguous_one(store: RunStore) -> None:
    for exposure_id in ("abc-1", "abd-2"):
        await store.claim(content(exposure_id=exposure_id))
    assert [r["id"] for r in await store.lookup("abc")] == ["abc-1"]
    assert await store.lookup("zz") == []
    with pytest.raises(AmbiguousPrefix):
        await store.lookup("ab")


async def test_listing_is_newest_first_filtered_and_paginated(store: RunStore) -> None:
    now = utcnow()
    for n in range(5):
        await store.claim(content(exposure_id=f"e{n}", kind="aws.access_key" if n % 2 else "okta.user"),
                          now=now + timedelta(seconds=n))
    page, cursor = await store.recent(limit=2)
    assert [r["id"] for r in page] == ["e4", "e3"] and cursor
    page, cursor = await store.recent(limit=2, cursor=cursor)
    assert [r["id"] for r in page] == ["e2", "e1"]
    page, cursor = await store.recent(limit=2, cursor=cursor)
    assert [r["id"] for r in page] == ["e0"] and cursor is None
    only_aws, _ = await store.recent(kind="aws.access_key")
    assert [r["id"] for r in only_aws] == ["e3", "e1"]
    assert (await store.recent(state="completed"))[0] == []


async def test_pruning_deletes_ended_exposures_older_than_the_retention(store: RunStore) -> None:
    old = await store.claim(content(exposure_id="old"), now=utcnow() - store.retention - timedelta(days=1))
    await store.finish(old.row_id, State.UNMATCHED, terminal_event="exposure.unmatched")
    await store.claim(content(exposure_id="live"), now=utcnow() - store.retention - timedelta(days=1))
    await store.claim(content(exposure_id="new"))
    assert await store.prune() == 1
    assert {r["id"] for r in (await store.recent())[0]} == {"live", "new"}


async def test_migrations_are_applied_once(store_settings: StoreSettings) -> None:
    for _ in range(2):
        RunStore.open(store_settings).engine.dispose()


async def test_writes_queued_together_are_applied_together_and_a_refused_move_fails_only_itself(
        store: RunStore) -> None:
    """Many rows' writes in one batch (PostgreSQL: one executemany per kind): each row ends where it was sent,
    an invalid move among them raises for its caller alone."""
    claims = [await store.claim(content(f"exp-b{n}", fingerprint=f"{n:064d}")) for n in range(6)]
    store.started(claims[0].row_id, run_id="r0", playbook="p")
    await store.finish(claims[0].row_id, State.COMPLETED, terminal_event="run.completed")
    for claim in claims[1:]:
        store.started(claim.row_id, run_id=f"r{claim.row_id}", playbook="p")
        store.step(claim.row_id, f"r{claim.row_id}", StepRow("revoke", "okta.revoke", "succeeded", attempts=1))
    ends = [store.finish(c.row_id, State.FAILED if n % 2 else State.COMPLETED, terminal_event="run.x")
            for n, c in enumerate(claims)]
    results = await asyncio.gather(*ends, return_exceptions=True)
    assert isinstance(results[0], InvalidTransition) and results[1:] == [None] * 5
    rows = [(await store.lookup(f"exp-b{n}"))[0] for n in range(6)]
    assert [r["state"] for r in rows] == ["completed", "failed", "completed", "failed", "completed", "failed"]
    assert all(r["steps"][0]["state"] == "succeeded" for r in rows[1:])
