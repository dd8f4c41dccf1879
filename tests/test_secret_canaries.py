"""Canary secrets through the real broker and the Okta emulator: never on the audit or dead-letter topic.

Canaries of every awkward shape (an Okta-shaped token, a non-ASCII password, the JSON fragment
`"event":"run.completed"`, the word `complete`) run as valid, failing (Okta echoing them back, encoded and
cut) and invalid exposures. Every audit record still parses with its event intact, and the encrypted
dead letter comes back whole through `orchestrator dlq decrypt`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiokafka import AIOKafkaProducer

from orchestrator.audit import AuditEvent
from orchestrator.kafka import KafkaDeadLetters
from orchestrator.pipeline import Origin
from orchestrator.redaction import IDENTIFIER_FIELDS
from tests.conftest import Emulator, okta_token
from tests.support import (
    Harness,
    events_of,
    exposure,
    fresh_settings,
    publish,
    read_all,
    roomy_rate_limits,
    run_cli,
)

FRAGMENT, WORD = '"event":"run.completed"', "complete"
_SESSIONS = "^/api/v1/users/[^/]+/sessions$"


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module, with no encryption key: dead letters have their secrets dropped."""
    with roomy_rate_limits(okta):
        async with Harness(fresh_settings(bootstrap, okta.url, okta.admin_token)) as running:
            yield running


def _users(okta: Emulator, count: int) -> list[str]:
    logins = [f"canary.{secrets.token_hex(4)}@example.com" for _ in range(count)]
    okta.seed({"users": [{"login": login, "sessions": 1} for login in logins]})
    return logins


def _echo(okta: Emulator, path: str, method: str, summary: str) -> None:
    """Okta answers the next matching call 400 with an error summary echoing whatever it was sent."""
    okta.control("POST", "faults", {"method": method, "path": path, "status": 400, "count": 1,
                                    "body": {"errorCode": "E0000001", "errorSummary": summary,
                                             "errorCauses": [{"errorSummary": summary}]}})


def _echoes(secret: str) -> str:
    """The secret as a careless provider echoes it: URL-encoded, base64 inside JSON, and cut at the end."""
    blob = base64.b64encode(json.dumps({"token": secret}).encode()).decode()
    return f"rejected {quote(secret, safe='')} ctx={blob} last={secret[:12]}"


def _free_text(record: dict[str, Any]) -> str:
    """A record's fields other than identifiers, as text."""
    return json.dumps({k: v for k, v in record.items() if k not in IDENTIFIER_FIELDS}, ensure_ascii=False)


