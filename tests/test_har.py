"""The HAR scanner: every secret placement found, nothing leaked in output or sanitized copy, one-line errors,
and `scan-har --publish` putting one exposure per credential on the exposures topic."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app, main
from orchestrator.har import exposures, scan
from orchestrator.har.detect import scan_entry
from orchestrator.har.reader import HarError
from orchestrator.har.sanitize import Masker
from orchestrator.redaction import secret_forms
from tests.har_canaries import HAR_12, Planted, aws_key_id, entry, every_placement, github_token, har, okta_session_id
from tests.support import read_all

# The command runs in-process: a subprocess would add seconds of imports to each test.
_RUNNER = CliRunner()

MAX = 10 * 1024 * 1024


def _write(tmp_path: Path, document: Any, name: str = "support.har") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _leaks(text: str, values: list[str]) -> list[str]:
    """The values that appear in `text` in any encoding (raw, URL-encoded, JSON-escaped, base64)."""
    return [value for value in values if any(form in text for form in secret_forms(value))]


@pytest.fixture(scope="module")
def planted() -> Planted:
    """One HAR with a canary in every placement, shared by the module's tests."""
    return every_placement()


@pytest.fixture(scope="module")
def cli_run(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`scan-har FILE --json --sanitize OUT` run once for the module."""
    directory = tmp_path_factory.mktemp("har")
    source, clean = _write(directory, planted.document), directory / "clean.har"
    result = _RUNNER.invoke(app, ["scan-har", str(source), "--json", "--sanitize", str(clean)])
    return {"result": result, "source": source, "clean": clean}


def test_every_secret_placement_is_found(planted: Planted, tmp_path: Path) -> None:
    """Each canary, wherever it sits (cookies, any-case headers, query, form, JSON bodies), is a finding."""
    found = scan.scan_file(_write(tmp_path, planted.document), max_bytes=MAX)
    by_value = {value: (f.entry, f.kind) for f in found.findings for value in f.values}
    for index, kind, value in planted.expected:
        assert by_value.get(value) == (index, kind), f"entry {index} {kind} not found as expected"
    assert found.entries == len(planted.document["log"]["entries"])


def test_findings_print_a_preview_never_the_value(cli_run: dict[str, Any], planted: Planted) -> None:
    """Without --publish the findings are printed (entry, where, kind, preview); no value, in any encoding."""
    result = cli_run["result"]
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(line["entry"], line["kind"]) for line in lines} >= {(i, k) for i, k, _ in planted.expected}
    assert all(set(line) == {"entry", "where", "kind", "rule", "preview"} for line in lines)
    assert _leaks(result.stdout + result.stderr, planted.values) == []


def test_sanitized_copy_holds_none_of_the_values(cli_run: dict[str, Any], planted: Planted) -> None:
    """--sanitize writes a copy in which no found value appears, raw, URL-encoded, JSON-escaped or base64."""
    text = cli_run["clean"].read_text()
    assert _leaks(text, planted.values) == []


def test_sanitized_copy_is_har_12_and_keeps_what_debugging_needs(cli_run: dict[str, Any], planted: Planted) -> None:
    """The copy is valid HAR 1.2 and keeps URLs (secret query values replaced), statuses, timings and names."""
    clean = json.loads(cli_run["clean"].read_text())
    jsonschema.validate(clean, HAR_12)
    original = planted.document["log"]["entries"]
    for before, after in zip(original, clean["log"]["entries"], strict=True):
        assert after["response"]["status"] == before["response"]["status"]
        assert after["timings"] == before["timings"] and after["time"] == before["time"]
        assert [h["name"] for h in after["request"]["headers"]] == [h["name"] for h in before["request"]["headers"]]
        assert after["request"]["url"].split("?")[0] == before["request"]["url"].split("?")[0]
    assert clean["log"]["entries"][4]["request"]["url"] == "https://maps.example.com/v1/geocode?address=Paris&api_key=REDACTED"
    cookie = clean["log"]["entries"][0]["request"]["headers"][0]["value"]
    assert cookie == "sid=[REDACTED]; idx=[REDACTED]; DT=[REDACTED]; JSESSIONID=[REDACTED]"
    assert clean["log"]["entries"][1]["request"]["headers"][0]["value"] == "SSWS [REDACTED]"


def test_publish_puts_one_exposure_per_credential_on_the_topic(bootstrap: str, planted: Planted,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--publish: one exposure per credential, of its kind, from har-scanner, located by file and entry."""
    topic = f"test.har.{uuid.uuid4().hex[:8]}"
    source = _write(tmp_path, planted.document)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("ORCHESTRATOR_EXPOSURES_TOPIC", topic)
    result = _RUNNER.invoke(app, ["scan-har", str(source), "--publish"])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(r.value) for r in asyncio.run(read_all(bootstrap, topic))]
    by_secret = {r["credential"].get("secret"): r for r in records}
    sid = planted.expected[0][2]
    session = by_secret[sid]
    assert session["credential"] == {"kind": "okta.session", "id": sid, "secret": sid}
    assert session["source"] == {"detector": "har-scanner", "location": f"{source} entry 0: request.header cookie: sid"}
    assert session["id"] == exposures.exposure_id("okta.session", sid)
    ssws = planted.expected[4][2]
    assert by_secret[ssws]["credential"] == {"kind": "okta.api_token", "secret": ssws}
    key_secret, key_id = planted.expected[10][2], planted.expected[11][2]
    assert by_secret[key_secret]["credential"] == {"kind": "aws.access_key", "id": key_id, "secret": key_secret}
    # idx, DT, JSESSIONID carry no session id: they take the one this capture shows (two here: none)
    assert {r["credential"]["kind"] for r in records} >= {"okta.session", "okta.api_token", "aws.access_key",
                                                          "github.token", "slack.token", "jwt", "api_key"}
    assert len({r["id"] for r in records}) == len(records)
    assert "published" in result.stderr


