"""Detector formats: each tool's native output round-trips to the exposures it names, with canary secrets."""

from __future__ import annotations

import base64
import importlib
import json
import secrets
import string
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.errors import FormatError, InvalidExposure
from orchestrator.events import Exposure, claimed_id, decode
from orchestrator.formats import FORMATS, Batch, Options, parse
from orchestrator.formats.findings import KNOWN_KINDS
from orchestrator.playbooks import load_playbooks
from orchestrator.providers import catalog
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR

_UPPER = string.ascii_uppercase + "234567"
_ALNUM = string.ascii_letters + string.digits


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def aws_key_id(prefix: str = "AKIA") -> str:
    """A canary access key id with the right prefix."""
    return prefix + _random(_UPPER, 16)


def aws_secret() -> str:
    """A canary secret access key (40 characters)."""
    return _random(_ALNUM + "+/", 40)


def github_token() -> str:
    """A canary classic personal access token."""
    return "ghp_" + _random(_ALNUM, 36)


def slack_token() -> str:
    """A canary Slack bot token."""
    return f"xoxb-{_random(string.digits, 12)}-{_random(string.digits, 12)}-{_random(_ALNUM, 24)}"


def okta_api_token() -> str:
    """A canary Okta API (SSWS) token."""
    return "00" + _random(_ALNUM + "-_", 40)


def gcp_key() -> dict[str, str]:
    """A canary service-account key file."""
    return {"type": "service_account", "project_id": "canary-project", "private_key_id": secrets.token_hex(20),
            "private_key": "-----BEGIN PRIVATE KEY-----\n" + _random(_ALNUM, 64) + "\n-----END PRIVATE KEY-----\n",
            "client_email": f"sa-{secrets.token_hex(3)}@canary-project.iam.gserviceaccount.com"}


def _lines(*documents: Any) -> bytes:
    return b"\n".join(json.dumps(d).encode() for d in documents) + b"\n"


def _secret(exposure: Exposure) -> str | None:
    secret = exposure.credential.secret
    return secret.get_secret_value() if secret is not None else None


def _summary(batch: Batch) -> list[tuple[str, str | None, str | None, str | None]]:
    return [(e.credential.kind, e.credential.id, e.credential.owner, _secret(e)) for e in batch.exposures]


# --- exposure and cloudevents -------------------------------------------------------------------------------

def test_exposure_object_array_and_lines_read_the_same() -> None:
    """`exposure` takes one object, an array or JSON lines; each event keeps its own id."""
    token = okta_api_token()
    events = [{"id": f"e-{secrets.token_hex(4)}", "credential": {"kind": "okta.api_token", "secret": token}},
              {"id": f"e-{secrets.token_hex(4)}", "credential": {"kind": "okta.user", "owner": "sam@example.com"}}]
    as_array = parse("exposure", json.dumps(events).encode())
    as_lines = parse("exposure", _lines(*events))
    single = parse("exposure", json.dumps(events[0]).encode())
    assert [e.id for e in as_array.exposures] == [e.id for e in as_lines.exposures] == [ev["id"] for ev in events]
    assert _summary(single) == [("okta.api_token", None, None, token)]
    assert as_array.unknown_rules == {}


def test_exposure_kind_no_playbook_knows_is_counted_not_dropped() -> None:
    """A kind no shipped playbook acts on is published all the same and counted for stderr."""
    batch = parse("exposure", _lines({"id": "typo-1", "credential": {"kind": "okta.usr", "owner": "sam@x.io"}}))
    assert [e.credential.kind for e in batch.exposures] == ["okta.usr"]
    assert batch.unknown_rules == {"okta.usr": 1}
    assert any("okta.usr (1)" in note for note in batch.notes("exposure"))


