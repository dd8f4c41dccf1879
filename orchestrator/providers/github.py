"""GitHub, over its REST API with httpx: revoking exposed tokens, coalesced into few `/credentials/revoke` calls.

`POST /credentials/revoke` is unauthenticated, takes up to 1,000 credentials per call and allows 60 calls an
hour, so tokens that arrive close together share one call (`_Coalescer`). OAuth-app and GitHub-App user tokens
go through `DELETE /applications/{client_id}/token` when app credentials are configured. Token values stay
inside this module: results, errors and logs name a token by its fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

import httpx

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
    secret_value,
    text,
)
from orchestrator.errors import PermanentError, ProviderError, RateLimited, TransientError
from orchestrator.events import fingerprint
from orchestrator.governor import Governor
from orchestrator.providers._http import HttpProvider, by_status, json_object, retry_after, send
from orchestrator.redaction import REDACTOR
from orchestrator.settings import GitHubSettings

_VIA = ("auto", "credentials-revoke", "oauth-app")
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("github.revoke_token", "Revoke a GitHub token: OAuth-app tokens through the app when its "
               "credentials are configured, every other token (and those) through POST /credentials/revoke, "
               "coalesced with other tokens arriving within the batching window.",
               {"token": ParamSpec(required=True, secret=True, description="the exposed token",
                                   grammar=grammar.GITHUB_TOKEN, own="github.token", source=ParamSource.EVENT),
                "via": ParamSpec(description="auto (by prefix), credentials-revoke or oauth-app",
                                 type=ParamType.CHOICE, choices=_VIA, source=ParamSource.LITERAL, default="auto")},
               calls=("DELETE /applications/{client_id}/token (app tokens, when the app is configured)",
                      "POST /credentials/revoke (unauthenticated, coalesced)")),
)

#: Concurrent requests: the batch endpoint sees about one call at a time; app deletions are per token.
CONCURRENCY = 8
MAX_BATCH = 1000
BATCH_WINDOW_S = 0.2
#: Prefixes of tokens an OAuth app or GitHub App can delete itself: OAuth access tokens, App user tokens.
_APP_TOKEN_PREFIXES = ("gho_", "ghu_")
_BUCKET_REVOKE = "credentials.revoke"
_BUCKET_APPS = "applications"
_REVOKE_CALL = "POST /credentials/revoke (unauthenticated; coalesced, up to 1000 credentials per call)"
#: GitHub's advice when a secondary limit gives neither retry-after nor a zero remaining budget.
_SECONDARY_WAIT_S = 60.0


class GitHubProvider(HttpProvider):
    """Performs `github.*` actions with one httpx client and one coalescer of revocations."""

    name = "github"

    def __init__(self, settings: GitHubSettings, governor: Governor, *,
                 batch_window_s: float = BATCH_WINDOW_S) -> None:
        super().__init__(settings.api_url, governor, concurrency=CONCURRENCY)
        self._settings = settings
        self._coalescer = _Coalescer(governor, self._revoke_batch, window_s=batch_window_s)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._coalescer.close()
        await super().__aexit__(exc_type, exc, tb)

    async def own_credentials(self, kind: str) -> tuple[str, ...]:
        """The orchestrator's own GitHub credentials a `token` parameter could name: its app's client secret."""
        secret = self._settings.app_client_secret
        return (secret,) if kind == "github.token" and secret else ()

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Run one `github.*` action."""
        token = secret_value(params, "token") or ""
        via = text(params, "via") or "auto"
        if via not in _VIA:
            raise PermanentError(f"github.revoke_token: via={via!r} must be one of {', '.join(_VIA)}")
        target = f"github-token:{_prefix(token)}{fingerprint(token)}"
        client_id = self._settings.app_client_id
        use_app = client_id is not None and self._settings.app_client_secret is not None and (
            via == "oauth-app" or (via == "auto" and token.startswith(_APP_TOKEN_PREFIXES)))
        if via == "oauth-app" and not use_app:
            raise PermanentError("github.revoke_token: via=oauth-app needs ORCHESTRATOR_GITHUB_APP_CLIENT_ID "
                                 "and ORCHESTRATOR_GITHUB_APP_CLIENT_SECRET")
        if use_app:
            call = f"DELETE /applications/{client_id}/token (Basic client_id:client_secret)"
            if context.dry_run:
                return StepResult(target, (call,))
            if await self._delete_app_token(token, context.priority):
                return StepResult(target, (call,))
            # 404: already revoked, or another app's token; the batch endpoint takes any token, so make sure.
            await self._coalescer.submit(token, context.priority)
            return StepResult(target, (call, _REVOKE_CALL),
                              note="unknown to the app or already revoked; also sent to /credentials/revoke")
        if not context.dry_run:
            await self._coalescer.submit(token, context.priority)
        return StepResult(target, (_REVOKE_CALL,))

    async def _delete_app_token(self, token: str, priority: Priority) -> bool:
        """True when the app revoked the token, False on 404 (unknown to the app or already revoked)."""
        client_id, client_secret = self._settings.app_client_id or "", self._settings.app_client_secret or ""
        response = await self._request(_BUCKET_APPS, priority, "DELETE", f"/applications/{client_id}/token",
                                       json={"access_token": token}, auth=(client_id, client_secret),
                                       headers=_ACCEPT)
        if response.status_code == 204:
            return True
        if response.status_code == 404:
            return False
        raise _translate(response)

    async def _revoke_batch(self, tokens: list[str]) -> None:
        """One `POST /credentials/revoke` for up to 1,000 tokens, without any Authorization header; the
        coalescer holds the governor slot."""
        response = await send(self._open_client, self._governor, _BUCKET_REVOKE, "POST", "/credentials/revoke",
                              json={"credentials": tokens}, headers=_ACCEPT)
        self._coalescer.note_budget(response.headers)
        if response.status_code not in (200, 202):
            raise _translate(response)


