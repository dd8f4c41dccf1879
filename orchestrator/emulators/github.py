"""GitHub emulator: owns `POST /credentials/revoke`, OAuth app token deletion, and their rate limits.

Provider API, as docs.github.com describes it:

- `POST /credentials/revoke` `{"credentials": [...]}`: unauthenticated (any `Authorization` header → 403),
  1 to 1000 credentials (else 422, Validation Failed), 202 `{}`; known tokens are revoked, unknown ones are
  accepted without a word. 60 calls an hour per client (the first `X-Forwarded-For` hop, else the peer).
- `DELETE /applications/{client_id}/token` `{"access_token": "gho_..."}` with Basic `client_id:client_secret`:
  204; 404 when the token is unknown, already revoked or of another app; 401 bad app credentials; 422.
- Every provider response carries `x-ratelimit-limit/-remaining/-used/-reset/-resource`; over the limit →
  403 (or 429, configurable) with remaining 0; an optional secondary limit answers with `retry-after`.

Control (besides `_base`): `POST /_emulator/state`
`{"tokens": [{"token", "owner", "app_client_id"?}], "apps": [{"client_id", "client_secret"}]}`;
`GET /_emulator/state` → `{"tokens": {sha256: {prefix, last4, owner, app_client_id, revoked}}, "apps": [...],
"revoked_count": N, "rate_limits": {...}}`; `PUT /_emulator/rate-limits`
`{"core": {"limit", "window_s"}, "apps": {...}, "secondary": {"limit", "window_s"} | null,
"status": 403|429}` (each key optional; `core` counts per client, `apps` per OAuth app).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from orchestrator.emulators._base import (
    FixedWindowLimiter,
    WindowCount,
    authorization,
    describe_secret,
    make_app,
    serve,
    state_routes,
)

MAX_CREDENTIALS = 1000
_DOCS = "https://docs.github.com/rest"
_RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"


@dataclass
class _Token:
    owner: str
    app_client_id: str | None
    revoked: bool = False


class GitHubState:
    """Seeded tokens and OAuth apps, and the rate limits guarding the two endpoints."""

    def __init__(self) -> None:
        self.tokens: dict[str, _Token] = {}
        self.apps: dict[str, str] = {}
        self.core = FixedWindowLimiter(60, 3600)
        self.app_calls = FixedWindowLimiter(5000, 3600)
        self.secondary: FixedWindowLimiter | None = None
        self.limited_status = 403

    def revoke_listed(self, credentials: list[str]) -> None:
        """Revoke every known credential of the list; unknown ones are ignored, as GitHub does."""
        for credential in credentials:
            if credential in self.tokens:
                self.tokens[credential].revoked = True

    def app_credentials_valid(self, client_id: str, basic: tuple[str, str] | None) -> bool:
        """True when Basic auth names this app with its secret."""
        return basic is not None and basic[0] == client_id and self.apps.get(client_id) == basic[1]

    def revoke_app_token(self, client_id: str, access_token: str) -> bool:
        """Revoke an active token of this app; False when there is none to revoke."""
        token = self.tokens.get(access_token)
        if token is None or token.revoked or token.app_client_id != client_id:
            return False
        token.revoked = True
        return True

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add `tokens` and `apps`; return them without secret values."""
        created: dict[str, list[dict[str, Any]]] = {"tokens": [], "apps": []}
        for app in body.get("apps", []):
            self.apps[str(app["client_id"])] = str(app["client_secret"])
            created["apps"].append({"client_id": str(app["client_id"])})
        for item in body.get("tokens", []):
            token = _Token(str(item["owner"]), item.get("app_client_id"))
            self.tokens[str(item["token"])] = token
            created["tokens"].append(self._describe(str(item["token"]), token))
        return created

    def dump(self) -> dict[str, Any]:
        """Tokens keyed by sha256 with their revoked flag, app ids, and the limits in force."""
        described = [self._describe(value, token) for value, token in self.tokens.items()]
        return {
            "tokens": {entry.pop("sha256"): entry for entry in described},
            "apps": sorted(self.apps),
            "revoked_count": sum(token.revoked for token in self.tokens.values()),
            "rate_limits": self._limits(),
        }

    def clear(self) -> None:
        """Forget tokens and apps."""
        self.tokens.clear()
        self.apps.clear()

    def set_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        """Reconfigure the limits named in `body` (restarting their windows)."""
        if "core" in body:
            self.core.configure(body["core"])
        if "apps" in body:
            self.app_calls.configure(body["apps"])
        if "secondary" in body:
            spec = body["secondary"]
            self.secondary = FixedWindowLimiter(int(spec["limit"]), float(spec["window_s"])) if spec else None
        if "status" in body:
            if int(body["status"]) not in (403, 429):
                raise ValueError("status must be 403 or 429")
            self.limited_status = int(body["status"])
        return self._limits()

    def _limits(self) -> dict[str, Any]:
        return {
            "core": self.core.settings(),
            "apps": self.app_calls.settings(),
            "secondary": self.secondary.settings() if self.secondary else None,
            "status": self.limited_status,
        }

    @staticmethod
    def _describe(value: str, token: _Token) -> dict[str, Any]:
        return {**describe_secret(value), "owner": token.owner, "app_client_id": token.app_client_id,
                "revoked": token.revoked}