def test_exposure_bad_line_names_the_line_and_yields_nothing() -> None:
    """A bad third line fails the whole input with `line 3`, and the secret of line 1 is not in the message."""
    token = github_token()
    data = _lines({"id": "a", "credential": {"kind": "github.token", "secret": token}},
                  {"id": "b", "credential": {"kind": "github.token", "secret": github_token()}}) + b"{oops\n"
    with pytest.raises(FormatError) as caught:
        parse("exposure", data)
    assert caught.value.where == "line 3" and token not in str(caught.value)


def test_cloudevents_structured_data_base64_and_batch() -> None:
    """`cloudevents`: structured events whose data (or data_base64) is an exposure; a batch array too."""
    token = slack_token()
    inner = {"id": f"ce-{secrets.token_hex(4)}", "credential": {"kind": "slack.token", "secret": token}}
    envelope = {"specversion": "1.0", "id": "1", "source": "/scanner", "type": "com.example.exposure",
                "datacontenttype": "application/json", "data": inner}
    encoded = {**{k: v for k, v in envelope.items() if k != "data"},
               "data_base64": base64.b64encode(json.dumps(inner).encode()).decode()}
    for data in (json.dumps(envelope).encode(), json.dumps([envelope, encoded]).encode()):
        batch = parse("cloudevents", data)
        assert {e.id for e in batch.exposures} == {inner["id"]}
        assert all(_secret(e) == token for e in batch.exposures)


@pytest.mark.parametrize("broken", [{"specversion": "0.3"}, {"id": None}, {"data": None, "data_base64": "!!"},
                                    {"datacontenttype": "text/plain"}])
def test_cloudevents_bad_envelope_names_the_item(broken: dict[str, Any]) -> None:
    """A CloudEvent without a valid envelope fails with its item named."""
    envelope = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                "data": {"id": "x", "credential": {"kind": "okta.user", "owner": "a@b.c"}}}
    envelope.update(broken)
    envelope = {k: v for k, v in envelope.items() if v is not None}
    with pytest.raises(FormatError) as caught:
        parse("cloudevents", json.dumps([envelope]).encode())
    assert caught.value.where == "item 1"


def test_consumer_decodes_cloudevents_structured_and_binary() -> None:
    """The consumer's decode unwraps a structured CloudEvent and reads a binary one's value as the exposure."""
    inner = {"id": f"ce-{secrets.token_hex(4)}", "credential": {"kind": "okta.user", "owner": "sam@example.com"}}
    structured = json.dumps({"specversion": "1.0", "id": "9", "source": "/s", "type": "t", "data": inner}).encode()
    binary_headers = [("ce_specversion", b"1.0"), ("ce_id", b"9"), ("ce_source", b"/s"), ("ce_type", b"t"),
                      ("content-type", b"application/json")]
    assert decode(structured, max_bytes=65536,
                  headers=[("content-type", b"application/cloudevents+json; charset=utf-8")]).id == inner["id"]
    assert decode(json.dumps(inner).encode(), max_bytes=65536, headers=binary_headers).id == inner["id"]
    with pytest.raises(InvalidExposure, match="lacks required attribute"):
        decode(json.dumps(inner).encode(), max_bytes=65536, headers=binary_headers[:1])
    with pytest.raises(InvalidExposure, match="not JSON"):
        decode(json.dumps(inner).encode(), max_bytes=65536, headers=[*binary_headers[:4], ("content-type", b"text/x")])
    assert claimed_id(structured) == inner["id"]  # a rejected structured event is filed under its exposure's id


# --- scanners -----------------------------------------------------------------------------------------------

