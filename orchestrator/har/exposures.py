"""Findings made into exposure events: one per credential, with ids that are the same on every run; pure."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from orchestrator.events import Exposure
from orchestrator.har.detect import Finding

DETECTOR = "har-scanner"
#: Labels the id derivation so no other use of the same hash can collide with it.
_ID_SALT = b"orchestrator/har-scanner/exposure-id/v1"
#: Key stretching: an exposure id is published and audited; guessing a weak secret (a Basic password) from
#: it must cost as much as guessing it from a fingerprint.
_ID_ROUNDS = 10_000
_MAX_SECRET = 16 * 1024


def exposure_id(kind: str, value: str) -> str:
    """The same id for the same credential on every run, so scanning a file twice does not revoke twice."""
    digest = hashlib.pbkdf2_hmac("sha256", f"{kind}\0{value}".encode("utf-8", "surrogatepass"), _ID_SALT,
                                 _ID_ROUNDS)
    return f"har-{digest[:12].hex()}"


def build(findings: Sequence[Finding], *, file: str) -> tuple[list[Exposure], int]:
    """The exposures of a scan, and how many findings could not become one (no handle, secret too long).

    The same value found in several places is one credential: one exposure, located where first seen. An
    Okta session cookie without a session id of its own (`idx`, `DT`, `JSESSIONID`) takes the session id
    the capture shows when it shows exactly one (and its owner likewise), so the session can be cleared.
    """
    session_ids = {f.handle for f in findings if f.kind == "okta.session" and f.handle}
    owners = {f.owner for f in findings if f.kind == "okta.session" and f.owner}
    first: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        first.setdefault((finding.kind, finding.value), finding)
    built: list[Exposure] = []
    skipped = 0
    for (kind, value), finding in first.items():
        credential: dict[str, Any] = {"kind": kind}
        handle, owner = finding.handle, finding.owner
        if kind == "okta.session" and handle is None:
            # Only a cookie with no session id of its own borrows one; a session id is never given another's
            # owner (which would clear the wrong user's sessions).
            handle = next(iter(session_ids)) if len(session_ids) == 1 else None
            owner = owner or (next(iter(owners)) if len(owners) == 1 else None)
        if handle:
            credential["id"] = handle
        if owner:
            credential["owner"] = owner
        # A session id is the session's secret too: whoever holds it is signed in.
        if (value != handle or kind == "okta.session") and len(value) <= _MAX_SECRET:
            credential["secret"] = value
        if len(credential) == 1:
            skipped += 1
            continue
        try:
            built.append(Exposure.model_validate({
                "id": exposure_id(kind, value),
                "credential": credential,
                "source": {"detector": DETECTOR,
                           "location": f"{file} entry {finding.entry}: {finding.where}"[:2000]},
            }))
        except ValidationError:  # an owner or id the event cannot carry (too long, blank)
            skipped += 1
    return built, skipped
