"""Properties of the HAR scanner: no JSON makes it crash, and a planted credential never survives sanitizing."""

from __future__ import annotations

import base64
import io
import json
import string
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.har import scan
from orchestrator.har.detect import scan_entry
from orchestrator.har.reader import Entry, HarError, read
from orchestrator.har.sanitize import Masker, sanitize_entry
from orchestrator.redaction import secret_forms
from tests.har_canaries import HAR_12, entry, har

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
                                                                                    allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)
#: Entry-shaped values: the fields the scanner reads, holding anything.
har_words = st.sampled_from(["request", "response", "headers", "cookies", "queryString", "postData", "params",
                             "text", "content", "url", "name", "value", "mimeType", "encoding", "redirectURL"])
entry_like = st.recursive(json_scalars | st.sampled_from(["Authorization", "cookie", "sid", "SSWS x", "base64",
                                                          "application/json", "https://a.okta.com/api/v1/sessions/me"]),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(har_words, inner, max_size=5),
                          max_leaves=30)

_ALNUM = string.ascii_letters + string.digits
_settings = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(json_values)
def test_any_json_document_is_read_or_refused_in_one_line(document: Any) -> None:
    """Any JSON file yields entries or one HarError line; never another exception."""
    try:
        parts = list(read(io.BytesIO(json.dumps(document).encode()), name="x.har"))
    except HarError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(part.value, dict) for part in parts if isinstance(part, Entry))


@_settings
@given(st.binary(max_size=512))
def test_any_bytes_are_read_or_refused(raw: bytes) -> None:
    """Arbitrary bytes never crash the reader."""
    try:
        list(read(io.BytesIO(raw), name="x.har"))
    except HarError as exc:
        assert str(exc)


@_settings
@given(entry_like | json_values)
def test_any_entry_is_scanned_and_sanitized(value: Any) -> None:
    """Any JSON as an entry is scanned and sanitized without raising, into an entry with a request URL."""
    findings = scan_entry(0, value)
    out = sanitize_entry(value, Masker(v for f in findings for v in f.values))
    assert isinstance(json.loads(json.dumps(out))["request"]["url"], str)


def _token(draw: Any) -> tuple[str, str]:
    """(kind of placement, credential value) of a random canary with a real format."""
    body = st.text(alphabet=_ALNUM, min_size=36, max_size=36)
    kind = draw(st.sampled_from(["github", "slack", "ssws", "sid", "jwt", "aws", "apikey"]))
    random = draw(body)
    value = {"github": "ghp_" + random, "slack": "xoxb-1234567890-" + random, "ssws": "00" + random + "abcd",
             "sid": "102" + random[:20], "jwt": f"eyJ{random[:12]}.eyJ{random[12:24]}.{random[24:]}",
             "aws": "AKIA" + random[:16].upper(), "apikey": random[:24]}[kind]
    return kind, value


@st.composite
def planted_entries(draw: Any) -> tuple[dict[str, Any], str]:
    """An entry with one canary at a random place, inside random surrounding JSON."""
    kind, value = _token(draw)
    noise = draw(st.dictionaries(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), json_scalars,
                                 max_size=3))
    places = ["header", "cookie", "query", "json", "text", "form", "base64", "redirect"]
    if kind in ("sid", "apikey"):  # no format of their own: found where they are named, not in free text
        places = [p for p in places if p != "text" and (p != "json" or kind == "apikey")]
    place = draw(st.sampled_from(places))
    header_name = draw(st.sampled_from(["authorization", "Authorization", "AUTHORIZATION", "x-api-key"]))
    scheme = {"ssws": "SSWS ", "sid": "Bearer ", "jwt": "Bearer ", "github": "token ", "slack": "Bearer ",
              "aws": "Bearer ", "apikey": ""}[kind]
    doc = entry("https://acme.okta.com/app/x?page=1")
    request, response = doc["request"], doc["response"]
    if place == "header":
        request["headers"].append({"name": header_name, "value": scheme + value if "auth" in header_name.lower()
                                   else value})
    elif place == "cookie":
        request["headers"].append({"name": "cookie", "value": f"theme=dark; sid={value}"})
        request["cookies"].append({"name": "sid", "value": value})
    elif place == "query":
        request["url"] += f"&api_key={value}"
        request["queryString"].append({"name": "api_key", "value": value})
    elif place == "json":
        nested: Any = {**noise, "apiKey" if kind == "apikey" else "data": value}  # noise must not overwrite it
        for key in draw(st.lists(st.sampled_from(["a", "b", "items"]), max_size=3)):
            nested = {key: [nested]}
        response["content"]["text"] = json.dumps(nested)
    elif place == "text":
        prefix = draw(st.text(alphabet=string.ascii_letters + " =:\n", max_size=20))
        label = "SSWS " if kind == "ssws" else ""
        response["content"].update(text=f"{prefix} {label}{value} end", mimeType="text/plain")
    elif place == "form":
        request["postData"] = {"mimeType": "application/x-www-form-urlencoded", "text": f"user=a&password={value}",
                               "params": [{"name": "user", "value": "a"}, {"name": "password", "value": value}]}
    elif place == "base64":
        text = json.dumps({**noise, "token": value})
        response["content"].update(text=base64.b64encode(text.encode()).decode(), encoding="base64")
    else:
        response["redirectURL"] = f"https://app.example.com/cb#access_token={value}&state=xyz"
    return doc, value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_entries())
def test_a_planted_value_is_found_and_never_survives_sanitizing(planted: tuple[dict[str, Any], str]) -> None:
    """Wherever a credential is planted it is found, and the sanitized copy holds it in no encoding."""
    document, value = planted
    findings = scan_entry(0, document)
    found = {v for f in findings for v in f.values}
    assert value in found
    copy = json.dumps(har([sanitize_entry(document, Masker(found))]))
    assert not [form for form in secret_forms(value) if form in copy]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(["version", "creator", "browser", "pages", "comment", "x"]),
                              json_values, max_size=4),
       entries=st.lists(entry_like | st.builds(dict), max_size=4))
def test_any_accepted_har_sanitizes_to_valid_har_12(fields: dict[str, Any], entries: list[Any]) -> None:
    """Whatever a HAR's log fields and entries hold, an accepted file's sanitized copy is valid HAR 1.2."""
    document = {"log": {**fields, "entries": [e if isinstance(e, dict) else {"x": e} for e in entries]}}
    with tempfile.TemporaryDirectory() as directory:
        source, clean = Path(directory) / "in.har", Path(directory) / "out.har"
        source.write_text(json.dumps(document))
        try:
            found = scan.scan_file(source, max_bytes=1 << 20)
        except HarError:
            return
        scan.write_sanitized(source, clean, found, max_bytes=1 << 20)
        jsonschema.validate(json.loads(clean.read_text()), HAR_12)
