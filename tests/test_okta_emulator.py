"""The Okta emulator, driven through the real okta SDK (and raw HTTP where the SDK cannot show the behaviour)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from okta.client import Client

from orchestrator.embedded import emulator

ADMIN_TOKEN = "00" + secrets.token_urlsafe(30)


@pytest.fixture(scope="module")
def okta_url() -> Iterator[str]:
    with emulator("okta", "--admin-token", ADMIN_TOKEN) as process:
        yield process.url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def control(okta_url: str, http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    """`await control(method, path, body)` on the control API; restores default limits and latency after."""

    async def call(method: str, path: str, body: Any = None) -> Any:
        async with http.request(method, f"{okta_url}/_emulator/{path}", json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    yield call
    await call("PUT", "rate-limits", {"concurrency": 75, "buckets": {
        name: {"limit": 600, "window_s": 60} for name in ("users.get", "users", "sessions", "api-tokens", "default")}})
    await call("POST", "reset")


@pytest.fixture(autouse=True)
def _plain_http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")


def sdk(url: str, token: str = ADMIN_TOKEN) -> Client:
    return Client({"orgUrl": url, "token": token, "rateLimit": {"maxRetries": 0}})


def login() -> str:
    return f"user-{secrets.token_hex(4)}@example.com"


async def seed_user(control: Any, **spec: Any) -> tuple[str, str]:
    """Seed one user; return its (id, login)."""
    name = login()
    created = await control("POST", "state", {"users": [{"login": name, **spec}]})
    return created["users"][0]["id"], name


async def test_get_user_by_login(okta_url: str, control: Any) -> None:
    """get_user with a login (URL-encoded by the SDK) returns that user as an okta User."""
    uid, name = await seed_user(control)
    async with sdk(okta_url) as client:
        user, _, error = await client.get_user(name)
    assert error is None
    assert (user.id, user.profile.login, user.status.value) == (uid, name, "ACTIVE")


async def test_revoke_user_sessions_with_oauth_tokens_clears_both(okta_url: str, control: Any) -> None:
    """revoke_user_sessions(oauth_tokens=True) ends the user's sessions and revokes their OAuth tokens."""
    sid = "102" + secrets.token_hex(11)
    uid, _ = await seed_user(control, sessions=[sid], tokens=[{"clientId": "0oa" + secrets.token_hex(8)}])
    async with sdk(okta_url) as client:
        revoked = await client.revoke_user_sessions(uid, oauth_tokens=True)
        session = await client.get_session(sid)
    assert revoked[-1] is None
    assert (session[-1].status, session[-1].error_code) == (404, "E0000007")
    dumped = next(u for u in (await control("GET", "state"))["users"] if u["id"] == uid)
    assert dumped["tokens"] == []


async def test_revoke_current_api_token_revokes_the_calling_token(okta_url: str, control: Any) -> None:
    """revoke_current_api_token authenticated by a token revokes that token: its next call gets 401."""
    uid, _ = await seed_user(control)
    value = "00" + secrets.token_urlsafe(30)
    await control("POST", "state", {"api_tokens": [{"name": "ci", "userId": uid, "token": value}]})
    async with sdk(okta_url, value) as client:
        revoked = await client.revoke_current_api_token()
        after = await client.get_user(uid)
    assert revoked[-1] is None
    assert (after[-1].status, after[-1].error_code) == (401, "E0000011")


async def test_revoke_api_token_by_id(okta_url: str, control: Any) -> None:
    """revoke_api_token removes the token: it is no longer found and no longer authenticates."""
    uid, _ = await seed_user(control)
    value = "00" + secrets.token_urlsafe(30)
    created = await control("POST", "state", {"api_tokens": [{"name": "ci", "userId": uid, "token": value}]})
    token_id = created["api_tokens"][0]["id"]
    async with sdk(okta_url) as client:
        revoked = await client.revoke_api_token(token_id)
        lookup = await client.get_api_token(token_id)
    assert revoked[-1] is None
    assert (lookup[-1].status, lookup[-1].error_code) == (404, "E0000007")
    async with sdk(okta_url, value) as client:
        assert (await client.get_user(uid))[-1].status == 401


async def test_suspending_a_suspended_user_is_a_validation_error(okta_url: str, control: Any) -> None:
    """suspend_user succeeds once; on the now SUSPENDED user it gets 400 E0000001."""
    uid, _ = await seed_user(control)
    async with sdk(okta_url) as client:
        first = await client.suspend_user(uid)
        second = await client.suspend_user(uid)
    assert first[-1] is None
    assert (second[-1].status, second[-1].error_code) == (400, "E0000001")


async def test_unknown_user_is_not_found(okta_url: str) -> None:
    """get_user for a login nobody has gets 404 E0000007."""
    async with sdk(okta_url) as client:
        error = (await client.get_user(login()))[-1]
    assert (error.status, error.error_code) == (404, "E0000007")


async def test_unknown_token_is_unauthorized(okta_url: str) -> None:
    """A token the org does not know gets 401 E0000011."""
    async with sdk(okta_url, "00" + secrets.token_urlsafe(30)) as client:
        error = (await client.get_user(login()))[-1]
    assert (error.status, error.error_code) == (401, "E0000011")


async def test_exhausted_bucket_gets_429_with_rate_limit_headers(okta_url: str, control: Any) -> None:
    """Past a bucket's limit the call gets 429 E0000047 with Limit, Remaining 0 and a future Reset."""
    uid, _ = await seed_user(control)
    await control("PUT", "rate-limits", {"buckets": {"users.get": {"limit": 2, "window_s": 60}}})
    async with sdk(okta_url) as client:
        results = [await client.get_user(uid) for _ in range(3)]
    error = results[-1][-1]
    assert [r[-1] is None for r in results] == [True, True, False]
    assert (error.status, error.error_code) == (429, "E0000047")
    assert (error.headers["X-Rate-Limit-Limit"], error.headers["X-Rate-Limit-Remaining"]) == ("2", "0")
    assert int(error.headers["X-Rate-Limit-Reset"]) > time.time()


async def test_requests_over_the_concurrency_limit_get_429(
    okta_url: str, control: Any, http: aiohttp.ClientSession
) -> None:
    """With 3 requests allowed in flight, 10 simultaneous slow calls: 3 answered, 7 refused with E0000047."""
    uid, _ = await seed_user(control)
    await control("PUT", "rate-limits", {"concurrency": 3})
    await control("PUT", "latency", {"ms": 300})

    async def call() -> tuple[int, str | None]:
        headers = {"Authorization": f"SSWS {ADMIN_TOKEN}"}
        async with http.get(f"{okta_url}/api/v1/users/{uid}", headers=headers) as response:
            return response.status, (await response.json()).get("errorCode")

    outcomes = await asyncio.gather(*(call() for _ in range(10)))
    assert sorted(outcomes, key=str) == [(200, None)] * 3 + [(429, "E0000047")] * 7
    assert (await control("GET", "okta-stats"))["concurrency"]["throttled"] == 7