def test_rescanning_gives_the_same_exposure_ids(planted: Planted, tmp_path: Path) -> None:
    """Exposure ids depend on the credential only: a second scan of the file would not revoke twice."""
    path = _write(tmp_path, planted.document)
    first, _ = exposures.build(scan.scan_file(path, max_bytes=MAX).findings, file=str(path))
    second, _ = exposures.build(scan.scan_file(path, max_bytes=MAX).findings, file="elsewhere.har")
    assert [e.id for e in first] == [e.id for e in second]


def test_a_cookie_seen_many_times_is_one_exposure() -> None:
    """The same session cookie in many requests is one credential, published once."""
    sid = okta_session_id()
    findings = [f for i in range(5) for f in scan_entry(i, entry("https://acme.okta.com/", cookies={"sid": sid}))]
    built, skipped = exposures.build(findings, file="x.har")
    assert len(findings) == 5 and [e.credential.id for e in built] == [sid] and skipped == 0


def test_okta_cookies_without_a_session_id_take_the_capture_s_only_session() -> None:
    """An `idx` cookie is published with the session id the capture shows, so its session can be cleared."""
    sid = okta_session_id()
    document = entry("https://acme.okta.com/", headers={"Cookie": f"idx=abcdefghijklmnopqrstu; sid={sid}"})
    built, _ = exposures.build(scan_entry(0, document), file="x.har")
    assert {e.credential.id for e in built} == {sid} and len(built) == 2


def test_jsessionid_is_an_okta_session_only_on_okta_hosts() -> None:
    """JSESSIONID is Okta's on an Okta org's host; elsewhere it is a generic session cookie."""
    value = uuid.uuid4().hex
    okta = scan_entry(0, entry("https://acme.okta.com/app", cookies={"JSESSIONID": value}))
    other = scan_entry(0, entry("https://shop.example.com/", cookies={"JSESSIONID": value}))
    assert [f.kind for f in okta] == ["okta.session"] and [f.kind for f in other] == ["http.session_cookie"]


