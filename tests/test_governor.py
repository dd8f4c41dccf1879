"""The governor's pacing policy and scheduling, as pure units: an injected clock, no network."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from orchestrator.actions import Priority
from orchestrator.governor import BucketBudget, Governor, deadline

T0 = 1_800_000_000.0


def okta_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    """Okta's three rate-limit headers."""
    return {"X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(int(reset))}


def drain(budget: BucketBudget, now: float, until: float) -> list[float]:
    """Start requests as soon as the budget allows, each finishing at once, until `until`; their start times."""
    started = []
    while True:
        at = budget.ready_at(now)
        while at < until and budget.ready_at(at) != at:
            at = budget.ready_at(at)
        if at >= until:
            return started
        now = at
        budget.start(now)
        budget.finish()
        started.append(now)


def test_headers_are_learned_case_insensitively_in_both_spellings() -> None:
    """Okta's X-Rate-Limit-* and GitHub's lower-case x-ratelimit-* both teach limit, remaining and reset."""
    okta, github = BucketBudget(), BucketBudget()
    okta.observe({"x-RATE-limit-LIMIT": "600", "X-Rate-Limit-Remaining": "599", "x-rate-limit-reset": str(T0 + 60)},
                 200, T0)
    github.observe({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "x-ratelimit-reset": str(T0 + 3600)},
                   202, T0)
    assert (okta.limit, okta.remaining, okta.reset_at) == (600, 599, T0 + 60)
    assert (github.limit, github.remaining, github.reset_at) == (60, 59, T0 + 3600)


def test_share_caps_requests_per_window() -> None:
    """With share 0.5 of a 10-request window, five requests start before the reset and none after them."""
    budget = BucketBudget(share=0.5)
    budget.start(T0)
    budget.finish()
    budget.observe(okta_headers(10, 9, T0 + 6), 200, T0)
    started = drain(budget, T0, T0 + 6)
    assert len(started) + 1 == 5
    assert budget.ready_at(started[-1]) == T0 + 6


def test_never_more_than_the_advertised_remaining() -> None:
    """When others have used the bucket, the advertised remaining bounds us even under our share."""
    budget = BucketBudget(share=1.0)
    budget.observe(okta_headers(100, 3, T0 + 60), 200, T0)
    assert len(drain(budget, T0, T0 + 60)) == 3


def test_a_burst_starts_at_once_and_the_rest_is_spread_evenly() -> None:
    """Thirty requests allowed in 6 s: a burst of initial_burst (4) at once, then the rest 0.2 s apart."""
    budget = BucketBudget(share=0.5, initial_burst=4)
    budget.observe(okta_headers(60, 60, T0 + 6), 200, T0)
    started = drain(budget, T0, T0 + 6)
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert len(started) == 30
    assert started[:4] == [T0] * 4
    assert min(gaps[4:]) == pytest.approx(0.2) and max(gaps[4:]) == pytest.approx(0.2)


def test_the_burst_is_a_tenth_of_a_large_share() -> None:
    """Okta's real budget (300 of 600 per minute for one token): 30 requests start at once, not 0.2 s apart."""
    budget = BucketBudget(share=0.5, initial_burst=4)
    budget.observe(okta_headers(600, 600, T0 + 60), 200, T0)
    started = drain(budget, T0, T0 + 1)
    assert started[:30] == [T0] * 30
    assert started[30] == pytest.approx(T0 + 0.2)


def test_a_window_the_server_reports_earlier_is_adopted() -> None:
    """The server is authoritative: a reset earlier than the one we assumed replaces it."""
    budget = BucketBudget(share=1.0)
    budget.observe(okta_headers(10, 0, T0 + 60), 200, T0)
    assert budget.ready_at(T0) == T0 + 60
    budget.observe(okta_headers(10, 10, T0 + 5), 200, T0 + 1)
    assert budget.ready_at(T0 + 1) == T0 + 1


def test_a_new_window_restores_the_budget() -> None:
    """Once the reset has passed, a full share is available again."""
    budget = BucketBudget(share=0.5)
    budget.observe(okta_headers(10, 10, T0 + 6), 200, T0)
    assert len(drain(budget, T0, T0 + 6)) == 5
    assert budget.ready_at(T0 + 6) == T0 + 6
    assert len(drain(budget, T0 + 6, T0 + 12)) == 5


def test_before_anything_is_learned_only_a_small_burst_is_in_flight() -> None:
    """An unknown bucket lets `initial_burst` requests fly, then waits for a response."""
    budget = BucketBudget(initial_burst=3)
    for _ in range(3):
        assert budget.ready_at(T0) == T0
        budget.start(T0)
    assert budget.ready_at(T0) == float("inf")
    budget.finish()
    assert budget.ready_at(T0) == T0


def test_a_429_blocks_until_the_reset_and_retry_after_wins() -> None:
    """A 429 blocks until X-Rate-Limit-Reset, or Retry-After when the response carries one."""
    by_reset, by_retry_after = BucketBudget(), BucketBudget()
    by_reset.observe(okta_headers(10, 0, T0 + 4), 429, T0)
    by_retry_after.observe({**okta_headers(10, 0, T0 + 4), "Retry-After": "9"}, 429, T0)
    assert by_reset.ready_at(T0 + 1) == T0 + 4
    assert by_retry_after.ready_at(T0 + 1) == T0 + 9
    assert by_reset.throttled == 1


def test_a_429_does_not_teach_its_limit() -> None:
    """A concurrency 429 reports the concurrency limit; the bucket keeps the limit it learned."""
    budget = BucketBudget()
    budget.observe(okta_headers(600, 500, T0 + 60), 200, T0)
    budget.observe(okta_headers(75, 0, T0 + 1), 429, T0)
    assert budget.limit == 600


def test_a_skewed_server_clock_is_corrected_by_its_date() -> None:
    """A server 100 s ahead: its reset is read on our clock."""
    budget = BucketBudget()
    budget.observe({**okta_headers(10, 9, T0 + 160), "Date": "Fri, 15 Jan 2027 08:01:40 GMT"}, 200, 1_800_000_000.0)
    assert budget.reset_at == pytest.approx(T0 + 60)


def test_a_new_server_window_seen_early_is_adopted() -> None:
    """A response from the next window (its reset later) re-syncs our count to what the server says."""
    budget = BucketBudget(share=0.5)
    budget.observe(okta_headers(10, 5, T0 + 6), 200, T0)
    assert budget.ready_at(T0 + 1) == T0 + 6
    budget.observe(okta_headers(10, 9, T0 + 12), 200, T0 + 6.5)
    assert (budget.reset_at, budget.used) == (T0 + 12, 1)


async def test_priority_order_and_fifo_under_a_queue() -> None:
    """Queued requests start URGENT first, then NORMAL, then LOW, first come first served within each."""
    governor = Governor("test", concurrency=1)
    order: list[str] = []
    gate = asyncio.Event()

    async def request(name: str, priority: Priority, hold: bool = False) -> None:
        async with governor.slot("b", priority):
            order.append(name)
            if hold:
                await gate.wait()

    first = asyncio.create_task(request("first", Priority.LOW, hold=True))
    await asyncio.sleep(0)
    names = [("low1", Priority.LOW), ("normal1", Priority.NORMAL), ("urgent1", Priority.URGENT),
             ("low2", Priority.LOW), ("urgent2", Priority.URGENT), ("normal2", Priority.NORMAL)]
    tasks = []
    for name, priority in names:
        tasks.append(asyncio.create_task(request(name, priority)))
        await asyncio.sleep(0)
    assert governor.snapshot().queued == 6
    gate.set()
    await asyncio.gather(first, *tasks)
    assert order == ["first", "urgent1", "urgent2", "normal1", "normal2", "low1", "low2"]


async def test_concurrency_cap_is_never_exceeded() -> None:
    """Fifty requests across buckets never have more than the cap in flight."""
    governor = Governor("test", concurrency=4, initial_burst=100)
    peak = 0

    async def request(bucket: str) -> None:
        nonlocal peak
        async with governor.slot(bucket):
            peak = max(peak, governor.snapshot().in_flight)
            await asyncio.sleep(0.001)

    await asyncio.gather(*(request(f"b{i % 3}") for i in range(50)))
    assert peak == 4
    assert governor.snapshot().in_flight == 0


async def test_a_throttled_bucket_does_not_stall_another() -> None:
    """While one bucket waits out a 429, a request to another bucket starts at once."""
    now = [T0]
    governor = Governor("test", concurrency=10, clock=lambda: now[0])
    governor.observe("users", okta_headers(10, 0, T0 + 30), status=429)
    blocked = asyncio.create_task(_enter(governor, "users"))
    async with asyncio.timeout(1):
        await _enter(governor, "sessions")
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert governor.snapshot().buckets["users"].queued == 1
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert governor.snapshot().in_flight == 0


async def test_time_queued_does_not_count_against_the_step_deadline() -> None:
    """A 0.1 s deadline does not fire while the request waits 0.3 s for a slot, but does on the request."""
    governor = Governor("test", concurrency=1)
    gate = asyncio.Event()
    holder = asyncio.create_task(_enter(governor, "b", gate))
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_later(0.3, gate.set)
    async with deadline(0.1):
        async with governor.slot("b"):
            pass
    with pytest.raises(TimeoutError):
        async with deadline(0.1), governor.slot("b"):
            await asyncio.sleep(1)
    await holder


async def _enter(governor: Governor, bucket: str, gate: asyncio.Event | None = None) -> None:
    async with governor.slot(bucket):
        if gate is not None:
            await gate.wait()
