"""API tokens: the tokens file, how tokens are hashed and checked (constant time), and the roles they grant.

The file named by ORCHESTRATOR_API_TOKENS_FILE is JSON: `{"tokens": [{"principal": "...", "roles": [...],
"sha256": "<hex>"}, ...]}` (a bare list of entries works too). Only hashes are stored. A plain SHA-256 is
enough because tokens are 256-bit random values made by `new_token` (`orchestrator api-token create`):
there is nothing to brute-force, so a slow password hash would only slow every request down.

The file is handled like an SSH private key: written atomically with mode 0600 (`write_private`), refused
when group or others may read or write it, and re-read when it changes (`TokenFile`) without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shlex
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from orchestrator.errors import ConfigurationError

log = structlog.get_logger("orchestrator.auth")

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


def check_private(path: Path) -> os.stat_result:
    """Stat the tokens file; raise `ConfigurationError` with the `chmod` to run when group or others have access."""
    try:
        status = path.stat()
    except OSError as exc:
        raise ConfigurationError(f"ORCHESTRATOR_API_TOKENS_FILE {path}: cannot read it ({exc.strerror})") from None
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        raise ConfigurationError(f"ORCHESTRATOR_API_TOKENS_FILE {path} is accessible to group or others (mode "
                                 f"{mode:04o}); like an SSH key it must be private: chmod 600 {shlex.quote(str(path))}")
    return status


def load_tokens(path: Path) -> TokenTable:
    """Read the tokens file; raise `ConfigurationError` naming the file and what is wrong (never a hash)."""
    check_private(path)
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
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r in Role._value2member_map_
                                                               for r in roles):
        raise ConfigurationError(f"{where}: `roles` must list some of {', '.join(r.value for r in Role)}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ConfigurationError(f"{where}: `sha256` must be the 64-hex-digit SHA-256 of the token")
    try:
        raw_digest = bytes.fromhex(digest)
    except ValueError:
        raise ConfigurationError(f"{where}: `sha256` is not hexadecimal") from None
    return _Entry(Principal(name.strip(), frozenset(Role(r) for r in roles)), raw_digest)


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600 from the first byte: a temporary file in the same
    directory (mkstemp opens it 0600), fsynced, given the old file's owner when it had one (and we may),
    renamed over `path`, and the directory fsynced."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):  # keep the owner (e.g. a container's uid) when allowed to
            previous = path.stat()
            os.chown(temporary, previous.st_uid, previous.st_gid)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened and synced
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class TokenFile:
    """The tokens file, re-read when it changes (its inode, size or mtime) or when `reload` is called (SIGHUP).

    A change that cannot be loaded (bad JSON, group-readable) is logged and the tokens loaded before stay in
    force: a half-edited file must not lock everyone out, nor open the API.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = self._stat_signature(check_private(path))
        self._table = load_tokens(path)
        self._failed: tuple[int, ...] | None = None

    @staticmethod
    def _stat_signature(status: os.stat_result) -> tuple[int, ...]:
        return status.st_ino, status.st_size, status.st_mtime_ns, status.st_mode

    def __len__(self) -> int:
        return len(self._table)

    def authenticate(self, token: str) -> Principal | None:
        """As `TokenTable.authenticate`, against the file as it is now."""
        self.refresh()
        return self._table.authenticate(token)

    def refresh(self) -> bool:
        """Re-read the file if it changed since it was last read; True when new tokens were loaded."""
        signature = self._current()
        if signature == self._signature or signature == self._failed:
            return False
        return self._load(signature)

    def reload(self) -> bool:
        """Re-read the file now (SIGHUP); True when it loaded."""
        return self._load(self._current())

    def _current(self) -> tuple[int, ...]:
        try:
            return self._stat_signature(self.path.stat())
        except OSError:  # gone or unreadable: a change, which loading then reports
            return ()

    def _load(self, signature: tuple[int, ...]) -> bool:
        try:
            table = load_tokens(self.path)
        except ConfigurationError as exc:
            self._failed = signature
            log.error("api_tokens.reload_failed", error=str(exc), kept=len(self._table))
            return False
        self._table, self._signature, self._failed = table, signature, None
        log.info("api_tokens.reloaded", path=str(self.path), tokens=len(table))
        return True
