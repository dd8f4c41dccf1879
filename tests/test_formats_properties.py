"""Property: whatever bytes reach a detector-format adapter, it returns exposures or raises `FormatError`."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import FormatError, InvalidExposure
from orchestrator.events import Exposure, decode
from orchestrator.formats import FORMATS, Options, parse
from tests.test_formats import aws_key_id, github_token, slack_token

#: Every field name some adapter reads, so generated documents reach past the first shape check.
FIELDS = ["id", "credential", "kind", "secret", "owner", "specversion", "source", "type", "data", "data_base64",
          "datacontenttype", "DetectorName", "DetectorType", "Raw", "RawV2", "SecretParts", "ExtraData", "arn",
          "SourceMetadata", "Data", "Git", "file", "line", "commit", "link", "Verified", "VerificationError",
          "RuleID", "ruleID", "Secret", "File", "StartLine", "Commit", "Link", "Date", "ValidationStatus",
          "validation", "status", "attributes", "location", "startLine", "alert", "secret_type", "validity",
          "resolution", "repository", "full_name", "first_location_detected", "path", "start_line", "token", "url",
          "action", "incident", "detector", "name", "detector_group_name", "occurrences", "matches", "match",
          "filepath", "sha", "secret_revoked", "detail", "eventTypeCode", "resources", "affectedEntities",
          "entityValue", "account", "time", "findings", "Findings", "resource", "accessKeyDetails", "accessKeyId",
          "userName", "service", "additionalInfo", "sample", "value", "severity", "level", "msg", "created_at"]
PLAUSIBLE = [aws_key_id(), aws_key_id("ASIA"), github_token(), slack_token(), "aws_iam",
             "github-pat", "AWS", "Github", "1.0", "valid", "revoked", "incident_triggered", "2026-12-01T00:00:00Z",
             "AWS_RISK_CREDENTIALS_EXPOSED", "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
             "application/json", "x", "", "\x00", "\ud800"]

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
           | st.sampled_from(PLAUSIBLE) | st.integers(min_value=-(10**30), max_value=10**30))
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6),
                                                                inner, max_size=6),
    max_leaves=30,
)
NAMES = list(FORMATS)
OPTIONS = Options(jwks={"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                                  "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                  "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})


def _parses_or_refuses(name: str, data: bytes) -> None:
    try:
        batch = parse(name, data, options=OPTIONS)
    except FormatError as exc:
        assert exc.format == name and str(exc)
        return
    assert all(isinstance(e, Exposure) for e in batch.exposures)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=1024))
def test_any_bytes(name: str, data: bytes) -> None:
    """Random bytes, invalid UTF-8 included."""
    _parses_or_refuses(name, data)


def _encode(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents)
def test_any_json_built_from_the_formats_field_names(name: str, document: Any) -> None:
    """JSON documents (one, an array, or lines) made of the fields the adapters read, holding anything."""
    _parses_or_refuses(name, _encode(document))
    if isinstance(document, list):
        _parses_or_refuses(name, b"\n".join(_encode(d) for d in document))


header_names = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type", "ce_time",
                                "Content-Type", "other"])
header_values = st.none() | st.binary(max_size=40) | st.sampled_from(
    [b"1.0", b"application/json", b"application/cloudevents+json", b"text/plain", b"\xff"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=6),
       value=st.one_of(st.binary(max_size=512), documents.map(_encode)))
def test_consumer_decode_with_any_cloudevents_headers(headers: list[tuple[str, bytes | None]], value: bytes) -> None:
    """Whatever CloudEvents headers and value a record has, decode returns an exposure or `InvalidExposure`."""
    try:
        assert isinstance(decode(value, max_bytes=65536, headers=headers), Exposure)
    except InvalidExposure as exc:
        assert str(exc)


_KEY = ec.generate_private_key(ec.SECP256R1())
_JWKS = {"keys": [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(_KEY.public_key())), "kid": "k1"}]}
_SE = "https://schemas.openid.net/secevent/"
event_types = st.sampled_from([_SE + "caep/event-type/session-revoked", _SE + "risc/event-type/credential-compromise",
                               _SE + "ssf/event-type/verification"]) | st.text(max_size=20)
subject_keys = st.sampled_from(["format", "email", "sub", "iss", "id", "uri", "user", "session", "identifiers",
                                "subject", "sub_id", "event_timestamp", "reason_admin"])
subjects = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(subject_keys, inner, max_size=5), max_leaves=15)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.dictionaries(event_types, subjects, max_size=3) | subjects, extra=st.dictionaries(subject_keys,
                                                                                                  subjects, max_size=3))
def test_ssf_tokens_that_verify_but_say_anything(events: Any, extra: dict[str, Any]) -> None:
    """A correctly signed SET whose events and subjects hold anything still yields exposures or `FormatError`."""
    claims = {**extra, "iss": "https://idp", "iat": 1764576000, "jti": "j", "events": events}
    token = jwt.encode(claims, _KEY, algorithm="ES256", headers={"kid": "k1", "typ": "secevent+jwt"})
    try:
        batch = parse("ssf", token.encode(), options=Options(jwks=_JWKS))
    except FormatError as exc:
        assert exc.format == "ssf"
        return
    assert all(isinstance(e, Exposure) for e in batch.exposures)
