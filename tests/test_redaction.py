"""Redaction: structural (values, never rendered text), every encoding of a registered secret, token shapes."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator.audit import _render_pipeline
from orchestrator.errors import PermanentError
from orchestrator.events import fingerprint
from orchestrator.execution import _describe
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


def encodings(secret: str) -> dict[str, str]:
    """Every way a value can carry `secret`, each inside surrounding text."""
    data = secret.encode()
    out = {
        "raw": secret,
        "json escaped": json.dumps(secret)[1:-1],
        "json escaped, raw UTF-8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "url quote": quote(secret, safe=""),
        "url quote (safe /)": quote(secret),
        "url quote_plus": quote_plus(secret),
    }
    for offset in range(3):
        blob = secrets.token_bytes(offset) + data + secrets.token_bytes(2)
        out[f"base64 at offset {offset}"] = base64.b64encode(blob).decode()
        out[f"urlsafe base64 at offset {offset}, unpadded"] = base64.urlsafe_b64encode(blob).decode().rstrip("=")
    out["base64 alone"] = base64.b64encode(data).decode()
    out["base64 of a JSON body"] = base64.b64encode(json.dumps({"token": secret}).encode()).decode()
    return out


def render(redactor: Redactor, event: str, **fields: Any) -> bytes:
    """An audit record as the audit path renders it."""
    rendered: bytes = _render_pipeline(redactor).msg(event, **fields)
    return rendered


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


@pytest.mark.parametrize("secret", [secrets.token_urlsafe(18), "pässwörd-" + secrets.token_hex(6),
                                    'quo"te\\back/slash' + secrets.token_hex(4)], ids=["ascii", "non-ascii", "escapes"])
def test_a_registered_secret_is_masked_in_every_encoding(secret: str) -> None:
    """Raw, JSON-escaped, URL-encoded and base64 (any alignment inside a blob) forms are all masked."""
    redactor = Redactor()
    redactor.register(secret)
    for name, form in encodings(secret).items():
        masked = redactor.text(f"provider said: {form} (end)")
        assert "[REDACTED hmac-sha256:" in masked, name
        assert masked.endswith(" (end)"), name


@pytest.mark.parametrize("kept", [8, 12, 20])
def test_a_prefix_left_by_a_foreign_truncation_is_masked(kept: int) -> None:
    """A provider that cut its echo of the token leaves a prefix at the end of the string: it is masked."""
    redactor, secret = Redactor(), "ghx_" + _alnum(36)
    redactor.register(secret)
    for tail in ("", "...", "\u2026", '"}', "... was rejected", "\u2026 (truncated) ok"):
        masked = redactor.text(f"invalid token {secret[:kept]}{tail}")
        assert secret[:8] not in masked and masked.startswith("invalid token [REDACTED"), (kept, tail)
        assert masked.endswith(tail), (kept, tail)


def test_a_provider_error_is_redacted_before_it_is_cut() -> None:
    """An error echoing the token is redacted first, then cut: no prefix of it is left over."""
    redactor_secret = "tok-" + _alnum(40)
    from orchestrator.redaction import REDACTOR

    REDACTOR.register(redactor_secret)
    try:
        described = _describe(PermanentError("x" * 990 + " " + redactor_secret))
    finally:
        REDACTOR.release(redactor_secret)
    assert described is not None and redactor_secret[:8] not in described and len(described) <= 1000


def test_a_secret_that_is_an_event_name_fragment_changes_no_other_record() -> None:
    """Secrets `complete` and `"event":"run.completed"` leave every other record valid, with its event."""
    redactor = Redactor()
    for secret in ("complete", '"event":"run.completed"', "run.completed"):
        redactor.register(secret)
    rendered = render(redactor, "run.completed", exposure_id="exp-1", run_id="r1", playbook="p", duration_ms=3,
                      note="revocation complete")
    record = orjson.loads(rendered)
    assert record["event"] == "run.completed" and record["exposure_id"] == "exp-1"
    assert "complete" not in record["note"]


def test_a_non_ascii_secret_is_masked_in_the_rendered_record() -> None:
    """orjson renders raw UTF-8: a non-ASCII secret is masked in the value before rendering."""
    redactor, secret = Redactor(), "clé-secrète-" + secrets.token_hex(6)
    redactor.register(secret)
    rendered = render(redactor, "step.failed", exposure_id="e", error=f"rejected {secret}")
    assert secret.encode() not in rendered and json.dumps(secret)[1:-1].encode() not in rendered


def test_nested_values_and_secretstr_are_masked() -> None:
    """Mappings, lists, exceptions and SecretStr values are walked and masked."""
    redactor, token = Redactor(), "ghp_" + _alnum(36)
    value = redactor.value({"a": [token, {"b": SecretStr("hidden-value")}], "c": 3,
                            "d": ValueError(f"bad {token}")})
    assert value == {"a": [MASK, {"b": MASK}], "c": 3, "d": f"ValueError: bad {MASK}"}


def test_the_structlog_processor_masks_every_field_but_event_names() -> None:
    """Used as a processor, the redactor masks free text, including a dependency's message, not event names."""
    redactor, token = Redactor(), "xoxb-" + _alnum(24)
    redactor.register("complete")
    event = redactor(None, "info", {"event": f"saw {token}", "error": token})
    assert token not in json.dumps(event)
    assert redactor(None, "info", {"event": "run.completed"})["event"] == "run.completed"


# --- properties ---------------------------------------------------------------------------------------

_secret_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=8, max_size=40)
_free_text = st.text(st.characters(codec="utf-8"), max_size=60)
_FREE_FIELDS = ("error", "reason", "note", "target", "detector", "actor")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_secret_text, encoding=st.sampled_from(sorted(encodings("x" * 8))), before=_free_text,
       after=_free_text, field=st.sampled_from(_FREE_FIELDS))
