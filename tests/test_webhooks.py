"""`POST /v1/ingest/{format}`: signed webhooks from GitHub (HMAC and partner ECDSA), GitGuardian (HMAC with a
timestamp) and SSF push delivery (RFC 8935), each good, bad, missing and replayed, against the real broker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import kafka
from orchestrator.api import ApiServices, create_app
from orchestrator.errors import ConfigurationError
from orchestrator.metrics import Metrics
from orchestrator.settings import IngestSettings, Settings
from orchestrator.webhooks import signatures
from orchestrator.webhooks.keys import CachedKeys, KeysUnavailable
from tests.har_canaries import aws_key_id, aws_secret, github_token, okta_session_id
from tests.support import gzip_server, read_all

CAEP_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


@dataclass(frozen=True)
class Ingest:
    """A client of the API app with every webhook configured, the keys it trusts, and its topic."""

    client: httpx.AsyncClient
    bootstrap: str
    topic: str
    github_secret: str
    gitguardian_secret: str
    partner_key: ec.EllipticCurvePrivateKey
    ssf_key: ec.EllipticCurvePrivateKey

    async def published(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in await read_all(self.bootstrap, self.topic, idle_timeout_s=0.5)]


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
async def ingest(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ingest]:
    """The orchestrator's HTTP app (no API tokens at all) over a real producer, its own topic per module."""
    directory = tmp_path_factory.mktemp("webhooks")
    partner_key, ssf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (directory / "partner.json").write_text(json.dumps({"public_keys": [
        {"key_identifier": "gh-key-1", "key": _pem(partner_key), "is_current": True}]}))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ssf_key.public_key()))
    (directory / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ssf-1", "alg": "ES256"}]}))
    github_secret, gitguardian_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = IngestSettings(github_webhook_secret=github_secret, gitguardian_webhook_secret=gitguardian_secret,
                            github_partner_keys=str(directory / "partner.json"), ssf_jwks=str(directory / "jwks.json"),
                            ssf_audience="https://orchestrator.example.com", webhook_max_age_s=300)
    settings = Settings(bootstrap_servers=bootstrap, exposures_topic=f"test.ingest.{uuid.uuid4().hex[:8]}",
                        ingest=config)
    producer = kafka.make_producer(bootstrap)
    await kafka.start(producer, bootstrap)
    app = create_app(ApiServices(settings, producer, consumer=None, playbooks=[], metrics=Metrics(),  # type: ignore[arg-type]
                                 tokens=None))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orchestrator") as client:
            yield Ingest(client, bootstrap, settings.exposures_topic, github_secret, gitguardian_secret,
                         partner_key, ssf_key)
    finally:
        await producer.stop()


def _alert(token: str) -> bytes:
    return json.dumps({"action": "created", "repository": {"full_name": "acme/app"},
                       "alert": {"number": 7, "secret_type": "github_personal_access_token", "secret": token,
                                 "validity": "active", "html_url": "https://github.com/acme/app/security/7"}}).encode()


def _github_headers(body: bytes, secret: str, *, delivery: str | None = None) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "X-GitHub-Event": "secret_scanning_alert",
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "Content-Type": "application/json"}


def _gitguardian_headers(body: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = "sha256=" + hmac.new((stamp + secret).encode(), body, hashlib.sha256).hexdigest()
    return {"Gitguardian-Signature": signature, "Timestamp": stamp, "Content-Type": "application/json"}


def _incident(key_id: str, key_secret: str) -> bytes:
    return json.dumps({"action": "incident_triggered", "incident": {
        "id": secrets.randbelow(10**6), "date": "2026-12-01T09:00:00Z", "validity": "valid",
        "detector": {"name": "aws_iam", "display_name": "AWS Keys", "detector_group_name": "aws_iam"},
        "occurrences": [{"sha": "0ff1ce", "filepath": "main.tf", "source": {"full_name": "acme/infra"},
                         "matches": [{"name": "client_id", "match": key_id},
                                     {"name": "client_secret", "match": key_secret}]}]}}).encode()


def _partner_headers(body: bytes, key: ec.EllipticCurvePrivateKey, key_id: str = "gh-key-1") -> dict[str, str]:
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    return {"Github-Public-Key-Identifier": key_id, "Github-Public-Key-Signature": signature,
            "Content-Type": "application/json"}


def _set(key: ec.EllipticCurvePrivateKey, session_id: str, *, kid: str = "ssf-1", jti: str | None = None) -> bytes:
    claims = {"iss": "https://idp.example.com", "aud": "https://orchestrator.example.com", "iat": int(time.time()),
              "jti": jti or secrets.token_hex(8), "events": {CAEP_REVOKED: {"subject": {
                  "format": "complex", "user": {"format": "email", "email": "sam@example.com"},
                  "session": {"format": "opaque", "id": session_id}}}}}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "secevent+jwt"}).encode()


