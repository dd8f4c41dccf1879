"""Verifying a webhook delivery's signature over its raw body; pure, constant-time, reasons hold no secret.

- GitHub webhooks: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
- GitHub secret-scanning partner deliveries: `Github-Public-Key-Signature` (base64 DER ECDSA P-256/SHA-256
  over the body) by the key named in `Github-Public-Key-Identifier`, from GitHub's published key list.
- GitGuardian custom webhooks: `Gitguardian-Signature: sha256=<hex HMAC-SHA256(timestamp + token, body)>`,
  `Timestamp: <unix seconds>`; a timestamp outside the replay window is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")


class Rejected(Exception):
    """The delivery is not authentic, or too old: answer 401 and publish nothing. The reason is safe to show."""


class UnknownKey(Rejected):
    """The delivery names a key that is not (yet) among the known ones: refresh the keys, then decide."""


def github_hmac(body: bytes, header: str | None, secret: str) -> str:
    """Check `X-Hub-Signature-256`; raise `Rejected`. Returns the canonical hex digest (what tells a replay)."""
    return _hmac_sha256(body, header, secret.encode(), "X-Hub-Signature-256")


def gitguardian_hmac(body: bytes, header: str | None, timestamp: str | None, secret: str, *, now: float,
                     max_age_s: float) -> str:
    """Check `Gitguardian-Signature` and that `Timestamp` is within `max_age_s` of `now`; raise `Rejected`.

    Returns the signature's canonical hex digest: the header may spell it in other cases and spacing, so the
    digest, not the header, is what tells a replay.
    """
    # ASCII digits only, and few of them: str.isdigit also takes "²" (which int() refuses), and a long number
    # overflows the float subtraction or int()'s digit limit.
    if not timestamp or not _UNIX_SECONDS.fullmatch(timestamp.strip()):
        raise Rejected("missing or malformed Timestamp header")
    if abs(now - int(timestamp)) > max_age_s:
        raise Rejected(f"stale delivery: Timestamp is more than {max_age_s:g} s away from now")
    return _hmac_sha256(body, header, (timestamp.strip() + secret).encode(), "Gitguardian-Signature")


def github_partner(body: bytes, key_id: str | None, signature: str | None,
                   keys: Mapping[str, ec.EllipticCurvePublicKey]) -> None:
    """Check a secret-scanning partner delivery's ECDSA signature; raise `UnknownKey` or `Rejected`."""
    if not key_id or not signature:
        raise Rejected("missing Github-Public-Key-Identifier or Github-Public-Key-Signature header")
    key = keys.get(key_id.strip())
    if key is None:
        raise UnknownKey("Github-Public-Key-Identifier names no known GitHub public key")
    try:
        key.verify(base64.b64decode(signature.strip(), validate=True), body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError):
        raise Rejected("Github-Public-Key-Signature is not base64") from None
    except InvalidSignature:
        raise Rejected("Github-Public-Key-Signature does not verify") from None


def partner_keys(document: Any) -> dict[str, ec.EllipticCurvePublicKey]:
    """The EC public keys of GitHub's key list (`{"public_keys": [{"key_identifier", "key"}]}`) by id;
    ValueError when the document has none."""
    entries = document.get("public_keys") if isinstance(document, dict) else None
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for item in entries if isinstance(entries, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("key_identifier"), str) \
                or not isinstance(item.get("key"), str):
            continue
        try:
            key = serialization.load_pem_public_key(item["key"].encode())
        except (ValueError, UnsupportedAlgorithm):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey):
            keys[item["key_identifier"]] = key
    if not keys:
        raise ValueError('no usable key: expected {"public_keys": [{"key_identifier", "key": PEM}]}')
    return keys


def _hmac_sha256(body: bytes, header: str | None, key: bytes, name: str) -> str:
    if not header:
        raise Rejected(f"missing {name} header")
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        raise Rejected(f"{name} is not sha256=<hex>")
    given = given.strip().lower()
    if not given.isascii():  # compare_digest raises TypeError on non-ASCII text (a latin-1 header byte)
        raise Rejected(f"{name} is not sha256=<hex>")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise Rejected(f"{name} does not match the body")
    return expected
