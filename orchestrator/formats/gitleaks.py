"""`gitleaks`: a Gitleaks JSON report (`--report-format json`: an array of findings, or JSON lines).

Fields read: `RuleID` → kind, `Secret` (AWS rules capture the access key id: it becomes `credential.id`),
`Link`, else `File`/`StartLine`/`Commit` → location. Betterleaks (`betterleaks.py`) shares this reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "gitleaks"

#: Gitleaks rule id → credential kind (rule ids from its default config, gitleaks.toml).
RULES: dict[str, str] = {
    "aws-access-token": "aws.access_key",
    "aws-access-key": "aws.access_key",
    "github-pat": "github.token",
    "github-fine-grained-pat": "github.token",
    "github-oauth": "github.token",
    "github-app-token": "github.token",
    "github-refresh-token": "github.token",
    "slack-bot-token": "slack.token",
    "slack-user-token": "slack.token",
    "slack-app-token": "slack.token",
    "slack-config-access-token": "slack.token",
    "slack-config-refresh-token": "slack.token",
    "slack-legacy-bot-token": "slack.token",
    "slack-legacy-workspace-token": "slack.token",
    "slack-legacy-token": "slack.token",
    "okta-access-token": "okta.api_token",
    "okta-api-token": "okta.api_token",
    "gcp-service-account": "gcp.service_account_key",
    "gcp-service-account-key": "gcp.service_account_key",
}

#: Kinds whose "secret" as these tools capture it is the public key id, not the secret.
_ID_KINDS = frozenset({"aws.access_key", "aws.session"})


def parse(data: bytes, *, options: Options) -> Batch:
    """Every finding of a Gitleaks report."""
    collector = Collector(FORMAT, RULES)
    for where, finding in report(FORMAT, data):
        add_finding(collector, where, finding, options=options)
    return collector.batch()


def report(format: str, data: bytes) -> list[tuple[str, Mapping[str, Any]]]:
    """The findings of a report (a JSON array, one object, or JSON lines), each named `finding N` / `line N`."""
    found = []
    for where, item in documents.documents(format, data):
        where = where.replace("item", "finding")
        found.append((where, documents.obj(format, where, item, "a finding (a JSON object)")))
    return found


def add_finding(collector: Collector, where: str, finding: Mapping[str, Any], *, options: Options,
                validity: str | None = None, verified: bool | None = None) -> None:
    """One Gitleaks-shaped finding (also Betterleaks' legacy shape and its newer camelCase one)."""
    fmt = collector.format
    rule = documents.text(fmt, where, finding, "RuleID", "ruleID", "ruleId", required=True) or ""
    secret = documents.text(fmt, where, finding, "Secret", "secret", required=True)
    kind = collector.kind_for(rule, secret)
    key_id = None
    if kind in _ID_KINDS and secret and secret[:4] in ("AKIA", "ASIA"):
        key_id, secret = secret, None
        kind = "aws.session" if key_id.startswith("ASIA") else kind
    collector.add(where, rule=rule, kind=kind, secret=secret, id=key_id, location=location(fmt, where, finding),
                  verified=verified, validity=validity,
                  detected_at=documents.text(fmt, where, finding, "Date"))


def location(fmt: str, where: str, finding: Mapping[str, Any]) -> str | None:
    """`Link` when the report has one, else `file:line @ commit`."""
    attributes = finding.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    link = documents.text(fmt, where, finding, "Link") or documents.text(fmt, where, attributes, "url")
    if link:
        return link
    path = documents.text(fmt, where, finding, "File") or documents.text(fmt, where, attributes, "path")
    if path is None:
        return None
    line = finding.get("StartLine")
    nested = finding.get("location")
    if line is None and isinstance(nested, dict):
        line = nested.get("startLine")
    commit = documents.text(fmt, where, finding, "Commit") or documents.text(fmt, where, attributes, "git.sha")
    text = f"{path}:{line}" if isinstance(line, int) and not isinstance(line, bool) and line > 0 else path
    return f"{text} @ {commit}" if commit else text