def _secrets_of(records: list[dict[str, Any]]) -> list[str]:
    return [r["credential"].get("secret") or r["credential"].get("id") for r in records]


async def test_github_webhook_with_a_good_signature_is_published_without_any_bearer_token(ingest: Ingest) -> None:
    """A secret_scanning_alert signed with the configured secret: 202, its exposure on the topic."""
    token = github_token()
    body = _alert(token)
    response = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body,
                                        headers=_github_headers(body, ingest.github_secret))
    assert response.status_code == 202 and response.json()["published"] == 1
    assert token in _secrets_of(await ingest.published())
    assert token not in response.text


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "sha256="])
async def test_github_webhook_with_a_bad_or_missing_signature_is_refused(ingest: Ingest,
                                                                         signature: str | None) -> None:
    """A missing, wrong or malformed X-Hub-Signature-256 (or one under another secret): 401, nothing published."""
    token = github_token()
    body = _alert(token)
    headers = _github_headers(body, "another secret")
    headers.pop("X-Hub-Signature-256")
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=headers)
    assert response.status_code == 401 and token not in response.text
    assert token not in _secrets_of(await ingest.published())


async def test_github_webhook_replayed_is_refused(ingest: Ingest) -> None:
    """The same delivery (same X-GitHub-Delivery) sent again: 401 the second time, one exposure published."""
    token = github_token()
    body = _alert(token)
    headers = _github_headers(body, ingest.github_secret)
    first = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=headers)
    second = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=headers)
    assert (first.status_code, second.status_code) == (202, 401) and "replayed" in second.json()["detail"]
    assert _secrets_of(await ingest.published()).count(token) == 1


async def test_github_ping_is_acknowledged_and_publishes_nothing(ingest: Ingest) -> None:
    """Events other than secret_scanning_alert (GitHub's ping) are accepted, signed, and ignored."""
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    headers = {**_github_headers(body, ingest.github_secret), "X-GitHub-Event": "ping"}
    response = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=headers)
    assert response.status_code == 202 and response.json()["published"] == 0


async def test_github_partner_delivery_verified_by_ecdsa(ingest: Ingest) -> None:
    """Partner payload signed by GitHub's key: 202; other key, unknown key id, other body or replay: 401."""
    token, forged = github_token(), github_token()
    body = json.dumps([{"token": token, "type": "github_oauth_access_token", "url": "https://gist.github.com/1",
                        "source": "gist"}]).encode()
    signed = _partner_headers(body, ingest.partner_key)
    good = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=signed)
    assert good.status_code == 202
    forged_body = body.replace(token.encode(), forged.encode())
    wrong_key = await ingest.client.post("/v1/ingest/github-secret-scanning", content=forged_body,
                                         headers=_partner_headers(forged_body, ec.generate_private_key(ec.SECP256R1())))
    unknown = await ingest.client.post("/v1/ingest/github-secret-scanning", content=forged_body,
                                       headers=_partner_headers(forged_body, ingest.partner_key, "gh-key-9"))
    tampered = await ingest.client.post("/v1/ingest/github-secret-scanning", content=forged_body,
                                        headers=_partner_headers(body, ingest.partner_key))
    replayed = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=signed)
    assert [r.status_code for r in (wrong_key, unknown, tampered, replayed)] == [401, 401, 401, 401]
    published = _secrets_of(await ingest.published())
    assert published.count(token) == 1 and forged not in published


async def test_gitguardian_signature_timestamp_and_replay(ingest: Ingest) -> None:
    """GitGuardian: a good signature → 202; stale timestamp, wrong token or a replay → 401, nothing published."""
    key_id, key_secret = aws_key_id(), aws_secret()
    body = _incident(key_id, key_secret)
    headers = _gitguardian_headers(body, ingest.gitguardian_secret)
    good = await ingest.client.post("/v1/ingest/gitguardian", content=body, headers=headers)
    replay = await ingest.client.post("/v1/ingest/gitguardian", content=body, headers=headers)
    other_id, other_secret = aws_key_id(), aws_secret()
    other = _incident(other_id, other_secret)
    stale = await ingest.client.post("/v1/ingest/gitguardian", content=other, headers=_gitguardian_headers(
        other, ingest.gitguardian_secret, timestamp=int(time.time()) - 3600))
    wrong = await ingest.client.post("/v1/ingest/gitguardian", content=other,
                                     headers=_gitguardian_headers(other, "not the token"))
    missing = await ingest.client.post("/v1/ingest/gitguardian", content=other)
    assert good.status_code == 202
    assert [r.status_code for r in (replay, stale, wrong, missing)] == [401, 401, 401, 401]
    assert "stale" in stale.json()["detail"]
    published = _secrets_of(await ingest.published())
    assert published.count(key_secret) == 1 and other_secret not in published


