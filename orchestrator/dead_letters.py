"""Dead letters made safe: the original record sealed (encrypted, or stripped of secrets) and cut to size.

Pure: `seal` turns a rejected record's bytes into the values and headers of one or more dead-letter records;
`assemble` and `unseal` turn what was read back into the original (for `orchestrator dlq`). Kafka I/O is in
`orchestrator.kafka.KafkaDeadLetters`.

With an encryption key the original bytes are stored whole, AES-256-GCM encrypted (value = 12-byte random
nonce + ciphertext + tag; headers `encryption: aes-256-gcm` and `encryption.key_id`). Without one, the record
is decoded (UTF-8, or UTF-16/32 by BOM or by its zero bytes), parsed as JSON, and every value that looks
secret is replaced by `[DROPPED]`: under a key that names a secret (after JSON unescaping and Unicode
folding), anything in `credential` but its `kind`, `id` and `owner`, a registered or well-known token, a
long high-entropy word, a `password=…` pair, URL user-info; header `redaction: secrets-dropped`. A record that
is not JSON cannot be searched for secrets: its body is dropped and replaced by a description of it
(`redaction: body-dropped`). Values above `CHUNK_BYTES` are split into records with `chunk.id`,
`chunk.index` and `chunk.count` headers; an original above `MAX_STORED_BYTES` is cut first (`truncated:
true`, `original.size`).
"""

from __future__ import annotations

import codecs
import math
import os
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orchestrator.errors import OrchestratorError
from orchestrator.events import SECRET_ID_KINDS
from orchestrator.keys import key_id
from orchestrator.redaction import Redactor

ALGORITHM = "aes-256-gcm"
NONCE_BYTES = 12
#: Binds ciphertexts to their use: a dead letter cannot be passed off as something else encrypted under the key.
_AAD = b"orchestrator/dead-letter/v1"
#: Largest value of one dead-letter record: below Kafka's default 1 MiB `message.max.bytes` and the
#: producer's default `max_request_size`, with room for the key and headers.
CHUNK_BYTES = 768 * 1024
#: Largest original kept (64 chunks); beyond it the original is cut and says so.
MAX_STORED_BYTES = 64 * CHUNK_BYTES
DROPPED = "[DROPPED]"
#: Deeper JSON is dropped whole rather than walked.
_MAX_DEPTH = 64

Headers = list[tuple[str, bytes]]


class DeadLetterError(OrchestratorError):
    """A dead letter cannot be read back: incomplete, not encrypted, wrong key or tampered with."""


@dataclass(frozen=True)
class Piece:
    """One dead-letter record to send: its value and the headers describing it (besides error/source)."""

    value: bytes | None
    headers: Headers


def seal(raw: bytes | None, *, key: bytes | None, redactor: Redactor) -> list[Piece]:
    """The dead-letter records that carry `raw` safely; never raises."""
    if raw is None:
        return [Piece(None, [])]
    headers: Headers = [("original.size", str(len(raw)).encode())]
    if len(raw) > MAX_STORED_BYTES:
        raw = raw[:MAX_STORED_BYTES]
        headers.append(("truncated", b"true"))
    if key is not None:
        nonce = os.urandom(NONCE_BYTES)
        value = nonce + AESGCM(key).encrypt(nonce, raw, _AAD)
        headers += [("encryption", ALGORITHM.encode()), ("encryption.key_id", key_id(key).encode())]
    else:
        value, more = sanitise(raw, redactor)
        headers += more
    if len(value) <= CHUNK_BYTES:
        return [Piece(value, headers)]
    count = -(-len(value) // CHUNK_BYTES)
    chunk_id = uuid.uuid4().hex.encode()
    return [Piece(value[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES],
                  [*headers, ("chunk.id", chunk_id), ("chunk.index", str(i).encode()),
                   ("chunk.count", str(count).encode())])
            for i in range(count)]


def unseal(value: bytes, headers: dict[str, bytes], key: bytes) -> bytes:
    """The original bytes of an encrypted dead letter (its chunks already joined); raise `DeadLetterError`."""
    if headers.get("encryption") != ALGORITHM.encode():
        raise DeadLetterError("this dead letter is not encrypted: it was stored with its secrets dropped")
    stored_id = headers.get("encryption.key_id", b"").decode(errors="replace")
    if stored_id != key_id(key):
        raise DeadLetterError(f"this dead letter was encrypted with key {stored_id}; the configured key is "
                              f"{key_id(key)}")
    try:
        return AESGCM(key).decrypt(value[:NONCE_BYTES], value[NONCE_BYTES:], _AAD)
    except (InvalidTag, ValueError):
        raise DeadLetterError("cannot decrypt: the dead letter was altered or is incomplete") from None


def assemble(pieces: Sequence[tuple[bytes | None, dict[str, bytes]]]) -> bytes | None:
    """The value of a dead letter from its records (one, or its chunks in any order); raise if incomplete."""
    if len(pieces) == 1 and "chunk.count" not in pieces[0][1]:
        return pieces[0][0]
    count = int(pieces[0][1].get("chunk.count", b"0"))
    by_index = {int(h.get("chunk.index", b"-1")): v or b"" for v, h in pieces}
    missing = [i for i in range(count) if i not in by_index]
    if missing or count == 0:
        raise DeadLetterError(f"incomplete dead letter: {count - len(missing)} of {count} chunks found")
    return b"".join(by_index[i] for i in range(count))


# --- Without a key: drop what looks secret -------------------------------------------------------------

#: Key names (folded, letters and digits only) that say their value is a secret.
_SECRET_KEY = re.compile(r"secret|token|passw|pwd|passphrase|credential|private|apikey|accesskey|auth|cookie|"
                         r"session|signature|bearer|cert|key$|^key|pin$|otp$|salt$")
#: Keys of `credential` that are handles, not secrets.
_CREDENTIAL_HANDLES = frozenset({"kind", "id", "owner"})
#: Shorter values at a secret's place are not searched for elsewhere (they would match everywhere).
_OWN_SECRET_MIN = 6
_WORD = re.compile(r"[A-Za-z0-9+/=_\-.~%:]{16,}")
_ASSIGNMENT = re.compile(r"(?i)(?:secret|token|passw|pwd|key|auth|sig|session|cookie)[\w.-]*\s*[=:]")
_USERINFO = re.compile(r"://[^/@\s]+:[^/@\s]*@")


def sanitise(raw: bytes, redactor: Redactor) -> tuple[bytes, Headers]:
    """`raw` with every secret-looking value dropped, re-encoded as UTF-8 JSON; or a description of it."""
    decoded = _decode(raw)
    if decoded is None:
        return _description("not text in any UTF encoding", len(raw))
    text, encoding = decoded
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _description(f"not JSON ({encoding}): {str(exc).split(':', 1)[0]}", len(raw))
    cleaned = _Cleaner(redactor, document).clean(document, parents=(), depth=0)
    return orjson.dumps(cleaned), [("redaction", b"secrets-dropped"), ("original.encoding", encoding.encode())]


def _description(why: str, size: int) -> tuple[bytes, Headers]:
    body = {"dropped": f"record body dropped: {why}; secrets in it cannot be located", "size": size}
    return orjson.dumps(body), [("redaction", b"body-dropped")]


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(raw: bytes) -> tuple[str, str] | None:
    """The text of `raw` and its encoding: by BOM, else by where JSON's first characters put zero bytes."""
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), None)
    if encoding is None:
        head = raw[:4]
        if len(head) == 4 and head[:3] == b"\0\0\0":
            encoding = "utf-32-be"
        elif len(head) == 4 and head[1:] == b"\0\0\0":
            encoding = "utf-32-le"
        elif len(head) >= 2 and head[0] == 0:
            encoding = "utf-16-be"
        elif len(head) >= 2 and head[1] == 0:
            encoding = "utf-16-le"
        else:
            encoding = "utf-8"
    try:
        return raw.decode(encoding), encoding
    except (UnicodeDecodeError, UnicodeError):
        return None


