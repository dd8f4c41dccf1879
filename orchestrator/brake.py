"""The mass-action brake, as pure code: a sliding window of destructive steps per provider and overall.

A run asks to reserve its destructive steps. Within the limits it goes on; the first run beyond them engages
the brake (a storm begins: on-call is paged once), and from then on every run that would act waits until an
admin releases the brake (or holds it). Released, the brake lets the storm through and re-arms once the
window's count is back under every limit, so one storm means one page.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.policy import BrakePolicy


@dataclass(frozen=True)
class Admission:
    """The brake's answer to a run: go on, or wait (with why, and whether this run started the storm)."""

    go: bool
    reason: str | None = None
    engaged_now: bool = False


class RateBrake:
    """Counts destructive steps in a sliding window; one per process (the window is this instance's)."""

    def __init__(self, policy: BrakePolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._window: deque[tuple[float, str, int]] = deque()
        self._counts: dict[str, int] = {}
        self._total = 0
        #: A storm is on: runs that would act wait for an admin.
        self.engaged = False
        #: An admin holds the brake: every run that would act waits, whatever the rate.
        self.held = False
        self._disarmed = False  # released mid-storm: let it through until the rate falls back

    def admit(self, steps: Mapping[str, int]) -> Admission:
        """Reserve `steps` (destructive steps by provider) if the brake lets them through; else say why."""
        self._expire()
        if self.held:
            return Admission(False, "the brake is held by an admin")
        if self._disarmed and self._under_limits():
            self._disarmed = False
        over = self._over(steps)
        if not self._disarmed and (self.engaged or over):
            engaged_now = not self.engaged
            self.engaged = True
            return Admission(False, over or "the brake is engaged (a storm of destructive steps)", engaged_now)
        self.count(steps)
        return Admission(True)

    def count(self, steps: Mapping[str, int]) -> None:
        """Record destructive steps that go on regardless (manual triggers, approved or released runs)."""
        now = self._clock()
        for provider, n in steps.items():
            if n > 0:
                self._window.append((now, provider, n))
                self._counts[provider] = self._counts.get(provider, 0) + n
                self._total += n

    def release(self) -> None:
        """An admin released the brake: the storm goes through; the brake re-arms once the rate falls back."""
        self.engaged = False
        self.held = False
        self._disarmed = True

    def hold(self) -> None:
        """An admin holds the brake: every run that would act waits until released."""
        self.held = True

    def status(self) -> dict[str, object]:
        """The window's counts and limits, for `brake status`."""
        self._expire()
        providers = {p: {"count": n, "limit": self.policy.limit_for(p)} for p, n in sorted(self._counts.items())}
        return {"engaged": self.engaged, "held": self.held, "window_s": self.policy.window_s,
                "limit": self.policy.limit, "total": self._total, "providers": providers}

    def _over(self, steps: Mapping[str, int]) -> str | None:
        total = self._total + sum(steps.values())
        for provider, n in sorted(steps.items()):
            limit = self.policy.limit_for(provider)
            if n > 0 and self._counts.get(provider, 0) + n > limit:
                return f"{provider}: more than {limit} destructive steps in {self.policy.window_s:g}s"
        if total > self.policy.limit and sum(steps.values()) > 0:
            return f"more than {self.policy.limit} destructive steps in {self.policy.window_s:g}s"
        return None

    def _under_limits(self) -> bool:
        return self._total < self.policy.limit and all(
            n < self.policy.limit_for(p) for p, n in self._counts.items())

    def _expire(self) -> None:
        cutoff = self._clock() - self.policy.window_s
        while self._window and self._window[0][0] <= cutoff:
            _, provider, n = self._window.popleft()
            self._counts[provider] -= n
            if not self._counts[provider]:
                del self._counts[provider]
            self._total -= n
