"""Dead letters: encrypted whole with a key, secrets dropped without one, whatever the record's shape or bytes."""

from __future__ import annotations

import json
import secrets
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.dead_letters import CHUNK_BYTES, DROPPED, DeadLetterError, assemble, sanitise, seal, unseal
from orchestrator.keys import key_id
from orchestrator.redaction import Redactor

_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


def _alnum(n: int) -> str:
    while True:  # a real token mixes letters and digits
        value = "".join(secrets.choice(_ALNUM) for _ in range(n))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def canaries() -> list[str]:
    """Secrets with the shapes detectors report, generated now."""
    return ["ghp_" + _alnum(36), "xoxb-" + _alnum(30), "00" + _alnum(40), "AKIA" + _alnum(16) + "/" + _alnum(24),
            secrets.token_urlsafe(24) + "7aZ"]


def sealed_text(raw: bytes) -> bytes:
    """Everything a dead letter of `raw` carries without a key: values and headers."""
    return b"".join((piece.value or b"") + b"".join(k.encode() + v for k, v in piece.headers)
                    for piece in seal(raw, key=None, redactor=Redactor()))


def body(raw: bytes) -> Any:
    """The sanitised JSON body of `raw`."""
    value, _ = sanitise(raw, Redactor())
    return orjson.loads(value)


def test_the_secret_is_dropped_and_the_shape_kept() -> None:
    """`credential.secret` is dropped; kind, id, owner and other harmless fields stay."""
    secret = canaries()[0]
    raw = json.dumps({"id": "e1", "credential": {"kind": "github.token", "secret": secret, "owner": "alice"},
                      "severity": "high"}).encode()
    assert body(raw) == {"id": "e1", "credential": {"kind": "github.token", "secret": DROPPED, "owner": "alice"},
                         "severity": "high"}


def test_a_secret_in_source_location_is_dropped() -> None:
    """A token inside a URL or a path anywhere in the record is dropped."""
    secret = canaries()[4]
    raw = json.dumps({"id": "e", "source": {"location": f"https://ci.example/build?log={secret}"}}).encode()
    assert secret.encode() not in sealed_text(raw)


def test_a_credential_sent_as_a_list_is_dropped_whole() -> None:
    """`credential` as a list has no handle fields: every value in it is dropped."""
    secret = "pass-word-1"
    raw = json.dumps({"id": "e", "credential": ["github.token", secret]}).encode()
    assert body(raw)["credential"] == [DROPPED, DROPPED]


def test_an_escaped_key_is_read_as_json_reads_it() -> None:
    """`"s\\u0065cret"` is the key `secret`, and fullwidth or upper-case spellings are too."""
    secret = "weakpassword"
    for key in ('"s\\u0065cret"', '"SECRET"', '"\uff53\uff45\uff43\uff52\uff45\uff54"', '"api_key"'):
        raw = ('{"id": "e", "credential": {"kind": "x"}, ' + key + ': "' + secret + '"}').encode()
        assert secret.encode() not in sealed_text(raw), key


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-sig"])
def test_a_record_in_another_utf_encoding_is_decoded_and_cleaned(encoding: str) -> None:
    """UTF-16/32 (with or without BOM) records are decoded, cleaned and re-encoded as UTF-8 JSON."""
    secret = canaries()[1]
    document = {"id": "e", "credential": {"kind": "slack.token", "secret": secret}, "note": f"see {secret}"}
    out = sealed_text(json.dumps(document).encode(encoding))
    for carried in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        assert secret.encode(carried) not in out
    assert body(json.dumps(document).encode(encoding))["credential"]["kind"] == "slack.token"


@pytest.mark.parametrize("raw", [b'{"credential": {"secret": "\\ud800abcdefgh"}}', b"\xff\xfe\x00garbage",
                                 b"not json at all password=hunter22", b"[" * 5000 + b"]" * 5000,
                                 b'{"n": ' + b"9" * 4301 + b"}"])
def test_records_that_are_not_json_keep_only_a_description(raw: bytes) -> None:
    """A body that cannot be searched for secrets is dropped; a description says why and how big it was."""
    value, headers = sanitise(raw, Redactor())
    description = orjson.loads(value)
    assert set(description) == {"dropped", "size"} and description["size"] == len(raw)
    assert ("redaction", b"body-dropped") in headers


def test_a_registered_secret_is_dropped_even_when_it_looks_harmless() -> None:
    """A live secret of the process (say `complete`) is dropped wherever it is."""
    redactor = Redactor()
    redactor.register("complete-it")
    value, _ = sanitise(json.dumps({"id": "e", "reason": "complete-it now"}).encode(), redactor)
    assert b"complete-it" not in value


def test_without_a_key_a_header_says_secrets_were_dropped() -> None:
    """The dead letter says what was done to it."""
    [piece] = seal(b'{"id": "e"}', key=None, redactor=Redactor())
    assert dict(piece.headers)["redaction"] == b"secrets-dropped"


def test_with_a_key_the_original_is_encrypted_and_comes_back() -> None:
    """AES-256-GCM: the value holds no plaintext; the key id is a header; unseal returns the original bytes."""
    key, secret = secrets.token_bytes(32), canaries()[0]
    raw = json.dumps({"id": "e", "credential": {"kind": "github.token", "secret": secret}}).encode("utf-16")
    [piece] = seal(raw, key=key, redactor=Redactor())
    headers = dict(piece.headers)
    assert headers["encryption"] == b"aes-256-gcm" and headers["encryption.key_id"] == key_id(key).encode()
    assert piece.value is not None and secret.encode("utf-16-le") not in piece.value
    assert unseal(piece.value, headers, key) == raw


