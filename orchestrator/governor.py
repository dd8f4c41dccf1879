"""Paces one provider's requests so every in-flight run shares its rate limits without tripping them.

A `Governor` sits between the execution engine and a provider client: the provider asks it for a slot
before each request (`async with governor.slot(bucket, priority)`) and reports what the response said
about the bucket's budget (`governor.observe(...)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from orchestrator.actions import Priority


class Governor:
    """A per-provider concurrency cap; bucket budgets are learned from responses."""

    def __init__(self, provider: str, *, concurrency: int, bucket_share: float = 1.0) -> None:
        self.provider = provider
        self.concurrency = concurrency
        self.bucket_share = bucket_share
        self._slots = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def slot(self, bucket: str, priority: Priority = Priority.NORMAL) -> AsyncIterator[None]:
        """Hold one of the provider's concurrent-request slots for the duration of a request."""
        async with self._slots:
            yield

    def observe(self, bucket: str, headers: Mapping[str, str], *, status: int | None = None) -> None:
        """Learn the bucket's budget from a response's rate-limit headers (and its status: 429 blocks it)."""
