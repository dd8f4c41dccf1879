"""What identifies an exposure in the store: its id plus a fingerprint of its content. Pure."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from orchestrator.events import Exposure, fingerprint


@dataclass(frozen=True)
class Content:
    """The columns a claim writes about an exposure (nothing here is secret)."""

    id: str
    fingerprint: str
    kind: str
    target: str
    owner: str | None
    detector: str | None
    actor: str | None
    severity: str
    playbook: str | None
    #: The credential's non-secret handle, kept so a replay can rebuild the exposure.
    credential_id: str | None = None
    #: Whether a signed header vouched for `actor` (`orchestrator.provenance`); not part of the fingerprint.
    actor_verified: bool = False

    @property
    def dedup_key(self) -> str:
        """Unique among the exposures still inside the deduplication window."""
        return f"{self.id}:{self.fingerprint}"


def content_of(exposure: Exposure, *, actor_verified: bool = False) -> Content:
    """The exposure's identity: the same id with the same content is a duplicate, with other content is not.

    The content is the credential's fingerprint, kind and handle, the requested playbook and whether it is a
    dry run (a plan followed by the real run with the same id must not make the real run a duplicate).
    """
    cred = exposure.credential
    parts = (fingerprint(cred.secret), cred.kind, cred.id or "", cred.owner or "", exposure.playbook or "",
             "dry-run" if exposure.dry_run else "")
    # 128 bits: collision-free in practice, and short, as every audit record of the exposure carries it.
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return Content(id=exposure.id, fingerprint=digest, kind=cred.kind, credential_id=cred.id,
                   target=exposure.credential_key, owner=cred.owner, detector=exposure.source.detector,
                   actor=exposure.actor, severity=exposure.severity.value, playbook=exposure.playbook,
                   actor_verified=actor_verified)