def test_trufflehog_findings_map_to_kinds_owners_and_ids() -> None:
    """TruffleHog lines: AWS (key id, secret, user from arn), GitHub, Slack, Okta, GCP key JSON; logs skipped."""
    key_id, key_secret, gh, sl, ok, gcp = aws_key_id(), aws_secret(), github_token(), slack_token(), \
        okta_api_token(), gcp_key()
    git = {"Data": {"Git": {"commit": "abc123", "file": "deploy/env", "line": 4, "repository": "https://g/r"}}}
    data = _lines(
        {"level": "info-0", "msg": "running source"},
        {"DetectorName": "AWS", "DetectorType": 2, "Raw": key_id, "RawV2": key_id + key_secret, "Verified": True,
         "ExtraData": {"arn": "arn:aws:iam::123456789012:user/deployer", "account": "123456789012"},
         "SourceMetadata": git},
        {"DetectorName": "Github", "Raw": gh, "Verified": False, "VerificationError": "timeout",
         "ExtraData": {"username": "octocat"}},
        {"DetectorType": 13, "Raw": sl, "Verified": False},
        {"DetectorName": "Okta", "Raw": ok, "RawV2": f"acme.okta.com:{ok}", "Verified": True},
        {"DetectorName": "GCP", "Raw": gcp["client_email"], "RawV2": json.dumps(gcp), "Verified": True,
         "ExtraData": {"project": "canary-project", "private_key_id": gcp["private_key_id"]}},
    )
    batch = parse("trufflehog", data)
    assert _summary(batch) == [
        ("aws.access_key", key_id, "deployer", key_secret), ("github.token", None, "octocat", gh),
        ("slack.token", None, None, sl), ("okta.api_token", None, None, ok),
        ("gcp.service_account_key", gcp["private_key_id"], gcp["client_email"], json.dumps(gcp)),
    ]
    aws, github = batch.exposures[0], batch.exposures[1]
    assert aws.source.verified is True and aws.severity == "critical"
    assert aws.source.location == "git:https://g/r deploy/env:4 @ abc123"
    assert github.source.verified is None and batch.exposures[2].source.verified is False
    assert batch.unknown_rules == {}


def test_trufflehog_session_keys_and_unknown_detectors() -> None:
    """An ASIA key id is an aws.session; an unknown detector is published with its prefix's kind or its own."""
    session_id, stripe = aws_key_id("ASIA"), "sk_live_" + _random(_ALNUM, 24)
    data = _lines({"DetectorName": "AWSSessionKey", "Raw": session_id,
                   "ExtraData": {"arn": "arn:aws:sts::1:assumed-role/app/i-1"}},
                  {"DetectorName": "Stripe", "Raw": stripe},
                  {"DetectorName": "SomeNewGitHubThing", "Raw": github_token()})
    batch = parse("trufflehog", data)
    assert [(e.credential.kind, e.credential.owner) for e in batch.exposures] == [
        ("aws.session", "arn:aws:sts::1:assumed-role/app/i-1"), ("trufflehog.stripe", None), ("github.token", None)]
    assert batch.unknown_rules == {"Stripe": 1, "SomeNewGitHubThing": 1}


def test_gitleaks_report_rules_locations_and_sniffed_kinds() -> None:
    """Gitleaks: RuleID → kind, the AWS rule's capture becomes the key id, generic rules are sniffed and counted."""
    key_id, gh, sl, ok, gh2 = aws_key_id(), github_token(), slack_token(), okta_api_token(), github_token()
    common = {"File": "app/settings.py", "StartLine": 12, "Commit": "deadbeef", "Date": "2026-11-30T10:00:00Z"}
    report = [{"RuleID": "aws-access-token", "Secret": key_id, **common},
              {"RuleID": "github-pat", "Secret": gh, **common, "Link": "https://github.com/o/r/blob/deadbeef/x#L3"},
              {"RuleID": "slack-bot-token", "Secret": sl, **common},
              {"RuleID": "okta-access-token", "Secret": ok, **common, "Date": ""},
              {"RuleID": "generic-api-key", "Secret": gh2, **common}]
    batch = parse("gitleaks", json.dumps(report).encode())
    assert _summary(batch) == [("aws.access_key", key_id, None, None), ("github.token", None, None, gh),
                               ("slack.token", None, None, sl), ("okta.api_token", None, None, ok),
                               ("github.token", None, None, gh2)]
    assert batch.exposures[0].source.location == "app/settings.py:12 @ deadbeef"
    assert batch.exposures[1].source.location == "https://github.com/o/r/blob/deadbeef/x#L3"
    assert batch.exposures[3].detected_at is None and batch.exposures[0].detected_at is not None
    assert batch.unknown_rules == {"generic-api-key": 1}


