"""Okta, through the official okta-sdk-python: one client per process, its errors translated at this edge."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from orchestrator import grammar
from orchestrator.actions import (
    ActionSpec,
    Params,
    ParamSource,
    ParamSpec,
    ParamType,
    Priority,
    StepContext,
    StepResult,
    flag,
    secret_value,
    text,
)
from orchestrator.errors import NotFound, PermanentError, TransientError
from orchestrator.governor import Governor
from orchestrator.grammar import segment
from orchestrator.keys import keyed_fingerprint
from orchestrator.providers._okta_sdk import BareError, headers_of, make_client, translate
from orchestrator.settings import OktaSettings

_USER = ParamSpec(description="user id, login or email", grammar=grammar.OKTA_USER)
_SESSION = ParamSpec(description="session id; resolves to its user", grammar=grammar.OKTA_SESSION_ID)
_WHO = {"user": _USER, "session_id": _SESSION}
_USER_OR_SESSION = (frozenset({"user", "session_id"}),)
_RESOLVE = ("GET /api/v1/sessions/{session_id} (when no user is given)", "GET /api/v1/users/{user}")

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("okta.clear_user_sessions", "Clear all of a user's sessions, optionally their OAuth tokens and "
               "remembered devices.",
               {**_WHO, "oauth_tokens": ParamSpec(type=ParamType.FLAG, source=ParamSource.LITERAL, default="true",
                                                  description="also revoke the user's OAuth tokens"),
                "forget_devices": ParamSpec(type=ParamType.FLAG, source=ParamSource.LITERAL, default="false",
                                            description="also forget remembered devices")},
               _USER_OR_SESSION, calls=(*_RESOLVE, "DELETE /api/v1/users/{id}/sessions?oauthTokens=&forgetDevices=")),
    ActionSpec("okta.end_session", "End one session by id; an ended session counts as done.",
               {"session_id": ParamSpec(required=True, description="session id", grammar=grammar.OKTA_SESSION_ID)},
               calls=("DELETE /api/v1/sessions/{session_id}",)),
    ActionSpec("okta.revoke_grants", "Revoke every OAuth grant the user gave.", _WHO, _USER_OR_SESSION,
               calls=(*_RESOLVE, "DELETE /api/v1/users/{id}/grants")),
    ActionSpec("okta.revoke_client_tokens", "Revoke the user's OAuth tokens issued to one client.",
               {**_WHO, "client_id": ParamSpec(required=True, description="the OAuth client id",
                                               grammar=grammar.OKTA_CLIENT_ID)},
               _USER_OR_SESSION, calls=(*_RESOLVE, "DELETE /api/v1/users/{id}/clients/{client_id}/tokens")),
    ActionSpec("okta.revoke_api_token", "Revoke an API token by its own value (self-revocation) or by id.",
               {"token": ParamSpec(secret=True, description="the exposed token's value",
                                   grammar=grammar.OKTA_API_TOKEN, own="okta.api_token", source=ParamSource.EVENT),
                "token_id": ParamSpec(description="the token's id (00T...)", grammar=grammar.OKTA_API_TOKEN_ID,
                                      own="okta.api_token_id")},
               (frozenset({"token", "token_id"}),),
               calls=("DELETE /api/v1/api-tokens/current (authenticated by the exposed token, when its value is "
                      "known)", "DELETE /api/v1/api-tokens/{token_id}")),
    ActionSpec("okta.revoke_user_api_tokens", "Revoke every API token the user owns (never the orchestrator's "
               "own).", _WHO, _USER_OR_SESSION,
               calls=(*_RESOLVE, "GET /api/v1/api-tokens", "DELETE /api/v1/api-tokens/{id} (each one owned)")),
    ActionSpec("okta.reset_factors", "Reset all of a user's enrolled MFA factors.", _WHO, _USER_OR_SESSION,
               calls=(*_RESOLVE, "POST /api/v1/users/{id}/lifecycle/reset_factors")),
    ActionSpec("okta.suspend_user", "Suspend a user; an already suspended user counts as done.",
               _WHO, _USER_OR_SESSION, calls=(*_RESOLVE, "POST /api/v1/users/{id}/lifecycle/suspend"),
               undo="okta.unsuspend_user"),
    ActionSpec("okta.unsuspend_user", "Unsuspend a suspended user (the undo of okta.suspend_user); a user not "
               "suspended counts as done.",
               {"user": ParamSpec(required=True, description="user id", grammar=grammar.OKTA_USER_ID)},
               calls=("GET /api/v1/users/{id}", "POST /api/v1/users/{id}/lifecycle/unsuspend"), destructive=False),
    ActionSpec("okta.expire_password", "Expire a user's password; an already expired one counts as done.",
               _WHO, _USER_OR_SESSION, calls=(*_RESOLVE, "POST /api/v1/users/{id}/lifecycle/expire_password")),
)

_USER_ID = re.compile(r"^00u[0-9A-Za-z]{17}$")
_CANNOT_SIGN_IN = frozenset({"SUSPENDED", "DEPROVISIONED"})
_BUCKET_SESSIONS = "sessions"
_BUCKET_USERS = "users"
_BUCKET_USER_GET = "users.get"
_BUCKET_API_TOKENS = "api-tokens"


@dataclass(frozen=True)
class _OwnToken:
    """The orchestrator's own API token at Okta: its id, and its user's keyed fingerprint ("" when unknown)."""

    id: str
    user: str


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
        self._own: _OwnToken | None = None
        self._handlers: Mapping[str, Callable[[Params, StepContext], Awaitable[StepResult]]] = {
            "okta.clear_user_sessions": self._clear_user_sessions,
            "okta.end_session": self._end_session,
            "okta.revoke_grants": self._revoke_grants,
            "okta.revoke_client_tokens": self._revoke_client_tokens,
            "okta.revoke_api_token": self._revoke_api_token,
            "okta.revoke_user_api_tokens": self._revoke_user_api_tokens,
            "okta.reset_factors": self._reset_factors,
            "okta.suspend_user": self._suspend_user,
            "okta.unsuspend_user": self._unsuspend_user,
            "okta.expire_password": self._expire_password,
        }

    async def __aenter__(self) -> OktaProvider:
        self._client = make_client(self._settings.org_url, self._settings.token)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    async def own_credentials(self, kind: str) -> tuple[str, ...]:
        """The orchestrator's own credentials of `kind`: its token's value, or its token's id (asked once of
        `GET /api/v1/api-tokens/current`; an org that cannot name it leaves the value as the only guard)."""
        if kind == "okta.api_token":
            return (self._settings.token,)
        if kind != "okta.api_token_id":
            return ()
        own = await self._own_token()
        return (own.id,) if own.id else ()

    async def _own_token(self) -> _OwnToken:
        """Our token's id and its user's fingerprint, from `GET /api/v1/api-tokens/current`, once."""
        if self._own is None:
            self._own = await self._current_token()
        return self._own

    async def _current_token(self) -> _OwnToken:
        import httpx

        headers = {"Authorization": f"SSWS {self._settings.token}", "Accept": "application/json"}
        try:
            async with httpx.AsyncClient(base_url=self._settings.org_url, timeout=10.0) as client, \
                    self._governor.slot(_BUCKET_API_TOKENS, Priority.URGENT):
                response = await client.get("/api/v1/api-tokens/current", headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"okta: cannot learn the orchestrator's own token id ({type(exc).__name__})") \
                from None
        if response.status_code in (401, 403, 404):
            return _OwnToken("", "")
        if response.status_code != 200:
            raise TransientError(f"okta: cannot learn the orchestrator's own token id (HTTP {response.status_code})",
                                 status=response.status_code)
        body = response.json()
        body = body if isinstance(body, dict) else {}
        user_id = str(body.get("userId") or "")
        return _OwnToken(str(body.get("id") or ""), keyed_fingerprint(user_id) if user_id else "")

    async def member_groups(self, user: str | None, session_id: str | None, *, exposure_id: str) -> tuple[str, ...]:
        """The names and ids of the groups the user (else the session's owner) is a member of now, for the
        protected-groups policy (`GET /api/v1/users/{id}/groups`, in the governor's `users` slots, urgent: it gates
        a run). Raises a `ProviderError` when the answer is not the whole list; the guard then treats the user
        as protected."""
        ctx = StepContext(exposure_id, priority=Priority.URGENT)
        named = {"user": user, "session_id": session_id}
        who = await self._resolve_user({k: v for k, v in named.items() if v is not None}, ctx, need_status=False)
        groups, response = await self._call(_BUCKET_USERS, ctx, self._client.list_user_groups, who.id,
                                            with_response=True)
        # okta 3.4.6's list_user_groups cannot ask for a next page: a user in more groups than one page holds
        # might be in a protected one we did not see.
        if 'rel="next"' in str(headers_of(response).get("Link", "")):
            raise PermanentError(f"okta: user {who.id} is in more groups than one page lists", code="PartialList")
        names: list[str] = []
        for group in groups or ():
            profile = getattr(group.profile, "actual_instance", group.profile)
            names += [str(group.id), *([str(profile.name)] if getattr(profile, "name", None) else [])]
        return tuple(names)

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Run one `okta.*` action."""
        try:
            return await self._handlers[action](params, context)
        except _SessionGone as gone:
            # Redelivered after the first run cleared the session: nothing left that this exposure names.
            return StepResult(f"session:{gone.session_id}", (), note="session already ended; owner not resolvable")

    # -- actions -------------------------------------------------------------------------------------------

    async def _clear_user_sessions(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx, need_status=False)
        oauth, forget = flag(params, "oauth_tokens", True), flag(params, "forget_devices", False)
        # Both flags always sent: on Identity Engine an absent forgetDevices means true.
        call = (f"DELETE /api/v1/users/{user.id}/sessions?oauthTokens={str(oauth).lower()}"
                f"&forgetDevices={str(forget).lower()}")
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, self._client.revoke_user_sessions, user.id,
                             oauth_tokens=oauth, forget_devices=forget)
        return StepResult(target=f"user:{user.id}", calls=(call,))

    async def _end_session(self, params: Params, ctx: StepContext) -> StepResult:
        session_id = _segment(text(params, "session_id") or "", "session_id")
        call = f"DELETE /api/v1/sessions/{session_id}"
        if ctx.dry_run:
            return StepResult(target=f"session:{session_id}", calls=(call,))
        try:
            await self._call(_BUCKET_SESSIONS, ctx, self._client.revoke_session, session_id)
        except NotFound:
            return StepResult(f"session:{session_id}", (call,), note="session already ended or unknown")
        return StepResult(f"session:{session_id}", (call,))

    async def _revoke_grants(self, params: Params, ctx: StepContext) -> StepResult:
        return await self._act_on_user(params, ctx, lambda uid: f"DELETE /api/v1/users/{uid}/grants",
                                       self._client.revoke_user_grants)

    async def _revoke_client_tokens(self, params: Params, ctx: StepContext) -> StepResult:
        client_id = _segment(text(params, "client_id") or "", "client_id")
        result = await self._act_on_user(params, ctx,
                                         lambda uid: f"DELETE /api/v1/users/{uid}/clients/{client_id}/tokens",
                                         self._client.revoke_tokens_for_user_and_client, client_id)
        return StepResult(f"{result.target} client:{client_id}", result.calls)

    async def _revoke_user_api_tokens(self, params: Params, ctx: StepContext) -> StepResult:
        """List the org's API tokens, then revoke those the user owns."""
        user = await self._resolve_user(params, ctx, need_status=False)
        tokens, response = await self._call(_BUCKET_API_TOKENS, ctx, self._client.list_api_tokens,
                                            with_response=True)
        # okta 3.4.6's list_api_tokens cannot ask for a next page: say so rather than claim completeness.
        partial = 'rel="next"' in str(headers_of(response).get("Link", ""))
        own = set(await self.own_credentials("okta.api_token_id"))
        owned = sorted(str(t.id) for t in tokens or () if str(t.user_id) == user.id and str(t.id) not in own)
        calls = tuple(f"DELETE /api/v1/api-tokens/{token_id}" for token_id in owned)
        if not ctx.dry_run:
            for token_id in owned:
                with contextlib.suppress(NotFound):  # revoked meanwhile: done all the same
                    await self._call(_BUCKET_API_TOKENS, ctx, self._client.revoke_api_token, token_id)
        note = "only the first page of API tokens was listed" if partial else \
            None if owned else "user owns no API tokens"
        return StepResult(f"user:{user.id} api-tokens:{len(owned)}", ("GET /api/v1/api-tokens", *calls), note=note)

    async def _revoke_api_token(self, params: Params, ctx: StepContext) -> StepResult:
        token = secret_value(params, "token")
        if token is not None:
            return await self._revoke_own_token(token, ctx)
        token_id = _segment(text(params, "token_id") or "", "token_id")
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
        async with make_client(self._settings.org_url, token) as own:
            try:
                await self._call(_BUCKET_API_TOKENS, ctx, own.revoke_current_api_token)
            except PermanentError as exc:
                if exc.status == 401:  # E0000011: the token no longer authenticates, so it is already dead
                    return StepResult(target, (call,), note="token already invalid (401 E0000011)")
                raise
        return StepResult(target, (call,))

    async def _reset_factors(self, params: Params, ctx: StepContext) -> StepResult:
        return await self._act_on_user(params, ctx, lambda uid: f"POST /api/v1/users/{uid}/lifecycle/reset_factors",
                                       self._client.reset_factors)

    async def _suspend_user(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        call = f"POST /api/v1/users/{user.id}/lifecycle/suspend"
        if user.status in _CANNOT_SIGN_IN:
            return StepResult(f"user:{user.id}", (), note=f"already {user.status.lower()}")
        if (await self._own_token()).user == keyed_fingerprint(user.id):
            # Okta deactivates a suspended user's API tokens: ours among them, and every later run would fail.
            raise PermanentError(f"okta: user {user.id} owns the orchestrator's own API token: refusing to suspend "
                                 "it (that would deactivate the token); do it by hand after rotating the token",
                                 code="OwnCredential")
        if not ctx.dry_run:
            try:
                await self._call(_BUCKET_USERS, ctx, self._client.suspend_user, user.id)
            except PermanentError as exc:
                # 400 "not active": suspended (or deprovisioned) since we looked; check rather than assume.
                now = await self._resolve_user({"user": user.id}, ctx)
                if exc.status != 400 or now.status not in _CANNOT_SIGN_IN:
                    raise
                return StepResult(f"user:{user.id}", (), note=f"already {now.status.lower()}")
        return StepResult(f"user:{user.id}", (call,), undo={"user": user.id})

    async def _unsuspend_user(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        call = f"POST /api/v1/users/{user.id}/lifecycle/unsuspend"
        if user.status != "SUSPENDED":
            return StepResult(f"user:{user.id}", (), note=f"not suspended ({(user.status or 'unknown').lower()})")
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, self._client.unsuspend_user, user.id)
        return StepResult(f"user:{user.id}", (call,))

    async def _expire_password(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        call = f"POST /api/v1/users/{user.id}/lifecycle/expire_password"
        if user.status == "PASSWORD_EXPIRED":
            return StepResult(f"user:{user.id}", (), note="password already expired")
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, self._client.expire_password, user.id)
        return StepResult(f"user:{user.id}", (call,))

    # -- resolution and the SDK boundary -----------------------------------------------------------------

    async def _act_on_user(self, params: Params, ctx: StepContext, call: Callable[[str], str],
                           method: Callable[..., Awaitable[tuple[Any, ...]]], *args: Any) -> StepResult:
        """Resolve the user, then `method(user_id, *args)` unless a dry run; `call(user_id)` names the request."""
        user = await self._resolve_user(params, ctx, need_status=False)
        if not ctx.dry_run:
            await self._call(_BUCKET_USERS, ctx, method, user.id, *args)
        return StepResult(f"user:{user.id}", (call(user.id),))

    async def _resolve_user(self, params: Params, ctx: StepContext, *, need_status: bool = True) -> _User:
        """The user named by `user` (id, login or email), else the owner of `session_id` (read-only calls).

        A user id needs no lookup unless the caller needs the user's status: one request saved per step.
        """
        key = text(params, "user")
        if key is None:
            session_id = _segment(text(params, "session_id") or "", "session_id")
            try:
                session = await self._call(_BUCKET_SESSIONS, ctx, self._client.get_session, session_id)
            except NotFound:
                raise _SessionGone(session_id) from None
            key = str(session.user_id)
        if not need_status and _USER_ID.match(key):
            return _User(id=key, status=None)
        try:
            user = await self._call(_BUCKET_USER_GET, ctx, self._client.get_user, _segment(key, "user"))
        except NotFound:
            # GET /users/{idOrLogin} takes an id, login or shortname, not an email: search by email instead.
            if "@" not in key or '"' in key:
                raise
            found = await self._call(_BUCKET_USERS, ctx, self._client.list_users, search=f'profile.email eq "{key}"')
            if len(found or []) != 1:
                raise NotFound(f"okta: no single user with login or email {key}", status=404) from None
            user = found[0]
        status = getattr(user.status, "value", user.status)
        return _User(id=str(user.id), status=str(status) if status is not None else None)

    async def _call(self, bucket: str, ctx: StepContext, method: Callable[..., Awaitable[tuple[Any, ...]]],
                    *args: Any, with_response: bool = False, **kwargs: Any) -> Any:
        """Call the SDK in a governor slot; return the data (and response) on success, raise ours on failure."""
        async with self._governor.slot(bucket, ctx.priority):
            result = await method(*args, **kwargs)
            error = result[-1]
            response = result[1] if len(result) == 3 else result[0]
            headers = headers_of(error if error is not None else response)
            status = getattr(response, "status_code", None)
            if error is None and isinstance(status, int) and status >= 300:
                # The SDK returns an error response with an empty body (a bare 503, say) as a success.
                error = BareError(status)
            # Inside the slot, so the governor's circuit breaker hears the verdict of its probe.
            self._governor.observe(bucket, headers, status=getattr(error, "status", None) if error else None)
        if error is not None:
            raise translate(error, headers)
        data = result[0] if len(result) == 3 else None
        return (data, response) if with_response else data


def _segment(value: str, name: str) -> str:
    """`value` unchanged, once known to be usable as one URL path segment (the SDK percent-encodes it)."""
    try:
        segment(value)
    except ValueError:
        raise PermanentError(f"okta: {name} cannot be a URL path segment (empty, a reserved word such as current "
                             "or me, or a dot segment); nothing was sent", code="InvalidTarget") from None
    return value


class _SessionGone(Exception):
    """The session an action was to resolve its user from no longer exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id
