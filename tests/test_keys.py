"""The deployment's keys: encryption key formats, the stored fingerprint key, keyed fingerprints."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import keys
from orchestrator.errors import ConfigurationError
from orchestrator.events import fingerprint
from orchestrator.settings import DEFAULT_DATA_DIR, Settings


@pytest.fixture
def restore_fingerprint_key() -> Iterator[None]:
    """Tests that install a key put the process's key back after."""
    saved = keys._fingerprint_key
    yield
    keys._fingerprint_key = saved


@pytest.mark.parametrize("encode", [bytes.hex, lambda k: base64.b64encode(k).decode(),
                                    lambda k: base64.urlsafe_b64encode(k).decode().rstrip("=")],
                         ids=["hex", "base64", "urlsafe base64 unpadded"])
def test_an_encryption_key_is_read_as_hex_or_base64(encode: object) -> None:
    """64 hex digits or base64 of 32 bytes, surrounding whitespace ignored."""
    key = secrets.token_bytes(32)
    assert callable(encode)
    assert keys.parse_key(f" {encode(key)}\n", source="test") == key


@pytest.mark.parametrize("text", ["not-a-key-at-all", secrets.token_hex(16), base64.b64encode(b"x" * 31).decode(),
                                  "z" * 64],
                         ids=["not a key", "16 random bytes as hex", "31 bytes as base64", "64 non-hex digits"])
def test_a_wrong_key_is_refused_with_its_source_and_no_value(text: str) -> None:
    """Anything but 32 bytes is a configuration error naming where it came from, not showing it."""
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_ENCRYPTION_KEY must hold a 32-byte key") as caught:
        keys.load_encryption_key(text, None)
    assert text not in str(caught.value)


def test_the_key_file_is_read(tmp_path: Path) -> None:
    """ORCHESTRATOR_ENCRYPTION_KEY_FILE holds the same text; an unreadable file is one clear error."""
    key = secrets.token_bytes(32)
    (tmp_path / "key").write_text(base64.b64encode(key).decode() + "\n")
    assert keys.load_encryption_key(None, tmp_path / "key") == key
    with pytest.raises(ConfigurationError, match="cannot read it"):
        keys.load_encryption_key(None, tmp_path / "missing")


def test_the_fingerprint_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    """The first start creates `fingerprint.key` (0600); later starts read the same key."""
    first = keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=tmp_path / "data")
    again = keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=tmp_path / "data")
    stored = tmp_path / "data" / keys.FINGERPRINT_KEY_FILE
    assert first.fingerprint == again.fingerprint and stored.stat().st_mode & 0o777 == 0o600
    assert first.encryption is None and first.key_id is None


def test_a_key_provisioned_beside_the_tokens_file_is_used(tmp_path: Path) -> None:
    """`fingerprint.key` beside the tokens file (a read-only secret mount, say) wins; nothing is generated."""
    key = secrets.token_bytes(32)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / keys.FINGERPRINT_KEY_FILE).write_text(key.hex())
    found = keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=tmp_path / "data",
                         tokens_dir=tmp_path / "secrets")
    assert found.fingerprint == key and not (tmp_path / "data").exists()
    generated = keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=tmp_path / "data",
                             tokens_dir=tmp_path / "elsewhere")
    assert generated.fingerprint != key and (tmp_path / "data" / keys.FINGERPRINT_KEY_FILE).exists()


def test_an_unwritable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    """Where the key cannot be kept, the error says which settings fix it."""
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_DATA_DIR"):
        keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=tmp_path / "file" / "sub")


def test_the_fingerprint_key_derives_from_the_encryption_key(tmp_path: Path) -> None:
    """With an encryption key, fingerprints need no stored file and differ from the key itself."""
    key = secrets.token_hex(32)
    derived = keys.resolve(encryption_key=key, encryption_key_file=None, data_dir=tmp_path)
    assert derived.fingerprint not in (bytes.fromhex(key), b"") and not list(tmp_path.iterdir())
    assert derived.key_id == keys.key_id(bytes.fromhex(key)) and len(derived.key_id or "") == 16


def test_fingerprints_are_keyed(restore_fingerprint_key: None) -> None:
    """`hmac-sha256:<16 hex>`; another key gives another fingerprint; a plain hash of a guess never matches."""
    weak = "password"
    keys.install(keys.Keys(fingerprint=secrets.token_bytes(32)))
    first = fingerprint(weak)
    keys.install(keys.Keys(fingerprint=secrets.token_bytes(32)))
    assert first.startswith("hmac-sha256:") and len(first) == len("hmac-sha256:") + 16
    assert fingerprint(weak) != first
    assert hashlib.sha256(weak.encode()).hexdigest()[:16] not in first


@given(secret=st.text(min_size=1, max_size=40))
def test_a_fingerprint_never_contains_its_secret(secret: str) -> None:
    """Any secret, even one with lone surrogates: a fixed-shape tag that does not hold it."""
    tag = fingerprint(secret)
    assert len(tag) == 28 and (len(secret) < 8 or secret not in tag.removeprefix("hmac-sha256:"))


def test_settings_read_the_key_variables() -> None:
    """ORCHESTRATOR_ENCRYPTION_KEY(_FILE) and ORCHESTRATOR_DATA_DIR (default `./.orchestrator`)."""
    base = {"KAFKA_BOOTSTRAP_SERVERS": "localhost:9092"}
    assert Settings.from_env(base).data_dir == DEFAULT_DATA_DIR == Path(".orchestrator")
    configured = Settings.from_env({**base, "ORCHESTRATOR_DATA_DIR": "/var/lib/orch",
                                    "ORCHESTRATOR_ENCRYPTION_KEY": "k" * 10,
                                    "ORCHESTRATOR_ENCRYPTION_KEY_FILE": "/run/key"})
    assert (configured.data_dir, configured.encryption_key_file) == (Path("/var/lib/orch"), Path("/run/key"))
    assert "k" * 10 not in repr(configured)
