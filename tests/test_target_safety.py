"""Hostile targets end to end: `current`, `..`, a vanished parent and the orchestrator's own token send no
revocation and fail with a clear reason, checked against the emulators' request logs."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from orchestrator import embedded
from orchestrator.actions import StepContext
from orchestrator.governor import Governor
from orchestrator.providers.okta import OktaProvider
from orchestrator.settings import GcpSettings, OktaSettings
from tests.conftest import Emulator, okta_token
from tests.support import Harness, events_of, exposure, fresh_settings

PROJECT = "safety-project"


@dataclass(frozen=True)
class Org:
    """An Okta emulator of this module's own, whose admin token is also an API token it can name by id."""

    okta: Emulator
    own_token_id: str


@pytest.fixture(scope="module")
def org() -> Iterator[Org]:
    """A private Okta emulator: the orchestrator's token is seeded as the API token of a service user."""
    token = okta_token()
    with embedded.emulator("okta", "--admin-token", token) as process:
        okta = Emulator(process.url, token)
        okta.seed({"users": [{"login": "svc-orchestrator@example.com"}]})
        seeded = okta.seed({"api_tokens": [{"name": "orchestrator", "login": "svc-orchestrator@example.com",
                                            "token": token}]})
        yield Org(okta, seeded["api_tokens"][0]["id"])


