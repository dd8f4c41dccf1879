"""`github-secret-scanning`: GitHub's `secret_scanning_alert` webhook payload (or REST alert objects) and the
secret-scanning partner payload (`[{"token", "type", "url", "source"}]`).

Alerts: `secret_type` → kind, `secret` → secret, `validity` (`active` → verified, `inactive` → recorded as
revoked), `resolution: revoked` → recorded as revoked, repository and `html_url` or location → location.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.errors import FormatError
from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "github-secret-scanning"

#: GitHub secret type (its "Supported secret scanning patterns" tokens) → credential kind.
RULES: dict[str, str] = {
    "github_personal_access_token": "github.token",
    "github_oauth_access_token": "github.token",
    "github_app_installation_access_token": "github.token",
    "github_refresh_token": "github.token",
    "github_ssh_private_key": "github.token",
    "aws_access_key_id": "aws.access_key",
    "aws_secret_access_key": "aws.access_key",
    "aws_temporary_access_key_id": "aws.session",
    "aws_session_token": "aws.session",
    "slack_api_token": "slack.token",
    "slack_user_token": "slack.token",
    "slack_bot_token": "slack.token",
    "okta_api_token": "okta.api_token",
    "google_cloud_private_key_id": "gcp.service_account_key",
    "google_cloud_service_account_credentials": "gcp.service_account_key",
}


def parse(data: bytes, *, options: Options) -> Batch:
    """An alert webhook delivery, a JSON array of REST alerts, or a partner payload (told apart by shape)."""
    collector = Collector(FORMAT, RULES)
    document = documents.load(FORMAT, data)
    if isinstance(document, list):
        for index, item in enumerate(document, start=1):
            where = f"item {index}"
            item = documents.obj(FORMAT, where, item, "a partner token or an alert (a JSON object)")
            if "token" in item:
                _partner(collector, where, item)
            else:
                _alert(collector, where, item, None)
    elif isinstance(document, dict) and isinstance(document.get("alert"), dict):
        alert = document["alert"]
        if isinstance(document.get("location"), dict):  # a secret_scanning_alert_location delivery
            alert = {**alert, "location": document["location"]}
        _alert(collector, "alert", alert, document.get("repository"))
    elif isinstance(document, dict) and "secret_type" in document:
        _alert(collector, "alert", document, document.get("repository"))
    else:
        raise FormatError(FORMAT, None, "expected a secret_scanning_alert webhook payload (with alert), "
                                        "an array of alerts, or a partner payload [{token, type, url, source}]")
    return collector.batch()


def _partner(collector: Collector, where: str, item: Mapping[str, Any]) -> None:
    token = documents.text(FORMAT, where, item, "token", required=True)
    rule = documents.text(FORMAT, where, item, "type", required=True) or ""
    kind = collector.kind_for(rule, token)
    source = documents.text(FORMAT, where, item, "source")
    url = documents.text(FORMAT, where, item, "url")
    _add(collector, where, rule, kind, token, location=" ".join(p for p in (source, url) if p) or None)


def _alert(collector: Collector, where: str, alert: Mapping[str, Any], repository: Any) -> None:
    rule = documents.text(FORMAT, where, alert, "secret_type", required=True) or ""
    secret = documents.text(FORMAT, where, alert, "secret")
    kind = collector.kind_for(rule, secret)
    validity = (documents.text(FORMAT, where, alert, "validity") or "").lower()
    resolution = (documents.text(FORMAT, where, alert, "resolution") or "").lower()
    recorded = "revoked" if resolution == "revoked" or validity == "inactive" else None
    repo = repository if isinstance(repository, dict) else alert.get("repository")
    repo_name = documents.text(FORMAT, where, repo, "full_name") if isinstance(repo, dict) else None
    place = _first_location(where, alert)
    url = documents.text(FORMAT, where, alert, "html_url")
    location = " ".join(p for p in (repo_name, place or url) if p) or None
    _add(collector, where, rule, kind, secret, location=location,
         verified=True if validity == "active" else (None if validity in ("", "unknown") else False),
         validity=recorded, detected_at=documents.text(FORMAT, where, alert, "created_at"))


def _add(collector: Collector, where: str, rule: str, kind: str, secret: str | None, *, location: str | None,
         verified: bool | None = None, validity: str | None = None, detected_at: str | None = None) -> None:
    key_id = None
    if kind in ("aws.access_key", "aws.session") and secret and secret[:4] in ("AKIA", "ASIA"):
        key_id, secret = secret, None  # the key id, the handle the AWS playbooks act on
        kind = "aws.session" if key_id.startswith("ASIA") else "aws.access_key"
    collector.add(where, rule=rule, kind=kind, secret=secret, id=key_id, location=location, verified=verified,
                  validity=validity, detected_at=detected_at)


def _first_location(where: str, alert: Mapping[str, Any]) -> str | None:
    """`path:line @ commit` of the alert's first location (`first_location_detected`, or a location webhook's)."""
    location = alert.get("location") or alert.get("first_location_detected")
    if isinstance(location, dict) and isinstance(location.get("details"), dict):
        location = location["details"]
    if not isinstance(location, dict):
        return None
    path = documents.text(FORMAT, where, location, "path")
    line = location.get("start_line")
    commit = documents.text(FORMAT, where, location, "commit_sha")
    url = documents.text(FORMAT, where, location, "html_url", "blob_url", "issue_body_url")
    if path is None:
        return url
    text = f"{path}:{line}" if isinstance(line, int) and not isinstance(line, bool) else path
    return f"{text} @ {commit}" if commit else text