def test_betterleaks_validation_status_is_recorded_never_dropped() -> None:
    """Betterleaks: valid → verified; revoked and invalid published unverified at low severity with a reason."""
    valid, revoked, invalid, fresh = github_token(), github_token(), slack_token(), github_token()
    legacy = [{"RuleID": "github-pat", "Secret": valid, "File": "a", "StartLine": 1, "ValidationStatus": "valid"},
              {"RuleID": "github-pat", "Secret": revoked, "File": "a", "StartLine": 2, "ValidationStatus": "revoked"}]
    modern = [{"ruleID": "slack-bot-token", "secret": invalid, "location": {"startLine": 7},
               "attributes": {"path": "b.env", "git.sha": "cafe"}, "validation": {"status": "invalid"}},
              {"ruleID": "github-pat", "secret": fresh, "location": {"startLine": 9}, "attributes": {"path": "c"}}]
    batch = parse("betterleaks", json.dumps(legacy + modern).encode())
    by_secret = {_secret(e): e for e in batch.exposures}
    assert set(by_secret) == {valid, revoked, invalid, fresh}
    assert by_secret[valid].source.verified is True and by_secret[valid].severity == "high"
    for gone in (revoked, invalid):
        assert by_secret[gone].source.verified is False and by_secret[gone].severity == "low"
        assert by_secret[gone].reason is not None and "betterleaks reports the secret" in by_secret[gone].reason
    assert by_secret[invalid].source.location == "b.env:7 @ cafe"
    assert by_secret[fresh].source.verified is None
    assert batch.validity == {"revoked": 1, "invalid": 1}


def test_github_secret_scanning_alert_webhook() -> None:
    """A secret_scanning_alert delivery: secret_type → kind, validity active → verified, location from the alert."""
    token = github_token()
    payload = {"action": "created", "repository": {"full_name": "acme/app"},
               "alert": {"number": 7, "secret_type": "github_personal_access_token", "secret": token,
                         "validity": "active", "created_at": "2026-12-01T08:00:00Z",
                         "html_url": "https://github.com/acme/app/security/secret-scanning/7",
                         "first_location_detected": {"path": "ci.yml", "start_line": 3, "commit_sha": "f00d"}}}
    batch = parse("github-secret-scanning", json.dumps(payload).encode())
    assert _summary(batch) == [("github.token", None, None, token)]
    exposure = batch.exposures[0]
    assert exposure.source.verified is True and exposure.source.location == "acme/app ci.yml:3 @ f00d"
    inactive = {**payload, "alert": {**payload["alert"], "validity": "inactive"}}
    recorded = parse("github-secret-scanning", json.dumps(inactive).encode())
    assert recorded.validity == {"revoked": 1} and recorded.exposures[0].source.verified is False


def test_github_partner_payload() -> None:
    """The partner payload `[{token, type, url, source}]`: AWS key ids become ids, unknown types are counted."""
    key_id, gh, sl = aws_key_id(), github_token(), slack_token()
    payload = [{"token": key_id, "type": "aws_access_key_id", "url": "https://github.com/o/r/blob/x",
                "source": "content"},
               {"token": gh, "type": "github_oauth_access_token", "url": "https://gist.github.com/1", "source": "gist"},
               {"token": sl, "type": "acme_mystery_token", "url": "https://github.com/o/r/issues/1",
                "source": "issue"}]
    batch = parse("github-secret-scanning", json.dumps(payload).encode())
    assert _summary(batch) == [("aws.access_key", key_id, None, None), ("github.token", None, None, gh),
                               ("slack.token", None, None, sl)]
    assert batch.exposures[1].source.location == "gist https://gist.github.com/1"
    assert batch.unknown_rules == {"acme_mystery_token": 1}