async def test_ssf_push_delivery_rfc_8935(ingest: Ingest) -> None:
    """SSF push: a verified SET → 202 and its exposure; bad media type, kid, signature or a replay → RFC 8935 400."""
    session_id, other_session = okta_session_id(), okta_session_id()
    media = {"Content-Type": "application/secevent+jwt"}
    body = _set(ingest.ssf_key, session_id)
    good = await ingest.client.post("/v1/ingest/ssf", content=body, headers=media)
    assert good.status_code == 202 and good.content == b""
    replay = await ingest.client.post("/v1/ingest/ssf", content=body, headers=media)
    attempts = {
        "invalid_request": (_set(ingest.ssf_key, other_session), {"Content-Type": "application/json"}),
        "invalid_key": (_set(ingest.ssf_key, other_session, kid="ssf-9"), media),
        "authentication_failed": (_set(ec.generate_private_key(ec.SECP256R1()), other_session), media),
    }
    for code, (content, headers) in attempts.items():
        response = await ingest.client.post("/v1/ingest/ssf", content=content, headers=headers)
        assert (response.status_code, response.json()["err"]) == (400, code)
    garbage = await ingest.client.post("/v1/ingest/ssf", content=b"not a jws", headers=media)
    assert (garbage.status_code, garbage.json()["err"]) == (400, "invalid_request")
    assert (replay.status_code, replay.json()["err"]) == (400, "invalid_request")
    published = [r for r in await ingest.published() if r["credential"]["kind"] == "okta.session"]
    assert [r["credential"]["id"] for r in published] == [session_id]


async def test_unknown_or_unsigned_formats_have_no_webhook(ingest: Ingest) -> None:
    """Formats without a signature scheme (trufflehog, ...) are not open to unauthenticated posts: 404."""
    response = await ingest.client.post("/v1/ingest/trufflehog", content=b"{}")
    assert response.status_code == 404


async def test_partner_keys_are_refreshed_on_an_unknown_key_id(tmp_path: Path) -> None:
    """An unknown key id fetches the keys again (GitHub rotated them), but not more than once per interval."""
    now = [0.0]
    path = tmp_path / "keys.json"
    first, rotated = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    path.write_text(json.dumps({"public_keys": [{"key_identifier": "a", "key": _pem(first)}]}))
    keys = CachedKeys(str(path), signatures.partner_keys, ttl_s=3600, min_refresh_s=30, clock=lambda: now[0])
    assert set(await keys.get()) == {"a"}
    path.write_text(json.dumps({"public_keys": [{"key_identifier": "b", "key": _pem(rotated)}]}))
    now[0] = 10
    assert set(await keys.get(refresh=True)) == {"a"}  # fetched 10 s ago: not again yet
    now[0] = 31
    assert set(await keys.get(refresh=True)) == {"b"}


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=256), header=st.none() | st.text(max_size=80), stamp=st.none() | st.text(max_size=12),
       key_id=st.none() | st.text(max_size=20), signature=st.none() | st.text(max_size=120))
