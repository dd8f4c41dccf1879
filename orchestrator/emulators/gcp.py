"""GCP emulator: owns IAM v1 service-account keys (get, list, disable, enable, delete) and their quota.

Provider API, as cloud.google.com/iam/docs/reference/rest describes it:

- `GET /v1/projects/{project}/serviceAccounts/{email}/keys[/{keyId}]`, `POST .../keys/{keyId}:disable`
  (optional body `{"serviceAccountKeyDisableReason"}`), `POST .../keys/{keyId}:enable` → `{}`,
  `DELETE .../keys/{keyId}` → `{}`. `-` stands for "the account's own project".
- `Authorization: Bearer <access token>`; missing or unknown → 401 `UNAUTHENTICATED`.
- A known account without that key (or whose key was deleted) → 404 `NOT_FOUND` "Service account key K does
  not exist."; an unknown account → 403 `PERMISSION_DENIED`, as IAM does (it cannot tell "missing" from "not
  allowed" there); a deleted account → 404 `NOT_FOUND` "Service account projects/P/serviceAccounts/E does not
  exist." (the parent resource is gone: not the same answer as "no such key").
- `GET /v1/projects/{project}/serviceAccounts/{email}` → the account; `DELETE` on it deletes the account and
  with it every key (what a collapsed `.../keys/..` path would do on the real API).
- Quota: requests per minute per access token (600 by default); over it → 429 `RESOURCE_EXHAUSTED`.
- Errors use Google's body `{"error": {"code", "message", "status"}}`.

Control (besides `_base`): `POST /_emulator/state`
`{"access_tokens": ["ya29..."], "keys": [{"project", "email", "key_id"}]}`; `GET /_emulator/state` →
`{"access_tokens": [{sha256, prefix, last4}], "keys": [{name, project, email, key_id, disabled, deleted}]}`;
`PUT /_emulator/rate-limits` `{"limit", "window_s"}`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from orchestrator.emulators._base import (
    FixedWindowLimiter,
    Handler,
    authorization,
    describe_secret,
    make_app,
    serve,
    state_routes,
)

_ACCOUNT_PATH = "/v1/projects/{project}/serviceAccounts/{email}"
_KEY_PATH = _ACCOUNT_PATH + "/keys"
_KEY_ID = "{key_id:[^/:]+}"
_FOREVER = "9999-12-31T23:59:59Z"
_USER_INITIATED = "SERVICE_ACCOUNT_KEY_DISABLE_REASON_USER_INITIATED"
_NO_CREDENTIAL = "Request is missing required authentication credential."
_BAD_CREDENTIAL = "Request had invalid authentication credentials."
_EXPECTED = (" Expected OAuth 2 access token, login cookie or other valid authentication credential. "
             "See https://developers.google.com/identity/sign-in/web/devconsole-project.")


@dataclass
class _Key:
    project: str
    email: str
    key_id: str
    valid_after: str
    disabled: bool = False
    disable_reason: str | None = None
    deleted: bool = False

    @property
    def name(self) -> str:
        return f"projects/{self.project}/serviceAccounts/{self.email}/keys/{self.key_id}"

    def resource(self) -> dict[str, Any]:
        """The ServiceAccountKey as IAM returns it (proto3 JSON leaves out `disabled` while false)."""
        body: dict[str, Any] = {
            "name": self.name, "validAfterTime": self.valid_after, "validBeforeTime": _FOREVER,
            "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED", "keyType": "USER_MANAGED",
        }
        if self.disabled:
            body.update(disabled=True, disableReason=self.disable_reason)
        return body


class _GoogleError(Exception):
    """A failed call, rendered as Google's JSON error body."""

    def __init__(self, code: int, status: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.headers = code, status, message, headers or {}

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "status": self.status}}
        return web.json_response(body, status=self.code, headers=self.headers)


