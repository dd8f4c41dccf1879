"""What comes in on the exposures topic: poison records, duplicates, routing outcomes, secrets kept out of sight."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orchestrator.audit_stream import follow, is_terminal
from tests.conftest import Emulator, okta_token
from tests.support import (
    Harness,
    captured_logs,
    events_of,
    exposure,
    fresh_settings,
    publish,
    read_all,
    roomy_rate_limits,
)


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module: every test uses fresh exposure ids and its own users."""
    with roomy_rate_limits(okta):
        async with Harness(fresh_settings(bootstrap, okta.url, okta.admin_token)) as running:
            yield running


@pytest.fixture
def log_stream(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """The orchestrator's own logging set up (JSON) to write into a buffer this test owns; restored after."""
    with captured_logs(level=logging.DEBUG, also=caplog.handler) as stream:
        yield stream


def _seed_users(okta: Emulator, count: int) -> list[str]:
    logins = [f"input.{secrets.token_hex(4)}@example.com" for _ in range(count)]
    okta.seed({"users": [{"login": login, "sessions": 1} for login in logins]})
    return logins


def _headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def _terminals(harness: Harness, exposure_id: str, count: int) -> list[dict[str, Any]]:
    """The trail of an id that is expected to end `count` times (a repeated id)."""
    trail: list[dict[str, Any]] = []
    ended = 0
    async with asyncio.timeout(30):
        async for record in follow(harness.settings.bootstrap_servers, harness.settings.audit_topic,
                                   exposure_ids=[exposure_id]):
            trail.append(record)
            ended += is_terminal(record)
            if ended == count:
                return trail
    return trail


async def test_poison_records_are_rejected_dead_lettered_and_do_not_block(harness: Harness,
                                                                          okta_clean: Emulator) -> None:
    """Each invalid record: one exposure.rejected with a reason, a DLQ copy with origin headers; later records run."""
    settings = harness.settings
    max_bytes = settings.max_event_bytes
    poison: dict[str, dict[str, Any] | bytes | None] = {
        "not JSON": b"{this is not json",
        "JSON array": b'[{"id": "in-an-array"}]',
        "missing credential": {"id": f"poison-{secrets.token_hex(4)}", "severity": "high"},
        "wrong types": {"id": f"poison-{secrets.token_hex(4)}",
                        "credential": {"kind": "okta.session", "owner": 42}, "dry_run": "perhaps"},
        "oversize": {"id": f"poison-{secrets.token_hex(4)}", "credential": {"kind": "okta.session", "owner": "x"},
                     "padding": "x" * (max_bytes + 1)},
        "tombstone": None,
    }
    stored = await publish(settings.bootstrap_servers, settings.exposures_topic, poison.values(), key=b"poison",
                           partition=0)
    valid = exposure("okta.session", credential={"owner": _seed_users(okta_clean, 1)[0]})
    await publish(settings.bootstrap_servers, settings.exposures_topic, [valid], partition=0)
    offsets = {name: meta.offset for name, meta in zip(poison, stored, strict=True)}
    audit_ids = {name: record["id"] if isinstance(record, dict) else f"{settings.exposures_topic}/0/{offsets[name]}"
                 for name, record in poison.items()}

    trails = await harness.collect(valid["id"], *audit_ids.values(), linger_s=1.0)

    assert events_of(trails[valid["id"]])[-1] == "run.completed"
    dead = [r for r in await read_all(settings.bootstrap_servers, settings.dlq_topic)
            if _headers(r)["source.partition"] == "0"]
    for name, record in poison.items():
        trail = trails[audit_ids[name]]
        assert events_of(trail) == ["exposure.rejected"], name
        assert trail[0]["reason"], name
        copies = [r for r in dead if _headers(r)["source.offset"] == str(offsets[name])]
        assert len(copies) == 1, name
        headers = _headers(copies[0])
        assert headers["error"] == trail[0]["reason"], name
        assert headers["source.topic"] == settings.exposures_topic, name
        if isinstance(record, dict):  # without an encryption key: the record, minus anything secret-looking
            assert json.loads(copies[0].value) == record, name
        elif record is None:
            assert copies[0].value is None, name
        elif name == "not JSON":  # its secrets cannot be located: only a description is kept
            assert json.loads(copies[0].value) == {"dropped": json.loads(copies[0].value)["dropped"],
                                                   "size": len(record)}, name
        else:
            assert json.loads(copies[0].value) == json.loads(record), name
    assert "bytes, above the" in trails[audit_ids["oversize"]][0]["reason"]
    assert "tombstone" in trails[audit_ids["tombstone"]][0]["reason"]


async def test_a_repeated_exposure_id_is_a_duplicate(harness: Harness, okta_clean: Emulator) -> None:
    """The same exposure id twice: the first runs, the second ends as exposure.duplicate."""
    event = exposure("okta.session", credential={"owner": _seed_users(okta_clean, 1)[0]})
    await harness.publish(event, event)
    trail = await _terminals(harness, event["id"], 2)
    assert [e for e in events_of(trail) if e in {"run.completed", "exposure.duplicate"}] == [
        "run.completed", "exposure.duplicate"]


async def test_an_unknown_playbook_override_is_rejected_and_dead_lettered(harness: Harness) -> None:
    """`playbook` naming no loaded playbook: exposure.rejected, and the record lands on the DLQ."""
    event = exposure("okta.session", credential={"owner": "someone@example.com"}, playbook="no-such-playbook")
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "exposure.rejected"]
    assert "no-such-playbook" in trail[-1]["reason"]
    dead = [r for r in await read_all(harness.settings.bootstrap_servers, harness.settings.dlq_topic)
            if r.key == event["id"].encode()]
    assert len(dead) == 1 and "unknown playbook" in _headers(dead[0])["error"]


