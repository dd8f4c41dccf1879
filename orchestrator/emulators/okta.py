"""Okta emulator: the HTTP edge (routes, auth, rate limiting, error responses) over `okta_state.OktaState`.

Provider API: the calls okta-sdk-python 3.4.6 makes for revocation (`ROUTES`), with developer.okta.com's
status codes and error bodies (401 E0000011, 404 E0000007, 400 E0000001, 429 E0000047). Callers send
`SSWS <token>` or `SSWS<token>` (the SDK's spelling): an admin token, or a seeded API token acting as its user (a
value seeded as both is the API token, so `GET /api/v1/api-tokens/current` can name it; an admin token alone
gets 404 there). Rate-limit buckets as developer.okta.com's management limits class endpoints (org-wide fixed
windows, 600 calls / 60 s each by default): `users.get` (only `GET /api/v1/users/{idOrLogin}`), `users` (every
other `/api/v1/users*` call), `sessions` (`/api/v1/sessions*`), `api-tokens` (`/api/v1/api-tokens*`),
`default` (the rest); and 75 requests in flight per org. Every provider response carries `X-Rate-Limit-Limit`,
`-Remaining` and `-Reset` (epoch seconds, rounded up).

Control (besides `_base`): `POST /_emulator/state`, also `--seed FILE.json`: `{"users": [{"id"?, "login",
"email"?, "firstName"?, "lastName"?, "status"?, "sessions": [sid, ...] | N?, "grants": [{"clientId"}]?,
"tokens": [{"clientId"}]?, "factors": N?, "devices": N?}], "groups": [{"id"?, "name", "description"?, "members":
[user id or login, ...]}], "api_tokens": [{"id"?, "name", "userId" | "login", "token"}], "admin_tokens": [...]}`
adds or replaces (by id, else login), returns the ids; `GET` dumps all but token values; `DELETE` forgets users,
groups and API tokens. `PUT /_emulator/rate-limits` `{"buckets": {name: {"limit", "window_s"}}, "concurrency": N}`.
`GET /_emulator/okta-stats` → `{"buckets": {name: {"requests", "throttled", "first_at", "last_at"}}, "concurrency":
{"limit", "throttled"}, "max_in_flight"}` (times: epoch seconds of the first and last call the bucket admitted).
`GET /api/v1/users?search=profile.email eq "x"` (or `profile.login`) lists users, as the provider's fallback
for an owner given by email. `GET /api/v1/users/{idOrLogin}/groups?limit=&after=` lists the user's groups (Okta's
Group objects; `limit` at most 200, default 200), with `Link: <...>; rel="next"` while more remain.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from orchestrator.emulators._base import (
    CONTROL_KEY,
    CONTROL_PREFIX,
    Handler,
    make_app,
    serve,
    state_routes,
)
from orchestrator.emulators.okta_errors import OktaError, invalid, not_found, okta_id
from orchestrator.emulators.okta_state import OktaState, Principal

STATE_KEY = web.AppKey("okta_state", OktaState)
PRINCIPAL_KEY = web.RequestKey("okta_principal", Principal)


def _error_response(error: OktaError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


@web.middleware
async def _okta_edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate limits, then authentication, then the handler; Okta's error bodies and headers on every answer."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = request.app[STATE_KEY]
    headers = {"X-Okta-Request-Id": okta_id("", 27)}
    try:
        headers.update(state.limits.hit(request.method, request.path, request.app[CONTROL_KEY].in_flight))
        request[PRINCIPAL_KEY] = state.authenticate(request.headers.get("Authorization", ""))
        response = await handler(request)
    except OktaError as exc:
        response = _error_response(exc)
    except web.HTTPNotFound:
        response = _error_response(not_found(request.path, "Resource"))
    except web.HTTPMethodNotAllowed:
        response = _error_response(
            OktaError(405, "E0000022", "The endpoint does not support the provided HTTP method"))
    response.headers.update(headers)
    return response


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name, str(default)).lower()
    if value not in ("true", "false"):
        raise invalid(name, f"{name} must be true or false")
    return value == "true"


def _no_content(action: Callable[[OktaState, web.Request], None]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        action(request.app[STATE_KEY], request)
        return web.Response(status=204)

    return handler


async def get_user(request: web.Request) -> web.Response:
    """`GET /api/v1/users/{id}`."""
    user = request.app[STATE_KEY].user(request.match_info["id"], request[PRINCIPAL_KEY])
    return web.json_response(user.to_json(_base_url(request)))


async def list_users(request: web.Request) -> web.Response:
    """`GET /api/v1/users?search=profile.email eq "x"` (or `profile.login`): the matching users."""
    state, search = request.app[STATE_KEY], request.query.get("search", "")
    match = re.fullmatch(r'\s*profile\.(email|login)\s+eq\s+"([^"]*)"\s*', search)
    if search and match is None:
        raise invalid("search", "only profile.email eq \"...\" and profile.login eq \"...\" are emulated")
    users = [u for u in state.users.values()
             if match is None or (u.email if match[1] == "email" else u.login).casefold() == match[2].casefold()]
    return web.json_response([u.to_json(_base_url(request)) for u in users])


async def list_user_groups(request: web.Request) -> web.Response:
    """`GET /api/v1/users/{id}/groups?limit=&after=`: one page of the user's groups; `Link` to the next."""
    raw_limit = request.query.get("limit", "200")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
        raise invalid("limit", "limit must be an integer between 1 and 200")
    groups, after = request.app[STATE_KEY].user_groups(request.match_info["id"], after=request.query.get("after"),
                                                       limit=int(raw_limit))
    base = _base_url(request)
    own = f"{base}{request.path}?limit={raw_limit}"
    links = [f'<{own}>; rel="self"'] + ([f'<{own}&after={after}>; rel="next"'] if after else [])
    return web.json_response([g.to_json(base) for g in groups], headers={"Link": ", ".join(links)})


