"""GCP, over the IAM REST API with httpx and google-auth: disabling, then deleting, exposed service-account keys.

Authentication is a fixed access token when configured (sandboxes, the emulator), else application default
credentials, resolved on first use and refreshed in a worker thread (google-auth is blocking).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator import grammar
from orchestrator.actions import ActionSpec, Params, ParamSpec, StepContext, StepResult, text
from orchestrator.errors import NotFound, PermanentError, ProviderError, TransientError
from orchestrator.governor import Governor
from orchestrator.grammar import segment
from orchestrator.providers._http import HttpProvider, by_status, json_object
from orchestrator.redaction import REDACTOR
from orchestrator.settings import GcpSettings

_KEY_PARAMS = {
    # Only our own key is protected: another key of the orchestrator's own account may be disabled like any other.
    "email": ParamSpec(required=True, description="the service account's email", grammar=grammar.GCP_SERVICE_ACCOUNT),
    "key_id": ParamSpec(required=True, description="the key's id (the private_key_id of the key file)",
                        grammar=grammar.GCP_KEY_ID, own="gcp.key_id"),
    "project": ParamSpec(description="project id; default '-' (the account's own project)",
                         grammar=grammar.GCP_PROJECT),
}
_KEY = "/v1/projects/{project}/serviceAccounts/{email}/keys/{key_id}"
_CHECK = "GET /v1/projects/{project}/serviceAccounts/{email} (on 404: is it the key or the account?)"
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("gcp.disable_service_account_key", "Disable a service-account key, reason EXPOSED; a key already "
               "deleted counts as done.", _KEY_PARAMS, calls=(f"POST {_KEY}:disable", _CHECK),
               undo="gcp.enable_service_account_key"),
    ActionSpec("gcp.enable_service_account_key", "Enable a disabled service-account key again (the undo of "
               "gcp.disable_service_account_key).", _KEY_PARAMS, calls=(f"POST {_KEY}:enable",),
               destructive=False),
    ActionSpec("gcp.delete_service_account_key", "Delete a service-account key; a key already deleted counts as "
               "done.", _KEY_PARAMS, calls=(f"DELETE {_KEY}", _CHECK)),
)

@dataclass(frozen=True)
class _Target:
    """A key's account (`projects/P/serviceAccounts/EMAIL`) and id, each already one encoded path segment."""

    account: str
    key_id: str

    @property
    def key(self) -> str:
        return f"{self.account}/keys/{self.key_id}"


#: IAM allows 600 requests a minute per project by default; a handful of connections keeps up with that.
CONCURRENCY = 8
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: IAM's quota is per project for the whole API, so keys share one bucket.
_BUCKET = "iam"
_EXPOSED = "SERVICE_ACCOUNT_KEY_DISABLE_REASON_EXPOSED"
_DEFAULT_WAIT_S = 30.0


