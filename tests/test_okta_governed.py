"""Okta through the governor: the real SDK against the emulator process, its limits enforced over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orchestrator import embedded
from orchestrator.actions import Priority, StepContext
from orchestrator.errors import RateLimited, TransientError
from orchestrator.governor import Governor
from orchestrator.providers.okta import OktaProvider
from orchestrator.settings import OktaSettings
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure

GENEROUS = {"concurrency": 75,
            "buckets": {b: {"limit": 600, "window_s": 60} for b in ("users.get", "users", "sessions", "api-tokens")}}


@pytest.fixture
def limits(okta_clean: Emulator) -> Iterator[Emulator]:
    """The emulator with its default limits restored after the test."""
    okta_clean.control("PUT", "rate-limits", GENEROUS)
    yield okta_clean
    okta_clean.control("PUT", "rate-limits", GENEROUS)


async def provider_for(okta: Emulator, governor: Governor) -> AsyncIterator[OktaProvider]:
    """An Okta provider on the emulator, governed by `governor`."""
    async with OktaProvider(OktaSettings(org_url=okta.url, token=okta.admin_token), governor) as provider:
        yield provider


def end_session(provider: OktaProvider, priority: Priority = Priority.NORMAL, sid: str | None = None) -> Any:
    """End a session that does not exist (a `sessions` call; 404 counts as done)."""
    return provider.perform("okta.end_session", {"session_id": sid or f"102{secrets.token_hex(8)}"},
                            StepContext("exp-governed", priority=priority))


def suspended_user(okta: Emulator) -> str:
    """A suspended user's login: suspending it again is one `users.get` call."""
    login = f"gov-{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "status": "SUSPENDED"}]})
    return login


async def test_two_buckets_learn_their_own_limits(limits: Emulator) -> None:
    """users.get (6 per 2 s) and sessions (10 per 2 s): each learns its limit, keeps to half, trips no 429."""
    limits.control("PUT", "rate-limits", {"buckets": {"users.get": {"limit": 6, "window_s": 2},
                                                      "sessions": {"limit": 10, "window_s": 2}}})
    login = suspended_user(limits)
    governor = Governor("okta", concurrency=75, bucket_share=0.5)
    async for provider in provider_for(limits, governor):
        started = time.monotonic()
        await asyncio.gather(*(provider.perform("okta.suspend_user", {"user": login}, StepContext("e"))
                               for _ in range(6)), *(end_session(provider) for _ in range(10)))
        elapsed = time.monotonic() - started
    state = governor.snapshot().buckets
    stats = limits.control("GET", "okta-stats")["buckets"]
    assert (state["users.get"].limit, state["sessions"].limit) == (6, 10)
    assert (stats["users.get"]["throttled"], stats["sessions"]["throttled"]) == (0, 0)
    assert (stats["users.get"]["requests"], stats["sessions"]["requests"]) == (6, 10)
    assert elapsed >= 1.5  # three users.get per window: the second three waited for the next window


async def test_a_throttled_bucket_waits_while_another_proceeds(limits: Emulator) -> None:
    """After a 429 on users.get (reset in 3 s), a sessions call completes at once; a users.get call waits."""
    reset = int(time.time()) + 3
    limits.control("POST", "faults", {
        "method": "GET", "path": r"^/api/v1/users/[^/]+$", "status": 429, "count": 1,
        "headers": {"X-Rate-Limit-Limit": "600", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(reset)},
        "body": {"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."}})
    login = suspended_user(limits)
    governor = Governor("okta", concurrency=75, bucket_share=0.5)
    async for provider in provider_for(limits, governor):
        with pytest.raises(RateLimited):
            await provider.perform("okta.suspend_user", {"user": login}, StepContext("e"))
        user_call = asyncio.create_task(provider.perform("okta.suspend_user", {"user": login}, StepContext("e")))
        started = time.monotonic()
        await end_session(provider)
        session_s = time.monotonic() - started
        assert not user_call.done()
        assert (await user_call).note == "already suspended"
        user_done_at = time.time()
    assert session_s < 0.5
    assert user_done_at >= reset - 0.1


