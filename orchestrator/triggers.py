"""What responders ask of the pipeline: a manual trigger made into an exposure, and published.

The CLI (`orchestrator trigger`) and the HTTP API (`POST /v1/triggers`) both go through here, so a trigger
means the same thing whichever way it arrives. Its history is read from the run store (`status`,
`GET /v1/exposures/{id}`), its live progress from the audit topic's end (`trigger --wait`).
"""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from orchestrator import kafka, provenance
from orchestrator.auth import Role
from orchestrator.errors import ConfigurationError
from orchestrator.events import Credential, Exposure, Severity, Source
from orchestrator.playbooks import Playbook


class TriggerRequest(BaseModel):
    """A responder's request to run a playbook now: the fields of `orchestrator trigger`."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    kind: str = Field(min_length=1, max_length=100, description="credential kind, e.g. okta.user")
    id: str | None = Field(default=None, min_length=1, max_length=500, description="non-secret credential handle")
    owner: str | None = Field(default=None, min_length=1, max_length=500, description="owning principal")
    secret: SecretStr | None = Field(default=None, min_length=1, max_length=16 * 1024,
                                     description="raw secret value; used only to act, never echoed")
    playbook: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="run this playbook instead of routing")
    severity: Severity = Severity.HIGH
    reason: str | None = Field(default=None, max_length=2000, description="why; recorded in the audit trail")
    dry_run: bool = Field(default=False, description="resolve read-only and record the plan; revoke nothing")


class UnknownPlaybookName(ValueError):
    """A trigger names a playbook that is not loaded."""


def default_actor() -> str:
    """`user@host` of whoever runs the CLI."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def build_exposure(request: TriggerRequest, *, actor: str, detector: str,
                   playbooks: Sequence[Playbook]) -> Exposure:
    """The exposure a trigger publishes, with a fresh id; raise `UnknownPlaybookName` or pydantic's error."""
    if request.playbook is not None and request.playbook not in {p.name for p in playbooks}:
        known = ", ".join(sorted(p.name for p in playbooks))
        raise UnknownPlaybookName(f"unknown playbook {request.playbook!r}; known: {known}")
    return Exposure(
        id=f"manual-{uuid.uuid4().hex}",
        credential=Credential(kind=request.kind, id=request.id, owner=request.owner, secret=request.secret),
        source=Source(detector=detector),
        severity=request.severity, playbook=request.playbook, actor=actor, reason=request.reason,
        dry_run=request.dry_run,
    )


def encode(exposure: Exposure) -> bytes:
    """The record value for the exposures topic; the one place the secret is written out, for the consumer."""
    document = exposure.model_dump(mode="json", exclude_none=True)
    if exposure.credential.secret is not None:
        document["credential"]["secret"] = exposure.credential.secret.get_secret_value()
    return json.dumps(document).encode()


async def send(producer: AIOKafkaProducer, topic: str, key: str, value: bytes, *, role: Role | None = None) -> None:
    """Publish one exposure record keyed by its id and wait until the broker has it; `role` is vouched for in a
    signed header: the only way a record raises its run's priority (responder or admin) or has its `actor`
    audited as verified (any role)."""
    headers = [provenance.header(value, role)] if role is not None else None
    stored = await producer.send(topic, value, key=key.encode(), headers=headers)
    await stored


async def publish_record(bootstrap: str, topic: str, key: str, value: bytes, *,
                         role: Role | None = None) -> None:
    """Publish one exposure record through a producer of its own (the CLI's case); errors as one line."""
    producer = kafka.make_producer(bootstrap)
    try:
        await kafka.start(producer, bootstrap)
        await send(producer, topic, key, value, role=role)
    except KafkaError as exc:
        raise ConfigurationError(f"could not publish to {topic} on {bootstrap}: {type(exc).__name__}") from None
    finally:
        await producer.stop()