def _fold(key: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", key).casefold() if c.isalnum())


def looks_secret(value: str, redactor: Redactor) -> bool:
    """True when a string may be or hold a secret: registered, a known token, a high-entropy word, a pair."""
    if redactor.text(value) != value or _ASSIGNMENT.search(value) or _USERINFO.search(value):
        return True
    return any(_high_entropy(word) for word in _WORD.findall(value))


def _high_entropy(word: str) -> bool:
    counts = Counter(word)
    entropy = -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())
    classes = sum(any(test(c) for c in word) for test in (str.islower, str.isupper, str.isdigit))
    return entropy >= 3.0 and classes >= 2


class _Cleaner:
    def __init__(self, redactor: Redactor, document: Any) -> None:
        self._redactor = redactor
        self._renamed = 0
        #: The record's own secrets (strings where a secret goes): dropped wherever else it repeats them.
        self._own = {v for v in _strings_at_secret_places(document, (), 0) if len(v) >= _OWN_SECRET_MIN}
        # An id that is a bearer secret (an Okta session id) is one too, though `id` is a handle's place.
        self._own |= set(_secret_ids(document, 0))

    def clean(self, value: Any, *, parents: tuple[str, ...], depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return DROPPED
        if isinstance(value, dict):
            return {self._key(k): self.clean(v, parents=(*parents, _fold(k)), depth=depth + 1)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.clean(v, parents=(*parents, "[]"), depth=depth + 1) for v in value]
        if _secret_place(parents):
            return DROPPED if value is not None else None
        if isinstance(value, str):
            repeats_own = any(secret in value for secret in self._own)
            return DROPPED if repeats_own or looks_secret(value, self._redactor) else value
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= 10 ** 15:
            return DROPPED  # a long number may be a PIN or an account secret
        return value

    def _key(self, key: str) -> str:
        if looks_secret(key, self._redactor) or any(secret in key for secret in self._own):
            self._renamed += 1
            return f"{DROPPED} {self._renamed}"
        return key



def _strings_at_secret_places(value: Any, parents: tuple[str, ...], depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings_at_secret_places(v, (*parents, _fold(k)), depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_at_secret_places(v, (*parents, "[]"), depth + 1)
    elif isinstance(value, str) and _secret_place(parents):
        yield value


def _secret_ids(value: Any, depth: int) -> Iterator[str]:
    """The `id` of every `credential` object whose kind's id is a secret (`SECRET_ID_KINDS`)."""
    if depth > _MAX_DEPTH:
        return
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    if isinstance(value, dict):
        credential = value.get("credential")
        if isinstance(credential, dict):
            kind, handle = credential.get("kind"), credential.get("id")
            # Any JSON may stand here (a rejected record): a list or an object is no kind, not an error.
            if isinstance(kind, str) and kind in SECRET_ID_KINDS and isinstance(handle, str) and handle:
                yield handle
    for child in children:
        yield from _secret_ids(child, depth + 1)


def _secret_place(parents: tuple[str, ...]) -> bool:
    """True where a value is a secret by its place: under `credential` (but its handles), or a secret-ish key."""
    for i, name in enumerate(parents):
        if name == "credential":
            # Only `credential.kind|id|owner` directly under a credential object are handles.
            if parents[i + 1:] and len(parents) == i + 2 and parents[i + 1] in _CREDENTIAL_HANDLES:
                continue
            return True
        if _SECRET_KEY.search(name):
            return True
    return False
