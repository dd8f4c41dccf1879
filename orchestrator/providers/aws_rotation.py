"""Rotating an exposed IAM access key, idempotent under redelivery, retries and restarts.

The state lives where AWS keeps it, so any run (or a run after a restart) can pick up where another stopped:

- the user's access keys (at most two per user: the quota we must never trip);
- the Secrets Manager secret `<prefix>/<user>`, whose tags name the replacement key and the exposed key it
  replaces (`credential-orchestrator:access-key-id`, `credential-orchestrator:replaces`). The tags, not the
  value, are read back, so the orchestrator needs no `GetSecretValue`.

A run: if the secret's tags say a replacement for this exposed key exists and that key is still on the user,
reuse it; else, if the user already holds another key, stop with a conflict (creating one would trip the
quota, and that key's secret is unknown to us); else create the replacement and store it. Then delete the
exposed key. A replacement created by an attempt that failed before storing it is kept in memory (its secret
registered with the redactor) so the executor's retry stores it instead of finding a "foreign" key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from orchestrator.actions import StepContext, StepResult
from orchestrator.errors import NotFound, PermanentError
from orchestrator.redaction import REDACTOR

TAG_KEY_ID = "credential-orchestrator:access-key-id"
TAG_REPLACES = "credential-orchestrator:replaces"
_TOKEN_NAMESPACE = uuid.UUID("5b0c7f4e-2f55-4c1e-9d57-3c1a0d7e6a10")

Call = Callable[..., Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class _Stored:
    """What the secret's tags say it holds."""

    exists: bool
    access_key_id: str | None = None
    replaces: str | None = None


@dataclass(frozen=True)
class _Replacement:
    access_key_id: str
    secret: SecretStr


class Rotator:
    """Rotates access keys through a provider's governed `call(service, ctx, operation, **kwargs)`."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._unstored: dict[tuple[str, str], _Replacement] = {}

    async def rotate(self, *, user: str, exposed: str, secret_name: str, ctx: StepContext) -> StepResult:
        """Ensure `exposed` is replaced by exactly one key stored in `secret_name`, then deleted."""
        target = f"iam-user:{user} access-key:{exposed} secret:{secret_name}"
        keys = await self._call("iam", ctx, "list_access_keys", UserName=user)
        others = [k["AccessKeyId"] for k in keys.get("AccessKeyMetadata", []) if k["AccessKeyId"] != exposed]
        stored = await self._stored(secret_name, ctx)
        delete = f"iam:DeleteAccessKey UserName={user} AccessKeyId={exposed}"
        calls: list[str] = []
        note = None
        if stored.replaces == exposed and stored.access_key_id in others:
            note = f"replacement {stored.access_key_id} already stored by an earlier run"
        else:
            unstored = self._unstored.get((user, exposed))
            if unstored is None and others:
                raise PermanentError(
                    f"IAM user {user} already has a second access key {others[0]} that is not a stored "
                    f"replacement for {exposed}: creating one would exceed the two-keys-per-user quota. "
                    f"Delete or deactivate {others[0]} deliberately, then redeliver", code="RotationConflict")
            if unstored is None or unstored.access_key_id not in others:
                calls.append(f"iam:CreateAccessKey UserName={user}")
                if ctx.dry_run:
                    calls += [_store_call(secret_name, stored), delete]
                    return StepResult(target, tuple(calls))
                unstored = await self._create(user, exposed, ctx)
            calls.append(_store_call(secret_name, stored))
            await self._store(secret_name, stored, user, exposed, unstored, ctx)
            note = f"replacement {unstored.access_key_id} stored"
        calls.append(delete)
        if not ctx.dry_run:
            try:
                await self._call("iam", ctx, "delete_access_key", UserName=user, AccessKeyId=exposed)
            except NotFound:
                pass
        return StepResult(target, tuple(calls), note=note)

    async def _stored(self, secret_name: str, ctx: StepContext) -> _Stored:
        try:
            response = await self._call("secretsmanager", ctx, "describe_secret", SecretId=secret_name)
        except NotFound:
            return _Stored(exists=False)
        tags = {t["Key"]: t["Value"] for t in response.get("Tags", [])}
        return _Stored(exists=True, access_key_id=tags.get(TAG_KEY_ID), replaces=tags.get(TAG_REPLACES))

    async def _create(self, user: str, exposed: str, ctx: StepContext) -> _Replacement:
        response = await self._call("iam", ctx, "create_access_key", UserName=user)
        key = response["AccessKey"]
        replacement = _Replacement(key["AccessKeyId"], SecretStr(key["SecretAccessKey"]))
        REDACTOR.register(replacement.secret)
        self._unstored[(user, exposed)] = replacement
        return replacement

    async def _store(self, secret_name: str, stored: _Stored, user: str, exposed: str,
                     replacement: _Replacement, ctx: StepContext) -> None:
        """Write the value first, the tags last: tags naming a key the value does not hold would be a lie."""
        value = json.dumps({"UserName": user, "AccessKeyId": replacement.access_key_id,
                            "SecretAccessKey": replacement.secret.get_secret_value(), "Replaces": exposed})
        tags = [{"Key": TAG_KEY_ID, "Value": replacement.access_key_id}, {"Key": TAG_REPLACES, "Value": exposed}]
        # Same exposed key and replacement → same token: a repeated write is a no-op for Secrets Manager.
        token = str(uuid.uuid5(_TOKEN_NAMESPACE, f"{exposed}:{replacement.access_key_id}"))
        if stored.exists:
            await self._call("secretsmanager", ctx, "put_secret_value", SecretId=secret_name, SecretString=value,
                             ClientRequestToken=token)
            await self._call("secretsmanager", ctx, "tag_resource", SecretId=secret_name, Tags=tags)
        else:
            await self._call("secretsmanager", ctx, "create_secret", Name=secret_name, SecretString=value,
                             ClientRequestToken=token, Tags=tags,
                             Description=f"IAM access key of {user}, rotated by credential-orchestrator")
        del self._unstored[(user, exposed)]
        REDACTOR.release(replacement.secret)


def _store_call(secret_name: str, stored: _Stored) -> str:
    if stored.exists:
        return (f"secretsmanager:PutSecretValue SecretId={secret_name} SecretString=<new key> + "
                f"secretsmanager:TagResource")
    return f"secretsmanager:CreateSecret Name={secret_name} SecretString=<new key> Tags=[{TAG_KEY_ID}, {TAG_REPLACES}]"
