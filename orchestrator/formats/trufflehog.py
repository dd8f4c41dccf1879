"""`trufflehog`: TruffleHog v3 `--json` output, one finding per line (log lines without a detector are skipped).

`DetectorName` (or the numeric `DetectorType`) → kind; `Raw`/`RawV2`/`SecretParts` → secret; `ExtraData` →
owner and ids where the detector gives them (AWS `arn`, GCP key JSON); `SourceMetadata` → location;
`Verified` → `source.verified` and critical severity, `VerificationError` → unknown (None), else medium.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator.errors import FormatError
from orchestrator.events import Severity
from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "trufflehog"

#: TruffleHog detector name (its `detector_type.proto` enum) → credential kind.
RULES: dict[str, str] = {
    "AWS": "aws.access_key",
    "AWSSessionKey": "aws.session",
    "Github": "github.token",
    "GitHubApp": "github.token",
    "GitHubOauth2": "github.token",
    "GitHubOld": "github.token",
    "Slack": "slack.token",
    "Okta": "okta.api_token",
    "GCP": "gcp.service_account_key",
    "GCPApplicationDefaultCredentials": "gcp.service_account_key",
}
#: The same detectors by enum number (`DetectorType`), for output that carries no name.
DETECTOR_TYPES: dict[int, str] = {2: "AWS", 6: "GCP", 8: "Github", 13: "Slack", 21: "Okta", 36: "GitHubApp",
                                  115: "GitHubOld", 924: "GitHubOauth2", 959: "AWSSessionKey",
                                  983: "GCPApplicationDefaultCredentials"}


def parse(data: bytes, *, options: Options) -> Batch:
    """Every finding in TruffleHog's JSON lines (a JSON array of them is read too)."""
    collector = Collector(FORMAT, RULES)
    for where, finding in documents.documents(FORMAT, data):
        finding = documents.obj(FORMAT, where, finding, "a finding (a JSON object)")
        if "DetectorName" not in finding and "DetectorType" not in finding:
            if "level" in finding and "msg" in finding:  # TruffleHog's own log lines, when stderr is merged
                continue
            raise FormatError(FORMAT, where, "missing DetectorName or DetectorType")
        _add(collector, where, finding)
    return collector.batch()


def _add(collector: Collector, where: str, finding: Mapping[str, Any]) -> None:
    name = documents.text(FORMAT, where, finding, "DetectorName")
    number = finding.get("DetectorType")
    if name is None and isinstance(number, int) and not isinstance(number, bool):
        name = DETECTOR_TYPES.get(number, f"type-{number}")
    rule = name or "unknown"
    raw = documents.text(FORMAT, where, finding, "Raw")
    raw_v2 = documents.text(FORMAT, where, finding, "RawV2")
    parts = finding.get("SecretParts")
    parts = parts if isinstance(parts, dict) else {}
    extra = finding.get("ExtraData")
    extra = extra if isinstance(extra, dict) else {}
    kind = collector.kind_for(rule, raw, raw_v2)
    # Raw is the secret for most detectors; RawV2 often joins it with context (Okta: `domain:token`).
    secret = documents.text(FORMAT, where, parts, "secret", "token", "key") or raw or raw_v2
    key_id = owner = None
    if kind in ("aws.access_key", "aws.session"):
        key_id = documents.text(FORMAT, where, parts, "id", "key_id", "access_key_id") or raw
        if raw_v2 and key_id and raw_v2.startswith(key_id) and len(raw_v2) > len(key_id):
            secret = raw_v2[len(key_id):].lstrip(":")  # RawV2 is the key id followed by its secret
        elif secret == key_id:
            secret = None
        kind = "aws.session" if key_id and key_id.startswith("ASIA") else kind
        owner = _aws_owner(documents.text(FORMAT, where, extra, "arn"))
    elif kind == "gcp.service_account_key":
        key_id, owner, secret = _gcp(where, raw_v2 or raw, extra)
    elif kind == "github.token":
        owner = documents.text(FORMAT, where, extra, "username", "user")
    verified = finding.get("Verified") is True
    error = documents.text(FORMAT, where, finding, "VerificationError")
    collector.add(where, rule=rule, kind=kind, secret=secret, id=key_id, owner=owner,
                  location=_location(where, finding.get("SourceMetadata")),
                  verified=True if verified else (None if error else False),
                  severity=Severity.CRITICAL if verified else (Severity.HIGH if error else Severity.MEDIUM))


def _aws_owner(arn: str | None) -> str | None:
    """The IAM user name of a user ARN; an assumed-role or role ARN as it is (the aws-session playbook takes it)."""
    if arn and ":user/" in arn:
        return arn.rsplit("/", 1)[-1]
    return arn


def _gcp(where: str, raw: str | None, extra: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Key id, account email and the key file from a service-account key JSON, when the finding holds one."""
    try:
        key = orjson.loads(raw) if raw and raw.lstrip().startswith("{") else None
    except orjson.JSONDecodeError:
        key = None
    if isinstance(key, dict):
        return (documents.text(FORMAT, where, key, "private_key_id"),
                documents.text(FORMAT, where, key, "client_email"), raw)
    email = raw if raw and "@" in raw and "{" not in raw else documents.text(FORMAT, where, extra, "client_email")
    return documents.text(FORMAT, where, extra, "private_key_id"), email, None if raw == email else raw


def _location(where: str, metadata: Any) -> str | None:
    """`link`, else `repository file:line @ commit`, from whichever source wrote `SourceMetadata.Data`."""
    data = metadata.get("Data") if isinstance(metadata, dict) else None
    if not isinstance(data, dict):
        return None
    for source, details in data.items():
        if not isinstance(details, dict):
            continue
        link = documents.text(FORMAT, where, details, "link")
        if link:
            return link
        path = documents.text(FORMAT, where, details, "file", "path", "key", "object", "image", "url")
        line = details.get("line")
        place = f"{path}:{line}" if path and isinstance(line, int) and line > 0 else path
        repository = documents.text(FORMAT, where, details, "repository", "bucket", "project")
        commit = documents.text(FORMAT, where, details, "commit")
        text = " ".join(p for p in (repository, place) if p)
        text = f"{text} @ {commit}" if commit else text
        return f"{source.lower()}:{text}" if text else source.lower()
    return None
