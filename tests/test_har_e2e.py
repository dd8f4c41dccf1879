"""End to end: a support HAR holding a live Okta session cookie and SSWS token → `scan-har --publish` → the
running orchestrator clears the session and revokes the token at the Okta emulator."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.har.exposures import exposure_id
from tests.conftest import Emulator, okta_token
from tests.har_canaries import entry, har
from tests.support import Harness, events_of, fresh_settings


def _state(okta: Emulator, collection: str, key: str, value: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = okta.control("GET", "state")[collection]
    return next(item for item in items if item[key] == value)


async def test_scan_har_publish_clears_the_session_and_revokes_the_token(bootstrap: str, okta_clean: Emulator,
                                                                          tmp_path: Path) -> None:
    """The session cookie (and the session id /sessions/me echoes) clear the user's sessions; the SSWS
    token revokes itself; each exposure's run completes."""
    login, token = f"har.{secrets.token_hex(4)}@example.com", okta_token()
    okta_clean.seed({"users": [{"login": login, "sessions": [f"102{secrets.token_hex(8)}"], "factors": 1}]})
    sid = _state(okta_clean, "users", "login", login)["sessions"][0]["id"]
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
    async with Harness(fresh_settings(bootstrap, okta_clean.url, okta_clean.admin_token)) as harness:
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ORCHESTRATOR_EXPOSURES_TOPIC": harness.settings.exposures_topic}
        result = await asyncio.to_thread(CliRunner().invoke, app, ["scan-har", str(path), "--publish"], env=env)
        assert result.exit_code == 0, result.stderr
        ids = [exposure_id("okta.session", sid), exposure_id("okta.api_token", token)]
        trails = await harness.collect(*ids)
    assert all(events_of(trail)[-1] == "run.completed" for trail in trails.values())
    assert all(s["revoked"] for s in _state(okta_clean, "users", "login", login)["sessions"])
    assert _state(okta_clean, "api_tokens", "id", token_id)["revoked"] is True
    assert "published 2 exposures" in result.stderr