class GcpState:
    """Seeded access tokens, service-account keys, and the per-minute quota."""

    def __init__(self) -> None:
        self.access_tokens: set[str] = set()
        self.keys: dict[tuple[str, str], _Key] = {}
        self.deleted_accounts: set[str] = set()
        self.quota = FixedWindowLimiter(600, 60)

    def authenticate(self, request: web.Request) -> str:
        """The caller's access token; raises 401 or 429."""
        auth = authorization(request)
        if auth is None or auth[0] != "bearer":
            raise _GoogleError(401, "UNAUTHENTICATED", _NO_CREDENTIAL + _EXPECTED,
                               {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        if auth[1] not in self.access_tokens:
            raise _GoogleError(401, "UNAUTHENTICATED", _BAD_CREDENTIAL + _EXPECTED, {
                "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'})
        if not (count := self.quota.hit(auth[1])).allowed:
            raise _GoogleError(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Requests' and "
                               "limit 'Requests per minute' of service 'iam.googleapis.com'.",
                               {"Retry-After": str(count.retry_after)})
        return auth[1]

    def account_keys(self, project: str, email: str, permission: str) -> list[_Key]:
        """The live keys of a known account; raises 403 when the account is unknown in that project."""
        if email in self.deleted_accounts:
            raise _GoogleError(404, "NOT_FOUND", f"Service account projects/{project}/serviceAccounts/{email} "
                               "does not exist.")
        keys = [k for k in self.keys.values() if k.email == email and project in ("-", k.project)]
        if not keys:
            raise _GoogleError(403, "PERMISSION_DENIED", f"Permission '{permission}' denied on resource "
                               "(or it may not exist).")
        return [k for k in keys if not k.deleted]

    def key(self, project: str, email: str, key_id: str, permission: str) -> _Key:
        """One live key; raises 403 (unknown account) or 404 (no such key, or deleted)."""
        for key in self.account_keys(project, email, permission):
            if key.key_id == key_id:
                return key
        raise _GoogleError(404, "NOT_FOUND", f"Service account key {key_id} does not exist.")

    def delete_account(self, project: str, email: str) -> None:
        """Delete the account and every key it has."""
        for key in self.account_keys(project, email, "iam.serviceAccounts.delete"):
            key.deleted = True
        self.deleted_accounts.add(email)

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add `access_tokens` and `keys`; return the key resources and the tokens without their values."""
        tokens = [str(token) for token in body.get("access_tokens", [])]
        self.access_tokens.update(tokens)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        keys = [_Key(str(k["project"]), str(k["email"]), str(k["key_id"]), now) for k in body.get("keys", [])]
        self.keys.update({(key.email, key.key_id): key for key in keys})
        self.deleted_accounts -= {key.email for key in keys}
        return {"access_tokens": [describe_secret(t) for t in tokens], "keys": [k.resource() for k in keys]}

    def dump(self) -> dict[str, Any]:
        """Access tokens (described) and every key with its disabled/deleted flags."""
        return {
            "access_tokens": [describe_secret(token) for token in sorted(self.access_tokens)],
            "keys": [{"name": k.name, "project": k.project, "email": k.email, "key_id": k.key_id,
                      "disabled": k.disabled, "deleted": k.deleted} for k in self.keys.values()],
            "deleted_accounts": sorted(self.deleted_accounts),
            "rate_limits": self.quota.settings(),
        }

    def clear(self) -> None:
        """Forget access tokens and keys."""
        self.access_tokens.clear()
        self.keys.clear()
        self.deleted_accounts.clear()

    def set_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply `{"limit", "window_s"}` to the quota (restarting its windows)."""
        return self.quota.configure(body)


STATE_KEY = web.AppKey("gcp_state", GcpState)


KeyAction = Callable[[_Key, dict[str, Any]], dict[str, Any]]


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise _GoogleError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from exc
    return body if isinstance(body, dict) else {}


def _key_method(permission: str, action: KeyAction) -> Handler:
    """An IAM method on one key: authenticate, find the key, run `action`, render errors Google's way."""

    async def handler(request: web.Request) -> web.Response:
        state, info = request.app[STATE_KEY], request.match_info
        try:
            state.authenticate(request)
            key = state.key(info["project"], info["email"], info["key_id"], permission)
            return web.json_response(action(key, await _body(request)))
        except _GoogleError as exc:
            return exc.response()

    return handler


async def list_keys(request: web.Request) -> web.Response:
    """`GET .../serviceAccounts/{email}/keys`: the account's live keys."""
    state, info = request.app[STATE_KEY], request.match_info
    try:
        state.authenticate(request)
        keys = state.account_keys(info["project"], info["email"], "iam.serviceAccountKeys.list")
    except _GoogleError as exc:
        return exc.response()
    return web.json_response({"keys": [key.resource() for key in keys]})


def _account_method(permission: str, delete: bool) -> Handler:
    """`GET` or `DELETE /v1/projects/{project}/serviceAccounts/{email}`."""

    async def handler(request: web.Request) -> web.Response:
        state, info = request.app[STATE_KEY], request.match_info
        try:
            state.authenticate(request)
            state.account_keys(info["project"], info["email"], permission)
            if delete:
                state.delete_account(info["project"], info["email"])
                return web.json_response({})
        except _GoogleError as exc:
            return exc.response()
        project = next((k.project for k in state.keys.values() if k.email == info["email"]), info["project"])
        return web.json_response({"name": f"projects/{project}/serviceAccounts/{info['email']}",
                                  "email": info["email"], "projectId": project})

    return handler


def _get(key: _Key, body: dict[str, Any]) -> dict[str, Any]:
    return key.resource()


def _disable(key: _Key, body: dict[str, Any]) -> dict[str, Any]:
    key.disabled = True
    key.disable_reason = str(body.get("serviceAccountKeyDisableReason") or _USER_INITIATED)
    return {}


def _enable(key: _Key, body: dict[str, Any]) -> dict[str, Any]:
    key.disabled, key.disable_reason = False, None
    return {}


def _delete(key: _Key, body: dict[str, Any]) -> dict[str, Any]:
    key.deleted = True
    return {}


def build(args: argparse.Namespace | None = None) -> web.Application:
    """The GCP IAM emulator application."""
    state = GcpState()
    one = f"{_KEY_PATH}/{_KEY_ID}"
    app = make_app(
        [
            web.get(_ACCOUNT_PATH, _account_method("iam.serviceAccounts.get", delete=False)),
            web.delete(_ACCOUNT_PATH, _account_method("iam.serviceAccounts.delete", delete=True)),
            web.get(_KEY_PATH, list_keys),
            web.get(one, _key_method("iam.serviceAccountKeys.get", _get)),
            web.post(one + ":disable", _key_method("iam.serviceAccountKeys.disable", _disable)),
            web.post(one + ":enable", _key_method("iam.serviceAccountKeys.enable", _enable)),
            web.delete(one, _key_method("iam.serviceAccountKeys.delete", _delete)),
            *state_routes(state),
        ]
    )
    app[STATE_KEY] = state
    return app


if __name__ == "__main__":
    serve(build, description=__doc__.splitlines()[0])
