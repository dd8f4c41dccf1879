"""Prometheus metrics, derived from audit records (an `Auditor` observer) plus the consumer's own gauges.

One registry per `Orchestrator`, not the global one, so several can live in one process (tests do).
Labels are outcomes and action names only: nothing from an event's values, so nothing secret.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.audit_stream import is_terminal
from orchestrator.circuit import CircuitState
from orchestrator.governor import Governor

CONTENT_TYPE = CONTENT_TYPE_LATEST
_STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """The orchestrator's metrics; `observe` is the audit observer that keeps them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.exposures = Counter("orchestrator_exposures", "Exposures that reached their terminal record, by "
                                 "outcome (the terminal audit event).", ["outcome"], registry=self.registry)
        self.step_seconds = Histogram("orchestrator_step_duration_seconds", "Time a step took, retries included.",
                                      ["action", "outcome"], buckets=_STEP_BUCKETS, registry=self.registry)
        self.retries = Counter("orchestrator_step_retries", "Step attempts that are being retried.",
                               ["action"], registry=self.registry)
        self.rate_limited = Counter("orchestrator_rate_limited", "Provider answers asking us to slow down (429).",
                                    ["action"], registry=self.registry)
        self.in_flight = Gauge("orchestrator_runs_in_flight", "Exposures being processed now.",
                               registry=self.registry)
        self.consumer_lag = Gauge("orchestrator_consumer_lag", "Records on the assigned partitions of the "
                                  "exposures topic not fetched yet.", registry=self.registry)
        self._lag: Callable[[], Awaitable[int]] | None = None

    def watch_consumer(self, *, in_flight: Callable[[], int], lag: Callable[[], Awaitable[int]],
                       waiting: Callable[[], dict[str, int]] = dict) -> None:
        """Read the in-flight gauge from `in_flight` at every scrape, the lag from `lag`, and the runs waiting
        for a provider's run slots from `waiting`."""
        self.in_flight.set_function(lambda: float(in_flight()))
        self._lag = lag
        self.registry.register(_WaitingCollector(waiting))

    def watch_governors(self, governors: Sequence[Governor]) -> None:
        """Export every governor's state (budget and queue per bucket) at each scrape."""
        self.registry.register(_GovernorCollector(governors))

    def observe(self, record: dict[str, Any]) -> None:
        """Count one audit record."""
        event = record.get("event")
        action = str(record.get("action") or "none")
        if is_terminal(record):
            self.exposures.labels(outcome=str(event)).inc()
        elif event in ("step.succeeded", "step.failed") and isinstance(record.get("duration_ms"), int | float):
            # A dry run's step only planned: counted apart, so "succeeded" stays what was really done.
            outcome = "failed" if event == "step.failed" else "planned" if record.get("dry_run") else "succeeded"
            self.step_seconds.labels(action=action, outcome=outcome).observe(record["duration_ms"] / 1000)
        if event == "step.retrying":
            self.retries.labels(action=action).inc()
        if (event == "step.retrying" and record.get("rate_limited")) or \
                (event == "step.failed" and record.get("status") == 429):
            self.rate_limited.labels(action=action).inc()

    async def render(self) -> bytes:
        """The Prometheus text exposition, with the consumer lag read now."""
        if self._lag is not None:
            with contextlib.suppress(TimeoutError):  # a scrape must answer even while the group rebalances
                async with asyncio.timeout(2):
                    self.consumer_lag.set(await self._lag())
        return generate_latest(self.registry)


class _WaitingCollector(Collector):
    """Runs queued for a slot of their provider (`ORCHESTRATOR_MAX_IN_FLIGHT_PER_PROVIDER`), per provider."""

    def __init__(self, waiting: Callable[[], dict[str, int]]) -> None:
        self._waiting = waiting

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("orchestrator_runs_waiting", "Exposures fetched and waiting for a run slot of "
                                   "their provider.", labels=["provider"])
        for provider, count in sorted(self._waiting().items()):
            family.add_metric([provider], count)
        yield family


class _GovernorCollector(Collector):
    """Reads `Governor.snapshot()` at scrape time: in-flight per provider; limit, remaining, queue per bucket."""

    def __init__(self, governors: Sequence[Governor]) -> None:
        self._governors = governors

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily("orchestrator_governor_in_flight", "Provider requests in flight.",
                                      labels=["provider"])
        queued = GaugeMetricFamily("orchestrator_governor_queued", "Requests waiting for a bucket's budget.",
                                   labels=["provider", "bucket"])
        limit = GaugeMetricFamily("orchestrator_governor_limit", "A bucket's limit per window, as learned.",
                                  labels=["provider", "bucket"])
        remaining = GaugeMetricFamily("orchestrator_governor_remaining", "A bucket's remaining budget, as learned.",
                                      labels=["provider", "bucket"])
        circuit = GaugeMetricFamily("orchestrator_provider_circuit_open", "1 while a provider's circuit breaker "
                                    "holds its requests back (open or half-open), else 0.", labels=["provider"])
        for governor in self._governors:
            state = governor.snapshot()
            in_flight.add_metric([state.provider], state.in_flight)
            circuit.add_metric([state.provider], 0 if state.circuit is CircuitState.CLOSED else 1)
            for name, bucket in state.buckets.items():
                queued.add_metric([state.provider, name], bucket.queued)
                if bucket.limit is not None:
                    limit.add_metric([state.provider, name], bucket.limit)
                if bucket.remaining is not None:
                    remaining.add_metric([state.provider, name], bucket.remaining)
        yield from (in_flight, queued, limit, remaining, circuit)
