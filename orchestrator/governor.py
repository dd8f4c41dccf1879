"""Paces one provider's requests so every in-flight run shares its rate limits without tripping them.

A `Governor` sits between the execution engine and a provider client: the provider asks it for a slot
before each request (`async with governor.slot(bucket, priority)`) and reports what the response said
about the bucket's budget (`governor.observe(bucket, headers, status=...)`).

- Buckets are keyed by endpoint class; each learns its `limit`, `remaining` and `reset` from the headers
  (Okta `X-Rate-Limit-*`, GitHub `x-ratelimit-*`, `Retry-After` anywhere; names case-insensitive).
- In a window a bucket starts at most `bucket_share * limit` requests and never more than the advertised
  remaining: a burst of a tenth of the share (at least `initial_burst`) starts at once, so a small incident
  is contained without delay, and the rest is spread evenly over the window. Before anything is learned,
  at most `initial_burst` requests of the bucket are in flight. A 429 blocks the bucket (only it) until its reset.
- At most `concurrency` requests of the provider are in flight; waiting requests are served by
  `Priority`, first come first served within a priority.
- Time spent queued here does not count against a step's `deadline`.
- A circuit breaker covers the whole provider: `circuit_failures` consecutive failures (a 5xx, a timeout, a
  refused connection: no answer at all) open it, and then no request starts for `circuit_cooldown_s`; they
  wait in the queue (a run is not failed for it, and its deadline does not run). Then one probe goes
  through (half-open): a response that is not a 5xx closes the circuit, a failure opens it again.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import structlog

from orchestrator.actions import Priority
from orchestrator.circuit import Circuit, CircuitState
from orchestrator.errors import TransientError

log = structlog.get_logger("orchestrator.governor")

#: Server clocks further off than this (by their `Date` header) have their reset times corrected.
_MAX_SKEW_S = 2.0
#: How long a bucket blocks after a 429 that says nothing about when to come back.
_DEFAULT_BLOCK_S = 1.0

_DEADLINE: ContextVar[asyncio.Timeout | None] = ContextVar("governor_deadline", default=None)


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """`asyncio.timeout(seconds)`, except that time spent queued for a governor slot is not counted."""
    async with asyncio.timeout(seconds) as timeout:
        token = _DEADLINE.set(timeout)
        try:
            yield
        finally:
            _DEADLINE.reset(token)


@dataclass(frozen=True)
class BucketSnapshot:
    """One bucket as the governor sees it: learned budget (None until learned), our use, the queue."""

    limit: int | None
    remaining: int | None
    reset: float | None
    queued: int
    in_flight: int
    quota: int | None
    used: int
    blocked_until: float | None
    requests: int
    throttled: int


@dataclass(frozen=True)
class Snapshot:
    """A provider's governor at one instant: concurrency in use and every bucket."""

    provider: str
    concurrency: int
    in_flight: int
    queued: int
    buckets: Mapping[str, BucketSnapshot]
    circuit: CircuitState = CircuitState.CLOSED


_Waiter = tuple[int, int, "asyncio.Future[None]"]


