"""Commit bookkeeping: an offset becomes committable only when every earlier record of its partition is done."""

from __future__ import annotations

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
