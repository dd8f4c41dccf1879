"""The GitHub, Slack and GCP emulators behave like the provider APIs the orchestrator revokes tokens at."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from orchestrator.embedded import emulator


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _github_token(prefix: str = "ghp_") -> str:
    return prefix + secrets.token_urlsafe(27)


def _slack_token() -> str:
    return f"xoxb-{secrets.randbelow(10**12)}-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}"


def _team() -> str:
    return "T" + secrets.token_hex(5).upper()


def _running(name: str) -> Iterator[str]:
    with emulator(name) as child:
        yield child.url
    if child.process.stdout is not None:  # embedded.emulator leaves its READY pipe open
        child.process.stdout.close()


@pytest.fixture(scope="module")
def github_url() -> Iterator[str]:
    yield from _running("github")


@pytest.fixture(scope="module")
def slack_url() -> Iterator[str]:
    yield from _running("slack")


@pytest.fixture(scope="module")
def gcp_url() -> Iterator[str]:
    yield from _running("gcp")


@pytest.fixture
async def github(github_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=github_url) as client:
        yield client


@pytest.fixture
async def slack(slack_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=slack_url) as client:
        yield client


@pytest.fixture
async def gcp(gcp_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gcp_url) as client:
        yield client


async def _seed(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/_emulator/state", json=body)
    assert response.status_code == 201, response.text
    seeded: dict[str, Any] = response.json()
    return seeded


async def _state(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/_emulator/state")
    assert response.status_code == 200
    state: dict[str, Any] = response.json()
    return state


_CALLERS = itertools.count(1)


def _client_ip() -> dict[str, str]:
    """A distinct caller for GitHub's per-client limit, so tests do not share a budget (a random address
    could repeat one that an earlier test spent)."""
    return {"X-Forwarded-For": f"198.51.100.{next(_CALLERS)}, 10.0.0.1"}


async def test_github_revoke_accepts_and_marks_token_revoked(github: httpx.AsyncClient) -> None:
    """A listed token is revoked and the call answers 202 with an empty object."""
    token = _github_token()
    await _seed(github, {"tokens": [{"token": token, "owner": "octocat"}]})
    response = await github.post("/credentials/revoke", json={"credentials": [token, _github_token()]},
                                 headers=_client_ip())
    assert (response.status_code, response.json()) == (202, {})
    entry = (await _state(github))["tokens"][_sha(token)]
    assert entry["revoked"] is True
    assert (entry["prefix"], entry["last4"]) == ("ghp_", token[-4:])


async def test_github_state_never_shows_a_token(github: httpx.AsyncClient) -> None:
    """Seeding answers and state dumps name tokens by hash, prefix and last four only."""
    token = _github_token()
    seeded = await _seed(github, {"tokens": [{"token": token, "owner": "octocat"}]})
    assert token not in str(seeded)
    assert token not in str(await _state(github))


async def test_github_revoke_refuses_authenticated_calls(github: httpx.AsyncClient) -> None:
    """An Authorization header on the revoke endpoint gets 403 and revokes nothing."""
    token = _github_token()
    await _seed(github, {"tokens": [{"token": token, "owner": "octocat"}]})
    headers = {**_client_ip(), "Authorization": f"Bearer {_github_token()}"}
    response = await github.post("/credentials/revoke", json={"credentials": [token]}, headers=headers)
    assert response.status_code == 403
    assert (await _state(github))["tokens"][_sha(token)]["revoked"] is False


@pytest.mark.parametrize("count", [0, 1001])
async def test_github_revoke_validates_list_size(github: httpx.AsyncClient, count: int) -> None:
    """An empty list or more than 1000 credentials is a 422 Validation Failed."""
    body = {"credentials": [_github_token() for _ in range(count)]}
    response = await github.post("/credentials/revoke", json=body, headers=_client_ip())
    assert response.status_code == 422
    error = response.json()
    assert (error["message"], error["status"]) == ("Validation Failed", "422")
    assert error["errors"] and error["documentation_url"]


async def test_github_rate_limit_counts_down_then_limits(github: httpx.AsyncClient) -> None:
    """Headers count 60 calls an hour down; the 61st call is refused with remaining 0."""
    headers, remaining = _client_ip(), []
    for _ in range(60):
        response = await github.post("/credentials/revoke", json={"credentials": [_github_token()]},
                                     headers=headers)
        assert response.status_code == 202
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(59, -1, -1))
    limited = await github.post("/credentials/revoke", json={"credentials": ["ghp_x"]}, headers=headers)
    assert limited.status_code in (403, 429)
    assert limited.json()["message"].startswith("API rate limit exceeded")
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-ratelimit-used"] == limited.headers["x-ratelimit-limit"] == "60"
    assert limited.headers["x-ratelimit-resource"] == "core"
    assert int(limited.headers["x-ratelimit-reset"]) > 0


async def test_github_secondary_limit_sends_retry_after(github: httpx.AsyncClient) -> None:
    """With a secondary limit set, the call past it gets 429 and a retry-after."""
    limits = {"secondary": {"limit": 1, "window_s": 60}, "status": 429}
    assert (await github.put("/_emulator/rate-limits", json=limits)).status_code == 200
    try:
        headers = _client_ip()
        body = {"credentials": [_github_token()]}
        assert (await github.post("/credentials/revoke", json=body, headers=headers)).status_code == 202
        limited = await github.post("/credentials/revoke", json=body, headers=headers)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "secondary rate limit" in limited.json()["message"]
    finally:
        await github.put("/_emulator/rate-limits", json={"secondary": None, "status": 403})


async def test_github_oauth_app_token_delete_then_not_found(github: httpx.AsyncClient) -> None:
    """Deleting an app token answers 204, and deleting it again answers 404."""
    client_id, secret, token = "Iv1." + secrets.token_hex(8), secrets.token_hex(20), _github_token("gho_")
    await _seed(github, {"apps": [{"client_id": client_id, "client_secret": secret}],
                         "tokens": [{"token": token, "owner": "octocat", "app_client_id": client_id}]})
    path, auth = f"/applications/{client_id}/token", httpx.BasicAuth(client_id, secret)
    first = await github.request("DELETE", path, json={"access_token": token}, auth=auth)
    again = await github.request("DELETE", path, json={"access_token": token}, auth=auth)
    assert (first.status_code, again.status_code) == (204, 404)
    assert (await _state(github))["tokens"][_sha(token)]["revoked"] is True


async def test_github_oauth_app_bad_secret_is_401(github: httpx.AsyncClient) -> None:
    """Wrong app credentials get 401 and leave the token alone."""
    client_id, token = "Iv1." + secrets.token_hex(8), _github_token("gho_")
    await _seed(github, {"apps": [{"client_id": client_id, "client_secret": secrets.token_hex(20)}],
                         "tokens": [{"token": token, "owner": "octocat", "app_client_id": client_id}]})
    wrong = httpx.BasicAuth(client_id, secrets.token_hex(20))
    response = await github.request("DELETE", f"/applications/{client_id}/token",
                                    json={"access_token": token}, auth=wrong)
    assert response.status_code == 401
    assert (await _state(github))["tokens"][_sha(token)]["revoked"] is False


async def test_slack_revoke_then_token_revoked(slack: httpx.AsyncClient) -> None:
    """auth.revoke answers revoked; the same token afterwards gets token_revoked."""
    token = _slack_token()
    await _seed(slack, {"tokens": [{"token": token, "user": "U0123", "team": _team()}]})
    headers = {"Authorization": f"Bearer {token}"}
    first = await slack.post("/api/auth.revoke", headers=headers)
    again = await slack.post("/api/auth.test", headers=headers)
    assert first.json() == {"ok": True, "revoked": True}
    assert (again.status_code, again.json()) == (200, {"ok": False, "error": "token_revoked"})
    assert (await _state(slack))["tokens"][_sha(token)]["revoked"] is True


async def test_slack_test_mode_revokes_nothing(slack: httpx.AsyncClient) -> None:
    """auth.revoke with test=1 (as a form field token) leaves the token working."""
    token, team = _slack_token(), _team()
    await _seed(slack, {"tokens": [{"token": token, "user": "U0123", "team": team}]})
    response = await slack.post("/api/auth.revoke", data={"token": token, "test": "1"})
    check = await slack.post("/api/auth.test", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {"ok": True, "revoked": False}
    assert check.json()["ok"] is True and check.json()["team_id"] == team


@pytest.mark.parametrize(("headers", "error"), [
    ({"Authorization": "Bearer xoxb-0-0-unknown"}, "invalid_auth"),
    ({}, "not_authed"),
])
async def test_slack_bad_tokens_are_refused_with_http_200(
    slack: httpx.AsyncClient, headers: dict[str, str], error: str
) -> None:
    """An unknown token is invalid_auth, a missing one not_authed, both as HTTP 200."""
    response = await slack.post("/api/auth.revoke", headers=headers)
    assert (response.status_code, response.json()) == (200, {"ok": False, "error": error})


async def test_slack_rate_limit_is_429_with_retry_after(slack: httpx.AsyncClient) -> None:
    """Past the method's limit for a workspace, Slack answers 429 ratelimited with Retry-After."""
    assert (await slack.put("/_emulator/rate-limits", json={"auth.test": {"limit": 2}})).status_code == 200
    try:
        token = _slack_token()
        await _seed(slack, {"tokens": [{"token": token, "user": "U0123", "team": _team()}]})
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [(await slack.post("/api/auth.test", headers=headers)).status_code for _ in range(2)]
        limited = await slack.post("/api/auth.test", headers=headers)
        assert statuses == [200, 200]
        assert (limited.status_code, limited.json()) == (429, {"ok": False, "error": "ratelimited"})
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
    finally:
        await slack.put("/_emulator/rate-limits", json={"auth.test": {"limit": 600}})


