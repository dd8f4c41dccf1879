"""What every adapter shares: its options, its result, and turning one detector finding into an exposure.

An adapter reads a tool's native output and calls `Collector.add` once per finding; the collector derives
the exposure id (detector, rule, location, keyed secret fingerprint: re-running a scan yields the same ids,
so nothing is revoked twice), validates the event, counts rules its table does not know, and never drops one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from orchestrator.errors import FormatError
from orchestrator.events import Exposure, Severity, describe_validation_error
from orchestrator.keys import keyed_fingerprint

_MAX_LOCATION = 2000


@dataclass(frozen=True)
class Options:
    """What an adapter may need besides the bytes; all optional.

    `jwks` is a JSON Web Key Set (already loaded: adapters do no I/O) for signed formats; `issuer` and
    `audience` are checked in signed tokens when given; `origin` names the input (a file name) in locations.
    """

    jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    issuer: str | None = None
    audience: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class Batch:
    """The exposures made from one input, and what the operator must be told about it.

    `unknown_rules` counts findings whose rule is not in the adapter's table (published with the best kind
    it could give; they end `exposure.unmatched` unless that kind routes); `ignored` counts findings left out
    on purpose and why (e.g. GuardDuty sample findings); `validity` counts findings a detector reports as
    revoked or invalid (published all the same, unverified, so the record exists).
    """

    exposures: tuple[Exposure, ...]
    unknown_rules: Mapping[str, int] = field(default_factory=dict)
    ignored: Mapping[str, int] = field(default_factory=dict)
    validity: Mapping[str, int] = field(default_factory=dict)

    def notes(self, format: str) -> list[str]:
        """One human line per thing the operator should know (stderr), never holding a secret."""
        lines = []
        if self.unknown_rules:
            total = sum(self.unknown_rules.values())
            rules = ", ".join(f"{shown(rule)} ({n})" for rule, n in sorted(self.unknown_rules.items()))
            lines.append(f"{format}: {total} finding(s) whose rule or kind is not one this project acts on, "
                         f"published with the best kind the adapter could give (unrouted ones end "
                         f"exposure.unmatched): {rules}")
        for reason, n in sorted(self.ignored.items()):
            lines.append(f"{format}: ignored {n} finding(s): {shown(reason, 200)}")
        for state, n in sorted(self.validity.items()):
            lines.append(f"{format}: {n} finding(s) reported {shown(state)} by the detector: published unverified "
                         f"so the record exists")
        return lines


def shown(text: str, limit: int = 80) -> str:
    """Input text fit for a terminal line: control and non-printable characters escaped, length bounded."""
    clipped = text[:limit] + ("…" if len(text) > limit else "")
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in clipped)


#: The kinds the shipped playbooks act on; every adapter's table covers each one it can see.
KNOWN_KINDS: frozenset[str] = frozenset({
    "okta.session", "okta.user", "okta.api_token", "aws.access_key", "aws.session", "github.token",
    "slack.token", "gcp.service_account_key",
})

#: Secret prefixes that name a kind whatever rule found them (the fallback for rules no table knows).
_PREFIX_KINDS: tuple[tuple[str, str], ...] = (
    ("AKIA", "aws.access_key"), ("ASIA", "aws.session"),
    ("ghp_", "github.token"), ("gho_", "github.token"), ("ghu_", "github.token"), ("ghs_", "github.token"),
    ("ghr_", "github.token"), ("github_pat_", "github.token"),
    ("xoxb-", "slack.token"), ("xoxp-", "slack.token"), ("xoxa-", "slack.token"), ("xoxe-", "slack.token"),
    ("xoxe.xoxp-", "slack.token"), ("xoxr-", "slack.token"), ("xoxs-", "slack.token"), ("xoxo-", "slack.token"),
    ("SSWS ", "okta.api_token"),
)


def sniff_kind(*values: str | None) -> str | None:
    """The kind a secret or key id's own prefix gives away (`AKIA…` → aws.access_key), or None."""
    for value in values:
        if not value:
            continue
        text = value.strip()
        for prefix, kind in _PREFIX_KINDS:
            if text.startswith(prefix):
                return kind
        if '"service_account"' in text and '"private_key"' in text:
            return "gcp.service_account_key"
    return None