@pytest.fixture(scope="module")
async def harness(bootstrap: str, org: Org, gcp: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module, acting on the private Okta org and the GCP emulator."""
    settings = fresh_settings(bootstrap, org.okta.url, org.okta.admin_token,
                              gcp=GcpSettings(iam_url=gcp.url, access_token=gcp.admin_token))
    async with Harness(settings) as running:
        yield running


@pytest.fixture
def logs(org: Org, gcp: Emulator) -> Iterator[tuple[Emulator, Emulator]]:
    """Both emulators with empty request logs."""
    org.okta.reset()
    gcp.reset()
    yield org.okta, gcp


def _requests(emulator: Emulator) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in emulator.control("GET", "requests")]


def _failures(trail: list[dict[str, Any]]) -> list[str]:
    return [r["error"] for r in trail if r["event"] == "step.failed"]


def _account(gcp: Emulator) -> tuple[str, str]:
    email = f"victim-{secrets.token_hex(4)}@{PROJECT}.iam.gserviceaccount.com"
    key_id = secrets.token_hex(20)
    gcp.seed({"keys": [{"project": PROJECT, "email": email, "key_id": key_id}]})
    return email, key_id


def _keys(gcp: Emulator, email: str) -> list[dict[str, Any]]:
    return [k for k in gcp.control("GET", "state")["keys"] if k["email"] == email]


async def test_token_id_current_sends_nothing(harness: Harness, logs: tuple[Emulator, Emulator], org: Org) -> None:
    """`{"kind": "okta.api_token", "id": "current"}`: step.failed naming token_id; Okta sees no request at all."""
    okta, _ = logs
    event = exposure("okta.api_token", credential={"id": "current"})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.failed"
    [error] = _failures(trail)
    assert "'token_id'" in error and "reserved word" in error and "nothing was sent" in error
    assert _requests(okta) == []
    assert next(t for t in okta.control("GET", "state")["api_tokens"] if t["id"] == org.own_token_id)["revoked"] \
        is False


async def test_dot_dot_key_id_sends_nothing(harness: Harness, logs: tuple[Emulator, Emulator]) -> None:
    """`{"owner": victim, "id": ".."}`: both steps fail naming key_id; no request, the account and key live on."""
    _, gcp = logs
    email, _ = _account(gcp)
    event = exposure("gcp.service_account_key", credential={"owner": email, "id": ".."})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.failed"
    errors = _failures(trail)
    assert len(errors) == 2 and all("'key_id'" in e and "dot segment" in e for e in errors)
    assert _requests(gcp) == []
    assert not any(k["deleted"] for k in _keys(gcp, email))
    assert email not in gcp.control("GET", "state")["deleted_accounts"]


async def test_a_404_on_the_account_is_not_already_deleted(harness: Harness, logs: tuple[Emulator, Emulator]) -> None:
    """The key's account is gone: IAM's 404 is about the parent, so the run fails instead of completing."""
    _, gcp = logs
    email, key_id = _account(gcp)
    async with httpx.AsyncClient(base_url=gcp.url, timeout=10) as client:
        deleted = await client.delete(f"/v1/projects/-/serviceAccounts/{email}",
                                      headers={"Authorization": f"Bearer {gcp.admin_token}"})
    assert deleted.status_code == 200
    event = exposure("gcp.service_account_key", credential={"owner": email, "id": key_id})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.failed"
    errors = _failures(trail)
    assert len(errors) == 2 and all("service account" in e and "not found" in e for e in errors)
    assert not any(r.get("note") == "key already deleted" for r in trail)


async def test_a_deleted_key_of_a_live_account_is_done(harness: Harness, logs: tuple[Emulator, Emulator]) -> None:
    """The same 404 for the key while its account exists: already deleted, both steps done with a note."""
    _, gcp = logs
    email, key_id = _account(gcp)
    first = exposure("gcp.service_account_key", credential={"owner": email, "id": key_id})
    await harness.run(first)
    again = exposure("gcp.service_account_key", credential={"owner": email, "id": key_id})
    trail = (await harness.run(again))[again["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert [r["note"] for r in trail if r["event"] == "step.succeeded"] == ["key already deleted"] * 2


async def test_own_okta_token_by_value_is_not_revoked(harness: Harness, logs: tuple[Emulator, Emulator],
                                                      org: Org) -> None:
    """An exposure carrying the orchestrator's own Okta token as its secret: refused, nothing sent."""
    okta, _ = logs
    event = exposure("okta.api_token", credential={"secret": okta.admin_token})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.failed"
    [error] = _failures(trail)
    assert "orchestrator's own Okta API token" in error and "rotate them by hand" in error
    assert okta.admin_token not in str(trail)
    assert [call for call in _requests(okta) if call[0] == "DELETE"] == []


async def test_own_okta_token_by_id_is_not_revoked(harness: Harness, logs: tuple[Emulator, Emulator],
                                                   org: Org) -> None:
    """An exposure naming the orchestrator's own token by its id at Okta: refused; Okta is only asked which
    token is the caller's, and the token still works."""
    okta, _ = logs
    event = exposure("okta.api_token", credential={"id": org.own_token_id})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.failed"
    [error] = _failures(trail)
    assert "'token_id' names the orchestrator's own Okta API token" in error
    assert [call for call in _requests(okta) if call[0] == "DELETE"] == []
    own = next(t for t in okta.control("GET", "state")["api_tokens"] if t["id"] == org.own_token_id)
    assert own["revoked"] is False


async def test_another_token_by_id_is_still_revoked(harness: Harness, logs: tuple[Emulator, Emulator]) -> None:
    """The guard refuses only our own token: any other token id is revoked as before."""
    okta, _ = logs
    seeded = okta.seed({"api_tokens": [{"name": "leaked", "login": "svc-orchestrator@example.com",
                                        "token": okta_token()}]})
    token_id = seeded["api_tokens"][0]["id"]
    event = exposure("okta.api_token", credential={"id": token_id})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert ("DELETE", f"/api/v1/api-tokens/{token_id}") in _requests(okta)


async def test_revoking_a_users_api_tokens_spares_the_orchestrators_own(logs: tuple[Emulator, Emulator],
                                                                         org: Org) -> None:
    """okta.revoke_user_api_tokens on the orchestrator's service user revokes its other tokens, never its own."""
    okta, _ = logs
    other = okta.seed({"api_tokens": [{"name": "ci", "login": "svc-orchestrator@example.com",
                                       "token": okta_token()}]})["api_tokens"][0]["id"]
    settings = OktaSettings(org_url=okta.url, token=okta.admin_token)
    async with OktaProvider(settings, Governor("okta", concurrency=4)) as provider:
        result = await provider.perform("okta.revoke_user_api_tokens", {"user": "svc-orchestrator@example.com"},
                                        StepContext("e"))
    assert f"DELETE /api/v1/api-tokens/{other}" in result.calls
    assert f"DELETE /api/v1/api-tokens/{org.own_token_id}" not in result.calls
    tokens = {t["id"]: t["revoked"] for t in okta.control("GET", "state")["api_tokens"]}
    assert tokens[other] is True and tokens[org.own_token_id] is False


class _FakeOkta:
    """A provider that knows one own token and counts how often it is asked."""

    name = "okta"

    def __init__(self, token: str) -> None:
        self.token, self.asked = token, 0

    async def own_credentials(self, kind: str) -> tuple[str, ...]:
        self.asked += 1
        return (self.token,) if kind == "okta.api_token" else ()


async def test_the_guard_asks_once_and_keeps_only_fingerprints() -> None:
    """OwnCredentials asks a provider once per kind, refuses the matching value, and holds no raw value."""
    from pydantic import SecretStr

    from orchestrator.own_credentials import OwnCredentials
    from orchestrator.providers import catalog

    own = okta_token()
    provider = _FakeOkta(own)
    guard = OwnCredentials({"okta": provider})  # type: ignore[dict-item]
    spec = catalog()["okta.revoke_api_token"]
    assert await guard.refusal(spec, {"token": SecretStr(okta_token())}) is None
    refusal = await guard.refusal(spec, {"token": SecretStr(own)})
    assert refusal is not None and "'token'" in refusal and own not in refusal
    assert provider.asked == 1 and own not in repr(vars(guard))


async def test_a_login_is_percent_encoded_once_as_one_path_segment(harness: Harness,
                                                                   logs: tuple[Emulator, Emulator]) -> None:
    """An owner login with `+` and `@` reaches Okta percent-encoded exactly once, and its sessions are cleared."""
    okta, _ = logs
    login = f"first+{secrets.token_hex(3)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": 1}]})
    event = exposure("okta.session", credential={"owner": login})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    lookups = [r["raw_path"] for r in okta.control("GET", "requests") if r["method"] == "GET"]
    # `+` encoded once (never %252B); `@` is legal in a path segment and yarl sends it as it is.
    assert lookups == ["/api/v1/users/" + login.replace("+", "%2B")]
    user = next(u for u in okta.control("GET", "state")["users"] if u["login"] == login)
    assert all(s["revoked"] for s in user["sessions"])


async def test_the_user_owning_the_orchestrators_token_is_never_suspended(harness: Harness,
                                                                          logs: tuple[Emulator, Emulator],
                                                                          org: Org) -> None:
    """A critical okta.user exposure of the orchestrator's service user: sessions cleared and factors reset, but
    no suspension (Okta would deactivate the orchestrator's own token with it)."""
    okta, _ = logs
    event = exposure("okta.user", credential={"owner": "svc-orchestrator@example.com"}, severity="critical")
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.failed"
    [error] = _failures(trail)
    assert "owns the orchestrator's own API token: refusing to suspend" in error
    assert not any(r["path"].endswith("/lifecycle/suspend") for r in okta.control("GET", "requests"))
    user = next(u for u in okta.control("GET", "state")["users"] if u["login"] == "svc-orchestrator@example.com")
    assert user["status"] == "ACTIVE"
