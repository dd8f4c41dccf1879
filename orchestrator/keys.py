"""The deployment's keys: the dead-letter encryption key and the fingerprint key, and keyed fingerprints.

The encryption key is 32 bytes, given as 64 hex digits or as base64 (standard or URL-safe, padding optional)
in `ORCHESTRATOR_ENCRYPTION_KEY`, or in the file named by `ORCHESTRATOR_ENCRYPTION_KEY_FILE` (same text).
Fingerprints are `hmac-sha256:<16 hex>` under a key derived from the encryption key; without one, under the
key in `fingerprint.key` beside the API tokens file when one was provisioned there, else under a random key
generated once per deployment and kept in `<data dir>/fingerprint.key` (mode 0600). Either way the
fingerprint of a weak secret cannot be reversed by hashing guesses.

The fingerprint key is process state (set once at start by `install`), like the redactor's live secrets:
every writer must name a secret the same way. Until installed, a random per-process key is used, so a
fingerprint is never unkeyed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings

KEY_BYTES = 32
FINGERPRINT_KEY_FILE = "fingerprint.key"
#: Labels separating the keys derived from the one encryption key.
_FINGERPRINT_LABEL = b"orchestrator/fingerprint/v1"
_KEY_ID_LABEL = b"orchestrator/key-id/v1"

_fingerprint_key: bytes = secrets.token_bytes(KEY_BYTES)


class MissingFingerprintKey(ConfigurationError):
    """A command needs the deployment's fingerprint key and finds none where it looked (it never creates one)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no fingerprint key at {path.absolute()}: only `orchestrator run`/`dev` creates it; set "
            f"ORCHESTRATOR_DATA_DIR to its data directory (or ORCHESTRATOR_ENCRYPTION_KEY[_FILE] as it has them)")
        self.path = path


@dataclass(frozen=True)
class Keys:
    """The keys of this deployment: `encryption` is None when no encryption key is configured."""

    fingerprint: bytes = field(repr=False)
    encryption: bytes | None = field(default=None, repr=False)

    @property
    def key_id(self) -> str | None:
        """A short public name of the encryption key, written beside what it encrypted."""
        return key_id(self.encryption) if self.encryption is not None else None


def key_id(key: bytes) -> str:
    """16 hex digits naming a key without revealing it (a keyed hash: the key itself is 256 random bits)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def parse_key(text: str, *, source: str) -> bytes:
    """A 32-byte key from 64 hex digits or base64; `source` names where it came from in the error."""
    value = "".join(text.split())
    if len(value) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(f"{source} must hold a 32-byte key as 64 hex digits or base64 "
                                 f"(e.g. `openssl rand -base64 32`)")
    return raw


def load_encryption_key(value: str | None, file: Path | None) -> bytes | None:
    """The configured encryption key (the value wins over the file), or None."""
    if value:
        return parse_key(value, source="ORCHESTRATOR_ENCRYPTION_KEY")
    if file is None:
        return None
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"ORCHESTRATOR_ENCRYPTION_KEY_FILE={file}: cannot read it "
                                 f"({type(exc).__name__})") from None
    return parse_key(text, source=f"ORCHESTRATOR_ENCRYPTION_KEY_FILE={file}")


def deployment_fingerprint_key(data_dir: Path) -> bytes:
    """The fingerprint key stored in `data_dir`, created (mode 0600) by the first process that needs it."""
    path = data_dir / FINGERPRINT_KEY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            stored = path.read_text().strip()
        else:
            stored = secrets.token_hex(KEY_BYTES)
            with os.fdopen(descriptor, "w") as out:
                out.write(stored + "\n")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot keep the fingerprint key in {path} ({exc.strerror or type(exc).__name__}): set "
            f"ORCHESTRATOR_DATA_DIR to a writable directory, or ORCHESTRATOR_ENCRYPTION_KEY"
        ) from None
    if not stored:  # another process created it and has not written it yet
        stored = _wait_for(path)
    return parse_key(stored, source=str(path))


def _wait_for(path: Path) -> str:
    import time

    for _ in range(50):
        time.sleep(0.02)
        if stored := path.read_text().strip():
            return stored
    raise ConfigurationError(f"{path} is empty: delete it so a new fingerprint key is generated")


def resolve(*, encryption_key: str | None, encryption_key_file: Path | None, data_dir: Path | None,
            tokens_dir: Path | None = None, create: bool = True) -> Keys:
    """The deployment's keys from its settings; `data_dir` None means a per-process fingerprint key.

    A `fingerprint.key` provisioned in `tokens_dir` (beside the API tokens file, often a read-only secret
    mount) is used as it is; otherwise one is generated in `data_dir` when `create` (the long-running
    orchestrator), else `MissingFingerprintKey`: a command run from another directory must not silently make
    a second key, under which its ids and signed headers would mean nothing to the orchestrator.
    """
    encryption = load_encryption_key(encryption_key, encryption_key_file)
    provisioned = tokens_dir / FINGERPRINT_KEY_FILE if tokens_dir is not None else None
    if encryption is not None:
        fingerprint = hmac.new(encryption, _FINGERPRINT_LABEL, hashlib.sha256).digest()
    elif provisioned is not None and provisioned.is_file():
        try:
            fingerprint = parse_key(provisioned.read_text(), source=str(provisioned))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read {provisioned} ({type(exc).__name__})") from None
    elif data_dir is not None:
        if not create and not (data_dir / FINGERPRINT_KEY_FILE).is_file():
            raise MissingFingerprintKey(data_dir / FINGERPRINT_KEY_FILE)
        fingerprint = deployment_fingerprint_key(data_dir)
    else:
        fingerprint = _fingerprint_key
    return Keys(fingerprint=fingerprint, encryption=encryption)


def from_settings(settings: Settings, *, create: bool = True) -> Keys:
    """`resolve` with what `settings` say; commands pass `create=False` (only `run`/`dev` create the key)."""
    tokens = settings.api_tokens_file
    return resolve(encryption_key=settings.encryption_key, encryption_key_file=settings.encryption_key_file,
                   data_dir=settings.data_dir, tokens_dir=tokens.parent if tokens is not None else None,
                   create=create)


def install(keys: Keys) -> None:
    """Make `keys.fingerprint` the key of every fingerprint this process computes from now on."""
    global _fingerprint_key
    _fingerprint_key = keys.fingerprint


def keyed_fingerprint(raw: str) -> str:
    """`hmac-sha256:<16 hex>` of a secret under the deployment's fingerprint key."""
    digest = hmac.new(_fingerprint_key, raw.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:16]


def keyed_digest(label: bytes, data: bytes) -> str:
    """HMAC-SHA256 (hex) of `data` under the deployment's fingerprint key, separated from other uses by `label`."""
    return hmac.new(_fingerprint_key, label + b"\0" + data, hashlib.sha256).hexdigest()
