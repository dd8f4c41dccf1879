"""Decoding exposure events: valid input, forward compatibility, invalid input with value-free reasons, the schema."""

from __future__ import annotations

import json
import secrets
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import InvalidExposure
from orchestrator.events import Severity, decode
from tests.support import run_cli

MAX = 64 * 1024
CANARY = "canary" + secrets.token_hex(8)


def _decode(document: Any) -> Any:
    return decode(json.dumps(document).encode(), max_bytes=MAX)


def test_a_full_event_decodes() -> None:
    """Every documented field is read; the secret is held but never shown."""
    exposure = _decode({
        "id": "exp-1", "credential": {"kind": "okta.session", "id": "102abc", "owner": "a@example.com",
                                      "secret": CANARY},
        "source": {"detector": "har-scanner", "location": "s3://bucket/file.har", "verified": True},
        "detected_at": "2023-10-20T12:00:00Z", "severity": "critical", "playbook": "okta-session",
        "actor": "oncall", "reason": "support breach", "dry_run": True,
    })
    assert exposure.credential.owner == "a@example.com" and exposure.severity is Severity.CRITICAL
    assert exposure.credential.secret is not None and exposure.credential.secret.get_secret_value() == CANARY
    assert exposure.dry_run and exposure.source.verified and exposure.detected_at is not None
    assert CANARY not in repr(exposure) and CANARY not in str(exposure.model_dump())
    assert exposure.field("credential.owner") == "a@example.com" and exposure.field("severity") == "critical"


def test_defaults_apply() -> None:
    """Severity defaults to high, dry_run to false, and a minimal event needs only id, kind and one handle."""
    exposure = _decode({"id": "exp-2", "credential": {"kind": "okta.user", "owner": "b@example.com"}})
    assert exposure.severity is Severity.HIGH and exposure.dry_run is False and exposure.playbook is None


def test_unknown_fields_are_ignored() -> None:
    """Fields from newer detectors, at any level, do not make the event invalid."""
    exposure = _decode({"id": "exp-3", "schema_version": 7, "credential": {"kind": "okta.session", "id": "s1",
                        "region": "eu"}, "source": {"detector": "x", "confidence": 0.9}})
    assert exposure.credential.id == "s1" and exposure.source.detector == "x"


def test_the_credential_key_names_the_credential_without_its_secret() -> None:
    """Exposures of the same credential share a key; a secret-only credential is keyed by a fingerprint."""
    exposure = _decode({"id": "e", "credential": {"kind": "okta.api_token", "secret": CANARY}})
    assert exposure.credential_key.startswith("okta.api_token:hmac-sha256:") and CANARY not in exposure.credential_key