def test_signature_checks_only_ever_reject(body: bytes, header: str | None, stamp: str | None,
                                           key_id: str | None, signature: str | None) -> None:
    """Whatever the headers and body, each verifier accepts or raises Rejected; nothing else escapes."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    keys = {"k": key, **({key_id: key} if key_id else {})}
    checks = [lambda: signatures.github_hmac(body, header, "s3cret"),
              lambda: signatures.gitguardian_hmac(body, header, stamp, "s3cret", now=time.time(), max_age_s=300),
              lambda: signatures.github_partner(body, key_id, signature, keys)]
    for check in checks:
        with pytest.raises(signatures.Rejected):
            check()


def test_ingest_settings_come_from_the_documented_variables() -> None:
    """The webhook secrets, keys and limits are read from their ORCHESTRATOR_* variables; secrets not in repr."""
    secret = secrets.token_urlsafe(16)
    config = IngestSettings.from_env({
        "ORCHESTRATOR_GITHUB_WEBHOOK_SECRET": secret, "ORCHESTRATOR_GITHUB_PARTNER_KEYS": "keys.json",
        "ORCHESTRATOR_GITGUARDIAN_WEBHOOK_SECRET": secret + "g", "ORCHESTRATOR_SSF_JWKS": "https://idp/jwks",
        "ORCHESTRATOR_SSF_ISSUER": "https://idp", "ORCHESTRATOR_SSF_AUDIENCE": "https://me",
        "ORCHESTRATOR_WEBHOOK_MAX_AGE_S": "60", "ORCHESTRATOR_HAR_MAX_BYTES": "1000"})
    assert config == IngestSettings(secret, "keys.json", secret + "g", "https://idp/jwks", "https://idp", "https://me",
                                    webhook_max_age_s=60, har_max_bytes=1000)
    assert secret not in repr(config)


_ROUTE_HEADERS = st.dictionaries(
    st.sampled_from(["X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery", "Github-Public-Key-Identifier",
                     "Github-Public-Key-Signature", "Gitguardian-Signature", "Timestamp", "Content-Type"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60), max_size=5)


@settings(max_examples=60, deadline=None)
@given(route=st.sampled_from(["github-secret-scanning", "gitguardian", "ssf", "trufflehog"]),
       headers=_ROUTE_HEADERS, body=st.binary(max_size=300))
def test_any_unsigned_delivery_is_refused_never_an_error(route: str, headers: dict[str, str], body: bytes,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """Whatever headers and body arrive unsigned, the route answers 400, 401 or 404, never 5xx, publishes nothing."""
    directory = tmp_path_factory.getbasetemp()
    key = ec.generate_private_key(ec.SECP256R1())
    (directory / "any-partner.json").write_text(json.dumps({"public_keys": [
        {"key_identifier": "gh-key-1", "key": _pem(key)}]}))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (directory / "any-jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ssf-1"}]}))
    config = IngestSettings(github_webhook_secret="s3cret-github", gitguardian_webhook_secret="s3cret-gg",
                            github_partner_keys=str(directory / "any-partner.json"),
                            ssf_jwks=str(directory / "any-jwks.json"))
    # No producer: an unsigned delivery must never get as far as publishing.
    app = create_app(ApiServices(Settings(bootstrap_servers="unused:9092", ingest=config), None,  # type: ignore[arg-type]
                                 consumer=None, playbooks=[], metrics=Metrics(), tokens=None))  # type: ignore[arg-type]

    async def post() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as client:
            return (await client.post(f"/v1/ingest/{route}", content=body, headers=headers)).status_code

    assert asyncio.run(post()) in (400, 401, 404)


# Latin-1 is how the HTTP server decodes header bytes: any of them can reach a verifier.
_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@pytest.mark.parametrize("signature", ["sha256=\u00e9", "sha256=" + "\u00ff" * 64, "sha256=0\u00a0"])
def test_a_non_ascii_hmac_signature_is_rejected_not_an_error(signature: str) -> None:
    """A signature header holding non-ASCII text (a latin-1 byte) is Rejected, not a TypeError (HTTP 500)."""
    with pytest.raises(signatures.Rejected):
        signatures.github_hmac(b"{}", signature, "s3cret")
    with pytest.raises(signatures.Rejected):
        signatures.gitguardian_hmac(b"{}", signature, str(int(time.time())), "s3cret", now=time.time(),
                                    max_age_s=300)


@settings(max_examples=80, deadline=None)
@given(given_hex=_HEADER_TEXT)
def test_any_sha256_signature_text_is_accepted_or_rejected(given_hex: str) -> None:
    """Whatever follows `sha256=`, the HMAC check rejects it or (for the right digest) accepts; nothing else."""
    try:
        signatures.github_hmac(b"{}", "sha256=" + given_hex, "s3cret")
    except signatures.Rejected:
        pass


@pytest.mark.parametrize("stamp", ["\u00b2", "\u0661\u0662", "9" * 400, "9" * 5000, "-1", "+1", "1e9"])
def test_a_malformed_gitguardian_timestamp_is_rejected_not_an_error(stamp: str) -> None:
    """Unicode digits, a number beyond a float or beyond int's digit limit in `Timestamp`: Rejected, not a 500."""
    with pytest.raises(signatures.Rejected):
        signatures.gitguardian_hmac(b"{}", "sha256=" + "0" * 64, stamp, "s3cret", now=time.time(), max_age_s=300)