def unknown_kind(detector: str, rule: str) -> str:
    """The kind given to a rule no table maps and no prefix names: `<detector>.<rule>`, which routes nowhere."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in rule.strip().lower())[:60] or "unknown"
    return f"{detector}.{slug}"


def exposure_id(detector: str, rule: str, location: str | None, secret: str | None, handle: str | None) -> str:
    """A stable id for one finding: the same finding re-scanned gets the same id (and is deduplicated).

    Built from the secret's keyed fingerprint, never the secret, so the id reveals nothing of it.
    """
    material = "\x1f".join((detector, rule, location or "", keyed_fingerprint(secret) if secret else "",
                            handle or ""))
    return f"{detector}-{hashlib.sha256(material.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


class Collector:
    """Gathers one input's exposures; `add` validates each one and raises `FormatError` naming the item."""

    def __init__(self, format: str, table: Mapping[str, str]) -> None:
        self.format = format
        self._table = {rule.lower(): kind for rule, kind in table.items()}
        self._exposures: list[Exposure] = []
        self._unknown: Counter[str] = Counter()
        self._ignored: Counter[str] = Counter()
        self._validity: Counter[str] = Counter()
        self._ids: set[str] = set()

    def kind_for(self, rule: str, *hints: str | None) -> str:
        """The kind the table gives `rule`; else what a hint's prefix gives (counted unknown); else `unknown_kind`."""
        known = self._table.get(rule.strip().lower())
        if known is not None:
            return known
        self._unknown[rule or "(none)"] += 1
        return sniff_kind(*hints) or unknown_kind(self.format, rule)

    def ignore(self, reason: str) -> None:
        """Count a finding left out on purpose; the operator is told how many and why."""
        self._ignored[reason] += 1

    def add(self, where: str, *, rule: str, kind: str, secret: str | None = None, id: str | None = None,
            owner: str | None = None, location: str | None = None, verified: bool | None = None,
            severity: Severity | None = None, detected_at: datetime | str | None = None,
            validity: str | None = None, reason: str | None = None, detector: str | None = None) -> None:
        """Make one finding an exposure; `where` (`line 3`, `item 2`) names it in errors."""
        detector = detector or self.format
        if location is not None and len(location) > _MAX_LOCATION:
            location = location[:_MAX_LOCATION - 1] + "…"
        if validity is not None:
            self._validity[validity] += 1
            verified = False
            reason = reason or f"{detector} reports the secret {validity}"
        document: dict[str, Any] = {
            "id": exposure_id(detector, rule, location, secret, None if secret else (id or owner)),
            "credential": {"kind": kind, "id": id, "owner": owner, "secret": secret},
            "source": {"detector": detector, "location": location, "verified": verified},
            "detected_at": _timestamp(detected_at),
            "reason": reason,
        }
        if severity is not None:
            document["severity"] = severity
        elif validity is not None:
            document["severity"] = Severity.LOW
        try:
            exposure = Exposure.model_validate(_without_none(document))
        except ValidationError as exc:
            raise FormatError(self.format, where, describe_validation_error(exc)) from None
        if exposure.id in self._ids:  # the same finding twice in one input (a scanner reporting it per commit)
            self.ignore("the same finding again in this input (same id)")
            return
        self._ids.add(exposure.id)
        self._exposures.append(exposure)

    def add_event(self, where: str, document: Any) -> Exposure:
        """Take an exposure event as it is (the `exposure` and `cloudevents` formats); unknown kinds counted."""
        if not isinstance(document, dict):
            raise FormatError(self.format, where, "expected an exposure event (a JSON object)")
        try:
            exposure = Exposure.model_validate(document)
        except ValidationError as exc:
            raise FormatError(self.format, where, describe_validation_error(exc)) from None
        if exposure.credential.kind not in KNOWN_KINDS:
            self._unknown[exposure.credential.kind] += 1
        self._exposures.append(exposure)
        return exposure

    def batch(self) -> Batch:
        """Everything gathered so far."""
        return Batch(tuple(self._exposures), dict(self._unknown), dict(self._ignored), dict(self._validity))


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _timestamp(value: datetime | str | None) -> datetime | None:
    """A detector's timestamp when it is one; an unreadable one is left out rather than failing the input."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return _DATETIME.validate_python(value)
    except ValidationError:
        return None


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    return {k: (_without_none(v) if isinstance(v, dict) else v) for k, v in document.items()
            if v is not None and v != ""}