def test_base64_response_bodies_are_scanned_and_sanitized(tmp_path: Path) -> None:
    """A response body stored base64-encoded is decoded to find tokens, and re-encoded without them."""
    token = github_token()
    document = entry("https://tools.example.com/", response_body="")
    document["response"]["content"].update(text=base64.b64encode(f"token={token}\n".encode()).decode(),
                                           encoding="base64", mimeType="text/plain")
    source, clean = _write(tmp_path, har([document])), tmp_path / "clean.har"
    found = scan.scan_file(source, max_bytes=MAX)
    assert [f.value for f in found.findings] == [token]
    scan.write_sanitized(source, clean, found, max_bytes=MAX)
    body = json.loads(clean.read_text())["log"]["entries"][0]["response"]["content"]["text"]
    assert base64.b64decode(body).decode() == "token=[REDACTED]\n"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"[1, 2]", "is not a HAR file: the top level is not a JSON object"),
    (b'{"log": {"version": "1.2", "entries": [{"request": {}', "is not valid JSON"),
    (b'{"version": "1.2"}', "has no top-level \"log\" object"),
    (b'{"log": {"version": "1.2"}}', "\"log\" has no \"entries\" array"),
    (b'{"log": {"entries": [1]}}', "entry 0 is not an object"),
    (b'{"log": {"entries": []}} trailing', "is not valid JSON"),
    (b'\xff\xfe{"log"', "is not valid JSON"),
])
def test_unreadable_files_are_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    """Malformed JSON, non-HAR JSON and truncated files raise one HarError line naming the problem."""
    path = tmp_path / "bad.har"
    path.write_bytes(content)
    with pytest.raises(HarError) as raised:
        scan.scan_file(path, max_bytes=MAX)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_har_above_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    """A file above the limit is refused with its size and the limit, unread."""
    path = _write(tmp_path, har([]))
    with pytest.raises(HarError, match="above the 10-byte limit"):
        scan.scan_file(path, max_bytes=10)