def test_gitguardian_incident_webhooks() -> None:
    """GitGuardian incidents: matches give key id and secret; other actions and value-less incidents are counted."""
    key_id, key_secret = aws_key_id(), aws_secret()
    incident = {"id": 42, "date": "2026-12-01T09:00:00Z", "validity": "valid", "secret_revoked": False,
                "detector": {"name": "aws_iam", "display_name": "AWS Keys", "detector_group_name": "aws_iam"},
                "occurrences": [{"sha": "0ff1ce", "filepath": "infra/main.tf", "source": {"full_name": "acme/infra"},
                                 "matches": [{"name": "client_id", "match": key_id},
                                             {"name": "client_secret", "match": key_secret}]}]}
    deliveries = [{"action": "incident_triggered", "incident": incident},
                  {"action": "incident_resolved", "incident": incident},
                  {"action": "incident_triggered", "incident": {**incident, "occurrences": []}}]
    batch = parse("gitguardian", _lines(*deliveries))
    assert _summary(batch) == [("aws.access_key", key_id, None, key_secret)]
    assert batch.exposures[0].source.location == "acme/infra infra/main.tf @ 0ff1ce"
    assert batch.exposures[0].source.verified is True
    assert sum(batch.ignored.values()) == 2


def test_aws_health_credentials_exposed() -> None:
    """AWS_RISK_CREDENTIALS_EXPOSED → aws.access_key with the key id; an event with no key id is counted ignored."""
    key_id = aws_key_id()
    event = {"version": "0", "id": "1", "detail-type": "AWS Health Event", "source": "aws.health",
             "account": "123456789012", "time": "2026-12-01T10:00:00Z", "resources": [key_id],
             "detail": {"eventArn": "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/x",
                        "service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
                        "affectedEntities": [{"entityValue": key_id}]}}
    other = {**event, "resources": [], "detail": {"eventTypeCode": "AWS_EC2_MAINTENANCE_SCHEDULED"}}
    batch = parse("aws-health", json.dumps([event, other]).encode())
    assert _summary(batch) == [("aws.access_key", key_id, None, None)]
    assert "account 123456789012" in (batch.exposures[0].source.location or "")
    assert sum(batch.ignored.values()) == 1 and batch.unknown_rules == {}


def test_guardduty_credential_exfiltration_and_samples() -> None:
    """InstanceCredentialExfiltration → aws.session with the ASIA key and the role; sample findings ignored."""
    session_id = aws_key_id("ASIA")
    finding = {"schemaVersion": "2.0", "accountId": "123456789012", "region": "eu-west-1", "id": "f1",
               "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS", "severity": 8,
               "resource": {"resourceType": "AccessKey",
                            "accessKeyDetails": {"accessKeyId": session_id, "userName": "app-role",
                                                 "userType": "AssumedRole"}},
               "service": {"additionalInfo": {}}}
    sample = {**finding, "service": {"additionalInfo": {"sample": True}}}
    pascal = {"Findings": [{"Type": finding["type"], "Severity": 9,
                            "Resource": {"AccessKeyDetails": {"AccessKeyId": session_id, "UserName": "app-role"}},
                            "Service": {"AdditionalInfo": {"Value": "{\"sample\":false}", "Type": "default"}}}]}
    batch = parse("guardduty", _lines({"detail-type": "GuardDuty Finding", "detail": finding},
                                      {"detail-type": "GuardDuty Finding", "detail": sample}, pascal))
    assert _summary(batch) == [("aws.session", session_id, "app-role", None)] * 2
    assert [e.severity for e in batch.exposures] == ["high", "critical"]
    assert batch.ignored == {"sample finding (generated by CreateSampleFindings)": 1}


# --- ssf ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signer() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    """An ES256 key and the JWKS that publishes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return key, {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}


