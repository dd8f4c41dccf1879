"""Okta, through the official okta-sdk-python: one client per process, its errors translated at this edge."""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

from orchestrator.actions import (
    ActionSpec,
    Params,
    ParamSpec,
    StepContext,
    StepResult,
    flag,
    secret_value,
    text,
)
from orchestrator.errors import NotFound, PermanentError, ProviderError, RateLimited, TransientError
from orchestrator.governor import Governor
from orchestrator.settings import OktaSettings

_USER = ParamSpec(description="user id, login or email")
_SESSION = ParamSpec(description="session id; resolves to its user")
_USER_OR_SESSION = (frozenset({"user", "session_id"}),)

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("okta.clear_user_sessions", "Clear all of a user's sessions, optionally their OAuth tokens and "
               "remembered devices.",
               {"user": _USER, "session_id": _SESSION, "oauth_tokens": ParamSpec(), "forget_devices": ParamSpec()},
               _USER_OR_SESSION),
    ActionSpec("okta.end_session", "End one session by id.", {"session_id": ParamSpec(required=True)}),
    ActionSpec("okta.revoke_api_token", "Revoke an API token by its own value (self-revocation) or by id.",
               {"token": ParamSpec(secret=True), "token_id": ParamSpec()}, (frozenset({"token", "token_id"}),)),
    ActionSpec("okta.reset_factors", "Reset all of a user's enrolled MFA factors.",
               {"user": _USER, "session_id": _SESSION}, _USER_OR_SESSION),
    ActionSpec("okta.suspend_user", "Suspend a user; an already suspended user counts as done.",
               {"user": _USER, "session_id": _SESSION}, _USER_OR_SESSION),
)

_USER_ID = re.compile(r"^00u[0-9A-Za-z]{17}$")
_BUCKET_SESSIONS = "sessions"
_BUCKET_USERS = "users"
_BUCKET_USER_GET = "users.get"
_BUCKET_API_TOKENS = "api-tokens"


@dataclass(frozen=True)
class _BareError:
    """An error response without a body, shaped like the SDK's errors for `translate`."""

    status: int
    error_code: str | None = None
    error_summary: str = "(empty body)"


@dataclass(frozen=True)
class _User:
    id: str
    status: str | None


