"""Commit bookkeeping: an offset becomes committable only when every earlier record of its partition is done."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.offsets import OffsetTracker


def test_nothing_is_committable_before_anything_finishes() -> None:
    """Started records alone give nothing to commit."""
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.started(0, 10)
    assert tracker.to_commit() == {} and tracker.in_flight(0) == 1


def test_a_later_record_finishing_first_does_not_move_the_offset() -> None:
    """Out-of-order completion: the committable offset waits for the earliest unfinished record."""
    tracker: OffsetTracker[int] = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(0, offset)
    tracker.finished(0, 12)
    tracker.finished(0, 11)
    assert tracker.to_commit() == {}
    tracker.finished(0, 10)
    assert tracker.to_commit() == {0: 13} and tracker.in_flight(0) == 0


def test_the_offset_moves_up_to_the_first_gap() -> None:
    """With 10 and 12 done and 11 running, the committable offset is 11."""
    tracker: OffsetTracker[int] = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(0, offset)
    tracker.finished(0, 10)
    tracker.finished(0, 12)
    assert tracker.to_commit() == {0: 11}


def test_partitions_are_independent() -> None:
    """A slow record in one partition holds back only that partition."""
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.started("a", 0)
    tracker.started("b", 5)
    tracker.finished("b", 5)
    assert tracker.to_commit() == {"b": 6}


def test_committed_offsets_are_not_offered_again() -> None:
    """After `committed`, only partitions that moved since appear in `to_commit`."""
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.started(0, 0)
    tracker.finished(0, 0)
    tracker.committed(tracker.to_commit())
    assert tracker.to_commit() == {}
    tracker.started(0, 1)
    tracker.finished(0, 1)
    assert tracker.to_commit() == {0: 2}


def test_forget_drops_a_revoked_partition() -> None:
    """A forgotten partition has nothing in flight, nothing to commit, and ignores late finishes."""
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.started(0, 0)
    tracker.started(0, 1)
    tracker.finished(0, 0)
    tracker.forget(0)
    tracker.finished(0, 1)
    assert tracker.to_commit() == {} and tracker.in_flight(0) == 0


def test_offsets_going_backwards_start_a_new_epoch() -> None:
    """A topic deleted and created again restarts at 0: nothing of the old incarnation is committed onto it, and
    old records finishing late move nothing."""
    tracker: OffsetTracker[int] = OffsetTracker()
    old = tracker.started(0, 500)
    tracker.started(0, 501)
    tracker.finished(0, 500, old)
    tracker.committed(tracker.to_commit())
    new = tracker.started(0, 0)
    assert new != old and tracker.to_commit() == {} and tracker.last_committed(0) is None
    tracker.finished(0, 501, old)
    assert tracker.to_commit() == {}
    tracker.finished(0, 0, new)
    assert tracker.to_commit() == {0: 1}


@settings(max_examples=300)
@given(st.data())
def test_never_commits_past_an_unfinished_record(data: st.DataObject) -> None:
    """Property: for any order of starts and finishes, the committable offset of a partition is always at or
    below its earliest unfinished record, and reaches the end once everything finished."""
    count = data.draw(st.integers(min_value=1, max_value=40))
    offsets = sorted(data.draw(st.sets(st.integers(min_value=0, max_value=1000), min_size=count, max_size=count)))
    tracker: OffsetTracker[int] = OffsetTracker()
    epoch = 0
    for offset in offsets:
        epoch = tracker.started(0, offset)
    unfinished = set(offsets)
    for offset in data.draw(st.permutations(offsets)):
        tracker.finished(0, offset, epoch)
        unfinished.discard(offset)
        committable = tracker.to_commit().get(0)
        if committable is not None:
            assert not unfinished or committable <= min(unfinished)
            tracker.committed({0: committable})
    assert tracker.last_committed(0) == offsets[-1] + 1
