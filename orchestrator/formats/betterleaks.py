"""`betterleaks`: a Betterleaks JSON report, its Gitleaks-compatible (`--legacy`) shape or its own camelCase one.

Validation status (`ValidationStatus`, or `validation.status`): `valid` → verified; `revoked` and `invalid`
→ nothing to revoke, published unverified at low severity with the status as the reason (recorded, never
dropped); anything else → unverified.
"""

from __future__ import annotations

from typing import Any

from orchestrator.formats import documents, gitleaks
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "betterleaks"

#: Betterleaks keeps Gitleaks' rule ids.
RULES: dict[str, str] = dict(gitleaks.RULES)


def parse(data: bytes, *, options: Options) -> Batch:
    """Every finding of a Betterleaks report, with its validation status."""
    collector = Collector(FORMAT, RULES)
    for where, finding in gitleaks.report(FORMAT, data):
        status = _status(where, finding)
        gitleaks.add_finding(collector, where, finding, options=options,
                             verified=True if status == "valid" else (False if status else None),
                             validity=status if status in ("revoked", "invalid") else None)
    return collector.batch()


def _status(where: str, finding: Any) -> str | None:
    status = documents.text(FORMAT, where, finding, "ValidationStatus", "validationStatus")
    validation = finding.get("validation")
    if status is None and isinstance(validation, dict):
        status = documents.text(FORMAT, where, validation, "status")
    return status.strip().lower() if status else None
