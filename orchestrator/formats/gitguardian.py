"""`gitguardian`: GitGuardian custom-webhook incident payloads (`{"action", "incident": {...}}`), one, an
array, or JSON lines; also bare incident objects as its API returns them.

`incident.detector.name` (or its `detector_group_name`) → kind; the `matches` (`{name, match}`) of the
delivery's `occurrence` or of `incident.occurrences[]` → secret, key id (`client_id`, `*_key_id`) and owner
(`client_email`); the first occurrence's source and file → location; `validity` `valid` → verified,
`invalid` or `secret_revoked` → recorded as revoked. Actions that are not a new exposure (resolved, ignored,
assigned, ...) are counted as ignored, and so are incidents that carry no value to act on (webhooks usually
send only the secret's hash).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "gitguardian"

#: GitGuardian detector name or detector group → credential kind.
RULES: dict[str, str] = {
    "aws_iam": "aws.access_key",
    "aws_keys": "aws.access_key",
    "aws_temporary_credentials": "aws.session",
    "github_access_token": "github.token",
    "github_personal_access_token": "github.token",
    "github_personal_access_token_v2": "github.token",
    "github_fine_grained_personal_access_token": "github.token",
    "github_oauth_token": "github.token",
    "github_app_token": "github.token",
    "github_refresh_token": "github.token",
    "slack_bot_token": "slack.token",
    "slackbot_token": "slack.token",
    "slack_user_token": "slack.token",
    "slack_app_token": "slack.token",
    "slack_token": "slack.token",
    "okta_token": "okta.api_token",
    "okta_api_token": "okta.api_token",
    "gcp_iam": "gcp.service_account_key",
    "google_cloud_keys": "gcp.service_account_key",
    "gcp_service_account": "gcp.service_account_key",
}

#: Webhook actions that announce a secret to act on; any other action is counted as ignored.
EXPOSING_ACTIONS = frozenset({"incident_triggered", "incident_regression", "incident_reopened",
                              "incident_validity_changed", "new_occurrence", "occurrence_created"})
_ID_MATCHES = frozenset({"client_id", "access_key_id", "key_id", "private_key_id", "id"})
_OWNER_MATCHES = frozenset({"client_email", "email", "username", "user"})


def parse(data: bytes, *, options: Options) -> Batch:
    """Every incident announced in the payload(s)."""
    collector = Collector(FORMAT, RULES)
    for where, item in documents.documents(FORMAT, data):
        item = documents.obj(FORMAT, where, item, "a webhook payload or an incident (a JSON object)")
        incident = item.get("incident") if "incident" in item else item
        incident = documents.obj(FORMAT, where, incident, "incident to be a JSON object")
        action = documents.text(FORMAT, where, item, "action")
        if action is not None and action not in EXPOSING_ACTIONS:
            collector.ignore(f"action {action[:60]} announces no new exposure")
            continue
        occurrence = item.get("occurrence")  # "new occurrence" deliveries carry it beside the incident
        _incident(collector, where, incident, occurrence if isinstance(occurrence, dict) else None)
    return collector.batch()


def _incident(collector: Collector, where: str, incident: Mapping[str, Any],
              extra_occurrence: Mapping[str, Any] | None) -> None:
    detector = incident.get("detector")
    detector = documents.obj(FORMAT, where, detector, "incident.detector to be a JSON object")
    rule = documents.text(FORMAT, where, detector, "name", "detector_group_name", required=True) or ""
    group = documents.text(FORMAT, where, detector, "detector_group_name")
    secret = key_id = owner = location = None
    occurrences = incident.get("occurrences")
    occurrences = list(occurrences) if isinstance(occurrences, list) else []
    for occurrence in [extra_occurrence, *occurrences] if extra_occurrence else occurrences:
        if not isinstance(occurrence, dict):
            continue
        location = location or _location(where, occurrence)
        matches = occurrence.get("matches")
        for match in matches if isinstance(matches, list) else []:
            if not isinstance(match, dict):
                continue
            name = (documents.text(FORMAT, where, match, "name", "type") or "").lower()
            value = documents.text(FORMAT, where, match, "match")
            if name in _ID_MATCHES:
                key_id = key_id or value
            elif name in _OWNER_MATCHES:
                owner = owner or value
            else:
                secret = secret or value
    kind = RULES.get(group.lower()) if group and rule.lower() not in RULES else None
    kind = kind or collector.kind_for(rule, key_id, secret)
    if kind.startswith("aws.") and key_id:
        kind = "aws.session" if key_id.startswith("ASIA") else "aws.access_key"
    if secret is None and key_id is None and owner is None:
        collector.ignore("incident carries no secret value or key id to act on (the payload holds only its hash)")
        return
    validity = (documents.text(FORMAT, where, incident, "validity") or "").lower()
    revoked = incident.get("secret_revoked") is True or validity == "invalid"
    collector.add(where, rule=rule, kind=kind, secret=secret, id=key_id, owner=owner,
                  location=location or documents.text(FORMAT, where, incident, "gitguardian_url"),
                  verified=True if validity == "valid" else None, validity="revoked" if revoked else None,
                  detected_at=documents.text(FORMAT, where, incident, "date"))


def _location(where: str, occurrence: Mapping[str, Any]) -> str | None:
    source = occurrence.get("source")
    name = documents.text(FORMAT, where, source, "full_name", "fullname", "url") if isinstance(source, dict) else None
    path = documents.text(FORMAT, where, occurrence, "filepath")
    sha = documents.text(FORMAT, where, occurrence, "sha")
    url = documents.text(FORMAT, where, occurrence, "url")
    text = " ".join(p for p in (name, path) if p)
    if sha and text:
        text = f"{text} @ {sha}"
    return text or url
