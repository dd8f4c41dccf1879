"""Replays in the running orchestrator: through the API and the CLI, the consumer runs a failed exposure again."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx

from orchestrator import replay
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.embedded import free_port
from orchestrator.execution import ALREADY_SUCCEEDED
from orchestrator.settings import Settings
from tests.conftest import Emulator, okta_token
from tests.support import Harness, exposure, fresh_settings, publish, read_all, run_cli

FORBIDDEN = {"errorCode": "E0000006", "errorSummary": "You do not have permission to perform the requested action",
             "errorLink": "E0000006", "errorId": "oae-test", "errorCauses": []}


async def _records(settings: Settings, exposure_id: str, terminals: int) -> list[dict[str, Any]]:
    """The exposure's audit records until it has `terminals` terminal records."""
    trail: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async for record in follow(settings.bootstrap_servers, settings.audit_topic, exposure_ids=[exposure_id]):
            trail.append(record)
            if sum(map(is_terminal, trail)) == terminals:
                return trail
    return trail


async def _stored_end(http: httpx.AsyncClient, exposure_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """The exposure's store row once it has ended (the store is written after the terminal record)."""
    async with asyncio.timeout(10):
        while True:
            document: dict[str, Any] = (await http.get(f"/v1/exposures/{exposure_id}", headers=headers)).json()
            if document.get("done"):
                return document
            await asyncio.sleep(0.1)


async def test_failed_runs_are_replayed_through_the_api_and_the_cli_skipping_what_succeeded(
        bootstrap: str, okta_clean: Emulator, tmp_path: Any) -> None:
    """An okta-user run failed in reset-factors (replayed through the API: its two succeeded steps skipped) and an
    API-token run failed with its value (replayed through the CLI: the value taken from the encrypted dead letter,
    the token revoked); both audited with the requester and reason, the value in no record and not in the store."""
    okta = okta_clean
    login = f"replay.{secrets.token_hex(4)}@example.com"
    value = okta_token()
    token_name = f"ci-{secrets.token_hex(4)}"  # the emulator is shared: another test's "ci" token may be there
    okta.seed({"users": [{"login": login, "sessions": 1}],
               "api_tokens": [{"name": token_name, "login": login, "token": value}]})
    token = new_token()
    tokens_file = tmp_path / "tokens.json"
    write_private(tokens_file, json.dumps({"tokens": [token_entry(token, "oncall-bot", [Role.RESPONDER])]}))
    key = secrets.token_hex(32)
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, http_listen=f"127.0.0.1:{free_port()}",
                              api_tokens_file=tokens_file, encryption_key=key)
    user = exposure("okta.user", credential={"owner": login}, severity="critical")
    leaked = exposure("okta.api_token", credential={"secret": value})
    okta.control("POST", "faults", {"method": "POST", "path": "/lifecycle/reset_factors$", "status": 403,
                                    "count": 1, "body": FORBIDDEN})
    okta.control("POST", "faults", {"method": "DELETE", "path": "^/api/v1/api-tokens/current$", "status": 403,
                                    "count": 1, "body": FORBIDDEN})
    headers = {"Authorization": f"Bearer {token}"}
    async with Harness(settings) as harness, httpx.AsyncClient(base_url=harness.orchestrator.api_url or "",
                                                               timeout=15) as http:
        first = await harness.run(user, leaked)
        assert first[user["id"]][-1]["event"] == first[leaked["id"]][-1]["event"] == "run.failed"
        stored = await _stored_end(http, leaked["id"], headers)
        assert stored["state"] == "failed" and stored["dead_letter"]
        await _stored_end(http, user["id"], headers)

        plan = (await http.post(f"/v1/exposures/{user['id']}/replay", headers=headers, json={"dry_run": True})).json()
        assert plan["skip"] == ["suspend", "clear-sessions"] and plan["run"] == ["reset-factors"]
        answer = await http.post(f"/v1/exposures/{user['id']}/replay", headers=headers,
                                 json={"reason": "factor reset was refused, INC-7"})
        assert answer.status_code == 202 and answer.json()["actor"] == "oncall-bot"
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ORCHESTRATOR_EXPOSURES_TOPIC": settings.exposures_topic,
               "ORCHESTRATOR_DATA_DIR": str(settings.store.data_dir)}
        cli = await asyncio.to_thread(run_cli, "replay", "--exposure", leaked["id"], "--reason", "retry INC-8",
                                      "--actor", "sam", env=env)
        assert cli.returncode == 0 and "from the original record in dead letter" in cli.stdout, cli.stderr

        replayed = await _records(settings, user["id"], 2)
        again = replayed[[r["event"] for r in replayed].index("exposure.replayed"):]
        assert again[0]["actor"] == "oncall-bot" and again[0]["reason"] == "factor reset was refused, INC-7"
        assert [(r["event"], r.get("step")) for r in again if r["event"].startswith("step.") and
                r["event"] != "step.started"] == [("step.skipped", "suspend"), ("step.skipped", "clear-sessions"),
                                                  ("step.succeeded", "reset-factors")]
        assert {r["reason"] for r in again if r["event"] == "step.skipped"} == {ALREADY_SUCCEEDED}
        assert again[-1]["event"] == "run.completed" and all(r["actor"] == "oncall-bot" for r in again)
        assert again[-1]["run_id"] != first[user["id"]][-1]["run_id"]

        secret_run = await _records(settings, leaked["id"], 2)
        assert secret_run[-1]["event"] == "run.completed" and secret_run[-1]["actor"] == "sam"
        opened = next(r for r in secret_run if r["event"] == "exposure.replayed")
        assert opened["source"].startswith("dead letter ") and opened["reason"] == "retry INC-8"
        assert next(t for t in okta.control("GET", "state")["api_tokens"] if t["name"] == token_name)["revoked"] is True
        ended = await _stored_end(http, leaked["id"], headers)
        assert ended["state"] == "completed" and ended["replay_request"]

        refused = await http.post(f"/v1/exposures/{user['id']}/replay", headers=headers)
        assert refused.status_code == 409 and "only failed exposures" in refused.json()["detail"]
        # A request the consumer cannot run (a row this store does not have) is audited, not acted on.
        bogus = replay.new_request({**ended, "row_id": 10**9}, actor="mallory", reason="why not",
                                   at=datetime.now(UTC))
        await publish(bootstrap, settings.exposures_topic, [replay.encode(bogus)], key=leaked["id"].encode())
        async with asyncio.timeout(20):
            async for record in follow(bootstrap, settings.audit_topic, exposure_ids=[leaked["id"]]):
                if record["event"] == "replay.refused":
                    break
        assert record["actor"] == "mallory" and "in the run store" in record["error"]
        await harness.stop()
    audit = await read_all(bootstrap, settings.audit_topic)
    assert audit and all(value.encode() not in r.value for r in audit)
    dead = await read_all(bootstrap, settings.dlq_topic)
    assert len(dead) == 1 and value.encode() not in (dead[0].value or b"")
    assert all(value.encode() not in f.read_bytes() for f in settings.store.data_dir.glob("orchestrator.db*"))
