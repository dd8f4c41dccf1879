"""The shipped Okta playbooks, end to end: Kafka in (or a HAR through `scan-har --publish`), the real okta SDK
against the emulator, audit out."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.har.exposures import exposure_id
from tests.conftest import Emulator, okta_token
from tests.har_canaries import entry, har
from tests.support import Harness, events_of, exposure, fresh_settings


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module: these tests touch disjoint users and tokens."""
    async with Harness(fresh_settings(bootstrap, okta.url, okta.admin_token)) as running:
        yield running


def _login() -> str:
    return f"user.{secrets.token_hex(4)}@example.com"


def _seed_user(okta: Emulator, login: str, **extra: Any) -> dict[str, Any]:
    spec = {"login": login, "sessions": [f"102{secrets.token_hex(8)}", f"102{secrets.token_hex(8)}"],
            "tokens": [{"clientId": "0oaapp1"}, {"clientId": "0oaapp2"}], "factors": 2, **extra}
    okta.seed({"users": [spec]})
    return _state_user(okta, login)


def _state_user(okta: Emulator, login: str) -> dict[str, Any]:
    users: list[dict[str, Any]] = okta.control("GET", "state")["users"]
    return next(u for u in users if u["login"] == login)


def _state_token(okta: Emulator, token_id: str) -> dict[str, Any]:
    tokens: list[dict[str, Any]] = okta.control("GET", "state")["api_tokens"]
    return next(t for t in tokens if t["id"] == token_id)


def _assert_cleared(user: dict[str, Any]) -> None:
    assert user["sessions"] and all(s["revoked"] for s in user["sessions"])
    assert user["tokens"] == []


SESSION_TRAIL = ["exposure.received", "run.started", "step.started", "step.succeeded", "run.completed"]


async def test_okta_session_by_owner_clears_all_sessions_and_oauth_tokens(harness: Harness,
                                                                         okta_clean: Emulator) -> None:
    """okta.session with an owner: every session and OAuth token of that user is cleared."""
    login = _login()
    user = _seed_user(okta_clean, login)
    event = exposure("okta.session", credential={"owner": login}, source={"detector": "har-scanner"})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == SESSION_TRAIL
    assert trail[-2]["target"] == f"user:{user['id']}"
    assert trail[-1]["playbook"] == "okta-session"
    _assert_cleared(_state_user(okta_clean, login))


async def test_okta_session_by_session_id_resolves_its_user(harness: Harness, okta_clean: Emulator) -> None:
    """okta.session with only a session id: the session resolves to its user, whose sessions are all cleared."""
    login = _login()
    user = _seed_user(okta_clean, login)
    bystander = _seed_user(okta_clean, _login())
    event = exposure("okta.session", credential={"id": user["sessions"][1]["id"]})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == SESSION_TRAIL
    assert trail[-2]["target"] == f"user:{user['id']}"
    _assert_cleared(_state_user(okta_clean, login))
    untouched = _state_user(okta_clean, bystander["login"])
    assert not any(s["revoked"] for s in untouched["sessions"]) and len(untouched["tokens"]) == 2


async def test_okta_api_token_by_secret_revokes_itself(harness: Harness, okta_clean: Emulator) -> None:
    """okta.api_token with its value: DELETE /api-tokens/current authenticated by it revokes the token."""
    login, value = _login(), okta_token()
    _seed_user(okta_clean, login)
    token_id = okta_clean.seed({"api_tokens": [{"name": "ci", "login": login, "token": value}]})["api_tokens"][0]["id"]
    event = exposure("okta.api_token", credential={"secret": value})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == SESSION_TRAIL
    assert _state_token(okta_clean, token_id)["revoked"] is True
    calls = [(r["method"], r["path"]) for r in okta_clean.control("GET", "requests")]
    assert calls == [("DELETE", "/api/v1/api-tokens/current")]


