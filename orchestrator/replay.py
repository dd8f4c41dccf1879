"""Replays of failed exposures: the request record, what a replay would do, the exposure rebuilt. Pure.

A replay runs a failed exposure's playbook again as a new run, skipping the steps any earlier run succeeded
in. It is asked for by a person (`orchestrator replay`, `POST /v1/exposures/{id}/replay`), who publishes a
`ReplayRequest` on the exposures topic; the consumer claims the row (so it never runs beside another run of
the same exposure) and runs it. The store keeps no secret: the exposure is rebuilt from the row, and a replay
whose steps need the raw secret takes the original record from its encrypted dead letter, or cannot run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import InvalidExposure
from orchestrator.events import SECRET_FIELD_PATHS, Exposure, describe_validation_error
from orchestrator.playbooks import FieldRef, Playbook, Step
from orchestrator.store.content import content_of

#: Every replay request's value starts so: the consumer tells one from an exposure without parsing twice.
PREFIX = b'{"replay":'


class ReplayRequest(BaseModel):
    """A person's request to replay one failed exposure, as published on the exposures topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str = Field(min_length=1, max_length=64)
    exposure_id: str = Field(min_length=1, max_length=200)
    #: The store row that failed (an id may have several, one per content).
    row: int = Field(ge=0)
    #: The credential key and kind of the exposure: the consumer orders it with the credential's other work.
    target: str = Field(min_length=1, max_length=700)
    kind: str = Field(min_length=1, max_length=100)
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    requested_at: datetime


def new_request(row: Mapping[str, Any], *, actor: str, reason: str, at: datetime) -> ReplayRequest:
    """A request to replay the store row `row`."""
    return ReplayRequest(request_id=uuid.uuid4().hex, exposure_id=row["id"], row=row["row_id"],
                         target=row["target"] or f"{row['credential_kind']}:{row['id']}",
                         kind=row["credential_kind"], actor=actor, reason=reason, requested_at=at)


def encode(request: ReplayRequest) -> bytes:
    """The record value: `{"replay": {...}}`."""
    return orjson.dumps({"replay": request.model_dump(mode="json")})


def is_request(raw: bytes | None) -> bool:
    """True when the record is (meant to be) a replay request rather than an exposure."""
    return raw is not None and raw.startswith(PREFIX)


def decode(raw: bytes) -> ReplayRequest:
    """The request in a record value; `InvalidExposure` (naming fields, never values) when it is not one."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidExposure(f"replay request is not JSON: {exc.msg}") from None
    body = document.get("replay") if isinstance(document, dict) else None
    if not isinstance(body, dict):
        raise InvalidExposure("replay request: expected {\"replay\": {...}}")
    try:
        return ReplayRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidExposure(f"replay request: {describe_validation_error(exc)}") from None


@dataclass(frozen=True)
class Rebuilt:
    """The exposure as the store row tells it (no secret, no location or reason)."""

    exposure: Exposure
    #: False when the exposure that ran had content the store does not keep (its secret).
    exact: bool


def rebuild(row: Mapping[str, Any]) -> Rebuilt | None:
    """The exposure of a store row; None when the row's fields do not make a valid exposure."""
    first: Exposure | None = None
    # The row does not say whether the playbook was asked for by name, or if it was a dry run: the identity
    # (content fingerprint) tells which of these was the exposure that ran.
    for dry_run in (False, True):
        for playbook in (None, row.get("playbook")):
            try:
                exposure = Exposure.model_validate({
                    "id": row["id"], "severity": row.get("severity") or "high", "playbook": playbook,
                    "credential": {"kind": row["credential_kind"], "id": row.get("credential_id"),
                                   "owner": row.get("credential_owner")},
                    "source": {"detector": row.get("detector")}, "actor": row.get("actor"), "dry_run": dry_run})
            except ValidationError:
                return None
            if content_of(exposure).fingerprint == row["content_fingerprint"]:
                return Rebuilt(exposure, exact=True)
            first = first or exposure
    return None if first is None else Rebuilt(first, exact=False)


def reads_secret(step: Step) -> bool:
    """True when the step takes a parameter, or a condition, from the raw secret."""
    fields = [v.field for v in step.params.values() if isinstance(v, FieldRef)] + list(step.when)
    return any(path in SECRET_FIELD_PATHS for path in fields)


@dataclass(frozen=True)
class Plan:
    """What a replay of one exposure would do, or why it cannot run."""

    exposure_id: str
    row_id: int
    state: str
    playbook: str | None
    skip: tuple[str, ...]
    run: tuple[str, ...]
    #: Where the exposure comes from: `store` (rebuilt from the row) or `dead letter P:O` (the original).
    source: str
    problem: str | None = None

    @property
    def possible(self) -> bool:
        """True when the replay can be asked for."""
        return self.problem is None

    def describe(self) -> dict[str, Any]:
        """As `replay --dry-run --json` and the API show it."""
        return {"id": self.exposure_id, "state": self.state, "playbook": self.playbook, "skip": list(self.skip),
                "run": list(self.run), "source": self.source, "replayable": self.possible,
                "problem": self.problem}


def plan(row: Mapping[str, Any], playbooks: Sequence[Playbook]) -> Plan:
    """What replaying the store row `row` (with its `steps`) would do."""
    succeeded = succeeded_steps(row.get("steps") or ())
    name = row.get("playbook")
    playbook = next((p for p in playbooks if p.name == name), None)
    skip = tuple(s.name for s in playbook.steps if s.name in succeeded) if playbook else ()
    run = tuple(s.name for s in playbook.steps if s.name not in succeeded) if playbook else ()
    source = f"dead letter {row['dead_letter']}" if row.get("dead_letter") else "store"
    base = Plan(row["id"], row["row_id"], row["state"], name, skip, run, source)
    problem = None
    if row["state"] != "failed":
        problem = f"{row['id']} is {row['state']}: only failed exposures can be replayed"
    elif name is None:
        problem = f"{row['id']} failed before a playbook ran: publish it again instead"
    elif playbook is None:
        problem = f"{row['id']} failed in playbook {name!r}, which is not loaded"
    elif not row.get("dead_letter"):
        problem = store_problem(row, playbook, succeeded)
    return Plan(**{**base.__dict__, "problem": problem})


def store_problem(row: Mapping[str, Any], playbook: Playbook, succeeded: frozenset[str]) -> str | None:
    """Why the exposure rebuilt from the store cannot be replayed, or None. One that carried a secret can be,
    without it, when no step still to run reads the secret."""
    rebuilt = rebuild(row)
    if rebuilt is not None and rebuilt.exact:
        return None
    needing = [s.name for s in playbook.steps if s.name not in succeeded and reads_secret(s)]
    why = ("no encrypted copy of the original record was kept (ORCHESTRATOR_ENCRYPTION_KEY was not set when it "
           "failed)")
    if needing:
        return (f"cannot replay {row['id']}: step(s) {', '.join(needing)} need the raw secret, which the run store "
                f"does not keep, and {why}")
    if rebuilt is None:
        return f"cannot replay {row['id']}: the run store does not hold its content (only a secret), and {why}"
    return None


def succeeded_steps(steps: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the steps any run of the exposure succeeded in."""
    return frozenset(s["step"] for s in steps if s.get("state") == "succeeded")
