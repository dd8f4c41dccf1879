"""The contract between playbooks and providers: action specs, parameters, step results, the Provider protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import TracebackType
from typing import Protocol, Self

from pydantic import SecretStr

from orchestrator.grammar import Grammar

#: A resolved step parameter: a playbook literal or a value picked from the event.
ParamValue = str | int | float | bool | SecretStr
Params = Mapping[str, ParamValue]


class ParamType(StrEnum):
    """What a parameter's value is."""

    TEXT = "text"
    FLAG = "flag"  # true or false, nothing else
    CHOICE = "choice"  # one of `choices`


class ParamSource(StrEnum):
    """Where a parameter's value may come from."""

    ANY = "any"  # a literal or an event field
    LITERAL = "literal"  # written in the playbook: it changes what the step does, no publisher may pick it
    EVENT = "event"  # an event field


@dataclass(frozen=True)
class ParamSpec:
    """One parameter an action accepts. Only `secret` parameters may receive `credential.secret`.

    `grammar` is the shape an identifier must have (checked before any call); `own` names the kind of the
    orchestrator's own credential this parameter could designate, so `orchestrator.own_credentials` can
    refuse it.
    """

    required: bool = False
    secret: bool = False
    description: str = ""
    type: ParamType = ParamType.TEXT
    choices: tuple[str, ...] = ()
    source: ParamSource = ParamSource.ANY
    grammar: Grammar | None = None
    own: str | None = None
    default: str | None = None

    def problem(self, value: ParamValue) -> str | None:
        """Why `value` is not acceptable for this parameter, or None. Never quotes the value."""
        if self.type is ParamType.FLAG:
            return None if isinstance(value, bool) else "must be true or false"
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, bool) or not isinstance(raw, str):
            return "must be text"
        if self.type is ParamType.CHOICE:
            return None if raw in self.choices else f"must be one of {', '.join(self.choices)}"
        if self.grammar is not None and (problem := self.grammar.problem(raw)):
            return f"{problem} (expected {self.grammar.description})"
        return None

    @property
    def shape(self) -> str:
        """The accepted values, for `orchestrator actions show` and playbook errors."""
        if self.type is ParamType.FLAG:
            return "true | false"
        if self.type is ParamType.CHOICE:
            return " | ".join(self.choices)
        return self.grammar.description if self.grammar is not None else "text"


@dataclass(frozen=True)
class ActionSpec:
    """What a playbook may call: `provider.verb`, the parameters it takes, and what it does."""

    name: str
    description: str
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    #: Groups of parameters of which at least one must be present at run time (e.g. user or session_id).
    one_of: tuple[frozenset[str], ...] = ()
    #: Whether it takes something away from someone (sessions, keys, access): the brake and the protected-principal
    #: policy hold destructive steps; read-only and restoring actions are not destructive.
    destructive: bool = True
    #: The action that reverses it (`orchestrator undo`), or None when its effect cannot be undone.
    undo: str | None = None
    #: The provider requests it makes, for `orchestrator actions show` (placeholders in braces).
    calls: tuple[str, ...] = ()

    @property
    def provider(self) -> str:
        """The provider that performs it: the part before the first dot."""
        return self.name.split(".", 1)[0]

    def missing(self, params: Params) -> str | None:
        """Why `params` cannot run this action, or None when they can."""
        for name, spec in self.params.items():
            if spec.required and name not in params:
                return f"{self.name} needs parameter {name!r}, which the event did not provide"
        for group in self.one_of:
            if not group & params.keys():
                return f"{self.name} needs one of {', '.join(sorted(group))}, which the event did not provide"
        return None

    def invalid(self, params: Params) -> str | None:
        """Why a parameter's value cannot be used as this action's target, naming the parameter; else None."""
        for name, value in sorted(params.items()):
            spec = self.params.get(name)
            if spec is None:
                return f"{self.name} takes no parameter {name!r}"
            if problem := spec.problem(value):
                return f"parameter {name!r} of {self.name} {problem}; nothing was sent"
        return None

    def describe(self, params: Params) -> str:
        """A non-secret one-line description of the target, for audit records before resolution."""
        shown = [f"{k}={v}" for k, v in sorted(params.items())
                 if not isinstance(v, SecretStr) and not self.params.get(k, ParamSpec()).secret]
        hidden = [f"{k}=<secret>" for k, v in sorted(params.items())
                  if isinstance(v, SecretStr) or self.params.get(k, ParamSpec()).secret]
        return " ".join(shown + hidden)


@dataclass(frozen=True)
class StepResult:
    """What a step did, or in a dry run would do. Every field is non-secret."""

    target: str
    calls: tuple[str, ...] = ()
    note: str | None = None
    #: What the action's `undo` action needs to reverse this very change (resolved ids, never secrets); None when
    #: nothing changed (already in the end state) or the change cannot be undone.
    undo: Mapping[str, str] | None = None


class Priority(IntEnum):
    """Who goes first when a provider's budget is short: lower values are served first."""

    URGENT = 0  # manual triggers and critical exposures
    NORMAL = 1
    LOW = 2


@dataclass(frozen=True)
class StepContext:
    """What a provider needs to know about the run a step belongs to."""

    exposure_id: str
    dry_run: bool = False
    priority: Priority = Priority.NORMAL


class Provider(Protocol):
    """A provider client: an async context manager that performs its actions, translating its SDK's errors
    into `orchestrator.errors`."""

    name: str

    async def __aenter__(self) -> Self:
        """Open the client (sessions, pools); credentials may be resolved lazily on the first call."""
        ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Close the client."""
        ...

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Carry out `action`; in a dry run resolve targets read-only and return the calls it would make."""
        ...


def secret_value(params: Params, name: str) -> str | None:
    """The raw value of a secret parameter, for the one call that needs it."""
    value = params.get(name)
    if value is None:
        return None
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def text(params: Params, name: str) -> str | None:
    """A non-secret parameter as text, or None when absent."""
    value = params.get(name)
    if value is None or isinstance(value, SecretStr):
        return None
    return str(value)


def flag(params: Params, name: str, default: bool = False) -> bool:
    """A boolean parameter; anything but a real boolean (playbooks are typed, so only a caller's bug) raises."""
    value = params.get(name, default)
    if not isinstance(value, bool):
        from orchestrator.errors import PermanentError

        raise PermanentError(f"parameter {name!r} must be true or false")
    return value
