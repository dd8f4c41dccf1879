"""The exposure event: its model, JSON Schema and `decode(bytes) -> Exposure`; pure, never shows a secret."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from orchestrator import cloudevents
from orchestrator.errors import InvalidExposure
from orchestrator.keys import keyed_fingerprint


class Severity(StrEnum):
    """How bad the exposure is; `critical` escalates playbooks and jumps queues."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class _Model(BaseModel):
    # Unknown fields are ignored so detectors can send newer versions of the event.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # No database text column takes a NUL (PostgreSQL refuses it outright): a stored field with one would
        # make every claim of the run store fail, and the record be retried for ever.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character (\\u0000)")
        return value


class Credential(_Model):
    """What leaked. `secret` is the raw value: used only to act, never logged or audited."""

    kind: str = Field(min_length=1, max_length=100, description="okta.session | okta.user | okta.api_token | "
                      "aws.access_key | aws.session | github.token | slack.token | gcp.service_account_key | ...")
    id: str | None = Field(default=None, min_length=1, max_length=500,
                           description="non-secret handle: session id, token id, access key id, key id")
    owner: str | None = Field(default=None, min_length=1, max_length=500,
                              description="owning principal: login, user id, IAM user or role, SA email")
    secret: SecretStr | None = Field(default=None, min_length=8, max_length=16 * 1024,
                                     description="raw secret value; used only to act on it")


class Source(_Model):
    """Which detector found the exposure, and where."""

    detector: str | None = Field(default=None, max_length=200)
    location: str | None = Field(default=None, max_length=2000)
    verified: bool | None = None


class Exposure(_Model):
    """A "secret exposed" event, as published on `credentials.exposed`."""

    id: str = Field(min_length=1, max_length=200, description="unique per report; the deduplication key")
    credential: Credential
    source: Source = Source()
    detected_at: datetime | None = Field(default=None, description="RFC 3339")
    severity: Severity = Severity.HIGH
    playbook: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="run this playbook instead of routing")
    actor: str | None = Field(default=None, max_length=200, description="who asked (manual triggers)")
    reason: str | None = Field(default=None, max_length=2000, description="why (manual triggers)")
    dry_run: bool = False

    @model_validator(mode="after")
    def _has_a_handle(self) -> Exposure:
        cred = self.credential
        if cred.id is None and cred.owner is None and cred.secret is None:
            raise ValueError("credential needs at least one of id, owner, secret")
        return self

    def field(self, path: str) -> str | bool | SecretStr | None:
        """The value at a dotted event field path such as `credential.owner`, or None when absent."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part, None)
            if value is None:
                return None
        if isinstance(value, StrEnum):
            return value.value
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, str | bool | SecretStr):
            return value
        return None

    @property
    def credential_key(self) -> str:
        """Identifies the credential, without its secret: exposures with the same key run in order."""
        cred = self.credential
        handle = cred.id or cred.owner or fingerprint(cred.secret)
        return f"{cred.kind}:{handle}"


#: Field paths a playbook may read parameters from.
FIELD_PATHS: frozenset[str] = frozenset(
    {"id", "credential.kind", "credential.id", "credential.owner", "credential.secret", "source.detector",
     "source.location", "detected_at", "severity", "actor", "reason"}
)
SECRET_FIELD_PATHS: frozenset[str] = frozenset({"credential.secret"})


def fingerprint(secret: SecretStr | str | None) -> str:
    """A short tag for a secret so records can say *which* secret without showing it.

    A keyed HMAC (`hmac-sha256:<16 hex>`, key from `orchestrator.keys`): without the key, hashing guesses
    cannot reverse the fingerprint of a weak secret.
    """
    if secret is None:
        return "none"
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return keyed_fingerprint(raw)


def claimed_id(raw: bytes | None) -> str | None:
    """The `id` a record claims, as written, whether or not the record is a valid exposure; None if it has none."""
    try:
        document = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and "specversion" in document and isinstance(document.get("data"), dict):
        document = document["data"]  # a structured CloudEvent: the exposure's id, not the envelope's
    claimed = document.get("id") if isinstance(document, dict) else None
    return claimed if isinstance(claimed, str) else None


def decode(value: bytes | None, *, max_bytes: int, headers: Sequence[tuple[str, bytes | None]] = ()) -> Exposure:
    """Parse and validate one record value; raise `InvalidExposure` with a reason that holds no input values.

    A CloudEvent (structured or binary Kafka content mode, told by `headers`) whose data is an exposure is
    accepted too.
    """
    if value is None:
        raise InvalidExposure("empty record (tombstone): expected a JSON exposure event")
    if len(value) > max_bytes:
        raise InvalidExposure(f"record is {len(value)} bytes, above the {max_bytes}-byte limit")
    content_mode = cloudevents.mode(headers)
    if content_mode is cloudevents.Mode.BINARY:
        cloudevents.check_binary(headers)
    try:
        # orjson, not json: it refuses lone surrogates, NaN and invalid UTF-8, limits nesting without recursion,
        # and has no digit limit to trip over; its messages name a position, never the input.
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        what = "UTF-8" if "UTF-8" in exc.msg else "JSON"
        raise InvalidExposure(f"record is not {what}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if content_mode is cloudevents.Mode.STRUCTURED:
        document = cloudevents.structured_data(document)
    if not isinstance(document, dict):
        raise InvalidExposure(f"record is JSON {type(document).__name__}, expected an object")
    try:
        return Exposure.model_validate(document)
    except ValidationError as exc:
        raise InvalidExposure(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as `field: message; ...`, leaving out the offending values (they may be secrets)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def exposure_json_schema() -> dict[str, Any]:
    """The published JSON Schema of the exposure event."""
    schema = Exposure.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Exposure"
    schema["description"] = (
        "A secret-exposed event on the credentials.exposed topic. At least one of credential.id, "
        "credential.owner, credential.secret is required. Unknown fields are ignored."
    )
    return schema
