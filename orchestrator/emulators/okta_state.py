"""Okta emulator state: the org's users, groups, sessions and API tokens, and what each operation does to them.

Pure model, no HTTP: `OktaState` methods raise `OktaError`, which the aiohttp edge in `okta` renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from orchestrator.emulators._base import describe_secret
from orchestrator.emulators.okta_errors import OktaError, invalid, not_found, okta_id
from orchestrator.emulators.okta_limits import RateLimits


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


@dataclass
class Group:
    """An Okta group (`OKTA_GROUP`) and its members' user ids."""

    id: str
    name: str
    description: str
    created: datetime
    members: list[str] = field(default_factory=list)

    def to_json(self, base: str) -> dict[str, Any]:
        """The group as `GET /api/v1/groups/{id}` (and a user's group list) returns it."""
        href, created = f"{base}/api/v1/groups/{self.id}", _iso(self.created)
        return {
            "id": self.id, "created": created, "lastUpdated": created, "lastMembershipUpdated": created,
            "objectClass": ["okta:user_group"], "type": "OKTA_GROUP",
            "profile": {"name": self.name, "description": self.description},
            "_links": {"logo": [], "users": {"href": f"{href}/users"}, "apps": {"href": f"{href}/apps"}},
        }


@dataclass(frozen=True)
class Principal:
    """Who made a call: an admin token, or an API token acting as its user."""

    token: str = field(repr=False)
    api_token_id: str | None = None
    user_id: str | None = None


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
        self.groups: dict[str, Group] = {}
        self.limits = RateLimits()
        self._logins: dict[str, str] = {}  # casefolded login -> user id
        self._token_ids: dict[str, str] = {}  # live token value -> API token id
        self._user_sessions: dict[str, list[str]] = {}  # user id -> its session ids

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add or replace users (by id, else login), groups (by id, else name), API tokens (by id) and admin
        tokens; return the ids."""
        users = [self._seed_user(spec) for spec in body.get("users", [])]
        groups = [self._seed_group(spec) for spec in body.get("groups", [])]
        tokens = [self._seed_api_token(spec) for spec in body.get("api_tokens", [])]
        self.admin_tokens.update(str(token) for token in body.get("admin_tokens", []))
        return {"users": [{"id": u.id, "login": u.login} for u in users],
                "groups": [{"id": g.id, "name": g.name} for g in groups],
                "api_tokens": [{"id": t.id, "name": t.name, "userId": t.user_id} for t in tokens]}

    def _seed_group(self, spec: dict[str, Any]) -> Group:
        name = str(spec["name"])
        existing = next((g.id for g in self.groups.values() if g.name == name), None)
        gid = str(spec.get("id") or existing or okta_id("00g"))
        members = []
        for key in spec.get("members", []):
            member = self._find_user(str(key))
            if member is None:
                raise ValueError(f"group {name!r} names no seeded user {key!r}")
            members.append(member.id)
        group = Group(gid, name, str(spec.get("description", "")), datetime.now(UTC), members)
        self.groups[gid] = group
        return group

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
            "groups": [{"id": g.id, "name": g.name, "members": g.members} for g in self.groups.values()],
            "api_tokens": [{"id": t.id, "name": t.name, "userId": t.user_id, "revoked": t.revoked,
                            "created": _iso(t.created), "secret": describe_secret(t.value)}
                           for t in self.api_tokens.values()],
            "admin_tokens": len(self.admin_tokens),
            "rate_limits": self.limits.settings(),
        }

    def clear(self) -> None:
        """Forget users, groups, sessions and API tokens; admin tokens stay."""
        for table in (self.users, self.groups, self.sessions, self.api_tokens, self._logins, self._token_ids,
                      self._user_sessions):
            table.clear()

    def set_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply new rate limits (see `RateLimits.configure`)."""
        return self.limits.configure(body)

    def authenticate(self, header: str) -> Principal:
        """The caller named by an `Authorization` header (`SSWS <token>` or `SSWS<token>`); else 401."""
        token = header[4:].strip() if header[:4].upper() == "SSWS" else ""
        # An API token known by id first: a token seeded both ways is then nameable by `GET /api-tokens/current`.
        api_token = self.api_tokens.get(self._token_ids.get(token, ""))
        if api_token is not None:
            return Principal(token, api_token.id, api_token.user_id)
        if token and token in self.admin_tokens:
            return Principal(token)
        raise OktaError(401, "E0000011", "Invalid token provided")

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

    def user_groups(self, key: str, *, after: str | None, limit: int) -> tuple[list[Group], str | None]:
        """One page of the groups the user is a member of, in id order, and the cursor of the next page (None
        on the last); the cursor is the last group id of the page, as Okta's opaque `after`."""
        user = self.user(key)
        groups = sorted((g for g in self.groups.values() if user.id in g.members), key=lambda g: g.id)
        if after is not None:
            groups = [g for g in groups if g.id > after]
        page = groups[:limit]
        return page, page[-1].id if len(groups) > limit else None

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
        self.admin_tokens.discard(principal.token)
        if principal.api_token_id is not None:
            self.revoke_api_token(principal.api_token_id)

    def current_token(self, principal: Principal) -> ApiToken:
        """The API token that authenticated the call; 404 for an admin token the emulator has no record of."""
        if principal.api_token_id is None:
            raise not_found("current", "ApiToken")
        return self.api_token(principal.api_token_id)

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

