"""Okta session ids are bearer secrets: records show only their keyed fingerprint, the provider gets them raw."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator import replay
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.cli import app
from orchestrator.dead_letters import sanitise
from orchestrator.embedded import free_port
from orchestrator.events import SECRET_ID_KINDS, Exposure, fingerprint
from orchestrator.har.exposures import exposure_id
from orchestrator.playbooks import load_playbooks
from orchestrator.providers import catalog
from orchestrator.redaction import Redactor
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR
from orchestrator.store import content_of
from orchestrator.store.engine import SQLITE_FILE
from tests.conftest import Emulator
from tests.har_canaries import entry, har
from tests.support import Harness, captured_logs, events_of, exposure, fresh_settings, read_all, run_cli

PLAYBOOKS = load_playbooks(DEFAULT_PLAYBOOKS_DIR, catalog())
_SESSION_ID = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-", min_size=10,
                      max_size=64)


def _sid() -> str:
    return f"102{secrets.token_urlsafe(18)}"


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(sorted(SECRET_ID_KINDS)), sid=_SESSION_ID,
       owner=st.none() | st.just("sam@example.com"),
       secret=st.none() | st.text(alphabet="abcdefXYZ0123456789", min_size=8, max_size=40))
def test_no_store_column_or_target_holds_a_secret_id(kind: str, sid: str, owner: str | None,
                                                     secret: str | None) -> None:
    """For every secret-id kind, content_of (every column) and the credential key show the id's fingerprint only."""
    event = Exposure.model_validate({"id": "e1", "credential": {"kind": kind, "id": sid, "owner": owner,
                                                                "secret": secret}})
    content = content_of(event)
    assert all(sid not in str(value) for value in dataclasses.asdict(content).values())
    assert sid not in event.credential_key
    assert content.credential_id == fingerprint(sid) and content.target == f"{kind}:{fingerprint(sid)}"
    assert event.credential.id == sid  # what the provider step reads stays raw
    assert content_of(event).fingerprint == content.fingerprint  # the same session deduplicates


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(SECRET_ID_KINDS)), sid=_SESSION_ID, severity=st.sampled_from(["high", "oops"]))
def test_an_unencrypted_dead_letter_drops_a_secret_id(kind: str, sid: str, severity: str) -> None:
    """Sealed without a key, even unregistered (a record rejected before it was handled), the sid is dropped."""
    raw = json.dumps({"id": "e1", "severity": severity, "reason": f"seen in cookie sid={sid}",
                      "credential": {"kind": kind, "id": sid}}).encode()
    value, _ = sanitise(raw, Redactor())
    assert sid.encode() not in value and b'"kind"' in value


def test_a_handle_that_is_not_secret_is_still_shown() -> None:
    """An Okta API token id is a handle: it stays in the target and the store as it is."""
    event = Exposure.model_validate({"id": "e1", "credential": {"kind": "okta.api_token", "id": "00Tabc123456"}})
    assert content_of(event).target == "okta.api_token:00Tabc123456"
    assert content_of(event).credential_id == "00Tabc123456"


def test_two_sessions_have_different_content() -> None:
    """Fingerprinting the id keeps two sessions apart in the store's content identity."""
    a, b = ({"id": "e1", "credential": {"kind": "okta.session", "id": _sid()}} for _ in range(2))
    assert content_of(Exposure.model_validate(a)).fingerprint != content_of(Exposure.model_validate(b)).fingerprint


def _row(event: dict[str, Any], *, dead_letter: str | None = None) -> dict[str, Any]:
    content = content_of(Exposure.model_validate(event))
    return {"row_id": 7, "id": content.id, "content_fingerprint": content.fingerprint, "credential_kind": content.kind,
            "credential_id": content.credential_id, "credential_owner": content.owner, "target": content.target,
            "detector": content.detector, "actor": content.actor, "severity": content.severity, "state": "failed",
            "playbook": "okta-session", "run_id": "r1", "error": "failed steps: x", "dead_letter": dead_letter,
            "steps": [{"step": "clear-owner-sessions", "state": "failed"}]}


