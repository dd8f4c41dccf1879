"""Okta's rate limits as the emulator enforces them: per-endpoint buckets and the org's concurrency limit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.emulators._base import FixedWindowLimiter
from orchestrator.emulators.okta_errors import rate_limited

BUCKETS = ("users.get", "users", "sessions", "api-tokens", "default")


@dataclass
class _Bucket:
    limiter: FixedWindowLimiter
    requests: int = 0
    throttled: int = 0
    first_at: float | None = None
    last_at: float | None = None


class RateLimits:
    """Okta's per-endpoint buckets (org-wide fixed windows) and the org's concurrent-request limit."""

    def __init__(self, limit: int = 600, window_s: float = 60.0, concurrency: int = 75) -> None:
        self.buckets = {name: _Bucket(FixedWindowLimiter(limit, window_s)) for name in BUCKETS}
        self.concurrency = concurrency
        self.concurrency_throttled = 0

    @staticmethod
    def bucket_for(method: str, path: str) -> str:
        """The bucket a provider call counts against: a user GET by id or login has its own."""
        parts = path.removeprefix("/api/v1/").split("/")
        if not path.startswith("/api/v1/"):
            return "default"
        if parts[0] == "users" and len(parts) == 2 and method == "GET":
            return "users.get"
        return parts[0] if parts[0] in BUCKETS else "default"

    def hit(self, method: str, path: str, in_flight: int) -> dict[str, str]:
        """Count a call; return its `X-Rate-Limit-*` headers, or raise 429 (too many in flight, bucket full).

        Over the concurrency limit the headers report that limit, as Okta's do, with a one-second estimate.
        """
        if in_flight > self.concurrency:
            self.concurrency_throttled += 1
            raise rate_limited({"X-Rate-Limit-Limit": str(self.concurrency), "X-Rate-Limit-Remaining": "0",
                                 "X-Rate-Limit-Reset": str(math.ceil(time.time()) + 1)})
        bucket = self.buckets[self.bucket_for(method, path)]
        count = bucket.limiter.hit("org")
        bucket.requests += 1
        headers = {"X-Rate-Limit-Limit": str(count.limit), "X-Rate-Limit-Remaining": str(count.remaining),
                   "X-Rate-Limit-Reset": str(math.ceil(count.reset_at))}
        if not count.allowed:
            bucket.throttled += 1
            raise rate_limited(headers)
        bucket.last_at = time.time()
        bucket.first_at = bucket.first_at or bucket.last_at
        return headers

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply `{"buckets": {name: {"limit", "window_s"}}, "concurrency": N}`; restart the named windows.

        Every bucket's counters and the concurrency refusals start again from zero.
        """
        for name, spec in (body.get("buckets") or {}).items():
            if name not in self.buckets:
                raise ValueError(f"unknown bucket {name!r}; the buckets are {', '.join(BUCKETS)}")
            self.buckets[name].limiter.configure(spec)
        for bucket in self.buckets.values():
            bucket.requests = bucket.throttled = 0
            bucket.first_at = bucket.last_at = None
        self.concurrency_throttled = 0
        self.concurrency = int(body.get("concurrency", self.concurrency))
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """The limits in force."""
        return {"buckets": {name: b.limiter.settings() for name, b in self.buckets.items()},
                "concurrency": self.concurrency}

    def stats(self, max_in_flight: int) -> dict[str, Any]:
        """Calls and 429s per bucket, concurrency refusals, and the most requests seen in flight."""
        buckets = {name: {"requests": b.requests, "throttled": b.throttled, "first_at": b.first_at,
                          "last_at": b.last_at} for name, b in self.buckets.items()}
        concurrency = {"limit": self.concurrency, "throttled": self.concurrency_throttled}
        return {"buckets": buckets, "concurrency": concurrency, "max_in_flight": max_in_flight}
