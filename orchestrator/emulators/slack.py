"""Slack emulator: owns the Web API methods `auth.revoke` and `auth.test`, their tokens and rate limits.

Provider API, as docs.slack.dev describes it:

- `POST /api/auth.revoke` (form-encoded or JSON, optional `test=1|true`): the token comes as
  `Authorization: Bearer xox...` or, in a form body only, a `token` field. `200 {"ok": true, "revoked": true}`
  (`revoked: false` in test mode, which revokes nothing). Errors are HTTP 200 too: `{"ok": false, "error":
  "not_authed" | "invalid_auth" | "token_revoked" | "invalid_json"}`.
- `POST /api/auth.test`: `{"ok": true, "url", "team", "user", "team_id", "user_id"}` or the same errors.
- Rate limits are per method per workspace (the token's team): `auth.revoke` is Tier 3 (50/min),
  `auth.test` special ("hundreds per minute", 600/min here). Over the limit → HTTP 429 with `Retry-After`
  seconds and `{"ok": false, "error": "ratelimited"}`.

Control (besides `_base`): `POST /_emulator/state` `{"tokens": [{"token", "user", "team"}]}`;
`GET /_emulator/state` → `{"tokens": {sha256: {prefix, last4, user, team, revoked}}, "revoked_count": N,
"rate_limits": {...}}`; `PUT /_emulator/rate-limits` `{"auth.revoke": {"limit", "window_s"}, ...}`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
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

_TRUE = {"1", "true"}


@dataclass
class _Token:
    user: str
    team: str
    revoked: bool = False


class SlackState:
    """Seeded tokens and one rate limiter per Web API method."""

    def __init__(self) -> None:
        self.tokens: dict[str, _Token] = {}
        self.limits = {"auth.revoke": FixedWindowLimiter(50, 60), "auth.test": FixedWindowLimiter(600, 60)}

    def check(self, token: str | None) -> tuple[_Token | None, str | None]:
        """The token's record, or the Slack error code that refuses it."""
        if not token:
            return None, "not_authed"
        record = self.tokens.get(token)
        if record is None:
            return None, "invalid_auth"
        if record.revoked:
            return None, "token_revoked"
        return record, None

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add `tokens`; return them without secret values."""
        created = []
        for item in body.get("tokens", []):
            record = _Token(str(item["user"]), str(item["team"]))
            self.tokens[str(item["token"])] = record
            created.append(self._describe(str(item["token"]), record))
        return {"tokens": created}

    def dump(self) -> dict[str, Any]:
        """Tokens keyed by sha256 with their revoked flag, and the limits in force."""
        described = [self._describe(value, record) for value, record in self.tokens.items()]
        return {
            "tokens": {entry.pop("sha256"): entry for entry in described},
            "revoked_count": sum(record.revoked for record in self.tokens.values()),
            "rate_limits": self._limits(),
        }

    def clear(self) -> None:
        """Forget every token."""
        self.tokens.clear()

    def set_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        """Reconfigure the methods named in `body` (restarting their windows)."""
        for method, spec in body.items():
            if method not in self.limits:
                raise ValueError(f"unknown method {method!r}; known: {sorted(self.limits)}")
            self.limits[method].configure(spec)
        return self._limits()

    def _limits(self) -> dict[str, Any]:
        return {method: limiter.settings() for method, limiter in self.limits.items()}

    @staticmethod
    def _describe(value: str, record: _Token) -> dict[str, Any]:
        return {**describe_secret(value), "user": record.user, "team": record.team, "revoked": record.revoked}


STATE_KEY = web.AppKey("slack_state", SlackState)

Method = Callable[[SlackState, str, _Token, dict[str, str]], dict[str, Any]]


async def _params(request: web.Request) -> dict[str, str] | None:
    """Query, then form or JSON body arguments, as strings; None when a JSON body does not parse.

    A `token` counts only as a form field: Slack reads no token from query strings or JSON bodies.
    """
    params = {k: v for k, v in request.query.items() if k != "token"}
    if request.content_type != "application/json":
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return params
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return None
    params.update({str(k): str(v).lower() if isinstance(v, bool) else str(v)
                   for k, v in (body if isinstance(body, dict) else {}).items() if k != "token"})
    return params


def _token(request: web.Request, params: dict[str, str]) -> str | None:
    auth = authorization(request)
    if auth is not None and auth[0] == "bearer":
        return auth[1]
    return params.get("token")


def _method(name: str, action: Method) -> Handler:
    """A Web API method handler: arguments, rate limit, token check, then `action`."""

    async def handler(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        params = await _params(request)
        if params is None:
            return web.json_response({"ok": False, "error": "invalid_json"})
        token = _token(request, params)
        record = state.tokens.get(token or "")
        count = state.limits[name].hit(record.team if record else "anonymous")
        if not count.allowed:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(count.retry_after)})
        checked, error = state.check(token)
        if checked is None or token is None:
            return web.json_response({"ok": False, "error": error})
        return web.json_response({"ok": True, **action(state, token, checked, params)})

    return handler


def _revoke(state: SlackState, token: str, record: _Token, params: dict[str, str]) -> dict[str, Any]:
    if params.get("test", "").lower() in _TRUE:
        return {"revoked": False}
    record.revoked = True
    return {"revoked": True}


def _test(state: SlackState, token: str, record: _Token, params: dict[str, str]) -> dict[str, Any]:
    return {"url": f"https://{record.team.lower()}.slack.com/", "team": record.team, "user": record.user,
            "team_id": record.team, "user_id": record.user}


def build(args: argparse.Namespace | None = None) -> web.Application:
    """The Slack emulator application."""
    state = SlackState()
    app = make_app(
        [
            web.post("/api/auth.revoke", _method("auth.revoke", _revoke)),
            web.post("/api/auth.test", _method("auth.test", _test)),
            *state_routes(state),
        ]
    )
    app[STATE_KEY] = state
    return app


if __name__ == "__main__":
    serve(build, description=__doc__.splitlines()[0])