def test_a_replay_knowing_only_the_fingerprint_says_it_cannot_act() -> None:
    """Without the encrypted original, replaying a session exposure is refused, naming the fingerprint-only id."""
    event = {"id": "e2", "credential": {"kind": "okta.session", "id": _sid()}}
    plan = replay.plan(_row(event), PLAYBOOKS)
    assert not plan.possible and plan.problem is not None
    assert "okta.session id, a secret the run store keeps only as its fingerprint" in plan.problem
    assert "ORCHESTRATOR_ENCRYPTION_KEY" in plan.problem
    assert replay.plan(_row(event, dead_letter="0:3"), PLAYBOOKS).possible  # the original record is read instead


@pytest.fixture(scope="module")
async def served(bootstrap: str, okta: Emulator, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[Harness, str]]:
    """One orchestrator with its API, a SQLite run store and an encryption key; yields it and an admin token."""
    token = new_token()
    tokens_file = tmp_path_factory.mktemp("sid-api") / "tokens.json"
    write_private(tokens_file, json.dumps({"tokens": [token_entry(token, "admin-bot", [Role.ADMIN])]}))
    settings_ = fresh_settings(bootstrap, okta.url, okta.admin_token, http_listen=f"127.0.0.1:{free_port()}",
                               api_tokens_file=tokens_file, encryption_key=secrets.token_hex(32))
    async with Harness(settings_) as harness:
        yield harness, token