async def test_concurrency_cap_is_never_exceeded(limits: Emulator) -> None:
    """Thirty slow calls with a cap of 5: the emulator never sees more than 5 in flight, nor refuses one."""
    limits.control("PUT", "rate-limits", {"concurrency": 5})
    limits.control("PUT", "latency", {"ms": 50})
    governor = Governor("okta", concurrency=5, bucket_share=0.5, initial_burst=30)
    async for provider in provider_for(limits, governor):
        await asyncio.gather(*(end_session(provider) for _ in range(30)))
    assert limits.control("GET", "stats")["max_in_flight"] == 5
    assert limits.control("GET", "okta-stats")["concurrency"]["throttled"] == 0


async def test_queued_requests_are_served_by_priority(limits: Emulator) -> None:
    """With one slot busy, queued LOW, NORMAL and URGENT calls reach Okta URGENT first and LOW last."""
    limits.control("PUT", "latency", {"ms": 100})
    governor = Governor("okta", concurrency=1)
    async for provider in provider_for(limits, governor):
        first = asyncio.create_task(end_session(provider, sid="102first"))
        await asyncio.sleep(0.02)
        queued = []
        for name, priority in (("low", Priority.LOW), ("normal", Priority.NORMAL), ("urgent", Priority.URGENT)):
            queued.append(asyncio.create_task(end_session(provider, priority, sid=f"102{name}")))
            await asyncio.sleep(0.01)
        await asyncio.gather(first, *queued)
    paths = [r["path"] for r in limits.control("GET", "requests") if r["path"].startswith("/api/v1/sessions/")]
    assert paths == [f"/api/v1/sessions/102{n}" for n in ("first", "urgent", "normal", "low")]


async def test_a_refused_connection_is_a_clean_transient_error() -> None:
    """Nothing listening at the org URL: the SDK's crash becomes TransientError."""
    governor = Governor("okta", concurrency=5)
    settings = OktaSettings(org_url=f"http://127.0.0.1:{embedded.free_port()}", token="00" + secrets.token_hex(20))
    async with OktaProvider(settings, governor) as provider:
        with pytest.raises(TransientError, match="unreachable"):
            await provider.perform("okta.end_session", {"session_id": "102x"}, StepContext("e"))
    assert governor.snapshot().in_flight == 0


async def test_repeats_are_done_with_a_note(harness: Harness, limits: Emulator) -> None:
    """Suspending a suspended user, revoking a revoked token, ending an ended session: succeeded, with a note."""
    login = f"repeat-{secrets.token_hex(4)}@example.com"
    token = "00" + secrets.token_urlsafe(30)
    seeded = limits.seed({"users": [{"login": login, "sessions": ["102repeat" + secrets.token_hex(6)]}],
                          "api_tokens": [{"name": "repeat", "login": login, "token": token}]})
    token_id = seeded["api_tokens"][0]["id"]
    session_id = next(u for u in limits.control("GET", "state")["users"] if u["login"] == login)["sessions"][0]["id"]
    rounds = [[exposure("okta.user", credential={"owner": login}, severity="critical"),
               exposure("okta.api_token", credential={"id": token_id}),
               exposure("okta.session", credential={"id": session_id})] for _ in range(2)]
    first = await harness.run(*rounds[0])
    second = await harness.run(*rounds[1])
    assert all(events_of(t)[-1] == "run.completed" for t in [*first.values(), *second.values()])
    notes = {e["id"]: [r.get("note") for r in second[e["id"]] if r["event"] == "step.succeeded"] for e in rounds[1]}
    user, api_token, session = (notes[e["id"]] for e in rounds[1])
    assert user[0] == "already suspended"  # okta-user suspends first
    assert api_token == ["token already revoked or unknown"]
    assert session == ["session already ended; owner not resolvable"]