def test_no_registered_secret_survives_in_any_encoding(secret: str, encoding: str, before: str, after: str,
                                                       field: str) -> None:
    """Whatever the secret and its surroundings, no encoding of it reaches the rendered record, which stays
    valid JSON with the same fields and identifiers."""
    redactor = Redactor()
    redactor.register(secret)
    carried = encodings(secret)[encoding]
    rendered = render(redactor, "step.failed", exposure_id="exp-1", run_id="r", step="s", attempt=2,
                      **{field: before + carried + after})
    record = orjson.loads(rendered)
    assert set(record) == {"event", "exposure_id", "run_id", "step", "attempt", field, "ts"}
    assert (record["event"], record["exposure_id"], record["run_id"], record["attempt"]) == \
           ("step.failed", "exp-1", "r", 2)
    assert carried not in record[field]


@settings(max_examples=200, deadline=None)
@given(secret=_secret_text, fields=st.dictionaries(st.sampled_from(_FREE_FIELDS), _free_text, max_size=4))
def test_records_without_the_secret_are_unchanged(secret: str, fields: dict[str, str]) -> None:
    """A record that holds no secret and no token renders exactly as it would with nothing registered."""
    if any(secret in v for v in fields.values()) or any(Redactor().text(v) != v for v in fields.values()):
        return
    redactor = Redactor()
    redactor.register(secret)
    with_secret = orjson.loads(render(redactor, "run.completed", exposure_id="x", **fields))
    without = orjson.loads(render(Redactor(), "run.completed", exposure_id="x", **fields))
    with_secret.pop("ts"), without.pop("ts")
    changed = {k for k in fields if with_secret[k] != without[k]}
    # Only a value that happens to hold an encoding or a cut prefix of the secret may change.
    for key in changed:
        assert any(form in fields[key] for form in encodings(secret).values()) or secret[:8] in fields[key] \
            or _holds_encoded_fragment(secret, fields[key]), key
    assert with_secret.keys() == without.keys()


def _holds_encoded_fragment(secret: str, value: str) -> bool:
    from orchestrator.redaction import secret_forms

    return any(form[:8] in value for form in secret_forms(secret))


@settings(max_examples=200, deadline=None)
@given(secret=_secret_text, before=_free_text, data=st.data())
def test_no_prefix_of_8_or_more_survives_a_foreign_cut(secret: str, before: str, data: st.DataObject) -> None:
    """A provider that cut its echo anywhere past 8 characters, then maybe added an ellipsis: nothing of the
    secret's first 8 characters is left."""
    kept = data.draw(st.integers(8, len(secret)))
    tail = data.draw(st.sampled_from(["", "...", "\u2026", '"', "... (cut)"]))
    text = before + secret[:kept] + tail
    # Degenerate draws say nothing about a cut: the prefix also starting elsewhere (`before` = "0000…" for a
    # secret "0000…"), or the tail completing the secret it follows.
    assume([i for i in range(len(text)) if text.startswith(secret[:8], i)] == [len(before)])
    assume(kept == len(secret) or secret not in text)
    redactor = Redactor()
    redactor.register(secret)
    masked = redactor.text(text)
    assert "[REDACTED hmac-sha256:" in masked and masked.endswith(tail)
    assert secret[:8] not in masked[len(before):] or secret[:8] in "[REDACTED hmac-sha256:"


@pytest.mark.parametrize("provider", ["github", "gcp"])
def test_a_provider_message_echoing_a_token_is_redacted_before_it_is_cut(provider: str) -> None:
    """GitHub and GCP error messages are cut to 200 characters: a token across the cut leaves no prefix."""
    import httpx

    from orchestrator.providers import gcp, github
    from orchestrator.redaction import REDACTOR

    token = "ghp_" + _alnum(36)
    message = "x" * 180 + " " + token  # the cut at 200 falls inside the token
    body = {"message": message} if provider == "github" else {"error": {"message": message, "status": "INVALID"}}
    response = httpx.Response(422 if provider == "github" else 400, json=body)
    REDACTOR.register(token)
    try:
        error = github._translate(response) if provider == "github" else gcp._translate(response)
    finally:
        REDACTOR.release(token)
    assert token[:8] not in str(error) and "[REDACTED" in str(error)


def test_a_lone_surrogate_neither_breaks_registration_nor_rendering() -> None:
    """JSON allows `"\\ud800"`: such a secret is registered and masked, and such a value renders as U+FFFD."""
    redactor, secret = Redactor(), "abc\ud800defghij"
    redactor.register(secret)
    assert "[REDACTED" in redactor.text(f"echo {secret}")
    record = orjson.loads(render(redactor, "step.failed", exposure_id="e", error="bad \udfff byte"))
    assert record["error"] == "bad \ufffd byte" and record["event"] == "step.failed"


@pytest.mark.parametrize("secret", ["REDACTED", "[REDACTED hmac", "hmac-sha256:", "********"])
def test_a_secret_that_is_part_of_the_mask_is_masked_differently(secret: str) -> None:
    """No output shows the secret, not even inside the text that replaces it."""
    redactor = Redactor()
    redactor.register(secret)
    masked = redactor.text(f"it was {secret} here")
    assert secret not in masked and masked.startswith("it was ") and masked.endswith(" here")


def test_releasing_a_secret_never_registered_changes_nothing() -> None:
    """An extra release cannot unmask a secret that shares forms with a live one."""
    redactor, secret = Redactor(), secrets.token_urlsafe(16)
    redactor.register(secret)
    redactor.release("never-registered-" + secret)
    redactor.release(secret + "x")
    assert secret not in redactor.text(f"still {secret}")
