"""Repeated lines are held back: `Throttle` and the aiokafka log filter, with an injected clock."""

from __future__ import annotations

import itertools
import logging

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.logs import KafkaLogThrottle, Throttle


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    """A log record as a library would make it."""
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_throttle_lets_one_through_per_interval_and_counts_the_rest() -> None:
    """The first event passes; repeats within 30 s are held; the next one after says how many were held."""
    clock = Clock()
    throttle = Throttle(30, clock=clock)
    assert throttle("k") == 0
    assert [throttle("k") for _ in range(5)] == [None] * 5
    clock.now += 30
    assert throttle("k") == 5
    assert throttle("other") == 0


def test_aiokafka_floods_become_one_line_per_template() -> None:
    """A thousand "connection refused" lines for varying nodes in 20 s pass as one; another template passes."""
    clock = Clock()
    throttle = KafkaLogThrottle(30, clock=clock)
    passed = 0
    for n in range(1000):
        clock.now += 0.02
        passed += throttle.filter(record("aiokafka", "Unable connect to node with id %s: %s", n % 3, "refused"))
    assert passed == 1
    assert throttle.filter(record("aiokafka.consumer.group_coordinator", "OffsetCommit failed for group %s", "g"))


def test_the_line_after_a_quiet_spell_says_how_many_it_stands_for() -> None:
    """The next line let through carries the count of the lines held back, formatted with its own arguments."""
    clock = Clock()
    throttle = KafkaLogThrottle(30, clock=clock)
    throttle.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    for _ in range(7):
        throttle.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    clock.now += 31
    line = record("aiokafka", "Unable to update metadata from %s", [1])
    assert throttle.filter(line)
    assert line.getMessage() == "Unable to update metadata from [1] (7 similar lines held back since the last one)"


def test_other_loggers_are_never_held_back() -> None:
    """The orchestrator's own lines and other libraries' pass whatever their rate."""
    throttle = KafkaLogThrottle(30, clock=Clock())
    assert all(throttle.filter(record("orchestrator.consumer", "same")) for _ in range(100))
    assert all(throttle.filter(record("httpx", "same")) for _ in range(100))


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 100)), max_size=200))
def test_every_event_is_either_let_through_or_counted_once(events: list[tuple[str, float]]) -> None:
    """Nothing is lost from the count: passes plus held-back counts reported equal events, at most one per
    interval and key pass."""
    clock = Clock()
    throttle = Throttle(30, clock=clock)
    passed: dict[str, list[float]] = {}
    reported = 0
    for key, step in events:
        clock.now += step
        held = throttle(key)
        if held is not None:
            passed.setdefault(key, []).append(clock.now)
            reported += 1 + held
    assert reported + sum(throttle.held_back(key) for key in "abc") == len(events)
    for times in passed.values():
        assert all(later - earlier >= 30 for earlier, later in itertools.pairwise(times))