async def _gcp_key(gcp: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """Seed an access token and one key; return auth headers and the key's URL path."""
    access_token, key_id = "ya29." + secrets.token_urlsafe(32), secrets.token_hex(20)
    email = f"sa-{secrets.token_hex(4)}@demo-project.iam.gserviceaccount.com"
    await _seed(gcp, {"access_tokens": [access_token],
                      "keys": [{"project": "demo-project", "email": email, "key_id": key_id}]})
    path = f"/v1/projects/demo-project/serviceAccounts/{email}/keys/{key_id}"
    return {"Authorization": f"Bearer {access_token}"}, path


async def test_gcp_disable_then_delete(gcp: httpx.AsyncClient) -> None:
    """Disabling shows in the key resource; deleting answers {} and removes it from the list."""
    headers, path = await _gcp_key(gcp)
    disabled = await gcp.post(path + ":disable", headers=headers)
    resource = (await gcp.get(path.replace("demo-project", "-", 1), headers=headers)).json()
    deleted = await gcp.delete(path, headers=headers)
    listed = await gcp.get(path.rsplit("/", 1)[0], headers=headers)
    assert (disabled.status_code, disabled.json(), deleted.status_code, deleted.json()) == (200, {}, 200, {})
    assert resource["disabled"] is True and resource["keyType"] == "USER_MANAGED"
    assert resource["name"] == path.removeprefix("/v1/")
    assert listed.json() == {"keys": []}


async def test_gcp_second_delete_is_not_found(gcp: httpx.AsyncClient) -> None:
    """Deleting a deleted key is a 404 NOT_FOUND in Google's error body."""
    headers, path = await _gcp_key(gcp)
    assert (await gcp.delete(path, headers=headers)).status_code == 200
    again = await gcp.delete(path, headers=headers)
    assert again.status_code == 404
    assert again.json()["error"]["status"] == "NOT_FOUND"
    assert again.json()["error"]["code"] == 404


async def test_gcp_bad_access_token_is_401(gcp: httpx.AsyncClient) -> None:
    """An unknown bearer token is 401 UNAUTHENTICATED and the key stays enabled."""
    _, path = await _gcp_key(gcp)
    response = await gcp.post(path + ":disable", headers={"Authorization": "Bearer ya29.not-a-real-token"})
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert not any(key["disabled"] for key in (await _state(gcp))["keys"] if path.endswith(key["key_id"]))


async def test_gcp_quota_is_429_resource_exhausted(gcp: httpx.AsyncClient) -> None:
    """Past the per-minute quota, IAM answers 429 RESOURCE_EXHAUSTED."""
    assert (await gcp.put("/_emulator/rate-limits", json={"limit": 1})).status_code == 200
    try:
        headers, path = await _gcp_key(gcp)
        assert (await gcp.get(path, headers=headers)).status_code == 200
        limited = await gcp.get(path, headers=headers)
        assert limited.status_code == 429
        assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    finally:
        await gcp.put("/_emulator/rate-limits", json={"limit": 600})


async def test_injected_fault_is_returned_once(slack: httpx.AsyncClient) -> None:
    """A fault queued on /_emulator/faults answers the next matching call once, then the real API returns."""
    fault = {"method": "POST", "path": "^/api/auth.test$", "status": 503, "count": 1,
             "body": {"ok": False, "error": "service_unavailable"}}
    assert (await slack.post("/_emulator/faults", json=fault)).status_code == 201
    first = await slack.post("/api/auth.test")
    second = await slack.post("/api/auth.test")
    assert (first.status_code, first.json()["error"]) == (503, "service_unavailable")
    assert (second.status_code, second.json()["error"]) == (200, "not_authed")