@dataclass
class BucketBudget:
    """The pure pacing policy of one bucket; every method takes the current time (epoch seconds)."""

    share: float = 1.0
    initial_burst: int = 4
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    window_s: float | None = None
    used: int = 0
    in_flight: int = 0
    blocked_until: float = 0.0
    requests: int = 0
    throttled: int = 0
    queue: list[_Waiter] = field(default_factory=list)

    @property
    def quota(self) -> int | None:
        """Requests we may start per window: the share of the learned limit (at least one)."""
        return None if self.limit is None else max(1, math.floor(self.limit * self.share))

    def ready_at(self, now: float) -> float:
        """The earliest time the next request may start (`now` when it may start at once; inf: on a response)."""
        self._roll(now)
        if now < self.blocked_until:
            return self.blocked_until
        if self.quota is None:
            return now if self.in_flight < self.initial_burst else math.inf
        if self._left() <= 0:
            if self.reset_at is not None:
                return self.reset_at
            return math.inf if self.in_flight else now + _DEFAULT_BLOCK_S
        return max(now, self._paced_at())

    def start(self, now: float) -> None:
        """Count a request as started now."""
        self._roll(now)
        self.used += 1
        self.in_flight += 1
        self.requests += 1

    def finish(self) -> None:
        """A request of this bucket is no longer in flight."""
        self.in_flight -= 1

    def observe(self, headers: Mapping[str, str], status: int | None, now: float) -> float | None:
        """Learn from a response; return the time the bucket is blocked until when it was throttled."""
        h = {k.lower(): v for k, v in headers.items()}
        limit = _number(h, "x-rate-limit-limit", "x-ratelimit-limit")
        remaining = _number(h, "x-rate-limit-remaining", "x-ratelimit-remaining")
        reset = _number(h, "x-rate-limit-reset", "x-ratelimit-reset")
        if reset is not None:
            reset -= _skew(h, now)
        wait = _retry_after(h, now)
        if status == 429 or (status == 403 and remaining == 0):
            # A 429's headers may describe another limit (Okta's concurrency limit): learn only when to return.
            self.throttled += 1
            until = now + wait if wait is not None else reset if reset is not None and reset > now \
                else now + _DEFAULT_BLOCK_S
            self.blocked_until = max(self.blocked_until, until)
            # Nothing is known past the block: the window is over for us then, whatever it was.
            self.reset_at, self.remaining = self.blocked_until, 0
            return self.blocked_until
        if wait is not None:
            self.blocked_until = max(self.blocked_until, now + wait)
        if limit is None or remaining is None or reset is None or reset <= now:
            return None
        self.limit = int(limit)
        self.window_s = max(self.window_s or 0.0, reset - now)
        if self.reset_at is None or abs(reset - self.reset_at) > 0.5:
            # A new window: the server counted `limit - remaining` of it; ours in flight may count too.
            counted = self.limit - int(remaining) + self.in_flight
            self.used = max(self.used, counted) if self.reset_at is None else counted
            self.reset_at, self.remaining = reset, int(remaining)
        else:
            self.remaining = min(self.remaining if self.remaining is not None else int(remaining), int(remaining))
        return None

    def snapshot(self) -> BucketSnapshot:
        """This bucket's state, for logs and metrics."""
        return BucketSnapshot(self.limit, self.remaining, self.reset_at, len(self.queue), self.in_flight,
                              self.quota, self.used, self.blocked_until or None, self.requests, self.throttled)

    def _paced_at(self) -> float:
        """When the next start is on schedule: the burst at the window's start, then one every window/quota."""
        if self.reset_at is None or not self.window_s or not self.quota:
            return 0.0
        burst = max(self.initial_burst, self.quota // 10)
        window_start = self.reset_at - self.window_s
        return window_start + max(0, self.used + 1 - burst) * self.window_s / self.quota

    def _left(self) -> int:
        left = (self.quota or 0) - self.used
        if self.remaining is not None:
            left = min(left, self.remaining - self.in_flight)
        return left

    def _roll(self, now: float) -> None:
        if self.reset_at is not None and now >= self.reset_at:
            # The server's window is over; what is still in flight may land in the next one, which opens
            # no earlier than now: until a response says when it ends, assume one learned window length.
            self.reset_at = now + self.window_s if self.window_s else None
            self.remaining, self.used = None, self.in_flight


class Governor:
    """One provider's shared request scheduler: per-bucket budgets, a concurrency cap, priorities."""

    def __init__(self, provider: str, *, concurrency: int, bucket_share: float = 1.0, initial_burst: int = 4,
                 circuit_failures: int = 20, circuit_cooldown_s: float = 10.0,
                 clock: Callable[[], float] = time.time, log_interval_s: float = 10.0) -> None:
        self.provider = provider
        self.concurrency = concurrency
        self.bucket_share = bucket_share
        self.initial_burst = initial_burst
        self._clock = clock
        self._log_interval_s = log_interval_s
        self._buckets: dict[str, BucketBudget] = {}
        self._circuit = Circuit(circuit_failures, circuit_cooldown_s)
        self._probe: asyncio.Future[None] | None = None
        self._in_flight = 0
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._logged_at = -math.inf

    @asynccontextmanager
    async def slot(self, bucket: str, priority: Priority = Priority.NORMAL) -> AsyncIterator[None]:
        """Wait for the bucket's budget and a concurrency slot, in priority order; hold it for one request."""
        budget = self._bucket(bucket)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        heapq.heappush(budget.queue, (int(priority), next(self._order), waiter))
        paused = _pause_deadline(loop)
        try:
            self._pump()
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(budget, waiter)
            else:
                waiter.cancel()
                self._pump()
            raise
        finally:
            paused()
        try:
            yield
        except TransientError as exc:
            if exc.status is None:  # no response at all: refused, reset or timed out
                self._failed(f"{type(exc).__name__}: {exc}")
            raise
        except asyncio.CancelledError:
            if (timeout := _DEADLINE.get()) is not None and timeout.expired():
                self._failed("the step deadline expired during the request")
            raise
        finally:
            self._release(budget, waiter)

    def observe(self, bucket: str, headers: Mapping[str, str], *, status: int | None = None) -> None:
        """Learn the bucket's budget from a response's rate-limit headers (and its status: 429 blocks it)."""
        budget = self._bucket(bucket)
        blocked = budget.observe(headers, status, self._clock())
        if blocked is not None:
            log.warning("governor.throttled", provider=self.provider, bucket=bucket, status=status,
                        blocked_for_s=round(blocked - self._clock(), 3))
        if status is not None and status >= 500:
            self._failed(f"HTTP {status}")
        elif self._circuit.succeeded():
            log.info("governor.circuit_closed", provider=self.provider)
        self._pump()

    def _failed(self, reason: str) -> None:
        if self._circuit.failed(self._clock()):
            log.warning("governor.circuit_opened", provider=self.provider, reason=reason,
                        consecutive_failures=self._circuit.failures, cooldown_s=self._circuit.cooldown_s)
        self._pump()

    def snapshot(self) -> Snapshot:
        """Every bucket's learned budget, use and queue, and the provider's concurrency in use."""
        buckets = {name: b.snapshot() for name, b in self._buckets.items()}
        queued = sum(b.queued for b in buckets.values())
        return Snapshot(self.provider, self.concurrency, self._in_flight, queued, buckets, self._circuit.state)

    def _bucket(self, name: str) -> BucketBudget:
        budget = self._buckets.get(name)
        if budget is None:
            budget = self._buckets[name] = BucketBudget(self.bucket_share, self.initial_burst)
        return budget

    def _release(self, budget: BucketBudget, waiter: asyncio.Future[None]) -> None:
        if waiter is self._probe:
            self._probe = None
            if self._circuit.probing:
                self._circuit.abandoned()
        budget.finish()
        self._in_flight -= 1
        self._pump()

    def _pump(self) -> None:
        """Start every waiter that may start now, best priority first; wake up when the next one may."""
        now = self._clock()
        wake = math.inf
        while self._in_flight < self.concurrency:
            if (gate := self._circuit.ready_at(now)) > now:
                wake = gate  # inf while the half-open probe is out: its verdict pumps again
                break
            wake, best = math.inf, None
            for budget in self._buckets.values():
                while budget.queue and budget.queue[0][2].done():
                    heapq.heappop(budget.queue)  # cancelled while waiting
                if not budget.queue:
                    continue
                at = budget.ready_at(now)
                if at > now:
                    wake = min(wake, at)
                elif best is None or budget.queue[0][:2] < best.queue[0][:2]:
                    best = budget
            if best is None:
                break
            waiter = heapq.heappop(best.queue)[2]
            best.start(now)
            if self._circuit.start(now):
                self._probe = waiter
            self._in_flight += 1
            waiter.set_result(None)
        if wake == math.inf and self._in_flight < self.concurrency and any(b.queue for b in self._buckets.values()):
            # Waiting on responses only: look again anyway, so that no lost wake-up can stall a queue for good.
            wake = now + _DEFAULT_BLOCK_S
        self._arm(wake, now)
        if now - self._logged_at >= self._log_interval_s:
            self._logged_at = now
            self._log_state()

    def _arm(self, at: float, now: float) -> None:
        if at == math.inf or at >= self._timer_at > now:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - now) + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._pump()

    def _log_state(self) -> None:
        state = self.snapshot()
        if not state.in_flight and not state.queued:
            return
        log.info("governor.state", provider=self.provider, in_flight=state.in_flight, queued=state.queued,
                 circuit=state.circuit.value,
                 buckets={name: {"limit": b.limit, "remaining": b.remaining, "reset": b.reset,
                                 "queued": b.queued, "in_flight": b.in_flight}
                          for name, b in state.buckets.items()})


def _pause_deadline(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Stop the step's deadline while queued; the returned callable restarts it with the time it had left."""
    timeout = _DEADLINE.get()
    when = timeout.when() if timeout is not None else None
    if timeout is None or when is None or timeout.expired():
        return lambda: None
    left = when - loop.time()
    try:
        timeout.reschedule(None)
    except RuntimeError:  # already expiring: let it
        return lambda: None

    def resume() -> None:
        if not timeout.expired():
            try:
                timeout.reschedule(loop.time() + left)
            except RuntimeError:
                pass

    return resume


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        if (value := headers.get(name)) is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            return None


def _skew(headers: Mapping[str, str], now: float) -> float:
    """How far the server's clock is ahead of ours, when its `Date` says it is off by more than a little."""
    date = headers.get("date")
    server = _http_date(date) if date else None
    if server is None:
        return 0.0
    return server - now if abs(server - now) > _MAX_SKEW_S else 0.0


@functools.lru_cache(maxsize=64)
def _http_date(value: str) -> float | None:
    """An HTTP `Date` as epoch seconds; cached, since every response of one second carries the same one."""
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
