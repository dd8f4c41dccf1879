"""`orchestrator publish --format` end to end, and CloudEvents in both Kafka content modes through the consumer."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import secrets
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator import kafka
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.errors import ConfigurationError
from orchestrator.formats import Options, parse
from orchestrator.keys import deployment_fingerprint_key
from orchestrator.publish_cli import load_jwks
from orchestrator.publishing import publish_exposures
from tests.conftest import Emulator
from tests.support import Harness, events_of, fresh_settings, gzip_server, roomy_rate_limits, run_cli
from tests.test_formats import github_token, sign_set

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module; each test seeds users of its own."""
    with roomy_rate_limits(okta):
        async with Harness(fresh_settings(bootstrap, okta.url, okta.admin_token)) as running:
            yield running


def _seed_user(okta: Emulator) -> tuple[str, list[str]]:
    login = f"formats.{secrets.token_hex(4)}@example.com"
    sessions = [f"102{secrets.token_hex(8)}", f"102{secrets.token_hex(8)}"]
    okta.seed({"users": [{"login": login, "sessions": sessions}]})
    return login, sessions


def _sessions_revoked(okta: Emulator, login: str) -> list[bool]:
    users: list[dict[str, Any]] = okta.control("GET", "state")["users"]
    return [s["revoked"] for s in next(u for u in users if u["login"] == login)["sessions"]]


def _cli_env(harness: Harness, tmp_path: Path) -> dict[str, str]:
    deployment_fingerprint_key(tmp_path / "data")  # as `orchestrator run` would: `publish` never creates it
    return {"KAFKA_BOOTSTRAP_SERVERS": harness.settings.bootstrap_servers,
            "ORCHESTRATOR_EXPOSURES_TOPIC": harness.settings.exposures_topic,
            "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data")}


async def test_publish_ssf_set_clears_the_session_at_okta(harness: Harness, okta: Emulator, tmp_path: Path) -> None:
    """A verified CAEP session-revoked SET published with the CLI runs okta-session: the user's sessions end."""
    login, sessions = _seed_user(okta)
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = {"keys": [{**jwk, "kid": "k1", "alg": "ES256"}]}
    token = sign_set(key, {SESSION_REVOKED: {"subject": {
        "format": "complex", "user": {"format": "email", "email": login},
        "session": {"format": "opaque", "id": sessions[0]}}}})
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    (tmp_path / "set.jwt").write_text(token + "\n")
    batch = parse("ssf", token.encode(), options=Options(jwks=jwks))
    expected = batch.exposures[0].id

    result = await asyncio.to_thread(run_cli, "publish", "--format", "ssf", "--jwks", str(tmp_path / "jwks.json"),
                                     str(tmp_path / "set.jwt"), env=_cli_env(harness, tmp_path))

    assert result.returncode == 0, result.stderr
    assert "published 1 exposure(s)" in result.stderr
    trail = (await harness.collect(expected))[expected]
    assert events_of(trail)[-1] == "run.completed" and trail[-1]["playbook"] == "okta-session"
    assert _sessions_revoked(okta, login) == [True, True]

    # The same finding published again has the same id and content: a duplicate, not a second revocation.
    settings = harness.settings
    await publish_exposures(settings.bootstrap_servers, settings.exposures_topic, batch.exposures)
    assert await _terminal_events(harness, expected, count=2) == ["run.completed", "exposure.duplicate"]


async def _terminal_events(harness: Harness, exposure_id: str, count: int) -> list[str]:
    ended: list[str] = []
    async with asyncio.timeout(30):
        async for record in follow(harness.settings.bootstrap_servers, harness.settings.audit_topic,
                                   exposure_ids=[exposure_id]):
            if is_terminal(record):
                ended.append(record["event"])
                if len(ended) == count:
                    return ended
    return ended


@pytest.fixture(scope="module")
async def offline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CLI runs that need no broker, started together (each costs a Python start-up): a gitleaks report
    printed with --dry-run and with --redact, a TruffleHog file whose second line is broken, and our own
    events with the default format."""
    tmp_path = tmp_path_factory.mktemp("publish")
    token, other = github_token(), github_token()
    report = tmp_path / "gitleaks.json"
    report.write_text(json.dumps([{"RuleID": "github-pat", "Secret": token, "File": "a.py", "StartLine": 3}]))
    bad = tmp_path / "th.jsonl"
    bad.write_text(json.dumps({"DetectorName": "Github", "Raw": other}) + "\n{\"DetectorName\": \n")
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"id": "by-hand-1", "credential": {"kind": "okta.user", "owner": "sam@x.io"}},
                                  {"id": "by-hand-2", "credential": {"kind": "okta.usr", "owner": "sam@x.io"}}]))
    env = {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "data")}
    deployment_fingerprint_key(tmp_path / "data")  # as `orchestrator run` would: `publish` never creates it
    plain, redacted, broken, by_hand = await asyncio.gather(
        asyncio.to_thread(run_cli, "publish", "-f", "gitleaks", "--dry-run", str(report), env=env),
        asyncio.to_thread(run_cli, "publish", "-f", "gitleaks", "--redact", str(report), env=env),
        asyncio.to_thread(run_cli, "publish", "--format", "trufflehog", str(bad),
                          env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}),
        asyncio.to_thread(run_cli, "publish", str(events), "--dry-run", env=env))
    return {"token": token, "other": other, "plain": plain, "redacted": redacted, "broken": broken,
            "by_hand": by_hand}


def test_dry_run_prints_each_exposure_with_its_secret(offline_runs: dict[str, Any]) -> None:
    """--dry-run publishes nothing and prints one JSON exposure per line, the secret included."""
    plain = offline_runs["plain"]
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 1
    printed = json.loads(lines[0])
    assert printed["credential"] == {"kind": "github.token", "secret": offline_runs["token"]}
    assert printed["source"]["location"] == "a.py:3" and printed["id"].startswith("gitleaks-")
    assert "nothing published" in plain.stderr


def test_redact_prints_fingerprints_instead(offline_runs: dict[str, Any]) -> None:
    """--redact prints the secret's keyed fingerprint, never the secret, and the same id as --dry-run."""
    redacted, token = offline_runs["redacted"], offline_runs["token"]
    assert redacted.returncode == 0, redacted.stderr
    fingerprinted = json.loads(redacted.stdout)
    assert token not in redacted.stdout and token not in redacted.stderr
    assert fingerprinted["credential"]["secret_fingerprint"].startswith("hmac-sha256:")
    assert fingerprinted["id"] == json.loads(offline_runs["plain"].stdout)["id"]


