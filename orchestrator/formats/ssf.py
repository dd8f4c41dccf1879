"""`ssf`: Shared Signals Security Event Tokens (RFC 8417) as compact JWS, verified against a JWKS.

One token, or several separated by whitespace (one per line). Each must verify against `Options.jwks`
(asymmetric algorithms only; `typ`, when present, `secevent+jwt`), carry `iss`, `iat`, `jti` and `events`,
and match `Options.issuer` / `Options.audience` when given. RISC credential-compromise → `okta.user`, CAEP
session-revoked → `okta.session` (a complex subject's session id → `credential.id`); the subject (RFC 9493
subject identifier, in `sub_id` or the event's `subject`) → owner. SSF verification events are ignored
(counted). Any failure fails the whole input: nothing is published from a token that did not verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

from orchestrator.errors import FormatError
from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options, shown

FORMAT = "ssf"

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"

#: Event type URI → credential kind.
RULES: dict[str, str] = {
    RISC + "credential-compromise": "okta.user",
    CAEP + "session-revoked": "okta.session",
}
#: Signature algorithms accepted: asymmetric only, so a public JWKS can never double as an HMAC secret.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_TYPES = frozenset({"secevent+jwt", "application/secevent+jwt"})


def parse(data: bytes, *, options: Options) -> Batch:
    """Every event of every token, once each token has verified."""
    if options.jwks is None:
        raise FormatError(FORMAT, None, "SETs are verified against a JWKS: give --jwks FILE|URL")
    keys = _key_set(options.jwks)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(FORMAT, None, "not a compact JWS: expected ASCII base64url segments") from None
    tokens = text.split()
    if not tokens:
        raise FormatError(FORMAT, None, "no token: expected a compact JWS Security Event Token")
    collector = Collector(FORMAT, RULES)
    for index, token in enumerate(tokens, start=1):
        where = f"token {index}"
        _events(collector, where, _verify(where, token, keys, options))
    return collector.batch()


def _key_set(jwks: Mapping[str, Any]) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_dict(dict(jwks))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        raise FormatError(FORMAT, "jwks", "not a usable JSON Web Key Set (no key it could load)") from None


def _verify(where: str, token: str, keys: jwt.PyJWKSet, options: Options) -> Mapping[str, Any]:
    """The token's claims once its signature, type, issuer and audience check out; `FormatError` otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise FormatError(FORMAT, where, "not a compact JWS (header unreadable)") from None
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise FormatError(FORMAT, where, "typ is not secevent+jwt: not a Security Event Token")
    kid = header.get("kid")
    candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
    if not candidates:
        raise FormatError(FORMAT, where, "signature failed: no key in the JWKS has the token's kid")
    for key in candidates:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=ALGORITHMS, issuer=options.issuer, audience=options.audience,
                options={"require": ["iss", "iat", "jti"], "verify_aud": options.audience is not None},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.MissingRequiredClaimError as exc:
            raise FormatError(FORMAT, where, f"missing claim {exc.claim}") from None
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError) as exc:
            raise FormatError(FORMAT, where, f"{type(exc).__name__.removesuffix('Error').lower()}: "
                                             f"the token is not for this receiver") from None
        except jwt.PyJWTError as exc:
            raise FormatError(FORMAT, where, f"signature failed or token invalid ({type(exc).__name__})") from None
        return claims
    raise FormatError(FORMAT, where, "signature failed: no key in the JWKS verifies the token")


def _events(collector: Collector, where: str, claims: Mapping[str, Any]) -> None:
    events = claims.get("events")
    if not isinstance(events, dict) or not events:
        raise FormatError(FORMAT, where, "missing claim events (an object of event type → event)")
    issuer = str(claims.get("iss"))
    jti = str(claims.get("jti"))
    for uri, event in events.items():
        if uri == VERIFICATION:
            collector.ignore("SSF stream verification event (nothing exposed)")
            continue
        event = documents.obj(FORMAT, where, event, f"event {shown(uri)} to be a JSON object")
        subject = claims.get("sub_id", event.get("subject"))
        owner, session = _subject(where, subject)
        kind = RULES.get(uri) or collector.kind_for(uri.rstrip("/").rsplit("/", 1)[-1])
        if owner is None and session is None:
            raise FormatError(FORMAT, where, "the event names no subject (sub_id or subject) to act on")
        collector.add(where, rule=uri, kind=kind, owner=owner, id=session if kind == "okta.session" else None,
                      location=f"{issuer} jti {jti}", verified=True,
                      detected_at=_timestamp(event.get("event_timestamp", claims.get("iat"))),
                      reason=documents.text(FORMAT, where, event, "reason_admin")
                      if isinstance(event.get("reason_admin"), str) else None)


def _subject(where: str, subject: Any) -> tuple[str | None, str | None]:
    """(principal, session id) from an RFC 9493 subject identifier, simple or complex."""
    if not isinstance(subject, dict):
        return None, None
    if "user" in subject or "session" in subject:  # complex subject: {user: {...}, session: {...}, ...}
        owner, _ = _subject(where, subject.get("user"))
        session = subject.get("session")
        session_id = documents.text(FORMAT, where, session, "id", "sub") if isinstance(session, dict) else None
        return owner, session_id
    fmt = subject.get("format")
    if fmt == "aliases" and isinstance(subject.get("identifiers"), list):
        for alias in subject["identifiers"]:
            owner, _ = _subject(where, alias)
            if owner:
                return owner, None
        return None, None
    if fmt == "account":
        uri = documents.text(FORMAT, where, subject, "uri")
        return (uri.removeprefix("acct:") if uri else None), None
    return documents.text(FORMAT, where, subject, "email", "sub", "id", "uri", "phone_number"), None


def _timestamp(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 253402300800:
        return datetime.fromtimestamp(value, UTC).isoformat()
    return None