class OktaProvider:
    """Performs `okta.*` actions with one shared SDK client."""

    name = "okta"

    def __init__(self, settings: OktaSettings, governor: Governor) -> None:
        self._settings = settings
        self._governor = governor
        self._client: Any = None
        self._handlers: Mapping[str, Callable[[Params, StepContext], Awaitable[StepResult]]] = {
            "okta.clear_user_sessions": self._clear_user_sessions,
            "okta.end_session": self._end_session,
            "okta.revoke_api_token": self._revoke_api_token,
            "okta.reset_factors": self._reset_factors,
            "okta.suspend_user": self._suspend_user,
        }

    async def __aenter__(self) -> OktaProvider:
        self._client = _make_client(self._settings.org_url, self._settings.token)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Run one `okta.*` action."""
        return await self._handlers[action](params, context)

    # -- actions -------------------------------------------------------------------------------------------

    async def _clear_user_sessions(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        oauth, forget = flag(params, "oauth_tokens", True), flag(params, "forget_devices", False)
        # Both flags always sent: on Identity Engine an absent forgetDevices means true.
        call = (f"DELETE /api/v1/users/{user.id}/sessions?oauthTokens={str(oauth).lower()}"
                f"&forgetDevices={str(forget).lower()}")
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, self._client.revoke_user_sessions, user.id,
                             oauth_tokens=oauth, forget_devices=forget)
        return StepResult(target=f"user:{user.id}", calls=(call,))

    async def _end_session(self, params: Params, ctx: StepContext) -> StepResult:
        session_id = text(params, "session_id") or ""
        call = f"DELETE /api/v1/sessions/{session_id}"
        if ctx.dry_run:
            return StepResult(target=f"session:{session_id}", calls=(call,))
        try:
            await self._call(_BUCKET_SESSIONS, ctx, self._client.revoke_session, session_id)
        except NotFound:
            return StepResult(f"session:{session_id}", (call,), note="session already ended or unknown")
        return StepResult(f"session:{session_id}", (call,))

    async def _revoke_api_token(self, params: Params, ctx: StepContext) -> StepResult:
        token = secret_value(params, "token")
        if token is not None:
            return await self._revoke_own_token(token, ctx)
        token_id = text(params, "token_id") or ""
        call = f"DELETE /api/v1/api-tokens/{token_id}"
        if ctx.dry_run:
            return StepResult(f"api-token:{token_id}", (call,))
        try:
            await self._call(_BUCKET_API_TOKENS, ctx, self._client.revoke_api_token, token_id)
        except NotFound:
            return StepResult(f"api-token:{token_id}", (call,), note="token already revoked or unknown")
        return StepResult(f"api-token:{token_id}", (call,))

    async def _revoke_own_token(self, token: str, ctx: StepContext) -> StepResult:
        """`DELETE /api-tokens/current` authenticated by the exposed token itself: no admin token needed."""
        from orchestrator.events import fingerprint

        target = f"api-token:current({fingerprint(token)})"
        call = "DELETE /api/v1/api-tokens/current (authenticated by the exposed token)"
        if ctx.dry_run:
            return StepResult(target, (call,))
        async with _make_client(self._settings.org_url, token) as own:
            try:
                await self._call(_BUCKET_API_TOKENS, ctx, own.revoke_current_api_token)
            except PermanentError as exc:
                if exc.status == 401:  # E0000011: the token no longer authenticates, so it is already dead
                    return StepResult(target, (call,), note="token already invalid (401 E0000011)")
                raise
        return StepResult(target, (call,))

    async def _reset_factors(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        call = f"POST /api/v1/users/{user.id}/lifecycle/reset_factors"
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, self._client.reset_factors, user.id)
        return StepResult(f"user:{user.id}", (call,))

    async def _suspend_user(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        call = f"POST /api/v1/users/{user.id}/lifecycle/suspend"
        if user.status == "SUSPENDED":
            return StepResult(f"user:{user.id}", (), note="already suspended")
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, self._client.suspend_user, user.id)
        return StepResult(f"user:{user.id}", (call,))

    # -- resolution and the SDK boundary -----------------------------------------------------------------

    async def _resolve_user(self, params: Params, ctx: StepContext) -> _User:
        """The user named by `user` (id, login or email), else the owner of `session_id` (read-only calls)."""
        login = text(params, "user")
        if login is None:
            session_id = text(params, "session_id") or ""
            session = await self._call(_BUCKET_SESSIONS, ctx, self._client.get_session, session_id)
            login = str(session.user_id)
        user = await self._call(_BUCKET_USER_GET, ctx, self._client.get_user, quote(login, safe="@"))
        status = getattr(user.status, "value", user.status)
        return _User(id=str(user.id), status=str(status) if status is not None else None)

    async def _call(self, bucket: str, ctx: StepContext, method: Callable[..., Awaitable[tuple[Any, ...]]],
                    *args: Any, **kwargs: Any) -> Any:
        """Call the SDK; return the data on success, raise our error on failure."""
        async with self._governor.slot(bucket, ctx.priority):
            result = await method(*args, **kwargs)
        error = result[-1]
        response = result[1] if len(result) == 3 else result[0]
        headers = _headers_of(error if error is not None else response)
        status = getattr(response, "status_code", None)
        if error is None and isinstance(status, int) and status >= 300:
            # The SDK returns an error response with an empty body (a bare 503, say) as a success.
            error = _BareError(status)
        self._governor.observe(bucket, headers, status=getattr(error, "status", None) if error else None)
        if error is not None:
            raise translate(error, headers)
        return result[0] if len(result) == 3 else None


def translate(error: Any, headers: Mapping[str, str]) -> ProviderError:
    """An SDK error as ours; the message holds the status and Okta error code, never request content."""
    status = getattr(error, "status", None)
    code = getattr(error, "error_code", None)
    summary = getattr(error, "error_summary", "") or ""
    message = f"okta HTTP {status} {code or ''} {summary}".strip()
    if status == 429 or code == "E0000047":
        return RateLimited(message, retry_after=retry_after(headers), status=status, code=code)
    if status is None or status >= 500 or status == 408:
        return TransientError(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    return PermanentError(message, status=status, code=code)


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float:
    """Seconds until the bucket resets: `Retry-After`, else `X-Rate-Limit-Reset` against the server's `Date`."""
    if value := headers.get("Retry-After"):
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = headers.get("X-Rate-Limit-Reset")
    if reset is None:
        return 1.0
    server_now = now if now is not None else _server_time(headers)
    # Up to half a second of jitter so waiting runs do not all return in the same instant.
    return max(0.0, float(reset) - server_now) + random.uniform(0, 0.5)  # noqa: S311


def _server_time(headers: Mapping[str, str]) -> float:
    date = headers.get("Date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


def _headers_of(thing: Any) -> Mapping[str, str]:
    for attribute in ("headers", "response_headers"):
        headers = getattr(thing, attribute, None)
        if headers:
            return headers  # type: ignore[no-any-return]
    return {}


def _make_client(org_url: str, token: str) -> Any:
    """An SDK client with its own retries off (we own retries) and transport errors raised, not swallowed."""
    from okta.client import Client
    from okta.http_client import HTTPClient

    class _RaisingHTTPClient(HTTPClient):
        """The SDK turns a refused connection into a None response and then crashes on it; raise instead."""

        async def send_request(self, request: dict[str, Any]) -> tuple[Any, ...]:
            result: tuple[Any, ...] = await super().send_request(request)  # type: ignore[no-untyped-call]
            error = result[-1]
            if result[1] is None and error is not None:
                raise TransientError(f"okta unreachable: {type(error).__name__}")
            return result

    config = {
        "orgUrl": org_url,
        "token": token,
        "rateLimit": {"maxRetries": 0},
        "cache": {"enabled": False},
        "httpClient": _RaisingHTTPClient,
    }
    return Client(config)