def test_the_wrong_key_or_a_tampered_value_is_refused() -> None:
    """Decrypting with another key names both key ids; a flipped bit fails authentication."""
    key = secrets.token_bytes(32)
    [piece] = seal(b"original", key=key, redactor=Redactor())
    assert piece.value is not None
    with pytest.raises(DeadLetterError, match="encrypted with key"):
        unseal(piece.value, dict(piece.headers), secrets.token_bytes(32))
    tampered = piece.value[:-1] + bytes([piece.value[-1] ^ 1])
    with pytest.raises(DeadLetterError, match="altered"):
        unseal(tampered, dict(piece.headers), key)


@pytest.mark.parametrize("key", [None, secrets.token_bytes(32)], ids=["secrets dropped", "encrypted"])
def test_a_record_above_the_chunk_size_is_split_and_reassembled(key: bytes | None) -> None:
    """A 2.5 MB record becomes chunks no bigger than CHUNK_BYTES that reassemble in any order."""
    raw = json.dumps({"id": "e", "note": "x" * 2_500_000}).encode()
    pieces = seal(raw, key=key, redactor=Redactor())
    assert len(pieces) == 4 and all(p.value is not None and len(p.value) <= CHUNK_BYTES for p in pieces)
    joined = assemble([(p.value, dict(p.headers)) for p in reversed(pieces)])
    assert joined is not None
    if key is None:
        assert orjson.loads(joined)["note"] == "x" * 2_500_000
    else:
        assert unseal(joined, dict(pieces[0].headers), key) == raw
    with pytest.raises(DeadLetterError, match="3 of 4"):
        assemble([(p.value, dict(p.headers)) for p in pieces[1:]])


def test_a_tombstone_stays_empty() -> None:
    """An empty record is dead-lettered empty."""
    assert [(p.value, p.headers) for p in seal(None, key=None, redactor=Redactor())] == [(None, [])]


# --- properties ---------------------------------------------------------------------------------------

_CANARY = "ghp_" + _alnum(36)
_PLANTS = [_CANARY, "xoxb-" + _alnum(30), secrets.token_urlsafe(24) + "7aZ", "00" + _alnum(40)]
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) \
    | _text
_documents = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(_text, inner, max_size=4), max_leaves=20)


@st.composite
def planted(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON-ish document with a canary planted somewhere: as a value, as a key, or inside a string."""
    canary = draw(st.sampled_from(_PLANTS))
    before, after = draw(_text), draw(_text)
    where = draw(st.sampled_from(["value", "key", "inside"]))
    planted_value = canary if where == "value" else before + " " + canary + " " + after
    document = draw(_documents)
    path = draw(st.lists(_text, max_size=3))
    node: Any = {where + "-" + before: planted_value} if where != "key" else {planted_value: draw(_scalars)}
    for key in reversed(path):
        node = {key: node} if draw(st.booleans()) else [draw(_scalars), node]
    return [document, node] if draw(st.booleans()) else {"id": "e", "wrapped": node, "extra": document}, canary


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=planted(), encoding=st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32-be", "utf-8-sig"]))
def test_a_planted_canary_never_reaches_the_dead_letter(case: tuple[Any, str], encoding: str) -> None:
    """Wherever a secret is in a JSON document, in whichever UTF encoding, the dead letter does not hold it."""
    document, canary = case
    out = sealed_text(json.dumps(document, ensure_ascii=encoding != "utf-8").encode(encoding))
    for carried in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        assert canary.encode(carried) not in out


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
       key=st.none() | st.just(b"k" * 32))
def test_any_bytes_are_sealed_without_raising(raw: bytes, key: bytes | None) -> None:
    """Arbitrary bytes (invalid UTF-8, lone surrogates, anything) always give a dead letter."""
    pieces = seal(raw, key=key, redactor=Redactor())
    assert pieces and all(p.value is not None for p in pieces)


def test_a_record_repeating_its_own_secret_elsewhere_loses_it_there_too() -> None:
    """A weak secret no pattern recognises is still dropped where the record repeats it (an invalid `kind` made
    the record a dead letter; `source.location` echoes the secret)."""
    weak = "hunter2hunter2"
    raw = json.dumps({"id": "x", "credential": {"kind": 5, "secret": weak}, "source": {"location": f"at {weak}"},
                      weak: 1}).encode()
    body, _ = sanitise(raw, Redactor())
    assert weak.encode() not in body


_ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3),
                         max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(kind=_ANY_JSON | st.sampled_from(["okta.session", "okta.user", "github.token"]), handle=_ANY_JSON,
       key=st.none() | st.just(b"k" * 32))
def test_any_credential_shape_is_sealed_without_raising(kind: Any, handle: Any, key: bytes | None) -> None:
    """A rejected record's credential may hold any JSON as its kind and id (a list kind once broke the check for
    ids that are secrets): it is still dead-lettered."""
    raw = json.dumps({"id": "e", "credential": {"kind": kind, "id": handle}}).encode()
    pieces = seal(raw, key=key, redactor=Redactor())
    assert pieces and all(p.value is not None for p in pieces)
