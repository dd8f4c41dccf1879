"""API tokens: the tokens file, how tokens are hashed and checked (constant time), and the roles they grant.

The file named by ORCHESTRATOR_API_TOKENS_FILE is JSON: `{"tokens": [{"principal": "...", "roles": [...],
"sha256": "<hex>"}, ...]}` (a bare list of entries works too). Only hashes are stored. A plain SHA-256 is
enough because tokens are 256-bit random values made by `new_token` (`orchestrator api-token create`):
there is nothing to brute-force, so a slow password hash would only slow every request down.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigurationError

TOKEN_PREFIX = "orch_"  # noqa: S105 - a prefix that makes leaked tokens greppable, not a secret


class Role(StrEnum):
    """What a token may do: `detector` publishes exposures, `responder` triggers and reads, `admin` all."""

    DETECTOR = "detector"
    RESPONDER = "responder"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request comes from."""

    name: str
    roles: frozenset[Role]

    def allows(self, role: Role) -> bool:
        """True when the principal holds `role`, or `admin`, which implies every role."""
        return Role.ADMIN in self.roles or role in self.roles


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes = field(repr=False)


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random API token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_entry(token: str, principal: str, roles: Iterable[Role]) -> dict[str, Any]:
    """The tokens-file entry for `token`; holds only its hash."""
    return {"principal": principal, "roles": sorted(r.value for r in set(roles)), "sha256": hash_token(token)}


class TokenTable:
    """The accepted tokens. `authenticate` compares against every entry in constant time per entry."""

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or None. Never stops early, so timing tells nothing."""
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry.principal
        return found


def load_tokens(path: Path) -> TokenTable:
    """Read the tokens file; raise `ConfigurationError` naming the file and what is wrong (never a hash)."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"ORCHESTRATOR_API_TOKENS_FILE {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigurationError(f"ORCHESTRATOR_API_TOKENS_FILE {path}: not JSON ({exc})") from None
    raw = document.get("tokens") if isinstance(document, dict) else document
    if not isinstance(raw, list):
        raise ConfigurationError(f"ORCHESTRATOR_API_TOKENS_FILE {path}: expected {{\"tokens\": [...]}}")
    return TokenTable([_parse_entry(item, path, n) for n, item in enumerate(raw)])


def _parse_entry(item: Any, path: Path, index: int) -> _Entry:
    where = f"ORCHESTRATOR_API_TOKENS_FILE {path}: entry {index}"
    if not isinstance(item, dict):
        raise ConfigurationError(f"{where}: expected an object with principal, roles, sha256")
    name, roles, digest = item.get("principal"), item.get("roles"), item.get("sha256")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where}: `principal` must be a non-empty string")
    if not isinstance(roles, list) or not roles or not all(r in Role._value2member_map_ for r in roles):
        raise ConfigurationError(f"{where}: `roles` must list some of {', '.join(r.value for r in Role)}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ConfigurationError(f"{where}: `sha256` must be the 64-hex-digit SHA-256 of the token")
    try:
        raw_digest = bytes.fromhex(digest)
    except ValueError:
        raise ConfigurationError(f"{where}: `sha256` is not hexadecimal") from None
    return _Entry(Principal(name.strip(), frozenset(Role(r) for r in roles)), raw_digest)