async def test_canaries_never_reach_the_audit_or_dead_letter_topic(harness: Harness, okta_clean: Emulator) -> None:
    """ASCII, non-ASCII, JSON-fragment and 8-letter-word secrets: zero hits, every audit record parses."""
    settings = harness.settings
    ascii_token, non_ascii = okta_token(), "pässwörd-ünïcödé-" + secrets.token_hex(8)
    owners = _users(okta_clean, 14)
    okta_clean.seed({"api_tokens": [{"name": "leaked", "login": owners[0], "token": ascii_token}]})

    # Failing runs, one at a time so each echo fault hits its own exposure's call.
    _echo(okta_clean, "^/api/v1/api-tokens/current$", "DELETE", _echoes(ascii_token))
    echo_ascii = exposure("okta.api_token", credential={"secret": ascii_token})
    _echo(okta_clean, _SESSIONS, "DELETE", _echoes(non_ascii))
    echo_non_ascii = exposure("okta.session", credential={"owner": owners[1], "secret": non_ascii})
    for failing in (echo_ascii, echo_non_ascii):
        trail = (await harness.run(failing))[failing["id"]]
        assert events_of(trail)[-1] == "run.failed"
        [error] = [r["error"] for r in trail if r["event"] == "step.failed"]
        assert error.startswith("permanent: okta HTTP 400 E0000001 rejected [REDACTED hmac-sha256:"), error
        assert error.count("[REDACTED hmac-sha256:") == 3, error  # URL-encoded, base64 in JSON, cut prefix

    # Concurrent runs: two carry secrets that occur inside other records' event names.
    fragment_run = exposure("okta.session", credential={"owner": owners[2], "secret": FRAGMENT})
    word_run = exposure("okta.session", credential={"owner": owners[3], "secret": WORD})
    others = [exposure("okta.session", credential={"owner": owner}) for owner in owners[4:]]
    concurrent = [fragment_run, word_run, *others]

    # Invalid records carrying them where the old masking never looked.
    invalid: list[bytes] = [
        json.dumps({"id": "bad-1", "credential": {"kind": "okta.api_token", "secret": ascii_token,
                                                  "owner": 7}}).encode(),
        json.dumps({"id": "bad-2", "credential": {"kind": "okta.session", "secret": non_ascii, "owner": 7},
                    "source": {"location": f"https://ci.example/log?t={ascii_token}"}}).encode(),
        json.dumps({"id": "bad-3", "credential": ["okta.api_token", ascii_token, non_ascii, FRAGMENT]}).encode(),
        ('{"id": "bad-4", "credential": {"kind": "x", "owner": 7, "s\\u0065cret": "' + WORD + '"}}').encode(),
        json.dumps({"id": "bad-5", "credential": {"kind": "okta.api_token", "secret": ascii_token, "owner": 7}},
                   ensure_ascii=False).encode("utf-16"),
        f'{{"id": "bad-6", "credential": {{"secret": "{non_ascii}{FRAGMENT}'.encode(),
    ]
    await harness.publish(*concurrent)
    stored = await publish(settings.bootstrap_servers, settings.exposures_topic, invalid, key=b"bad", partition=2)
    invalid_ids = [f"{settings.exposures_topic}/2/{meta.offset}" for meta in stored] + ["bad-1", "bad-2", "bad-3",
                                                                                         "bad-4"]
    trails = await harness.collect(*(e["id"] for e in concurrent))
    assert {events_of(trails[e["id"]])[-1] for e in concurrent} == {"run.completed"}
    await asyncio.sleep(0)

    audit = await read_all(settings.bootstrap_servers, settings.audit_topic)
    dead = await read_all(settings.bootstrap_servers, settings.dlq_topic)
    assert len(dead) == len(invalid)
    assert any(json.loads(r.value).get("exposure_id") in invalid_ids for r in audit)
    whole = [ascii_token, non_ascii, json.dumps(non_ascii)[1:-1], quote(non_ascii, safe=""), ascii_token[:12]]
    for record in audit:
        document = json.loads(record.value)  # every audit record parses
        assert document["event"] in {e.value for e in AuditEvent}
        written = repr((record.key, record.value.decode(), record.headers))
        assert not any(c in written for c in whole), written
        assert FRAGMENT not in _free_text(document) and WORD not in _free_text(document), document
    for record in dead:
        written = repr((record.key, record.value, record.headers)) + (record.value or b"").decode(errors="replace")
        assert not any(c in written for c in [*whole, FRAGMENT, WORD, json.dumps(FRAGMENT)[1:-1]]), written
        assert dict(record.headers)["redaction"] in {b"secrets-dropped", b"body-dropped"}