@settings(max_examples=80, deadline=None)
@given(stamp=st.text(alphabet=st.characters(categories=["Nd", "No"]) | st.sampled_from("0123456789 "),
                     min_size=1, max_size=5000))
def test_any_digit_like_timestamp_is_rejected(stamp: str) -> None:
    """Whatever digits (any script, any length) `Timestamp` holds, a wrong signature is Rejected, nothing else."""
    with pytest.raises(signatures.Rejected):
        signatures.gitguardian_hmac(b"{}", "sha256=" + "0" * 64, stamp, "s3cret", now=time.time(), max_age_s=300)


async def test_a_gitguardian_delivery_replayed_with_its_signature_respelled_is_refused(ingest: Ingest) -> None:
    """The same signed delivery again with its signature in upper case, `SHA256=` or a space: a replay, 401."""
    key_id, key_secret = aws_key_id(), aws_secret()
    body = _incident(key_id, key_secret)
    headers = _gitguardian_headers(body, ingest.gitguardian_secret)
    digest = headers["Gitguardian-Signature"].removeprefix("sha256=")
    first = await ingest.client.post("/v1/ingest/gitguardian", content=body, headers=headers)
    assert first.status_code == 202
    for respelled in ("sha256=" + digest.upper(), "SHA256=" + digest, "sha256= " + digest):
        again = await ingest.client.post("/v1/ingest/gitguardian", content=body,
                                         headers={**headers, "Gitguardian-Signature": respelled})
        assert again.status_code == 401 and "replayed" in again.json()["detail"]
    assert _secrets_of(await ingest.published()).count(key_secret) == 1


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


async def test_a_partner_delivery_replayed_with_its_signature_malleated_is_refused(ingest: Ingest) -> None:
    """ECDSA's (r, n - s) twin of a captured partner signature verifies too: the same body again is a replay."""
    token = github_token()
    body = json.dumps([{"token": token, "type": "github_personal_access_token", "url": "https://gist.github.com/2",
                        "source": "gist"}]).encode()
    signed = _partner_headers(body, ingest.partner_key)
    r, s = decode_dss_signature(base64.b64decode(signed["Github-Public-Key-Signature"]))
    twin = base64.b64encode(encode_dss_signature(r, _P256_ORDER - s)).decode()
    first = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=signed)
    again = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body,
                                     headers={**signed, "Github-Public-Key-Signature": twin})
    assert (first.status_code, again.status_code) == (202, 401) and "replayed" in again.json()["detail"]
    assert _secrets_of(await ingest.published()).count(token) == 1


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_a_webhook_max_age_of_nan_is_refused(value: str) -> None:
    """`ORCHESTRATOR_WEBHOOK_MAX_AGE_S=nan` is not a positive number: with it, no Timestamp would ever be stale."""
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_WEBHOOK_MAX_AGE_S"):
        IngestSettings.from_env({"ORCHESTRATOR_WEBHOOK_MAX_AGE_S": value})


async def test_a_gzip_bomb_for_keys_is_refused_without_inflating_it() -> None:
    """A key source answering 32 MB of gzip-encoded zeros (32 kB on the wire) is refused once past 1 MiB of
    content, inflated in bounded steps, never whole into memory; a gzip-encoded key list still loads."""
    with gzip_server(b"\0" * (32 * 1024 * 1024)) as url:
        tracemalloc.start()
        try:
            with pytest.raises(KeysUnavailable, match="above"):
                await CachedKeys(url, lambda document: document, ttl_s=60).get()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    with gzip_server(b'{"keys": []}') as url:
        assert await CachedKeys(url, lambda document: document, ttl_s=60).get() == {"keys": []}


async def test_a_github_delivery_replayed_under_a_new_delivery_id_is_refused(ingest: Ingest) -> None:
    """X-GitHub-Delivery is not signed: a captured delivery sent again with another id (or its signature in
    upper case) is still a replay, 401, one exposure published."""
    token = github_token()
    body = _alert(token)
    headers = _github_headers(body, ingest.github_secret)
    first = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body, headers=headers)
    assert first.status_code == 202
    for changed in ({"X-GitHub-Delivery": str(uuid.uuid4())},
                    {"X-GitHub-Delivery": "", "X-Hub-Signature-256": headers["X-Hub-Signature-256"].upper()}):
        again = await ingest.client.post("/v1/ingest/github-secret-scanning", content=body,
                                         headers={**headers, **changed})
        assert again.status_code == 401 and "replayed" in again.json()["detail"]
    assert _secrets_of(await ingest.published()).count(token) == 1
