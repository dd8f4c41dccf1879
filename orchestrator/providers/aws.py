"""AWS IAM and Secrets Manager through aiobotocore: access-key containment, session revocation, key rotation.

Credentials come from the standard chain (environment, `AWS_PROFILE`, SSO, container or instance role);
`AWS_ENDPOINT_URL` (via `AwsSettings.endpoint_url`) points every client at a sandbox such as moto_server.
botocore's own retries are off: the executor owns retries, and every request goes through the `Governor`
with one bucket per service. Errors are translated here, from the error code and status only.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from orchestrator import grammar
from orchestrator.actions import ActionSpec, Params, ParamSource, ParamSpec, StepContext, StepResult, text
from orchestrator.errors import NotFound, PermanentError, ProviderError, RateLimited, TransientError
from orchestrator.governor import Governor
from orchestrator.keys import keyed_fingerprint
from orchestrator.providers.aws_rotation import Rotator
from orchestrator.settings import AwsSettings

QUARANTINE_POLICY_ARN = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"
#: The inline policy name the console's "Revoke active sessions" writes.
REVOKE_POLICY_NAME = "AWSRevokeOlderSessions"

_KEY = ParamSpec(description="access key id (AKIA...)", grammar=grammar.AWS_ACCESS_KEY_ID, own="aws.access_key_id")
_REQUIRED_KEY = ParamSpec(required=True, description=_KEY.description, grammar=_KEY.grammar, own=_KEY.own)
_USER = ParamSpec(description="IAM user name or ARN; resolved from the key with GetAccessKeyLastUsed when absent",
                  grammar=grammar.AWS_USER)
_KEY_OR_USER = (frozenset({"access_key_id", "user"}),)
#: The user an undo acts on, as the step it reverses resolved it.
_NAMED_USER = ParamSpec(required=True, description="IAM user name", grammar=grammar.AWS_USER, own="aws.user")
_RESOLVE = ("iam:GetAccessKeyLastUsed (when no user is given)", "iam:ListAccessKeys")

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("aws.deactivate_access_key", "Make an IAM access key Inactive; an inactive or deleted key is done.",
               {"access_key_id": _REQUIRED_KEY, "user": _USER},
               calls=(*_RESOLVE, "iam:UpdateAccessKey Status=Inactive"), undo="aws.activate_access_key"),
    ActionSpec("aws.activate_access_key", "Make an IAM access key Active again (the undo of "
               "aws.deactivate_access_key).",
               {"access_key_id": _REQUIRED_KEY, "user": _NAMED_USER},
               calls=("iam:ListAccessKeys", "iam:UpdateAccessKey Status=Active"), destructive=False),
    ActionSpec("aws.quarantine_user", "Attach AWSCompromisedKeyQuarantineV2 (or `policy_arn`) to the key's user.",
               {"access_key_id": _KEY, "user": _USER,
                "policy_arn": ParamSpec(description="managed policy ARN", grammar=grammar.AWS_POLICY_ARN,
                                        source=ParamSource.LITERAL)},
               _KEY_OR_USER, calls=(*_RESOLVE, "iam:ListAttachedUserPolicies", "iam:AttachUserPolicy"),
               undo="aws.release_quarantine"),
    ActionSpec("aws.release_quarantine", "Detach the quarantine policy from the user (the undo of "
               "aws.quarantine_user); a policy not attached counts as done.",
               {"user": _NAMED_USER,
                "policy_arn": ParamSpec(description="managed policy ARN", grammar=grammar.AWS_POLICY_ARN)},
               calls=("iam:ListAttachedUserPolicies", "iam:DetachUserPolicy"), destructive=False),
    ActionSpec("aws.revoke_user_sessions", "Deny the user's temporary credentials issued before now "
               "(inline AWSRevokeOlderSessions with aws:TokenIssueTime).",
               {"access_key_id": _KEY, "user": _USER}, _KEY_OR_USER,
               calls=(*_RESOLVE, "iam:PutUserPolicy AWSRevokeOlderSessions")),
    ActionSpec("aws.rotate_access_key", "Create a replacement key, store it in the Secrets Manager secret "
               "`<secret_prefix>/<user>`, delete the exposed key; at most one replacement per exposed key.",
               {"access_key_id": _REQUIRED_KEY, "user": _USER,
                "secret_prefix": ParamSpec(required=True, description="secret name prefix",
                                           grammar=grammar.AWS_SECRET_PREFIX, source=ParamSource.LITERAL)},
               calls=(*_RESOLVE, "iam:CreateAccessKey", "secretsmanager:PutSecretValue", "iam:DeleteAccessKey")),
    ActionSpec("aws.revoke_role_sessions", "Deny the role's temporary credentials issued before now "
               "(inline AWSRevokeOlderSessions with aws:TokenIssueTime).",
               {"role": ParamSpec(required=True, description="role name, role ARN or assumed-role ARN",
                                  grammar=grammar.AWS_ROLE)},
               calls=("iam:PutRolePolicy AWSRevokeOlderSessions",)),
)

_THROTTLING = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
                         "TooManyRequestsException", "RequestThrottled", "SlowDown"})
_SERVER_FAULTS = frozenset({"ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
                            "InternalError", "InternalServiceError", "InternalServiceErrorException",
                            "RequestTimeout", "RequestTimeoutException"})
_NOT_FOUND = frozenset({"NoSuchEntity", "ResourceNotFoundException"})
_OWNER_CACHE = 10_000


class AwsProvider:
    """Performs `aws.*` actions; one aiobotocore client per service, created on first use."""

    name = "aws"

    def __init__(self, settings: AwsSettings, governor: Governor) -> None:
        self._settings = settings
        self._governor = governor
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._client_lock = asyncio.Lock()
        self._throttled: dict[str, int] = {}
        self._owners: dict[str, str] = {}
        #: (`user` or `role`, keyed fingerprint of its name) of the caller identity, once asked of STS.
        self._own_principal: tuple[str, str] | None = None
        self._rotator = Rotator(self._call)
        self._handlers: Mapping[str, Callable[[Params, StepContext], Awaitable[StepResult]]] = {
            "aws.deactivate_access_key": self._deactivate_access_key,
            "aws.quarantine_user": self._quarantine_user,
            "aws.activate_access_key": self._activate_access_key,
            "aws.release_quarantine": self._release_quarantine,
            "aws.revoke_user_sessions": self._revoke_user_sessions,
            "aws.rotate_access_key": self._rotate_access_key,
            "aws.revoke_role_sessions": self._revoke_role_sessions,
        }

    async def __aenter__(self) -> AwsProvider:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()
        self._clients.clear()

    async def own_credentials(self, kind: str) -> tuple[str, ...]:
        """The orchestrator's own credentials of `kind`: the access key id of the standard chain's credentials."""
        if kind != "aws.access_key_id":
            return ()
        from aiobotocore.session import get_session

        credentials = await get_session().get_credentials()
        if credentials is None:
            return ()
        frozen = await credentials.get_frozen_credentials()
        return (str(frozen.access_key),) if frozen.access_key else ()

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Run one `aws.*` action."""
        return await self._handlers[action](params, context)

    # -- actions -------------------------------------------------------------------------------------------

    async def _deactivate_access_key(self, params: Params, ctx: StepContext) -> StepResult:
        key_id = text(params, "access_key_id") or ""
        user = await self._resolve_user(params, ctx)
        target = f"iam-user:{user} access-key:{key_id}"
        status = await self._key_status(user, key_id, ctx)
        if status is None:
            return StepResult(target, (), note="access key already deleted")
        if status == "Inactive":
            return StepResult(target, (), note="access key already inactive")
        call = f"iam:UpdateAccessKey UserName={user} AccessKeyId={key_id} Status=Inactive"
        if not ctx.dry_run:
            await self._call("iam", ctx, "update_access_key", UserName=user, AccessKeyId=key_id, Status="Inactive")
        return StepResult(target, (call,), undo={"user": user, "access_key_id": key_id})

    async def _activate_access_key(self, params: Params, ctx: StepContext) -> StepResult:
        key_id, user = text(params, "access_key_id") or "", text(params, "user") or ""
        target = f"iam-user:{user} access-key:{key_id}"
        status = await self._key_status(user, key_id, ctx)
        if status is None:
            raise NotFound(f"access key {key_id} no longer exists: it cannot be reactivated", code="NoSuchEntity")
        if status == "Active":
            return StepResult(target, (), note="access key already active")
        call = f"iam:UpdateAccessKey UserName={user} AccessKeyId={key_id} Status=Active"
        if not ctx.dry_run:
            await self._call("iam", ctx, "update_access_key", UserName=user, AccessKeyId=key_id, Status="Active")
        return StepResult(target, (call,))

    async def _release_quarantine(self, params: Params, ctx: StepContext) -> StepResult:
        user = text(params, "user") or ""
        policy_arn = text(params, "policy_arn") or QUARANTINE_POLICY_ARN
        target = f"iam-user:{user}"
        if policy_arn not in await self._attached_policies(user, ctx):
            return StepResult(target, (), note=f"{policy_arn.rsplit('/', 1)[-1]} not attached")
        call = f"iam:DetachUserPolicy UserName={user} PolicyArn={policy_arn}"
        if not ctx.dry_run:
            await self._call("iam", ctx, "detach_user_policy", UserName=user, PolicyArn=policy_arn)
        return StepResult(target, (call,))

    async def _quarantine_user(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        await self._refuse_own("user", user, ctx)
        policy_arn = text(params, "policy_arn") or QUARANTINE_POLICY_ARN
        target = f"iam-user:{user}"
        attached = await self._attached_policies(user, ctx)
        if policy_arn in attached:
            return StepResult(target, (), note=f"{policy_arn.rsplit('/', 1)[-1]} already attached")
        call = f"iam:AttachUserPolicy UserName={user} PolicyArn={policy_arn}"
        if not ctx.dry_run:
            await self._call("iam", ctx, "attach_user_policy", UserName=user, PolicyArn=policy_arn)
        return StepResult(target, (call,), undo={"user": user, "policy_arn": policy_arn})

    async def _revoke_user_sessions(self, params: Params, ctx: StepContext) -> StepResult:
        user = await self._resolve_user(params, ctx)
        await self._refuse_own("user", user, ctx)
        return await self._deny_older_sessions("user", user, ctx)

    async def _revoke_role_sessions(self, params: Params, ctx: StepContext) -> StepResult:
        role = role_name(text(params, "role") or "")
        await self._refuse_own("role", role, ctx)
        return await self._deny_older_sessions("role", role, ctx)

    async def _refuse_own(self, kind: str, name: str, ctx: StepContext) -> None:
        """Quarantining the principal the orchestrator runs as, or denying its sessions, would stop every later
        AWS run: refuse, comparing keyed fingerprints (the user may have been resolved from a key)."""
        if self._own_principal is None:
            identity = await self._call("sts", ctx, "get_caller_identity")
            self._own_principal = own_principal(str(identity.get("Arn", "")))
        own_kind, own_print = self._own_principal
        if own_kind == kind and own_print == keyed_fingerprint(name):
            raise PermanentError(f"aws: iam-{kind} {name} is the principal the orchestrator itself runs as: refusing "
                                 "to quarantine it or deny its sessions; if its keys leaked, rotate them by hand",
                                 code="OwnCredential")

    async def _deny_older_sessions(self, kind: str, name: str, ctx: StepContext) -> StepResult:
        """Put the inline deny on the user or role; a dry run checks that it exists (GetUser/GetRole)."""
        title = kind.title()
        principal = {f"{title}Name": name}
        if ctx.dry_run:
            await self._call("iam", ctx, f"get_{kind}", **principal)
        before, document = revoke_older_sessions_policy()
        call = (f"iam:Put{title}Policy {title}Name={name} PolicyName={REVOKE_POLICY_NAME} "
                f"(deny aws:TokenIssueTime < {before})")
        if not ctx.dry_run:
            await self._call("iam", ctx, f"put_{kind}_policy", **principal, PolicyName=REVOKE_POLICY_NAME,
                             PolicyDocument=document)
        return StepResult(f"iam-{kind}:{name}", (call,))

    async def _rotate_access_key(self, params: Params, ctx: StepContext) -> StepResult:
        key_id = text(params, "access_key_id") or ""
        user = await self._resolve_user(params, ctx)
        if await self._key_status(user, key_id, ctx) is None:
            return StepResult(f"iam-user:{user} access-key:{key_id}", (),
                              note="exposed key already deleted: nothing to rotate")
        prefix = (text(params, "secret_prefix") or "").rstrip("/")
        return await self._rotator.rotate(user=user, exposed=key_id, secret_name=f"{prefix}/{user}", ctx=ctx)

    # -- resolution ----------------------------------------------------------------------------------------

    async def _resolve_user(self, params: Params, ctx: StepContext) -> str:
        """The IAM user named by `user` (name or ARN), else the owner of `access_key_id` (read-only).

        With both, the key must be the user's (or deleted): acting on the wrong user is worse than failing.
        """
        key_id = text(params, "access_key_id") or ""
        if owner := text(params, "user"):
            user = owner.rsplit("/", 1)[-1] if owner.startswith("arn:") else owner
            if key_id:
                await self._key_status(user, key_id, ctx)
            return user
        if known := self._owners.get(key_id):
            return known
        try:
            response = await self._call("iam", ctx, "get_access_key_last_used", AccessKeyId=key_id)
        except NotFound as exc:
            raise NotFound(f"access key {key_id} no longer exists and the event names no owner: "
                           "set credential.owner to act on its user", status=exc.status, code=exc.code) from None
        found = response.get("UserName")
        if not found:
            raise NotFound(f"access key {key_id} has no IAM user (a root key?)", code="NoUserName")
        # Key ids are never reused, so the owner stays valid: a redelivery after the key is deleted finds it here.
        self._owners[key_id] = str(found)
        if len(self._owners) > _OWNER_CACHE:
            del self._owners[next(iter(self._owners))]
        return str(found)

    async def _key_status(self, user: str, key_id: str, ctx: StepContext) -> str | None:
        """`Active` or `Inactive`; None when the key no longer exists. A key of another user is an error."""
        response = await self._call("iam", ctx, "list_access_keys", UserName=user)
        for key in response.get("AccessKeyMetadata", []):
            if key["AccessKeyId"] == key_id:
                return str(key["Status"])
        # Not this user's: deleted, or the event named the wrong owner (then it must not pass as done).
        try:
            owner = await self._call("iam", ctx, "get_access_key_last_used", AccessKeyId=key_id)
        except NotFound:
            return None
        raise PermanentError(f"access key {key_id} belongs to IAM user {owner.get('UserName')!r}, not {user!r}",
                             code="OwnerMismatch")

    async def _attached_policies(self, user: str, ctx: StepContext) -> set[str]:
        arns: set[str] = set()
        kwargs: dict[str, Any] = {"UserName": user}
        while True:
            response = await self._call("iam", ctx, "list_attached_user_policies", **kwargs)
            arns.update(p["PolicyArn"] for p in response.get("AttachedPolicies", []))
            if not response.get("IsTruncated"):
                return arns
            kwargs["Marker"] = response["Marker"]

    # -- the SDK boundary ----------------------------------------------------------------------------------

    async def _client(self, service: str) -> Any:
        if client := self._clients.get(service):
            return client
        async with self._client_lock:
            if service not in self._clients:
                self._clients[service] = await self._stack.enter_async_context(self._create_client(service))
        return self._clients[service]

    def _create_client(self, service: str) -> Any:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},  # we own retries
            max_pool_connections=self._governor.concurrency,
            connect_timeout=5, read_timeout=20,
        )
        return get_session().create_client(service, region_name=self._settings.region,
                                           endpoint_url=self._settings.endpoint_url, config=config)

    async def _call(self, service: str, ctx: StepContext, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One API call through the governor; returns the parsed response or raises our error."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._client(service)
        async with self._governor.slot(service, ctx.priority):
            try:
                response: dict[str, Any] = await getattr(client, operation)(**kwargs)
            except ClientError as exc:
                meta = exc.response.get("ResponseMetadata", {})
                status = meta.get("HTTPStatusCode")
                error = self.translate(service, operation, exc.response.get("Error", {}).get("Code"), status)
                if isinstance(error, RateLimited):
                    # AWS throttles with 400 and no Retry-After: tell the governor in its terms, so every
                    # run pauses this bucket for the backoff, not only the throttled one.
                    self._governor.observe(service, {"retry-after": f"{error.retry_after:.3f}"}, status=429)
                else:
                    self._governor.observe(service, meta.get("HTTPHeaders", {}), status=status)
                raise error from None
            except BotoCoreError as exc:
                raise _transport_error(service, operation, exc) from None
        meta = response.get("ResponseMetadata", {})
        self._governor.observe(service, meta.get("HTTPHeaders", {}), status=meta.get("HTTPStatusCode"))
        self._throttled.pop(service, None)
        return response

    def translate(self, service: str, operation: str, code: str | None, status: int | None) -> ProviderError:
        """A botocore error code and HTTP status as ours; throttling backs off per service bucket."""
        message = f"aws {service}:{operation} HTTP {status} {code or ''}".strip()
        if code in _THROTTLING or status == 429:
            streak = self._throttled[service] = self._throttled.get(service, 0) + 1
            # AWS sends no Retry-After: full-jitter exponential backoff, growing while the bucket stays throttled.
            delay = min(20.0, 0.25 * 2 ** (streak - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
            return RateLimited(message, retry_after=delay, status=status, code=code)
        if code in _SERVER_FAULTS or status is None or status >= 500:
            return TransientError(message, status=status, code=code)
        if code in _NOT_FOUND or status == 404:
            return NotFound(message, status=status, code=code)
        return PermanentError(message, status=status, code=code)


def _transport_error(service: str, operation: str, exc: Exception) -> ProviderError:
    from botocore.exceptions import ConnectionError, HTTPClientError, NoCredentialsError, PartialCredentialsError

    kind = type(exc).__name__
    if isinstance(exc, ConnectionError | HTTPClientError):
        return TransientError(f"aws {service}:{operation} unreachable: {kind}", code=kind)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentError(f"aws {service}:{operation}: no AWS credentials in the standard chain "
                              "(AWS_PROFILE, AWS_ACCESS_KEY_ID..., SSO, instance or container role)", code=kind)
    return PermanentError(f"aws {service}:{operation} failed: {kind}", code=kind)


def revoke_older_sessions_policy(now: datetime | None = None) -> tuple[str, str]:
    """The console's "Revoke active sessions" policy: (cut-off time, JSON document denying older tokens)."""
    before = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Action": ["*"], "Resource": ["*"],
        "Condition": {"DateLessThan": {"aws:TokenIssueTime": before}},
    }]}
    return before, json.dumps(document)


def own_principal(arn: str) -> tuple[str, str]:
    """(`user` or `role`, keyed fingerprint of the name) of a caller-identity ARN; ("", "") for anything else."""
    resource = arn.split(":", 5)[-1] if arn.startswith("arn:") else ""
    if resource.startswith("user/"):
        return "user", keyed_fingerprint(resource.rsplit("/", 1)[-1])
    if resource.startswith("assumed-role/"):
        return "role", keyed_fingerprint(role_name(arn))
    return "", ""


def role_name(role: str) -> str:
    """The role name in a name, `arn:aws:iam::ACCT:role/path/NAME` or `arn:aws:sts::ACCT:assumed-role/NAME/session`."""
    if not role.startswith("arn:"):
        return role
    resource = role.split(":", 5)[-1]
    if resource.startswith("assumed-role/"):
        return resource.split("/")[1]
    return resource.rsplit("/", 1)[-1]
