"""The shipped Okta playbooks, end to end: Kafka in, the real okta SDK against the emulator, audit out."""

from __future__ import annotations

from typing import Any

from tests.conftest import Emulator, okta_token
from tests.support import Harness, events_of, exposure


def _user(okta: Emulator, login: str, **extra: Any) -> dict[str, Any]:
    created = okta.seed({"users": [{"login": login, "email": login, **extra}]})
    users = okta.control("GET", "state")["users"]
    return next(u for u in users if u["profile"]["login"] == login) if isinstance(users, list) else created


def _state_user(okta: Emulator, login: str) -> dict[str, Any]:
    users = okta.control("GET", "state")["users"]
    items = users.values() if isinstance(users, dict) else users
    return next(u for u in items if u.get("login", u.get("profile", {}).get("login")) == login)


async def test_okta_session_clears_all_sessions_of_the_owner(harness: Harness, okta_clean: Emulator) -> None:
    """okta.session with an owner: every session of that user is cleared, and the run completes."""
    login = "har.victim.1@example.com"
    okta_clean.seed({"users": [{"login": login, "sessions": ["102sessA1", "102sessA2"]}]})
    event = exposure("okta.session", credential={"owner": login, "id": "102sessA1"}, source={"detector": "har-scanner"})
    trails = await harness.run(event)
    assert events_of(trails[event["id"]]) == [
        "exposure.received", "run.started", "step.started", "step.succeeded", "run.completed"]
    print(_state_user(okta_clean, login))
