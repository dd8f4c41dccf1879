"""Okta emulator state: users, sessions, API tokens, rate-limit buckets, and Okta's error bodies.

Pure model, no HTTP: `OktaState` methods raise `OktaError`, which the aiohttp edge in `okta` renders.
"""

from __future__ import annotations

import math
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from orchestrator.emulators._base import FixedWindowLimiter, describe_secret

BUCKETS = ("users.get", "users", "sessions", "api-tokens", "default")
_ALNUM = string.ascii_letters + string.digits


def okta_id(prefix: str, length: int = 20) -> str:
    """A random Okta-style id: `prefix` then letters and digits, `length` characters in all."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length - len(prefix)))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UserStatus(StrEnum):
    """Okta's user statuses."""

    STAGED = "STAGED"
    PROVISIONED = "PROVISIONED"
    ACTIVE = "ACTIVE"
    RECOVERY = "RECOVERY"
    LOCKED_OUT = "LOCKED_OUT"
    PASSWORD_EXPIRED = "PASSWORD_EXPIRED"  # noqa: S105 - a status, not a password
    SUSPENDED = "SUSPENDED"
    DEPROVISIONED = "DEPROVISIONED"


class OktaError(Exception):
    """An Okta error response: status, `errorCode`, `errorSummary`, causes, and headers to send with it."""

    def __init__(self, status: int, code: str, summary: str, causes: tuple[str, ...] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(summary)
        self.status, self.code, self.summary, self.causes = status, code, summary, causes
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Okta sends for this error (a fresh `errorId` each time)."""
        return {"errorCode": self.code, "errorSummary": self.summary, "errorLink": self.code,
                "errorId": okta_id("oae", 25), "errorCauses": [{"errorSummary": c} for c in self.causes]}


def not_found(key: str, kind: str) -> OktaError:
    """Okta's 404 E0000007 for `key`, a resource of `kind`."""
    return OktaError(404, "E0000007", f"Not found: Resource not found: {key} ({kind})")


def invalid(operation: str, cause: str) -> OktaError:
    """Okta's 400 E0000001 for `operation`, with one cause."""
    return OktaError(400, "E0000001", f"Api validation failed: {operation}", (cause,))


def _rate_limited(headers: dict[str, str]) -> OktaError:
    summary = "API call exceeded rate limit due to too many requests."
    return OktaError(429, "E0000047", summary, headers=headers)


@dataclass
class Session:
    """An Okta session of one user."""

    id: str
    user_id: str
    created: datetime
    revoked: bool = False

    def to_json(self, base: str, login: str) -> dict[str, Any]:
        """The session as `GET /api/v1/sessions/{id}` returns it."""
        href, created = f"{base}/api/v1/sessions/{self.id}", _iso(self.created)
        return {
            "id": self.id, "userId": self.user_id, "login": login, "status": "ACTIVE", "createdAt": created,
            "expiresAt": _iso(self.created + timedelta(hours=2)), "lastPasswordVerification": created,
            "lastFactorVerification": None, "amr": ["pwd"], "idp": {"id": "00o" + self.user_id[3:],
                                                                    "type": "OKTA"},
            "_links": {"self": {"href": href, "hints": {"allow": ["GET", "DELETE"]}},
                       "user": {"name": login, "href": f"{base}/api/v1/users/{self.user_id}"}},
        }


@dataclass
class User:
    """An Okta user and what revocation touches beyond sessions: OAuth grants and tokens, factors, devices."""

    id: str
    login: str
    email: str
    first_name: str
    last_name: str
    status: UserStatus
    created: datetime
    status_changed: datetime
    grants: list[dict[str, str]] = field(default_factory=list)
    tokens: list[dict[str, str]] = field(default_factory=list)
    factors: int = 0
    devices: int = 0

    def set_status(self, status: UserStatus) -> None:
        """Move to `status`, stamping the change."""
        self.status, self.status_changed = status, datetime.now(UTC)

    def to_json(self, base: str) -> dict[str, Any]:
        """The user as `GET /api/v1/users/{id}` returns it."""
        href = f"{base}/api/v1/users/{self.id}"
        operation = "unsuspend" if self.status is UserStatus.SUSPENDED else "suspend"
        links = {"self": {"href": href},
                 operation: {"href": f"{href}/lifecycle/{operation}", "method": "POST"}}
        return {
            "id": self.id, "status": self.status.value, "created": _iso(self.created),
            "activated": _iso(self.created), "statusChanged": _iso(self.status_changed), "lastLogin": None,
            "lastUpdated": _iso(self.status_changed), "passwordChanged": _iso(self.created),
            "profile": {"firstName": self.first_name, "lastName": self.last_name, "mobilePhone": None,
                        "secondEmail": None, "login": self.login, "email": self.email},
            "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": links,
        }


@dataclass
class ApiToken:
    """An Okta API token (SSWS); its value authenticates as its user and is never returned."""

    id: str
    name: str
    user_id: str
    value: str = field(repr=False)
    created: datetime
    revoked: bool = False

    def to_json(self, base: str) -> dict[str, Any]:
        """The token's metadata as `GET /api/v1/api-tokens/{id}` returns it."""
        return {
            "id": self.id, "name": self.name, "userId": self.user_id, "clientName": "Okta API",
            "tokenWindow": "P30D", "created": _iso(self.created), "lastUpdated": _iso(self.created),
            "expiresAt": _iso(self.created + timedelta(days=30)),
            "_link": {"self": {"href": f"{base}/api/v1/api-tokens/{self.id}",
                               "hints": {"allow": ["GET", "DELETE"]}}},
        }


@dataclass(frozen=True)
class Principal:
    """Who made a call: an admin token, or an API token acting as its user."""

    token: str = field(repr=False)
    api_token_id: str | None = None
    user_id: str | None = None


@dataclass
class _Bucket:
    limiter: FixedWindowLimiter
    requests: int = 0
    throttled: int = 0
    first_at: float | None = None
    last_at: float | None = None


class RateLimits:
    """Okta's per-endpoint buckets (org-wide fixed windows) and the org's concurrent-request limit."""

    def __init__(self, limit: int = 600, window_s: float = 60.0, concurrency: int = 75) -> None:
        self.buckets = {name: _Bucket(FixedWindowLimiter(limit, window_s)) for name in BUCKETS}
        self.concurrency = concurrency
        self.concurrency_throttled = 0

    @staticmethod
    def bucket_for(method: str, path: str) -> str:
        """The bucket a provider call counts against: a user GET by id or login has its own."""
        parts = path.removeprefix("/api/v1/").split("/")
        if not path.startswith("/api/v1/"):
            return "default"
        if parts[0] == "users" and len(parts) == 2 and method == "GET":
            return "users.get"
        return parts[0] if parts[0] in BUCKETS else "default"

    def hit(self, method: str, path: str, in_flight: int) -> dict[str, str]:
        """Count a call; return its `X-Rate-Limit-*` headers, or raise 429 (too many in flight, bucket full).

        Over the concurrency limit the headers report that limit, as Okta's do, with a one-second estimate.
        """
        if in_flight > self.concurrency:
            self.concurrency_throttled += 1
            raise _rate_limited({"X-Rate-Limit-Limit": str(self.concurrency), "X-Rate-Limit-Remaining": "0",
                                 "X-Rate-Limit-Reset": str(math.ceil(time.time()) + 1)})
        bucket = self.buckets[self.bucket_for(method, path)]
        count = bucket.limiter.hit("org")
        bucket.requests += 1
        headers = {"X-Rate-Limit-Limit": str(count.limit), "X-Rate-Limit-Remaining": str(count.remaining),
                   "X-Rate-Limit-Reset": str(math.ceil(count.reset_at))}
        if not count.allowed:
            bucket.throttled += 1
            raise _rate_limited(headers)
        bucket.last_at = time.time()
        bucket.first_at = bucket.first_at or bucket.last_at
        return headers

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply `{"buckets": {name: {"limit", "window_s"}}, "concurrency": N}`; restart the named windows.

        Every bucket's counters and the concurrency refusals start again from zero.
        """
        for name, spec in (body.get("buckets") or {}).items():
            if name not in self.buckets:
                raise ValueError(f"unknown bucket {name!r}; the buckets are {', '.join(BUCKETS)}")
            self.buckets[name].limiter.configure(spec)
        for bucket in self.buckets.values():
            bucket.requests = bucket.throttled = 0
            bucket.first_at = bucket.last_at = None
        self.concurrency_throttled = 0
        self.concurrency = int(body.get("concurrency", self.concurrency))
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """The limits in force."""
        return {"buckets": {name: b.limiter.settings() for name, b in self.buckets.items()},
                "concurrency": self.concurrency}

    def stats(self, max_in_flight: int) -> dict[str, Any]:
        """Calls and 429s per bucket, concurrency refusals, and the most requests seen in flight."""
        buckets = {name: {"requests": b.requests, "throttled": b.throttled, "first_at": b.first_at,
                          "last_at": b.last_at} for name, b in self.buckets.items()}
        concurrency = {"limit": self.concurrency, "throttled": self.concurrency_throttled}
        return {"buckets": buckets, "concurrency": concurrency, "max_in_flight": max_in_flight}


_TRANSITIONS = {  # operation -> (required status, new status, Okta's errorCauses summary otherwise)
    "suspend": (UserStatus.ACTIVE, UserStatus.SUSPENDED, "Cannot suspend a user that is not active"),
    "unsuspend": (UserStatus.SUSPENDED, UserStatus.ACTIVE, "Cannot unsuspend a user that is not suspended"),
}


class OktaState:
    """The emulated org: users, sessions, API and admin tokens, rate limits. Methods raise `OktaError`."""

    def __init__(self, admin_tokens: list[str] | None = None) -> None:
        self.admin_tokens = set(admin_tokens or [])
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self.api_tokens: dict[str, ApiToken] = {}
        self.limits = RateLimits()
        self._logins: dict[str, str] = {}  # casefolded login -> user id
        self._token_ids: dict[str, str] = {}  # live token value -> API token id
        self._user_sessions: dict[str, list[str]] = {}  # user id -> its session ids

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add or replace users (by id, else login), API tokens (by id) and admin tokens; return the ids."""
        users = [self._seed_user(spec) for spec in body.get("users", [])]
        tokens = [self._seed_api_token(spec) for spec in body.get("api_tokens", [])]
        self.admin_tokens.update(str(token) for token in body.get("admin_tokens", []))
        return {"users": [{"id": u.id, "login": u.login} for u in users],
                "api_tokens": [{"id": t.id, "name": t.name, "userId": t.user_id} for t in tokens]}

    def _seed_user(self, spec: dict[str, Any]) -> User:
        login = str(spec["login"])
        uid = str(spec.get("id") or self._logins.get(login.casefold()) or okta_id("00u"))
        if uid in self.users:
            self._logins.pop(self.users[uid].login.casefold(), None)
            for sid in self._user_sessions.pop(uid, []):
                self.sessions.pop(sid, None)
        now = datetime.now(UTC)
        user = User(
            uid, login, str(spec.get("email", login)), str(spec.get("firstName", login.split("@")[0])),
            str(spec.get("lastName", "User")), UserStatus(spec.get("status", "ACTIVE")), now, now,
            [{"id": okta_id("oag"), "clientId": str(g["clientId"])} for g in spec.get("grants", [])],
            [{"id": okta_id("oar"), "clientId": str(t["clientId"])} for t in spec.get("tokens", [])],
            int(spec.get("factors", 0)), int(spec.get("devices", 0)),
        )
        self.users[uid], self._logins[login.casefold()] = user, uid
        sessions = spec.get("sessions", [])
        for sid in [okta_id("102", 25) for _ in range(sessions)] if isinstance(sessions, int) else sessions:
            self.sessions[str(sid)] = Session(str(sid), uid, now)
            self._user_sessions.setdefault(uid, []).append(str(sid))
        return user

    def _seed_api_token(self, spec: dict[str, Any]) -> ApiToken:
        owner = self._find_user(str(spec["userId"] if "userId" in spec else spec["login"]))
        if owner is None:
            raise ValueError(f"API token {spec['name']!r} names no seeded user")
        token_id = str(spec.get("id") or okta_id("00T"))
        token = ApiToken(token_id, str(spec["name"]), owner.id, str(spec["token"]), datetime.now(UTC))
        if token.id in self.api_tokens:
            self._token_ids.pop(self.api_tokens[token.id].value, None)
        self.api_tokens[token.id], self._token_ids[token.value] = token, token.id
        return token

    def dump(self) -> dict[str, Any]:
        """Everything but token values (API tokens are named by `describe_secret`)."""
        return {
            "users": [{"id": u.id, "login": u.login, "email": u.email, "status": u.status.value,
                       "sessions": [{"id": sid, "revoked": self.sessions[sid].revoked}
                                    for sid in self._user_sessions.get(u.id, ())],
                       "grants": u.grants, "tokens": u.tokens, "factors": u.factors, "devices": u.devices}
                      for u in self.users.values()],
            "api_tokens": [{"id": t.id, "name": t.name, "userId": t.user_id, "revoked": t.revoked,
                            "created": _iso(t.created), "secret": describe_secret(t.value)}
                           for t in self.api_tokens.values()],
            "admin_tokens": len(self.admin_tokens),
            "rate_limits": self.limits.settings(),
        }

    def clear(self) -> None:
        """Forget users, sessions and API tokens; admin tokens stay."""
        for table in (self.users, self.sessions, self.api_tokens, self._logins, self._token_ids,
                      self._user_sessions):
            table.clear()

    def set_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply new rate limits (see `RateLimits.configure`)."""
        return self.limits.configure(body)

    def authenticate(self, header: str) -> Principal:
        """The caller named by an `Authorization` header (`SSWS <token>` or `SSWS<token>`); else 401."""
        token = header[4:].strip() if header[:4].upper() == "SSWS" else ""
        if token and token in self.admin_tokens:
            return Principal(token)
        api_token = self.api_tokens.get(self._token_ids.get(token, ""))
        if api_token is None:
            raise OktaError(401, "E0000011", "Invalid token provided")
        return Principal(token, api_token.id, api_token.user_id)

    def _find_user(self, key: str) -> User | None:
        uid = key if key in self.users else self._logins.get(key.casefold())
        if uid is None:
            folded = key.casefold()
            matches = [u.id for u in self.users.values()
                       if folded in (u.email.casefold(), u.login.split("@")[0].casefold())]
            uid = matches[0] if len(matches) == 1 else None
        return self.users[uid] if uid else None

    def user(self, key: str, principal: Principal | None = None) -> User:
        """The user with this id, login, email or login shortname (`me`: the calling token's user)."""
        if key == "me" and principal is not None and principal.user_id:
            key = principal.user_id
        user = self._find_user(key)
        if user is None:
            raise not_found(key, "User")
        return user

    def session(self, sid: str) -> tuple[Session, User]:
        """A live session and its user; 404 once ended."""
        session = self.sessions.get(sid)
        if session is None or session.revoked:
            raise not_found(sid, "Session")
        return session, self.users[session.user_id]

    def end_session(self, sid: str) -> None:
        """End one session."""
        self.session(sid)[0].revoked = True

    def end_user_sessions(self, key: str, *, oauth_tokens: bool, forget_devices: bool) -> None:
        """End every session of the user; optionally revoke its OAuth tokens and forget its devices."""
        user = self.user(key)
        for sid in self._user_sessions.get(user.id, ()):
            self.sessions[sid].revoked = True
        if oauth_tokens:
            user.tokens.clear()
        if forget_devices:
            user.devices = 0

    def revoke_grants(self, key: str) -> None:
        """Revoke every OAuth grant of the user."""
        self.user(key).grants.clear()

    def revoke_client_tokens(self, key: str, client_id: str) -> None:
        """Revoke the user's OAuth tokens issued to one client."""
        user = self.user(key)
        user.tokens = [t for t in user.tokens if t["clientId"] != client_id]

    def api_token(self, token_id: str) -> ApiToken:
        """A live API token by id; 404 otherwise."""
        token = self.api_tokens.get(token_id)
        if token is None or token.revoked:
            raise not_found(token_id, "ApiToken")
        return token

    def revoke_api_token(self, token_id: str) -> None:
        """Revoke an API token by id."""
        token = self.api_token(token_id)
        token.revoked = True
        self._token_ids.pop(token.value, None)

    def revoke_current(self, principal: Principal) -> None:
        """Revoke the token that authenticated the call (an admin token included)."""
        if principal.api_token_id is None:
            self.admin_tokens.discard(principal.token)
        else:
            self.revoke_api_token(principal.api_token_id)

    def lifecycle(self, key: str, operation: str) -> User:
        """Apply `suspend`, `unsuspend`, `reset_factors` or `expire_password` to the user."""
        user = self.user(key)
        if operation in _TRANSITIONS:
            source, target, cause = _TRANSITIONS[operation]
            if user.status is not source:
                raise invalid(f"{operation}User", cause)
            user.set_status(target)
        elif operation == "reset_factors":
            user.factors = 0
        elif operation != "expire_password":
            raise not_found(f"/api/v1/users/{key}/lifecycle/{operation}", "Resource")
        elif user.status is UserStatus.ACTIVE:
            user.set_status(UserStatus.PASSWORD_EXPIRED)
        return user