class GcpProvider(HttpProvider):
    """Performs `gcp.*` actions with one httpx client and one set of Google credentials."""

    name = "gcp"

    def __init__(self, settings: GcpSettings, governor: Governor) -> None:
        super().__init__(settings.iam_url, governor, concurrency=CONCURRENCY)
        self._settings = settings
        self._credentials: Any = None
        self._refreshing = asyncio.Lock()
        self._handlers: Mapping[str, Callable[[_Target, StepContext], Awaitable[StepResult]]] = {
            "gcp.disable_service_account_key": self._disable,
            "gcp.delete_service_account_key": self._delete,
            "gcp.enable_service_account_key": self._enable,
        }

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Run one `gcp.*` action."""
        try:
            project = segment(text(params, "project") or "-") if params.get("project") else "-"
            email, key_id = segment(text(params, "email") or ""), segment(text(params, "key_id") or "")
        except ValueError:
            raise PermanentError("gcp: project, email and key_id must each be one URL path segment, not a "
                                 "reserved word or dot segment; nothing was sent", code="InvalidTarget") from None
        account = f"projects/{project}/serviceAccounts/{email}"
        result = await self._handlers[action](_Target(account, key_id), context)
        if action == "gcp.disable_service_account_key" and result.note is None and not context.dry_run:
            # What the undo needs, as given (it is encoded again when the undo runs).
            undo = {k: v for k in ("email", "key_id", "project") if (v := text(params, k))}
            return StepResult(result.target, result.calls, undo=undo)
        return result

    async def _disable(self, target: _Target, ctx: StepContext) -> StepResult:
        name = target.key
        call = f"POST /v1/{name}:disable (serviceAccountKeyDisableReason={_EXPOSED})"
        return await self._ensure(target, call, ctx, "POST", f"/v1/{name}:disable",
                                  json={"serviceAccountKeyDisableReason": _EXPOSED})

    async def _enable(self, target: _Target, ctx: StepContext) -> StepResult:
        label, call = f"gcp-key:{target.key}", f"POST /v1/{target.key}:enable"
        if ctx.dry_run:
            return StepResult(label, (call,))
        headers = {"Authorization": f"Bearer {await self._access_token()}"}
        response = await self._request(_BUCKET, ctx.priority, "POST", f"/v1/{target.key}:enable", headers=headers)
        if response.status_code != 200:
            raise _translate(response)  # a deleted key cannot come back: NotFound fails the undo step
        return StepResult(label, (call,))

    async def _delete(self, target: _Target, ctx: StepContext) -> StepResult:
        return await self._ensure(target, f"DELETE /v1/{target.key}", ctx, "DELETE", f"/v1/{target.key}")

    async def _ensure(self, target: _Target, call: str, ctx: StepContext, method: str, path: str,
                      **kwargs: Any) -> StepResult:
        """Make the call; a 404 means the key is already deleted (the end state we want) only when the account
        itself is still there: a 404 on the account means the event named the wrong target."""
        label = f"gcp-key:{target.key}"
        if ctx.dry_run:
            return StepResult(label, (call,))
        headers = {"Authorization": f"Bearer {await self._access_token()}"}
        response = await self._request(_BUCKET, ctx.priority, method, path, headers=headers, **kwargs)
        if response.status_code == 200:
            return StepResult(label, (call,))
        error = _translate(response)
        if not isinstance(error, NotFound):
            raise error
        account = await self._request(_BUCKET, ctx.priority, "GET", f"/v1/{target.account}", headers=headers)
        if account.status_code == 200:
            return StepResult(label, (call, f"GET /v1/{target.account}"), note="key already deleted")
        if account.status_code in (403, 404):
            raise PermanentError(f"gcp: service account {target.account} not found (HTTP {account.status_code}): "
                                 "the exposure names the wrong account or it is gone; the key is not known to be "
                                 "revoked", status=account.status_code, code="ServiceAccountNotFound")
        raise _translate(account)

    async def own_credentials(self, kind: str) -> tuple[str, ...]:
        """The orchestrator's own key (its id), when its credentials are a service-account key file."""
        if self._settings.access_token or kind != "gcp.key_id":
            return ()
        try:
            await self._access_token()
        except ProviderError:
            return ()  # no credentials: nothing of ours to protect, and every call will fail anyway
        key_id = getattr(getattr(self._credentials, "_signer", None), "key_id", None)
        return (str(key_id),) if key_id else ()

    async def _access_token(self) -> str:
        """The configured token, else a valid application-default access token (refreshed in a thread)."""
        if self._settings.access_token:
            return self._settings.access_token
        async with self._refreshing:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(_default_credentials)
            if not self._credentials.valid:
                await asyncio.to_thread(_refresh, self._credentials)
            return str(self._credentials.token)


def _translate(response: httpx.Response) -> ProviderError:
    """A Google error body (`{"error": {"code", "message", "status"}}`) as ours.

    403 is permanent: IAM answers it both for a missing permission and for an account it cannot find.
    """
    error = json_object(response).get("error")
    details = error if isinstance(error, dict) else {}
    status_name = REDACTOR.clip(str(details.get("status", "")), 60) or None
    detail = f"{status_name or ''} {REDACTOR.clip(str(details.get('message', '')), 200)}"
    return by_status("gcp", response.status_code, detail, response.headers, code=status_name,
                     rate_limit_wait=_DEFAULT_WAIT_S)


def _default_credentials() -> Any:
    import google.auth
    from google.auth import exceptions

    try:
        credentials, _project = google.auth.default(scopes=list(SCOPES))
    except exceptions.DefaultCredentialsError:
        raise PermanentError("gcp: no credentials: set ORCHESTRATOR_GCP_ACCESS_TOKEN or configure application "
                             "default credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity)") from None
    return credentials


def _refresh(credentials: Any) -> None:
    import urllib3
    from google.auth import exceptions
    from google.auth.transport.urllib3 import Request

    try:
        with urllib3.PoolManager() as http:
            credentials.refresh(Request(http))  # type: ignore[no-untyped-call]
    except exceptions.RefreshError as exc:
        kind = TransientError if getattr(exc, "retryable", False) else PermanentError
        raise kind(f"gcp: refreshing credentials failed ({type(exc).__name__})") from None
    except exceptions.TransportError as exc:
        raise TransientError(f"gcp: refreshing credentials failed ({type(exc).__name__})") from None