async def test_an_unmatched_kind_is_reported(harness: Harness) -> None:
    """A credential kind no playbook handles ends as exposure.unmatched."""
    event = exposure("acme.widget_key", credential={"id": "wk-1"})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "exposure.unmatched"]
    assert "acme.widget_key" in trail[-1]["reason"]


async def test_a_playbook_override_routes_to_the_named_playbook(harness: Harness, okta_clean: Emulator) -> None:
    """`playbook` overrides routing: an okta.user exposure runs okta-session when told to."""
    event = exposure("okta.user", credential={"owner": _seed_users(okta_clean, 1)[0]}, playbook="okta-session",
                     actor="oncall@example.com", reason="only the sessions, please")
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert {r["playbook"] for r in trail if "playbook" in r} == {"okta-session"}
    assert [r["step"] for r in trail if r["event"] == "step.succeeded"] == ["clear-owner-sessions"]
    assert all(r["actor"] == "oncall@example.com" for r in trail)


async def test_a_canary_secret_never_appears_in_audit_dlq_or_logs(harness: Harness, okta_clean: Emulator,
                                                                 log_stream: io.StringIO,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Secrets planted in valid, invalid and failing exposures show up in no audit record, DLQ record or log."""
    settings = harness.settings
    token, plain = okta_token(), secrets.token_urlsafe(24)
    login = _seed_users(okta_clean, 1)[0]
    okta_clean.seed({"api_tokens": [{"name": "leaked", "login": login, "token": token}]})
    failing_token = okta_token()
    # Okta echoing the token back in an error summary: the message must still come out masked.
    okta_clean.control("POST", "faults", {
        "method": "DELETE", "path": "^/api/v1/api-tokens/current$", "status": 400, "count": 1,
        "body": {"errorCode": "E0000001", "errorSummary": f"Api validation failed: {failing_token}",
                 "errorCauses": [{"errorSummary": failing_token}]}})
    valid = [exposure("okta.api_token", credential={"secret": token}),
             exposure("okta.session", credential={"owner": login, "secret": plain})]
    failing = [exposure("okta.api_token", credential={"secret": failing_token}),
               exposure("okta.session", credential={"owner": "nobody@example.com", "secret": plain})]
    wrong_types = [exposure("okta.api_token", credential={"secret": token, "owner": 7}),
                   exposure("okta.api_token", credential={"secret": {"value": plain}})]
    bad_json = [f'{{"id": "x", "credential": {{"kind": "okta.api_token", "secret": "{s}"'.encode()
                for s in (token, plain)]
    # The failing token first, alone: the injected fault must hit its call, not the valid token's.
    await harness.run(failing[0])
    await harness.publish(*valid, failing[1], *wrong_types)
    stored = await publish(settings.bootstrap_servers, settings.exposures_topic, bad_json, key=b"bad", partition=1)
    bad_ids = [f"{settings.exposures_topic}/1/{meta.offset}" for meta in stored]

    trails = await harness.collect(*(e["id"] for e in valid + failing + wrong_types), *bad_ids)

    assert [events_of(trails[e["id"]])[-1] for e in valid] == ["run.completed", "run.completed"]
    assert [events_of(trails[e["id"]])[-1] for e in failing] == ["run.failed", "run.failed"]
    assert {events_of(trails[i])[-1] for i in [e["id"] for e in wrong_types] + bad_ids} == {"exposure.rejected"}
    canaries = [token, plain, failing_token]
    audit = await read_all(settings.bootstrap_servers, settings.audit_topic)
    dead = await read_all(settings.bootstrap_servers, settings.dlq_topic)
    assert len(dead) >= 4
    for record in audit + dead:
        written = repr((record.key, record.value, record.headers))
        assert not any(c in written for c in canaries), written
    captured = capsys.readouterr()
    for text in (log_stream.getvalue(), captured.out, captured.err, caplog.text):
        assert not any(c in text for c in canaries)
    assert "exposure.received" in log_stream.getvalue()  # the capture really saw the orchestrator's logs


async def test_a_mixed_batch_gets_exactly_one_terminal_record_per_exposure(harness: Harness,
                                                                           okta_clean: Emulator) -> None:
    """Fifty mixed exposures in one go: each ends exactly once, with the outcome its content calls for."""
    logins = _seed_users(okta_clean, 20)
    expected: dict[str, str] = {}
    batch: list[dict[str, Any]] = []

    def add(event: dict[str, Any], terminal: str) -> None:
        batch.append(event)
        expected[event["id"]] = terminal

    for login in logins:
        add(exposure("okta.session", credential={"owner": login}), "run.completed")
    for login in logins[:10]:
        add(exposure("okta.user", credential={"owner": login}, dry_run=True), "run.planned")
    for n in range(8):
        add(exposure("okta.session", credential={"owner": f"ghost{n}.{secrets.token_hex(3)}@example.com"}),
            "run.failed")
    for n in range(6):
        add(exposure("acme.thing", credential={"id": f"thing-{n}"}), "exposure.unmatched")
    for _ in range(6):
        add(exposure("okta.session"), "exposure.rejected")

    await harness.publish(*batch)
    trails = await harness.collect(*expected, timeout_s=60, linger_s=1.5)

    assert len(batch) == 50
    for exposure_id, terminal in expected.items():
        ends = [e for e in events_of(trails[exposure_id]) if is_terminal({"event": e})]
        assert ends == [terminal], exposure_id