def _sqlite_text(path: Path) -> str:
    """Every column of every row of every table, as text."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"'))


async def test_a_canary_session_id_is_nowhere_and_the_session_is_cleared(served: tuple[Harness, str],
                                                                         okta_clean: Emulator, tmp_path: Path) -> None:
    """`scan-har --publish` of sid and DT cookies: no audit record, log line, store column, API answer or CLI
    output holds either, the sid shows as its fingerprint, and the user's sessions are cleared."""
    harness, token = served
    login = f"sid.{secrets.token_hex(4)}@example.com"
    okta_clean.seed({"users": [{"login": login, "sessions": [_sid()], "tokens": [{"clientId": "0oaapp1"}]}]})
    user = next(u for u in okta_clean.control("GET", "state")["users"] if u["login"] == login)
    sid, dt = user["sessions"][0]["id"], secrets.token_urlsafe(24)
    capture = har([entry(f"{okta_clean.url}/app/UserHome", headers={"cookie": f"sid={sid}; DT={dt}"})])
    path = tmp_path / "t.har"
    path.write_text(json.dumps(capture))
    env = {"KAFKA_BOOTSTRAP_SERVERS": harness.settings.bootstrap_servers,
           "ORCHESTRATOR_EXPOSURES_TOPIC": harness.settings.exposures_topic}
    with captured_logs() as logs:  # the user's reproduction: `scan-har t.har --publish`
        result = await asyncio.to_thread(CliRunner().invoke, app, ["scan-har", str(path), "--publish"], env=env)
        assert result.exit_code == 0, result.stderr
        by_sid, by_dt = ({"id": exposure_id("okta.session", value)} for value in (sid, dt))
        trails = await harness.collect(by_sid["id"], by_dt["id"])
    assert all(events_of(trail)[-1] == "run.completed" for trail in trails.values())
    assert "exposure.received" in logs.getvalue()  # the capture did see the run's log lines
    user = next(u for u in okta_clean.control("GET", "state")["users"] if u["login"] == login)
    assert all(s["revoked"] for s in user["sessions"]) and user["tokens"] == []
    received = next(r for r in trails[by_dt["id"]] if r["event"] == "exposure.received")
    assert received["target"] == f"okta.session:{fingerprint(sid)}"
    api_url = harness.orchestrator.api_url
    assert api_url is not None
    async with httpx.AsyncClient(base_url=api_url, timeout=15,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        answers = [(await http.get("/v1/exposures")).text,
                   *[(await http.get(f"/v1/exposures/{e['id']}")).text for e in (by_sid, by_dt)]]
    assert all(f"okta.session:{fingerprint(sid)}" in answer for answer in answers[1:])  # they answered
    stored = _sqlite_text(harness.settings.store.data_dir / SQLITE_FILE)
    assert fingerprint(sid) in stored
    env = {"ORCHESTRATOR_DATA_DIR": str(harness.settings.store.data_dir)}
    listed, status = await asyncio.gather(asyncio.to_thread(run_cli, "exposures", "list", "--json", env=env),
                                          asyncio.to_thread(run_cli, "status", by_dt["id"], "--json", env=env))
    assert listed.returncode == status.returncode == 0, listed.stderr + status.stderr
    assert fingerprint(sid) in listed.stdout and fingerprint(sid) in status.stdout
    for where, text in (("audit", json.dumps(trails)), ("logs", logs.getvalue()), ("store", stored),
                        ("api", "\n".join(answers)), ("cli", listed.stdout + listed.stderr + status.stdout)):
        assert sid not in text and dt not in text, where


async def _stored_end(http: httpx.AsyncClient, exposure_id: str) -> dict[str, Any]:
    """The exposure's store row once it has ended (the store is written after the terminal record)."""
    async with asyncio.timeout(10):
        while True:
            document: dict[str, Any] = (await http.get(f"/v1/exposures/{exposure_id}")).json()
            if document.get("done"):
                return document
            await asyncio.sleep(0.1)


async def test_a_failed_session_run_is_replayed_from_its_encrypted_original(served: tuple[Harness, str],
                                                                            okta_clean: Emulator) -> None:
    """The store knows only the sid's fingerprint: the replay takes the raw sid from the encrypted dead letter."""
    harness, token = served
    login = f"sidreplay.{secrets.token_hex(4)}@example.com"
    okta_clean.seed({"users": [{"login": login, "sessions": [_sid()]}]})
    sid = next(u for u in okta_clean.control("GET", "state")["users"] if u["login"] == login)["sessions"][0]["id"]
    okta_clean.control("POST", "faults", {"method": "DELETE", "path": "^/api/v1/users/[^/]+/sessions$",
                                          "status": 403, "count": 1,
                                          "body": {"errorCode": "E0000006", "errorSummary": "forbidden"}})
    event = exposure("okta.session", credential={"id": sid})
    with captured_logs() as logs:  # the failed step's log line names its parameters: the sid among them
        assert events_of((await harness.run(event))[event["id"]])[-1] == "run.failed"
    assert "step.failed" in logs.getvalue() and sid not in logs.getvalue()
    api_url = harness.orchestrator.api_url
    assert api_url is not None
    async with httpx.AsyncClient(base_url=api_url, timeout=15,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        assert (await _stored_end(http, event["id"]))["dead_letter"]
        answer = await http.post(f"/v1/exposures/{event['id']}/replay", json={"reason": "403 was transient"})
        assert answer.status_code == 202, answer.text
        trail: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            async for record in follow(harness.settings.bootstrap_servers, harness.settings.audit_topic,
                                       exposure_ids=[event["id"]]):
                trail.append(record)
                if sum(map(is_terminal, trail)) == 2:
                    break
    replayed = next(r for r in trail if r["event"] == "exposure.replayed")
    assert replayed["source"].startswith("dead letter ") and trail[-1]["event"] == "run.completed"
    assert all(s["revoked"] for s in next(u for u in okta_clean.control("GET", "state")["users"]
                                          if u["login"] == login)["sessions"])
    audit = await read_all(harness.settings.bootstrap_servers, harness.settings.audit_topic)
    assert audit and all(sid.encode() not in r.value for r in audit)
    assert sid not in _sqlite_text(harness.settings.store.data_dir / SQLITE_FILE)
