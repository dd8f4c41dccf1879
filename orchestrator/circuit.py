"""A provider's circuit breaker as pure policy: consecutive failures open it, a cool-down, then one probe.

The `Governor` owns one per provider and consults it before starting any request; see its docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    """Whether a provider's requests may start: all (closed), none (open), one probe (half-open)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Circuit:
    """The pure circuit-breaker policy of one provider; methods that need it take the current time."""

    failures_to_open: int = 20
    cooldown_s: float = 10.0
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def ready_at(self, now: float) -> float:
        """When the next request may start: `now`, the end of the cool-down, or inf while a probe is out."""
        if self.state is CircuitState.OPEN:
            return max(now, self.opened_at + self.cooldown_s)
        if self.state is CircuitState.HALF_OPEN and self.probing:
            return math.inf
        return now

    def start(self, now: float) -> bool:
        """A request starts now; True when it is the half-open probe."""
        if self.state is CircuitState.OPEN and now >= self.opened_at + self.cooldown_s:
            self.state = CircuitState.HALF_OPEN
        if self.state is CircuitState.HALF_OPEN:
            self.probing = True
            return True
        return False

    def succeeded(self) -> bool:
        """The provider answered; True when that closed the circuit."""
        self.failures = 0
        if self.state is CircuitState.HALF_OPEN:
            self.state, self.probing = CircuitState.CLOSED, False
            return True
        return False

    def failed(self, now: float) -> bool:
        """The provider did not answer, or answered 5xx; True when that opened the circuit."""
        if self.state is CircuitState.OPEN:
            return False  # requests started before it opened: the cool-down runs from the first verdict
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.failures_to_open:
            self.state, self.opened_at, self.probing = CircuitState.OPEN, now, False
            return True
        return False

    def abandoned(self) -> None:
        """The probe ended without a verdict (cancelled, say): let another one through."""
        self.probing = False