INVALID: dict[str, tuple[bytes | None, str]] = {
    "tombstone": (None, "tombstone"),
    "oversize": (b'{"id": "' + b"x" * MAX + b'"}', "above the"),
    "not UTF-8": (b'{"id": "\xff\xfe"}', "not UTF-8"),
    "not JSON": (f'{{"id": "e", "credential": {{"secret": "{CANARY}"'.encode(), "not JSON"),
    "JSON array": (json.dumps([CANARY]).encode(), "expected an object"),
    "JSON string": (json.dumps(CANARY).encode(), "expected an object"),
    "missing id": (json.dumps({"credential": {"kind": "okta.user", "owner": CANARY}}).encode(), "id"),
    "missing credential": (json.dumps({"id": CANARY}).encode(), "credential"),
    "no handle": (json.dumps({"id": "e", "credential": {"kind": "okta.user"}}).encode(), "at least one of"),
    "id too long": (json.dumps({"id": CANARY * 20, "credential": {"kind": "k", "id": "i"}}).encode(), "id"),
    "wrong type owner": (json.dumps({"id": "e", "credential": {"kind": "k", "owner": 42, "secret": CANARY}}).encode(),
                         "credential.owner"),
    "wrong type secret": (json.dumps({"id": "e", "credential": {"kind": "k", "secret": [CANARY]}}).encode(),
                          "credential.secret"),
    "bad severity": (json.dumps({"id": "e", "credential": {"kind": "k", "id": "i"}, "severity": CANARY}).encode(),
                     "severity"),
    "bad timestamp": (json.dumps({"id": "e", "credential": {"kind": "k", "id": "i"}, "detected_at": CANARY}).encode(),
                      "detected_at"),
    "bad dry_run": (json.dumps({"id": "e", "credential": {"kind": "k", "id": "i"}, "dry_run": CANARY}).encode(),
                    "dry_run"),
    # Records that used to raise out of the decoder (RecursionError, ValueError) or slip through it.
    "deep nesting": (b"[" * 5000 + b"]" * 5000, "depth"),
    "4301-digit integer": (b'{"id": "e", "n": ' + b"9" * 4301 + b"}", "not JSON"),
    "lone surrogate": (b'{"id": "\\ud800", "credential": {"kind": "k", "secret": "' + CANARY.encode() + b'"}}',
                       "surrogate"),
    "NaN": (b'{"id": "e", "credential": {"kind": "k", "id": "i"}, "x": NaN}', "not JSON"),
    "UTF-16": (json.dumps({"id": "e", "credential": {"kind": "k", "id": CANARY}}).encode("utf-16"), "not UTF-8"),
    # PostgreSQL text cannot hold NUL: a stored field with one made the run store refuse the claim forever.
    "NUL in id": (json.dumps({"id": "e\0" + CANARY, "credential": {"kind": "k", "id": "i"}}).encode(), "id: "),
    "NUL in owner": (json.dumps({"id": "e", "credential": {"kind": "k", "owner": CANARY + "\0"}}).encode(),
                     "credential.owner"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_records_have_a_reason_without_input_values(case: str) -> None:
    """Each kind of invalid record raises InvalidExposure whose reason says what is wrong and repeats no value."""
    raw, expected = INVALID[case]
    with pytest.raises(InvalidExposure) as caught:
        decode(raw, max_bytes=MAX)
    reason = str(caught.value)
    assert expected in reason
    assert CANARY not in reason and "42" not in reason


def test_the_published_schema_validates_a_good_event_and_rejects_a_bad_one() -> None:
    """`orchestrator schema exposure` prints a JSON Schema that accepts a valid event and rejects invalid ones."""
    result = run_cli("schema", "exposure")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    good = {"id": "e", "credential": {"kind": "okta.session", "owner": "a@example.com"}, "severity": "low",
            "future_field": 1}
    assert not list(validator.iter_errors(good))
    for bad in ({"id": "e"}, {"id": "e", "credential": {"kind": "k"}, "severity": "apocalyptic"},
                {"id": 5, "credential": {"kind": "k", "id": "i"}}):
        assert list(validator.iter_errors(bad)), bad


_STORED_FIELDS = ["id", "credential.kind", "credential.id", "credential.owner", "source.detector", "source.location",
                  "playbook", "actor", "reason"]


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(_STORED_FIELDS), before=st.text(max_size=20), after=st.text(max_size=20))
def test_a_nul_in_any_text_field_is_rejected(path: str, before: str, after: str) -> None:
    """Whichever text field holds a NUL (which no database text column takes), the record is invalid, its
    reason naming the field and not the value."""
    document: dict[str, Any] = {"id": "e", "credential": {"kind": "k", "id": "i"}, "source": {}}
    *parents, name = path.split(".")
    node = document
    for parent in parents:
        node = node[parent]
    node[name] = "x" + before + "\0" + after
    raw = json.dumps(document).encode("utf-8", "surrogatepass")
    with pytest.raises(InvalidExposure) as caught:
        decode(raw, max_bytes=MAX)
    assert path in str(caught.value) and "\0" not in str(caught.value)