STATE_KEY = web.AppKey("github_state", GitHubState)


def _error(status: int, message: str, *, errors: list[str] | None = None, docs: str = _DOCS) -> web.Response:
    body: dict[str, Any] = {"message": message, "documentation_url": docs, "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status)


def _rate_headers(count: WindowCount) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(count.limit),
        "x-ratelimit-remaining": str(count.remaining),
        "x-ratelimit-used": str(count.used),
        "x-ratelimit-reset": str(int(count.reset_at)),
        "x-ratelimit-resource": "core",
    }


def _throttle(
    state: GitHubState, limiter: FixedWindowLimiter, key: str
) -> tuple[web.Response | None, dict[str, str]]:
    """Count the call; return a refusal (or None) and the rate-limit headers every response carries."""
    count = limiter.hit(key)
    headers = _rate_headers(count)
    if not count.allowed:
        refusal = _error(state.limited_status, f"API rate limit exceeded for {key}.", docs=_RATE_DOCS)
        return refusal, headers
    if state.secondary and not (burst := state.secondary.hit(key)).allowed:
        refusal = _error(state.limited_status, "You have exceeded a secondary rate limit. Please wait a few "
                         "minutes before you try again.", docs=_RATE_DOCS)
        return refusal, {**headers, "retry-after": str(burst.retry_after)}
    return None, headers


def _client(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return forwarded or request.remote or "unknown"


def _basic(request: web.Request) -> tuple[str, str] | None:
    auth = authorization(request)
    if auth is None or auth[0] != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(auth[1], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _with_headers(response: web.Response, headers: dict[str, str]) -> web.Response:
    response.headers.update(headers)
    return response


async def revoke_credentials(request: web.Request) -> web.Response:
    """`POST /credentials/revoke`."""
    state = request.app[STATE_KEY]
    refusal, headers = _throttle(state, state.core, _client(request))
    if refusal is not None:
        return _with_headers(refusal, headers)
    if authorization(request) is not None:
        return _with_headers(_error(403, "This endpoint must be called without authentication."), headers)
    body = await _json_object(request)
    if body is None:
        return _with_headers(_error(400, "Problems parsing JSON"), headers)
    credentials = body.get("credentials")
    if not isinstance(credentials, list) or not all(isinstance(c, str) for c in credentials):
        problem = "credentials must be an array of strings"
    elif not 1 <= len(credentials) <= MAX_CREDENTIALS:
        problem = f"credentials must contain between 1 and {MAX_CREDENTIALS} items, got {len(credentials)}"
    else:
        state.revoke_listed(credentials)
        return web.json_response({}, status=202, headers=headers)
    return _with_headers(_error(422, "Validation Failed", errors=[problem]), headers)


async def delete_app_token(request: web.Request) -> web.Response:
    """`DELETE /applications/{client_id}/token`."""
    state = request.app[STATE_KEY]
    client_id = request.match_info["client_id"]
    basic = _basic(request)
    refusal, headers = _throttle(state, state.app_calls, basic[0] if basic else _client(request))
    if refusal is not None:
        return _with_headers(refusal, headers)
    if basic is None:
        return _with_headers(_error(401, "Requires authentication"), headers)
    if not state.app_credentials_valid(client_id, basic):
        return _with_headers(_error(401, "Bad credentials"), headers)
    body = await _json_object(request)
    access_token = body.get("access_token") if body else None
    if not isinstance(access_token, str) or not access_token:
        return _with_headers(_error(422, "Validation Failed", errors=["access_token is required"]), headers)
    if not state.revoke_app_token(client_id, access_token):
        return _with_headers(_error(404, "Not Found"), headers)
    return web.Response(status=204, headers=headers)


def build(args: argparse.Namespace | None = None) -> web.Application:
    """The GitHub emulator application."""
    state = GitHubState()
    app = make_app(
        [
            web.post("/credentials/revoke", revoke_credentials),
            web.delete("/applications/{client_id}/token", delete_app_token),
            *state_routes(state),
        ]
    )
    app[STATE_KEY] = state
    return app


if __name__ == "__main__":
    serve(build, description=__doc__.splitlines()[0])
