"""`aws-health`: AWS Health events as EventBridge delivers them (`source: aws.health`), one, an array, or
JSON lines; also the bare `detail` object.

`detail.eventTypeCode` → kind (`AWS_RISK_CREDENTIALS_EXPOSED` → `aws.access_key`); each access key id among
`resources` and `detail.affectedEntities[].entityValue` → one exposure with that key id; the event ARN and
account → location. An event that names no access key is counted as ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.events import Severity
from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "aws-health"

#: Health event type code → credential kind.
RULES: dict[str, str] = {
    "AWS_RISK_CREDENTIALS_EXPOSED": "aws.access_key",
    "AWS_RISK_CREDENTIALS_EXPOSURE_SUSPECTED": "aws.access_key",
    "AWS_RISK_IAM_QUARANTINE": "aws.access_key",
}
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def parse(data: bytes, *, options: Options) -> Batch:
    """One exposure per access key each Health event names."""
    collector = Collector(FORMAT, RULES)
    for where, item in documents.documents(FORMAT, data):
        event = documents.obj(FORMAT, where, item, "an AWS Health event (a JSON object)")
        detail = event.get("detail", event)
        detail = documents.obj(FORMAT, where, detail, "detail to be a JSON object")
        rule = documents.text(FORMAT, where, detail, "eventTypeCode", required=True) or ""
        keys = _key_ids(where, event, detail)
        if not keys:
            collector.ignore(f"{rule[:80]} event names no access key id")
            continue
        account = documents.text(FORMAT, where, event, "account")
        arn = documents.text(FORMAT, where, detail, "eventArn")
        when = documents.text(FORMAT, where, event, "time")
        for key_id in keys:
            kind = collector.kind_for(rule, key_id)
            if kind.startswith("aws."):
                kind = "aws.session" if key_id.startswith("ASIA") else "aws.access_key"
            collector.add(where, rule=rule, kind=kind, id=key_id,
                          location=" ".join(p for p in (f"account {account}" if account else None, arn) if p)
                          or None, verified=True, severity=Severity.CRITICAL,
                          detected_at=when)
    return collector.batch()


def _key_ids(where: str, event: Mapping[str, Any], detail: Mapping[str, Any]) -> list[str]:
    values: list[Any] = []
    resources = event.get("resources")
    if isinstance(resources, list):
        values.extend(resources)
    entities = detail.get("affectedEntities")
    if isinstance(entities, list):
        values.extend(e.get("entityValue") for e in entities if isinstance(e, dict))
    found: list[str] = []
    for value in values:
        if isinstance(value, str):
            for key_id in _KEY_ID.findall(value):
                if key_id not in found:
                    found.append(key_id)
    return found