_ACCEPT = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def _prefix(token: str) -> str:
    for prefix in ("github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"):
        if token.startswith(prefix):
            return prefix
    return ""


def _translate(response: httpx.Response, *, now: float | None = None) -> ProviderError:
    """A GitHub error response as ours: primary and secondary rate limits become `RateLimited`."""
    headers = response.headers
    status = response.status_code
    message = REDACTOR.clip(str(json_object(response).get("message", "")), 200)
    limited = status in (403, 429) and (headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers)
    if limited or status == 429:
        wait = retry_after(headers, default=_until_reset(headers, now=now) or _SECONDARY_WAIT_S)
        return RateLimited(f"github HTTP {status} {message}".strip(), retry_after=wait, status=status,
                           code="rate_limited")
    return by_status("github", status, message, headers)


def _until_reset(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds until `x-ratelimit-reset` (epoch seconds), at least one; None when absent or unreadable."""
    try:
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    return max(reset - (time.time() if now is None else now), 1.0)


class _Coalescer:
    """Collects tokens and revokes them in as few calls as the budget needs; each caller gets its call's outcome.

    One sender task collects for `window_s` (or until `max_size` tokens wait), then waits for the governor;
    tokens arriving meanwhile join the call, which takes up to `max_size` of them once the slot is granted.
    While the budget is known to be spent (a refusal, or a response saying none remains) `submit` refuses
    at once with `RateLimited` until the reset, so waiting steps retry together, audited, and coalesce again.
    """

    def __init__(self, governor: Governor, send: Callable[[list[str]], Awaitable[None]], *, window_s: float,
                 max_size: int = MAX_BATCH) -> None:
        self._governor = governor
        self._send = send
        self._window_s = window_s
        self._max_size = max_size
        self._pending: dict[str, tuple[asyncio.Future[None], Priority]] = {}
        self._full = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._blocked_until = 0.0

    async def submit(self, token: str, priority: Priority) -> None:
        """Wait until a call including `token` has been accepted; raise that call's error otherwise."""
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            raise RateLimited("github /credentials/revoke budget spent until its reset",
                              retry_after=wait, status=None, code="rate_limited")
        loop = asyncio.get_running_loop()
        done, best = self._pending.get(token, (None, priority))
        if done is None:
            done = loop.create_future()
        self._pending[token] = (done, min(best, priority))
        if len(self._pending) >= self._max_size:
            self._full.set()
        if self._sender is None or self._sender.done():
            # A fresh context: the governor must not pause the deadline of whichever step started the sender.
            self._sender = loop.create_task(self._run(), context=contextvars.Context())
        # Shielded: a step that times out must not cancel the call other steps are waiting on.
        await asyncio.shield(done)

    def note_budget(self, headers: Mapping[str, str]) -> None:
        """Remember when the batch endpoint's budget is spent, from any response's rate-limit headers."""
        if headers.get("x-ratelimit-remaining") == "0" and (wait := _until_reset(headers)) is not None:
            self._blocked_until = max(self._blocked_until, time.monotonic() + wait)

    async def _run(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._window_s):
                    await self._full.wait()
            priority = min(p for _, p in self._pending.values())
            async with self._governor.slot(_BUCKET_REVOKE, priority):
                batch = dict(itertools.islice(self._pending.items(), self._max_size))
                for token in batch:
                    del self._pending[token]
                if len(self._pending) < self._max_size:
                    self._full.clear()
                await self._deliver(batch)

    async def _deliver(self, batch: dict[str, tuple[asyncio.Future[None], Priority]]) -> None:
        outcome: ProviderError | None = _INCOMPLETE  # until the call answers: cancelled mid-call is no success
        try:
            await self._send(list(batch))
            outcome = None
        except ProviderError as exc:
            if isinstance(exc, RateLimited):
                self._blocked_until = max(self._blocked_until, time.monotonic() + exc.retry_after)
            outcome = exc
        finally:
            for done, _ in batch.values():
                _settle(done, outcome)
            batch.clear()  # the token values are not needed any more

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Send what is pending if the budget allows within `grace_s`; what is left fails as transient."""
        self._full.set()
        if self._sender is not None:
            _, waiting = await asyncio.wait({self._sender}, timeout=grace_s)
            for task in waiting:
                task.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        for done, _ in self._pending.values():
            _settle(done, _INCOMPLETE)
        self._pending.clear()


_INCOMPLETE = TransientError("github /credentials/revoke call did not complete")


def _settle(done: asyncio.Future[None], error: ProviderError | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
        return
    done.set_exception(error)
    done.exception()  # marked retrieved, in case every waiter has gone