def test_publish_file_reads_exposure_events_by_default(offline_runs: dict[str, Any]) -> None:
    """`publish FILE.json` takes our own events (--format exposure is the default), ids kept; a kind no playbook
    knows is said on stderr, not dropped."""
    by_hand = offline_runs["by_hand"]
    assert by_hand.returncode == 0, by_hand.stderr
    assert [json.loads(line)["id"] for line in by_hand.stdout.splitlines()] == ["by-hand-1", "by-hand-2"]
    assert "okta.usr (1)" in by_hand.stderr


def test_unparseable_input_exits_1_with_one_line_naming_it(offline_runs: dict[str, Any]) -> None:
    """A bad second line: exit 1, one line naming line 2, nothing printed or published, no secret shown."""
    broken = offline_runs["broken"]
    assert broken.returncode == 1
    assert broken.stdout == "" and broken.stderr.count("\n") == 1
    assert "trufflehog: line 2: not JSON" in broken.stderr and offline_runs["other"] not in broken.stderr


async def test_cloudevents_structured_and_binary_through_the_consumer(harness: Harness, okta: Emulator) -> None:
    """CloudEvents on the exposures topic, structured and binary, run their playbooks; a bad one is rejected."""
    (structured_login, _), (binary_login, _) = _seed_user(okta), _seed_user(okta)
    structured = {"id": f"ce-s-{secrets.token_hex(4)}", "credential": {"kind": "okta.session",
                                                                       "owner": structured_login}}
    binary = {"id": f"ce-b-{secrets.token_hex(4)}", "credential": {"kind": "okta.session", "owner": binary_login}}
    bad = {"id": f"ce-x-{secrets.token_hex(4)}", "credential": {"kind": "okta.session", "owner": binary_login}}
    ce = [("ce_specversion", b"1.0"), ("ce_id", b"evt-1"), ("ce_source", b"/tests"),
          ("ce_type", b"com.example.exposure")]
    envelope = {"specversion": "1.0", "id": "evt-2", "source": "/tests", "type": "com.example.exposure",
                "datacontenttype": "application/json", "data": structured}
    producer = kafka.make_producer(harness.settings.bootstrap_servers)
    await producer.start()
    try:
        topic = harness.settings.exposures_topic
        sent = [await producer.send(topic, json.dumps(envelope).encode(), key=structured["id"].encode(),
                                    headers=[("content-type", b"application/cloudevents+json")]),
                await producer.send(topic, json.dumps(binary).encode(), key=binary["id"].encode(),
                                    headers=[*ce, ("content-type", b"application/json")]),
                await producer.send(topic, json.dumps(bad).encode(), key=bad["id"].encode(), headers=ce[:2])]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    trails = await harness.collect(structured["id"], binary["id"], bad["id"])
    assert events_of(trails[structured["id"]])[-1] == "run.completed"
    assert events_of(trails[binary["id"]])[-1] == "run.completed"
    assert events_of(trails[bad["id"]]) == ["exposure.rejected"]
    assert "lacks required attribute" in trails[bad["id"]][0]["reason"]
    assert _sessions_revoked(okta, structured_login) == [True, True]
    assert _sessions_revoked(okta, binary_login) == [True, True]


def test_jwks_is_read_from_a_file_or_a_url(tmp_path: Path) -> None:
    """--jwks takes a file or an http(s) URL; something that is not a key set is one clear error."""
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "AA", "y": "AA"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    (tmp_path / "not.json").write_text("[1, 2]")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert load_jwks(str(tmp_path / "jwks.json")) == jwks == load_jwks(f"{url}/jwks.json")
        with pytest.raises(ConfigurationError, match="not a JSON Web Key Set"):
            load_jwks(f"{url}/not.json")
        with pytest.raises(ConfigurationError, match="cannot fetch it"):
            load_jwks(f"{url}/missing.json")
    finally:
        server.shutdown()
        server.server_close()


def test_a_gzip_bomb_given_as_jwks_is_refused_without_inflating_it() -> None:
    """`--jwks URL` answering 32 MB of gzip-encoded zeros is one line past 1 MiB, never inflated whole."""
    with gzip_server(b"\0" * (32 * 1024 * 1024)) as url:
        tracemalloc.start()
        try:
            with pytest.raises(ConfigurationError, match="above the 1 MiB"):
                load_jwks(url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
