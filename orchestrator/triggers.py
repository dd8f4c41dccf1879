"""What responders ask of the pipeline: a manual trigger made into an exposure, and published.

The CLI (`orchestrator trigger`) and the HTTP API (`POST /v1/triggers`) both go through here, so a trigger
means the same thing whichever way it arrives. Its history is read from the run store (`status`,
`GET /v1/exposures/{id}`), its live progress from the audit topic's end (`trigger --wait`).
"""

from __future__ import annotations

import difflib
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
from orchestrator.routing import route


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
    allow_unmatched: bool = Field(default=False, description="publish even when no playbook matches the kind "
                                  "(the run then ends `exposure.unmatched`)")


class UnknownPlaybookName(ValueError):
    """A trigger names a playbook that is not loaded."""


class UnmatchedTrigger(ValueError):
    """No loaded playbook would run for this trigger: publishing it would silently do nothing.

    The message never repeats the submitted kind (the API answers with it); `suggestions` are known kinds.
    """

    def __init__(self, message: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.suggestions = tuple(suggestions)


#: How many known kinds an unmatched trigger suggests, and how alike they must be (difflib's ratio).
SUGGESTIONS, SUGGESTION_CUTOFF = 3, 0.6


def known_kinds(playbooks: Sequence[Playbook]) -> list[str]:
    """Every credential kind some loaded playbook matches, sorted."""
    return sorted({kind for playbook in playbooks for kind in playbook.match.kinds})


def closest_kinds(kind: str, known: Sequence[str], *, limit: int = SUGGESTIONS) -> list[str]:
    """The known kinds most like `kind`, best first (case-insensitive); the kind itself when it is known."""
    wanted = kind.strip().lower()
    by_folded = {k.lower(): k for k in known}
    if wanted in by_folded:
        return [by_folded[wanted]]
    matches = difflib.get_close_matches(wanted, sorted(by_folded), n=limit, cutoff=SUGGESTION_CUTOFF)
    return [by_folded[m] for m in matches]


def default_actor() -> str:
    """`user@host` of whoever runs the CLI."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def check(request: TriggerRequest, *, detector: str, playbooks: Sequence[Playbook]) -> None:
    """Raise `UnknownPlaybookName` for a playbook that is not loaded, and `UnmatchedTrigger` as
    `check_routable` does. Needs no secret: the CLI checks before asking for one."""
    if request.playbook is not None and request.playbook not in {p.name for p in playbooks}:
        known = ", ".join(sorted(p.name for p in playbooks))
        raise UnknownPlaybookName(f"unknown playbook {request.playbook!r}; known: {known}")
    check_routable(request, detector=detector, playbooks=playbooks)


def check_routable(request: TriggerRequest, *, detector: str, playbooks: Sequence[Playbook]) -> None:
    """Raise `UnmatchedTrigger` unless a playbook would run for the trigger, as the pipeline routes it (or it
    names its playbook, or allows being unmatched)."""
    if request.playbook is not None or request.allow_unmatched:
        return
    # Routing reads only the kind, severity and detector: a stand-in credential id completes the event.
    probe = Exposure(id="routing-probe", credential=Credential(kind=request.kind, id="-"),
                     source=Source(detector=detector), severity=request.severity)
    if route(probe, playbooks) is not None:
        return
    known = known_kinds(playbooks)
    if request.kind in known:
        raise UnmatchedTrigger(f"no playbook matches this kind at severity {request.severity.value} from "
                               f"detector {detector} (see `orchestrator playbooks list`).")
    suggestions = closest_kinds(request.kind, known)
    hint = f"did you mean {' or '.join(suggestions)}?" if suggestions else f"known kinds: {', '.join(known)}."
    raise UnmatchedTrigger(f"no playbook matches this kind; {hint}", suggestions)


def build_exposure(request: TriggerRequest, *, actor: str, detector: str,
                   playbooks: Sequence[Playbook]) -> Exposure:
    """The exposure a trigger publishes, with a fresh id; raise as `check` does, or pydantic's error."""
    check(request, detector=detector, playbooks=playbooks)
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
