"""Who vouches for an exposure record: the role of the principal that published it, signed, in a record header.

Anyone who can write to the exposures topic can set any field of an exposure, `actor` included, so no field
decides priority. The HTTP API (and the CLI, which holds the deployment's keys) add the header
`orchestrator-role: <role>:<hmac>`, an HMAC under the deployment's fingerprint key over the role and the exact
record value. The consumer believes a role only when the HMAC verifies; otherwise the record is a plain
publisher's, whatever it claims. A record whose header verifies was written whole by the API or the CLI, so its
`actor` is the authenticated principal (audited as `actor_verified: true`); the API signs a `detector`'s records
too, for that, though only `responder` and `admin` raise priority. Pure apart from the process's fingerprint
key (`orchestrator.keys`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from orchestrator.auth import Principal, Role
from orchestrator.keys import keyed_digest

HEADER = "orchestrator-role"
_LABEL = b"orchestrator/exposure-role/v1"
#: Roles that may raise a run's priority; `detector` is any publisher.
RAISING = (Role.ADMIN, Role.RESPONDER)


def role_of(principal: Principal) -> Role | None:
    """The principal's role that may raise priority (admin before responder), or None for a detector."""
    return next((role for role in RAISING if role in principal.roles), None)


def publisher_role(principal: Principal) -> Role:
    """The role the API signs a principal's records with: `role_of`, else detector (vouches for `actor` only)."""
    return role_of(principal) or Role.DETECTOR


def header(value: bytes, role: Role) -> tuple[str, bytes]:
    """The record header vouching that `role` published exactly `value`."""
    return HEADER, f"{role.value}:{_digest(value, role)}".encode()


def verified_role(value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None) -> Role | None:
    """The role that may raise priority (responder, admin) the record's header vouches for; else None."""
    role = verified_publisher(value, headers)
    return role if role in RAISING else None


def verified_publisher(value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None) -> Role | None:
    """The role the record's header vouches for (any role), if its HMAC matches the value; else None. Never
    raises."""
    if value is None:
        return None
    for name, raw in headers or ():
        if name != HEADER or raw is None:
            continue
        role_text, _, digest = raw.partition(b":")
        role = Role._value2member_map_.get(role_text.decode("ascii", "replace"))
        if not isinstance(role, Role):
            return None
        # Bytes, not str: compare_digest refuses str with non-ASCII characters, and a header may hold any bytes.
        return role if hmac.compare_digest(digest, _digest(value, role).encode()) else None
    return None


def _digest(value: bytes, role: Role) -> str:
    return keyed_digest(_LABEL, role.value.encode() + b"\0" + value)