def test_malformed_har_publishes_nothing_and_says_one_line(bootstrap: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated HAR through the real entry point: exit 1, one stderr line, no traceback, nothing published."""
    topic = f"test.har.{uuid.uuid4().hex[:8]}"
    document = json.dumps(har([entry("https://acme.okta.com/", cookies={"sid": okta_session_id()})]))
    path = tmp_path / "truncated.har"
    path.write_text(document[: len(document) - 20])
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("ORCHESTRATOR_EXPOSURES_TOPIC", topic)
    monkeypatch.setattr(sys, "argv", ["orchestrator", "scan-har", str(path), "--publish"])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 1 and out == ""
    assert err.count("\n") == 1 and "is not valid JSON" in err and "Traceback" not in err
    assert asyncio.run(read_all(bootstrap, topic, idle_timeout_s=0.5)) == []


def test_a_mistyped_path_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A path that is not a file: exit 2 and one line saying what to give."""
    monkeypatch.setattr(sys, "argv", ["orchestrator", "scan-har", str(tmp_path / "nope.har")])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "no such file" in err


def test_aws_sigv4_authorization_yields_its_access_key_id() -> None:
    """An AWS SigV4 Authorization header gives up the access key id inside it, not the whole header."""
    key_id = aws_key_id()
    header = (f"AWS4-HMAC-SHA256 Credential={key_id}/20231020/us-east-1/s3/aws4_request, "
              f"SignedHeaders=host;x-amz-date, Signature={uuid.uuid4().hex}{uuid.uuid4().hex}")
    findings = scan_entry(0, entry("https://s3.amazonaws.com/bucket", headers={"Authorization": header}))
    assert [(f.kind, f.handle, f.value) for f in findings] == [("aws.access_key", key_id, key_id)]


def test_tokens_in_referer_and_location_urls_are_found_and_removed(tmp_path: Path) -> None:
    """Query and fragment values of URL-valued headers (Referer, an OAuth redirect's Location) are credentials."""
    state_token, access_token = uuid.uuid4().hex, uuid.uuid4().hex
    document = entry("https://app.example.com/cb", headers={"Referer": f"https://acme.okta.com/login?stateToken={state_token}"},
                     response_headers={"Location": f"https://app.example.com/cb#access_token={access_token}&x=1"})
    source, clean = _write(tmp_path, har([document])), tmp_path / "clean.har"
    found = scan.scan_file(source, max_bytes=MAX)
    assert {(f.where, f.value) for f in found.findings} == {
        ("request.header Referer stateToken", state_token), ("response.header Location access_token", access_token)}
    scan.write_sanitized(source, clean, found, max_bytes=MAX)
    text = clean.read_text()
    assert _leaks(text, [state_token, access_token]) == [] and "access_token=REDACTED&x=1" in text


@pytest.mark.parametrize("where", ["top", "log"])
def test_deep_nesting_outside_the_entries_is_refused(tmp_path: Path, where: str) -> None:
    """Nesting deeper than 256 levels is refused in one line wherever it is, also under a top-level key the
    scanner skips (yajl's prefixes made 20,000 levels there, 40 kB of file, cost 1 GB)."""
    deep = "[" * 300 + "]" * 300
    text = (f'{{"other": {deep}, "log": {{"entries": []}}}}' if where == "top"
            else f'{{"log": {{"other": {deep}, "entries": []}}}}')
    path = tmp_path / "deep.har"
    path.write_text(text)
    with pytest.raises(HarError, match="deeper than 256 levels"):
        scan.scan_file(path, max_bytes=MAX)


def test_long_keys_nested_do_not_multiply_memory(tmp_path: Path) -> None:
    """200 levels of 5 kB keys (1 MB of file) are read in memory near the file's size, not its square."""
    key = "k" * 5000
    document = '{"log": {"entries": [' + f'{{"{key}": ' * 200 + "1" + "}" * 200 + "]}}"
    path = tmp_path / "keys.har"
    path.write_text(document)
    tracemalloc.start()
    try:
        scan.scan_file(path, max_bytes=MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(document)


@pytest.mark.timeout(60)
def test_masking_with_thousands_of_found_values_stays_linear() -> None:
    """A capture with 5,000 distinct tokens sanitizes each string in time independent of how many were found
    (testing every form of every value against every string took minutes: a HAR of 1.2 MB took 21 s)."""
    values = [f"tok{index:05d}{uuid.uuid4().hex}" for index in range(5000)]
    masker = Masker(values)
    started = time.monotonic()
    masked = [masker.text(f"Bearer {value} and some text around it") for value in values]
    elapsed = time.monotonic() - started
    assert not any(value in text for value, text in zip(values, masked, strict=True))
    assert masker.data(f"<{values[7]}>".encode()) == f"<{masker.mask}>".encode()
    assert elapsed < 5, f"masking 5,000 strings took {elapsed:.1f} s"


def test_sanitize_refuses_a_target_that_is_not_a_regular_file_or_is_the_input(tmp_path: Path) -> None:
    """`--sanitize` onto a FIFO or device (`/dev/stdout`: the rename replaced the node itself, as root) or onto
    the HAR being scanned is one line, and leaves that path as it was."""
    source = _write(tmp_path, har([entry(url=f"https://x.example.com/?token={github_token()}")]))
    original = source.read_bytes()
    fifo = tmp_path / "out.har"
    os.mkfifo(fifo)
    result = scan.scan_file(source, max_bytes=MAX)
    for target, message in ((fifo, "not a regular file"), (source, "the file being scanned")):
        with pytest.raises(HarError, match=message) as raised:
            scan.write_sanitized(source, target, result, max_bytes=MAX)
        assert "\n" not in str(raised.value)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and source.read_bytes() == original


@pytest.mark.parametrize("content", [
    b'{"log": {"entries": [], "entries": []}}',
    b'{"log": {"entries": []}, "log": {"entries": []}}',
])
def test_a_second_entries_array_is_refused(tmp_path: Path, content: bytes) -> None:
    """Two `entries` arrays (or two `log` objects): refused in one line, not a sanitized copy with both, of which
    JSON readers keep only the last."""
    path = tmp_path / "twice.har"
    path.write_bytes(content)
    with pytest.raises(HarError, match="more than one"):
        scan.scan_file(path, max_bytes=MAX)
