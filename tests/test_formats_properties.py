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


def _shape(required: dict[str, Any], optional: dict[str, Any] | None = None) -> Any:
    return st.fixed_dictionaries(required, optional=optional or {})


_v = documents
_key_ids = st.sampled_from(PLAUSIBLE[:2]) | _v
#: Each format's own shape, every field holding anything: reaches the code past the first shape checks.
SHAPED = {
    "trufflehog": _shape({"DetectorName": st.sampled_from(["AWS", "Github", "GCP", "Okta", "AWSSessionKey"]) | _v}, {
        "Raw": _key_ids, "RawV2": _v, "Verified": _v, "VerificationError": _v,
        "ExtraData": _shape({}, {"arn": _v, "username": _v, "private_key_id": _v, "client_email": _v}) | _v,
        "SecretParts": _shape({}, {"id": _v, "secret": _v}) | _v,
        "SourceMetadata": _shape({"Data": st.dictionaries(st.sampled_from(["Git", "Filesystem"]), _shape(
            {}, {"file": _v, "line": _v, "commit": _v, "repository": _v, "link": _v}) | _v, max_size=2) | _v})}),
    "betterleaks": st.lists(_shape({"ruleID": _v, "secret": _v}, {
        "validation": _shape({}, {"status": _v}) | _v, "ValidationStatus": _v, "File": _v, "StartLine": _v,
        "location": _shape({}, {"startLine": _v}) | _v, "attributes": _shape({}, {"path": _v, "git.sha": _v}) | _v}),
        max_size=3),
    "github-secret-scanning": _shape({"alert": _shape({"secret_type": _v}, {
        "secret": _v, "validity": _v, "resolution": _v, "created_at": _v, "first_location_detected": _v})}, {
        "repository": _shape({}, {"full_name": _v}) | _v,
        "location": _shape({}, {"details": _shape({}, {"path": _v, "start_line": _v}) | _v}) | _v})
    | st.lists(_shape({"token": _v}, {"type": _v, "url": _v, "source": _v}), max_size=3),
    "gitguardian": _shape({"action": st.sampled_from(["incident_triggered", "new_occurrence"]) | _v,
                           "incident": _shape({"detector": _shape({"name": _v}) | _v}, {
                               "date": _v, "validity": _v, "secret_revoked": _v, "occurrences": st.lists(_shape({}, {
                                   "matches": st.lists(_shape({"name": _v, "match": _v}) | _v, max_size=3) | _v,
                                   "filepath": _v, "source": _v}) | _v, max_size=2) | _v})}, {"occurrence": _v}),
    "aws-health": _shape({"detail": _shape({"eventTypeCode": _v}, {
        "affectedEntities": st.lists(_shape({"entityValue": _key_ids}) | _v, max_size=2) | _v})},
        {"resources": _v, "account": _v, "time": _v}),
    "guardduty": _shape({"detail": _shape({"type": _v}, {
        "service": _shape({}, {"additionalInfo": _shape({}, {"sample": _v, "value": _v}) | _v}) | _v,
        "resource": _shape({}, {"accessKeyDetails": _shape({}, {"accessKeyId": _key_ids, "userName": _v}) | _v}) | _v,
        "severity": _v, "updatedAt": _v})}),
}


@pytest.mark.parametrize("name", sorted(SHAPED))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_documents_in_each_formats_own_shape_holding_anything(name: str, data: st.DataObject) -> None:
    """Documents shaped like the format's own (its fields, nested as the tool nests them) holding anything."""
    _parses_or_refuses(name, _encode(data.draw(SHAPED[name])))