def sign_set(key: ec.EllipticCurvePrivateKey, events: dict[str, Any], **claims: Any) -> str:
    """A Security Event Token signed by `key`."""
    body = {"iss": "https://idp.example.com", "aud": "https://rp.example.com", "iat": 1764576000,
            "jti": secrets.token_hex(8), "events": events, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1", "typ": "secevent+jwt"})


def test_ssf_session_revoked_and_credential_compromise(signer: tuple[Any, dict[str, Any]]) -> None:
    """CAEP session-revoked → okta.session (session id, user); RISC credential-compromise → okta.user."""
    key, jwks = signer
    session_id = "102" + secrets.token_hex(10)
    revoked = sign_set(key, {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {
        "subject": {"format": "complex", "user": {"format": "email", "email": "sam@example.com"},
                    "session": {"format": "opaque", "id": session_id}}, "event_timestamp": 1764576100}})
    compromised = sign_set(key, {"https://schemas.openid.net/secevent/risc/event-type/credential-compromise": {
        "credential_type": "password"}}, sub_id={"format": "iss_sub", "iss": "https://idp", "sub": "00u123"})
    verification = sign_set(key, {"https://schemas.openid.net/secevent/ssf/event-type/verification": {}})
    batch = parse("ssf", f"{revoked}\n{compromised}\n{verification}\n".encode(),
                  options=Options(jwks=jwks, issuer="https://idp.example.com", audience="https://rp.example.com"))
    assert _summary(batch) == [("okta.session", session_id, "sam@example.com", None),
                               ("okta.user", None, "00u123", None)]
    assert all(e.source.verified for e in batch.exposures) and sum(batch.ignored.values()) == 1


def test_ssf_refuses_bad_signatures_and_wrong_receivers(signer: tuple[Any, dict[str, Any]]) -> None:
    """A token signed by another key, for another audience, or read without a JWKS fails, naming the token."""
    key, jwks = signer
    event = {"https://schemas.openid.net/secevent/risc/event-type/credential-compromise": {
        "subject": {"format": "email", "email": "sam@example.com"}}}
    good = sign_set(key, event)
    forged = sign_set(ec.generate_private_key(ec.SECP256R1()), event)
    with pytest.raises(FormatError, match="signature failed") as caught:
        parse("ssf", f"{good}\n{forged}".encode(), options=Options(jwks=jwks))
    assert caught.value.where == "token 2"
    with pytest.raises(FormatError, match="audience"):
        parse("ssf", good.encode(), options=Options(jwks=jwks, audience="https://someone-else"))
    with pytest.raises(FormatError, match="--jwks"):
        parse("ssf", good.encode())
    unsigned = jwt.encode({"iss": "x", "iat": 1, "jti": "j", "events": event}, None, algorithm="none")
    with pytest.raises(FormatError):
        parse("ssf", unsigned.encode(), options=Options(jwks=jwks))


# --- ids ----------------------------------------------------------------------------------------------------

def test_ids_are_deterministic_per_finding() -> None:
    """Re-parsing a scan gives the same ids; another location or secret gives another id; none shows the secret."""
    token = github_token()
    finding = {"RuleID": "github-pat", "Secret": token, "File": "a.py", "StartLine": 1}
    first = parse("gitleaks", json.dumps([finding]).encode()).exposures[0].id
    again = parse("gitleaks", json.dumps([finding]).encode()).exposures[0].id
    moved = parse("gitleaks", json.dumps([{**finding, "StartLine": 2}]).encode()).exposures[0].id
    other = parse("gitleaks", json.dumps([{**finding, "Secret": github_token()}]).encode()).exposures[0].id
    assert first == again and len({first, moved, other}) == 3
    assert first.startswith("gitleaks-") and token not in first


def test_every_registered_format_has_an_adapter() -> None:
    """Each name in the registry imports and rejects an empty object with the typed error or parses it."""
    for name in FORMATS:
        try:
            parse(name, b"{}", options=Options(jwks={"keys": []}))
        except FormatError as exc:
            assert exc.format == name


def test_notes_escape_what_the_input_names() -> None:
    """Rule names echoed on stderr cannot draw on the terminal: control characters are escaped."""
    batch = parse("gitleaks", json.dumps([{"RuleID": "evil\x1b]52;c;aGk=\x07\r", "Secret": github_token()}]).encode())
    note = " ".join(batch.notes("gitleaks"))
    assert "\x1b" not in note and "\r" not in note and "\\x1b]52" in note


def test_origin_locates_findings_that_say_nowhere() -> None:
    """A finding without a location gets the input's name; one with a location keeps its own."""
    report = [{"RuleID": "github-pat", "Secret": github_token()},
              {"RuleID": "github-pat", "Secret": github_token(), "File": "x.py"}]
    batch = parse("gitleaks", json.dumps(report).encode(), options=Options(origin="leaks.json"))
    assert [e.source.location for e in batch.exposures] == ["leaks.json", "x.py"]


def test_the_same_finding_twice_in_one_input_is_published_once() -> None:
    """A finding repeated in one report yields one exposure, and the repeat is counted, not silent."""
    finding = {"RuleID": "github-pat", "Secret": github_token(), "File": "a.py", "StartLine": 1}
    batch = parse("gitleaks", json.dumps([finding, finding]).encode())
    assert len(batch.exposures) == 1 and sum(batch.ignored.values()) == 1


def test_github_alert_location_delivery_uses_its_location() -> None:
    """A secret_scanning_alert_location delivery locates the exposure where that delivery says."""
    token = github_token()
    payload = {"action": "created", "repository": {"full_name": "acme/app"},
               "alert": {"number": 8, "secret_type": "github_personal_access_token", "secret": token},
               "location": {"type": "commit", "details": {"path": "b.txt", "start_line": 9, "commit_sha": "beef"}}}
    batch = parse("github-secret-scanning", json.dumps(payload).encode())
    assert batch.exposures[0].source.location == "acme/app b.txt:9 @ beef"


def test_an_unreadable_detector_timestamp_is_left_out_not_fatal() -> None:
    """A finding whose date is not a timestamp is still published, without `detected_at`."""
    incident = {"detector": {"name": "github_access_token"}, "date": "last tuesday",
                "occurrences": [{"matches": [{"name": "apikey", "match": github_token()}]}]}
    batch = parse("gitguardian", json.dumps({"action": "incident_triggered", "incident": incident}).encode())
    assert len(batch.exposures) == 1 and batch.exposures[0].detected_at is None


def test_gitguardian_new_occurrence_delivery() -> None:
    """A new-occurrence delivery's own `occurrence` gives the values and the location."""
    token = slack_token()
    delivery = {"action": "new_occurrence", "incident": {"detector": {"name": "slackbot_token"}},
                "occurrence": {"filepath": "bot.py", "source": {"fullname": "acme/bot"},
                               "matches": [{"name": "apikey", "match": token}]}}
    batch = parse("gitguardian", json.dumps(delivery).encode())
    assert _summary(batch) == [("slack.token", None, None, token)]
    assert batch.exposures[0].source.location == "acme/bot bot.py"


def test_rule_tables_name_only_kinds_the_shipped_playbooks_act_on() -> None:
    """Every adapter's table maps to kinds a shipped playbook matches, and KNOWN_KINDS is exactly those kinds."""
    playbook_kinds = {kind for p in load_playbooks(DEFAULT_PLAYBOOKS_DIR, catalog()) for kind in p.match.kinds}
    assert playbook_kinds == KNOWN_KINDS, "keep orchestrator.formats.findings.KNOWN_KINDS and the adapters' " \
                                          "tables in step with the playbooks' kinds"
    covered: set[str] = set()
    for module in set(FORMATS.values()):
        table: dict[str, str] = getattr(importlib.import_module(f"orchestrator.formats.{module}"), "RULES", {})
        assert set(table.values()) <= KNOWN_KINDS, module
        covered |= set(table.values())
    assert covered == KNOWN_KINDS