async def lifecycle(request: web.Request) -> web.Response:
    """`POST /api/v1/users/{id}/lifecycle/{operation}`: `{}`, or the user for `expire_password`."""
    operation = request.match_info["operation"]
    user = request.app[STATE_KEY].lifecycle(request.match_info["id"], operation)
    return web.json_response(user.to_json(_base_url(request)) if operation == "expire_password" else {})


async def get_session(request: web.Request) -> web.Response:
    """`GET /api/v1/sessions/{sid}`."""
    session, user = request.app[STATE_KEY].session(request.match_info["sid"])
    return web.json_response(session.to_json(_base_url(request), user.login))


async def list_api_tokens(request: web.Request) -> web.Response:
    """`GET /api/v1/api-tokens`: every live token's metadata."""
    tokens = request.app[STATE_KEY].api_tokens.values()
    return web.json_response([t.to_json(_base_url(request)) for t in tokens if not t.revoked])


async def get_current_api_token(request: web.Request) -> web.Response:
    """`GET /api/v1/api-tokens/current`: the metadata of the token making the call."""
    token = request.app[STATE_KEY].current_token(request[PRINCIPAL_KEY])
    return web.json_response(token.to_json(_base_url(request)))


async def get_api_token(request: web.Request) -> web.Response:
    """`GET /api/v1/api-tokens/{id}`."""
    token = request.app[STATE_KEY].api_token(request.match_info["tid"])
    return web.json_response(token.to_json(_base_url(request)))


def _end_user_sessions(state: OktaState, request: web.Request) -> None:
    state.end_user_sessions(request.match_info["id"], oauth_tokens=_flag(request, "oauthTokens", False),
                            forget_devices=_flag(request, "forgetDevices", True))


ROUTES = [
    web.get("/api/v1/users", list_users),
    web.get("/api/v1/users/{id}", get_user),
    web.get("/api/v1/users/{id}/groups", list_user_groups),
    web.delete("/api/v1/users/{id}/sessions", _no_content(_end_user_sessions)),
    web.delete("/api/v1/users/{id}/grants", _no_content(lambda s, r: s.revoke_grants(r.match_info["id"]))),
    web.delete("/api/v1/users/{id}/clients/{client}/tokens", _no_content(
        lambda s, r: s.revoke_client_tokens(r.match_info["id"], r.match_info["client"]))),
    web.post("/api/v1/users/{id}/lifecycle/{operation}", lifecycle),
    web.get("/api/v1/sessions/{sid}", get_session),
    web.delete("/api/v1/sessions/{sid}", _no_content(lambda s, r: s.end_session(r.match_info["sid"]))),
    web.get("/api/v1/api-tokens", list_api_tokens),
    web.get("/api/v1/api-tokens/current", get_current_api_token),
    web.delete("/api/v1/api-tokens/current", _no_content(lambda s, r: s.revoke_current(r[PRINCIPAL_KEY]))),
    web.get("/api/v1/api-tokens/{tid}", get_api_token),
    web.delete("/api/v1/api-tokens/{tid}", _no_content(lambda s, r: s.revoke_api_token(r.match_info["tid"]))),
]


async def _okta_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].limits.stats(request.app[CONTROL_KEY].max_in_flight))


def build(args: argparse.Namespace | None = None) -> web.Application:
    """The Okta emulator application, with the admin tokens and seed file named on the command line."""
    state = OktaState(getattr(args, "admin_token", None))
    if seed := getattr(args, "seed", None):
        state.seed(json.loads(Path(seed).read_text(encoding="utf-8")))
    app = make_app([*ROUTES, *state_routes(state), web.get(CONTROL_PREFIX + "okta-stats", _okta_stats)],
                   middlewares=[_okta_edge])
    app[STATE_KEY] = state
    return app


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", help="a JSON file in the shape of POST /_emulator/state")
    parser.add_argument("--admin-token", action="append", default=[], help="a token valid for any call")


if __name__ == "__main__":
    serve(build, description=__doc__.splitlines()[0], add_arguments=_add_arguments)