async def test_an_encrypted_dead_letter_round_trips_through_dlq_decrypt(bootstrap: str, okta: Emulator,
                                                                       tmp_path: Path) -> None:
    """With ORCHESTRATOR_ENCRYPTION_KEY the DLQ holds ciphertext; `dlq list|show|decrypt` read it back."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    secret = okta_token()
    original = json.dumps({"id": "enc-1", "credential": {"kind": "okta.api_token", "secret": secret, "owner": 7}},
                          ensure_ascii=False).encode("utf-16")
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, encryption_key=key)
    async with Harness(settings) as harness:
        [stored] = await publish(bootstrap, settings.exposures_topic, [original], partition=0)
        await harness.collect(f"{settings.exposures_topic}/0/{stored.offset}")  # UTF-16: not UTF-8, no id read
    [dead] = await read_all(bootstrap, settings.dlq_topic)
    assert secret.encode("utf-16-le") not in dead.value and secret.encode() not in dead.value
    assert dict(dead.headers)["encryption"] == b"aes-256-gcm"
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ORCHESTRATOR_DLQ_TOPIC": settings.dlq_topic}
    name = f"{dead.partition}:{dead.offset}"

    listed = await asyncio.to_thread(run_cli, "dlq", "list", "--json", env=env)
    [summary] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert summary["dead_letter"] == name and summary["encrypted"] is True and summary["size"] == len(original)
    shown = await asyncio.to_thread(run_cli, "dlq", "show", name, env=env)
    assert shown.returncode == 0 and "encryption: aes-256-gcm" in shown.stdout and secret not in shown.stdout
    target = tmp_path / "original.bin"
    decrypted = await asyncio.to_thread(run_cli, "dlq", "decrypt", name, "--output", str(target),
                                        env={**env, "ORCHESTRATOR_ENCRYPTION_KEY": key})
    assert decrypted.returncode == 0, decrypted.stderr
    assert target.read_bytes() == original and target.stat().st_mode & 0o777 == 0o600
    wrong = await asyncio.to_thread(run_cli, "dlq", "decrypt", name,
                                    env={**env, "ORCHESTRATOR_ENCRYPTION_KEY": secrets.token_hex(32)})
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "encrypted with key" in wrong.stderr
    missing = await asyncio.to_thread(run_cli, "dlq", "show", "0:999", env=env)
    assert missing.returncode == 1 and "no dead letter 0:999" in missing.stderr and "Traceback" not in missing.stderr


async def test_a_record_above_the_producer_limit_is_dead_lettered_in_chunks(harness: Harness) -> None:
    """A 1.5 MB record (its producer raised its own limit): rejected, dead-lettered in chunks, listed as one."""
    settings = harness.settings
    secret = okta_token()
    big_id = f"big-{secrets.token_hex(4)}"
    big = json.dumps({"id": big_id, "credential": {"kind": "okta.api_token", "secret": secret},
                      "padding": "x" * 1_500_000}).encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        stored = await (await producer.send(settings.exposures_topic, big, partition=1))
    finally:
        await producer.stop()
    trail = (await harness.collect(big_id))[big_id]
    assert events_of(trail) == ["exposure.rejected"] and "above the" in trail[0]["reason"]
    chunks = [r for r in await read_all(settings.bootstrap_servers, settings.dlq_topic)
              if dict(r.headers).get("source.offset") == str(stored.offset).encode()
              and dict(r.headers)["source.partition"] == b"1"]
    assert len(chunks) == 2 and all(secret.encode() not in r.value for r in chunks)
    assert {dict(r.headers)["chunk.count"] for r in chunks} == {b"2"}
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "ORCHESTRATOR_DLQ_TOPIC": settings.dlq_topic}
    listed = await asyncio.to_thread(run_cli, "dlq", "list", "--json", "--limit", "100", env=env)
    [summary] = [s for s in map(json.loads, listed.stdout.splitlines()) if s["source"].endswith(f"/1/{stored.offset}")]
    assert summary["size"] == len(big) and summary["problem"] is None and summary["redaction"] == "secrets-dropped"
    assert len({r.partition for r in chunks}) == 1  # no key: still one partition, so `show` finds every chunk
    shown = await asyncio.to_thread(run_cli, "dlq", "show", summary["dead_letter"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "redaction: secrets-dropped" in shown.stdout and '"secret":"[DROPPED]"' in shown.stdout
    assert secret not in shown.stdout and "chunk." not in shown.stdout


async def test_a_dead_letter_the_producer_refuses_is_kept_as_headers(bootstrap: str) -> None:
    """A producer whose limit is below even one chunk: the send does not raise; a header-only letter says why."""
    topic = f"test.{secrets.token_hex(4)}.dlq"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2000)
    await producer.start()
    try:
        sink = KafkaDeadLetters(producer, topic)
        stored = await sink.send(b'{"padding": "' + b"x" * 10_000 + b'"}', reason="too big",
                                 origin=Origin("exposed", 0, 42, key=b"k"))
        await stored
    finally:
        await producer.stop()
    [letter] = await read_all(bootstrap, topic)
    headers = dict(letter.headers)
    assert letter.value is None and headers["truncated"] == b"true" and headers["original.size"] == b"10015"
    assert headers["error"] == b"too big" and headers["source.offset"] == b"42"
