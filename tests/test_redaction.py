"""Redaction: well-known token shapes, registered secrets, and dead-lettered records made safe."""

from __future__ import annotations

import json
import secrets

import pytest
from pydantic import SecretStr

from orchestrator.events import fingerprint
from orchestrator.redaction import MASK, Redactor


def _alnum(n: int) -> str:
    return "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(n))


TOKENS = {
    "github classic": "ghp_" + _alnum(36),
    "github fine-grained": "github_pat_" + _alnum(30),
    "slack bot": "xoxb-" + _alnum(24),
    "slack app": "xapp-1-" + _alnum(20),
    "okta SSWS header": "SSWS " + _alnum(40),
    "okta bare": "00" + _alnum(40),
    "bearer": "Bearer " + _alnum(30),
    "google access token": "ya29." + _alnum(30),
    "aws secret key": "aws_secret_access_key = " + _alnum(40),
    "private key": "-----BEGIN PRIVATE KEY-----\nMIIB" + _alnum(40) + "\n-----END PRIVATE KEY-----",
}


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_well_known_token_shapes_are_masked_unregistered(name: str) -> None:
    """A token of a known format is masked inside any text even when nobody registered it."""
    token = TOKENS[name]
    masked = Redactor().text(f"request failed with {token} in it")
    assert token not in masked and MASK in masked and masked.startswith("request failed with")


def test_registered_secrets_are_masked_until_released() -> None:
    """A registered secret of any shape is replaced by its fingerprint, as often as registered, then no longer."""
    redactor, secret = Redactor(), SecretStr(secrets.token_hex(12))
    raw = secret.get_secret_value()
    redactor.register(secret)
    redactor.register(secret)
    assert redactor.text(f"x{raw}y") == f"x[REDACTED {fingerprint(raw)}]y"
    redactor.release(secret)
    assert raw not in redactor.text(raw)
    redactor.release(secret)
    assert redactor.text(raw) == raw


def test_nested_values_and_secretstr_are_masked() -> None:
    """Mappings, lists, exceptions and SecretStr values are walked and masked."""
    redactor, token = Redactor(), "ghp_" + _alnum(36)
    value = redactor.value({"a": [token, {"b": SecretStr("hidden-value")}], "c": 3,
                            "d": ValueError(f"bad {token}")})
    assert value == {"a": [MASK, {"b": MASK}], "c": 3, "d": f"ValueError: bad {MASK}"}


def test_the_structlog_processor_masks_every_field() -> None:
    """Used as a processor, the redactor masks the event and every field."""
    redactor, token = Redactor(), "xoxb-" + _alnum(24)
    event = redactor(None, "info", {"event": f"saw {token}", "error": token})
    assert token not in json.dumps(event)


def test_a_json_dead_letter_has_its_secret_replaced_by_a_fingerprint() -> None:
    """A rejected JSON record keeps its shape; credential.secret becomes a fingerprint, other fields stay."""
    secret = secrets.token_urlsafe(20)
    raw = json.dumps({"id": "e1", "credential": {"kind": "okta.api_token", "secret": secret, "owner": 5}}).encode()
    cleaned = Redactor().record(raw)
    assert cleaned is not None and secret.encode() not in cleaned
    document = json.loads(cleaned)
    assert document["credential"] == {"kind": "okta.api_token", "secret": f"[REDACTED {fingerprint(secret)}]",
                                      "owner": 5}
    assert document["id"] == "e1"


def test_a_non_string_secret_in_a_dead_letter_is_masked() -> None:
    """A secret of the wrong type is masked whole."""
    secret = secrets.token_urlsafe(20)
    cleaned = Redactor().record(json.dumps({"credential": {"secret": {"value": secret}}}).encode())
    assert cleaned is not None and json.loads(cleaned)["credential"]["secret"] == MASK


def test_a_non_json_dead_letter_has_secret_members_and_tokens_masked() -> None:
    """A record that is not JSON still has `"secret": "..."` members and known token shapes masked."""
    secret, token = secrets.token_urlsafe(20), "ghp_" + _alnum(36)
    raw = f'{{"id": "e", "credential": {{"secret": "{secret}", "note": "{token}" '.encode()
    cleaned = Redactor().record(raw)
    assert cleaned is not None and secret.encode() not in cleaned and token.encode() not in cleaned
    assert cleaned.startswith(b'{"id": "e"')
    truncated = Redactor().record(f'{{"credential": {{"secret": "{secret}'.encode())
    assert truncated is not None and secret.encode() not in truncated


def test_a_tombstone_stays_none() -> None:
    """An empty record is dead-lettered empty."""
    assert Redactor().record(None) is None


def test_a_registered_secret_is_masked_in_rendered_json_even_when_json_escapes_it() -> None:
    """Audit records are redacted after rendering: a quote or backslash in a secret cannot hide it."""
    redactor = Redactor()
    secret = SecretStr('pa"ss\\' + secrets.token_urlsafe(16))
    redactor.register(secret)
    rendered = json.dumps({"error": f"rejected {secret.get_secret_value()}"}).encode()
    masked = redactor.json(rendered)
    assert secret.get_secret_value().encode() not in masked
    assert json.dumps(secret.get_secret_value())[1:-1].encode() not in masked
    assert fingerprint(secret).encode() in masked