async def test_okta_api_token_by_id_revokes_it(harness: Harness, okta_clean: Emulator) -> None:
    """okta.api_token with only its id: the admin token revokes it by id."""
    login = _login()
    _seed_user(okta_clean, login)
    seeded = okta_clean.seed({"api_tokens": [{"name": "ci", "login": login, "token": okta_token()}]})
    token_id = seeded["api_tokens"][0]["id"]
    event = exposure("okta.api_token", credential={"id": token_id})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == SESSION_TRAIL
    assert trail[-2]["target"] == f"api-token:{token_id}"
    assert _state_token(okta_clean, token_id)["revoked"] is True


async def test_okta_user_clears_and_resets_but_does_not_suspend_below_critical(harness: Harness,
                                                                               okta_clean: Emulator) -> None:
    """okta.user at high severity: sessions and OAuth tokens cleared, factors reset, suspend skipped."""
    login = _login()
    _seed_user(okta_clean, login)
    event = exposure("okta.user", credential={"owner": login}, severity="high")
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started", "step.skipped", "step.started",
                                "step.succeeded", "step.started", "step.succeeded", "run.completed"]
    assert trail[2]["step"] == "suspend"
    state = _state_user(okta_clean, login)
    _assert_cleared(state)
    assert state["factors"] == 0 and state["status"] == "ACTIVE"


async def test_okta_user_suspends_when_critical(harness: Harness, okta_clean: Emulator) -> None:
    """okta.user at critical severity: the user suspended first (reversible), then sessions cleared and factors
    reset."""
    login = _login()
    _seed_user(okta_clean, login)
    event = exposure("okta.user", credential={"owner": login}, severity="critical")
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started"] + ["step.started", "step.succeeded"] * 3 + [
        "run.completed"]
    assert [r["step"] for r in trail if r["event"] == "step.succeeded"] == ["suspend", "clear-sessions",
                                                                            "reset-factors"]
    state = _state_user(okta_clean, login)
    _assert_cleared(state)
    assert state["factors"] == 0 and state["status"] == "SUSPENDED"


async def test_scan_har_publish_clears_the_session_and_revokes_the_token(harness: Harness, okta_clean: Emulator,
                                                                          tmp_path: Path) -> None:
    """A HAR with a live session cookie and SSWS token → `scan-har --publish` → sessions cleared, token revoked."""
    login, token = f"har.{secrets.token_hex(4)}@example.com", okta_token()
    okta_clean.seed({"users": [{"login": login, "sessions": [f"102{secrets.token_hex(8)}"], "factors": 1}]})
    sid = _state_user(okta_clean, login)["sessions"][0]["id"]
    token_id = okta_clean.seed({"api_tokens": [{"name": "support", "login": login, "token": token}]})[
        "api_tokens"][0]["id"]
    capture = har([
        entry(f"{okta_clean.url}/app/UserHome", headers={"cookie": f"sid={sid}; theme=dark"}),
        entry(f"{okta_clean.url}/api/v1/sessions/me", headers={"cookie": f"sid={sid}"},
              response_body=json.dumps({"id": sid, "login": login, "status": "ACTIVE"})),
        entry(f"{okta_clean.url}/api/v1/users?limit=1", headers={"authorization": f"SSWS {token}"}),
    ])
    path = tmp_path / "support-ticket.har"
    path.write_text(json.dumps(capture))
    env = {"KAFKA_BOOTSTRAP_SERVERS": harness.settings.bootstrap_servers,
           "ORCHESTRATOR_EXPOSURES_TOPIC": harness.settings.exposures_topic}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["scan-har", str(path), "--publish"], env=env)
    assert result.exit_code == 0, result.stderr
    trails = await harness.collect(exposure_id("okta.session", sid), exposure_id("okta.api_token", token))
    assert all(events_of(trail)[-1] == "run.completed" for trail in trails.values())
    assert all(s["revoked"] for s in _state_user(okta_clean, login)["sessions"])
    assert _state_token(okta_clean, token_id)["revoked"] is True
    assert "published 2 exposures" in result.stderr
