"""Playbooks: the model, and loading YAML files into it with validation that names file, line and reason.

A playbook file:

    name: okta-session
    description: Clear every session and OAuth token of the owner of a leaked session cookie.
    match:
      kinds: [okta.session]
      severities: [high, critical]        # optional
      detectors: [har-scanner]            # optional
    retry: {max_attempts: 5, initial_delay_s: 0.5, max_delay_s: 30}   # optional
    steps:
      - name: clear-sessions
        action: okta.clear_user_sessions
        params:
          user: {field: credential.owner}     # picked from the event
          oauth_tokens: true                  # a literal
        when: {severity: [critical]}          # optional: run only for these event values
        on_failure: stop                      # or continue
    approval: required                        # optional: a second person approves each run first; or a rule,
                                              # e.g. {severities: [critical], kinds: [okta.user], min_targets: 2}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator import yaml_source
from orchestrator.actions import ActionSpec
from orchestrator.errors import PlaybookError, PlaybookErrors
from orchestrator.events import FIELD_PATHS, SECRET_FIELD_PATHS, Severity


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldRef(_Strict):
    """A parameter taken from the event at a dotted path."""

    field: str

    @field_validator("field")
    @classmethod
    def _known_path(cls, path: str) -> str:
        if path not in FIELD_PATHS:
            raise ValueError(f"unknown event field {path!r}; known: {', '.join(sorted(FIELD_PATHS))}")
        return path


class OnFailure(StrEnum):
    """What a failed step does to the rest of the run."""

    STOP = "stop"
    CONTINUE = "continue"


class RetryPolicy(_Strict):
    """How a step retries transient failures; waits imposed by rate limits do not count as attempts."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    initial_delay_s: float = Field(default=0.5, gt=0, le=60)
    max_delay_s: float = Field(default=30.0, gt=0, le=3600)
    max_elapsed_s: float = Field(default=600.0, gt=0, le=86_400)


class Step(_Strict):
    """One action of a playbook, with its parameters and an optional condition."""

    name: str = Field(min_length=1, max_length=100)
    action: str
    params: dict[str, FieldRef | str | int | float | bool] = Field(default_factory=dict)
    when: dict[str, list[str]] = Field(default_factory=dict)
    on_failure: OnFailure = OnFailure.STOP
    retry: RetryPolicy | None = None

    @field_validator("when")
    @classmethod
    def _known_fields(cls, when: dict[str, list[str]]) -> dict[str, list[str]]:
        for path in when:
            if path not in FIELD_PATHS or path in SECRET_FIELD_PATHS:
                raise ValueError(f"`when` cannot test {path!r}")
        return when


class Match(_Strict):
    """Which exposures a playbook handles."""

    kinds: list[str] = Field(min_length=1)
    severities: list[Severity] | None = None
    detectors: list[str] | None = None

    @property
    def specificity(self) -> int:
        """How many filters beyond the kind it sets: the more specific playbook wins."""
        return (self.severities is not None) + (self.detectors is not None)


class ApprovalRule(_Strict):
    """When a run needs a second person's approval: every condition given must hold (like `match`)."""

    severities: list[Severity] | None = None
    kinds: list[str] | None = None
    #: At least this many distinct targets in the run's plan.
    min_targets: int | None = Field(default=None, ge=1)

    def requires(self, severity: Severity, kind: str, targets: int) -> bool:
        """True when the run needs approval."""
        return ((self.severities is None or severity in self.severities)
                and (self.kinds is None or kind in self.kinds)
                and (self.min_targets is None or targets >= self.min_targets))


class Playbook(_Strict):
    """A validated playbook."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    match: Match
    retry: RetryPolicy = RetryPolicy()
    steps: list[Step] = Field(min_length=1)
    #: `required`, `none` (the default) or a rule: whether a run waits for a second person before acting.
    approval: Literal["required", "none"] | ApprovalRule = "none"
    path: str = Field(default="", exclude=True)

    def approval_needed(self, exposure: Any, plan: Sequence[Mapping[str, Any]]) -> bool:
        """Whether a run of this playbook on `exposure` (with this plan) must wait for approval."""
        if isinstance(self.approval, ApprovalRule):
            targets = len({entry.get("target") for entry in plan if entry.get("destructive")})
            return self.approval.requires(exposure.severity, exposure.credential.kind, targets)
        return self.approval == "required"

    def retry_for(self, step: Step) -> RetryPolicy:
        """The step's own retry policy, else the playbook's."""
        return step.retry or self.retry


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[int, str]]:
    """Every key given twice in one mapping (PyYAML silently keeps the last), as (line, problem)."""
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in seen:
                    found.append((line, f"key {key.value!r} appears twice in one mapping (first on line "
                                        f"{seen[key.value]}): only the last would count; merge them into one"))
                seen.setdefault(key.value, line)
            found += _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item)
    return found


def parse_playbook(text: str, path: str, catalog: Mapping[str, ActionSpec]) -> Playbook:
    """Validate one playbook document; raise `PlaybookError` (`PlaybookErrors` when there are several problems)
    naming `path`, the line and the reason with its fix, one problem per line."""
    from orchestrator import playbook_checks  # it reads this module's models

    node, document = yaml_source.load(text, path)
    if not isinstance(document, dict):
        raise PlaybookError(path, "expected a mapping with name, match and steps", 1)
    problems = [PlaybookError(path, reason, line) for line, reason in _duplicate_keys(node)]
    try:
        playbook = Playbook.model_validate({**document, "path": path})
    except ValidationError as exc:
        problems += [PlaybookError(path, _describe(error), _line_of(node, error["loc"]))
                     for error in exc.errors(include_input=False, include_url=False)]
        raise _errors(problems) from None
    problems += [PlaybookError(path, reason, _line_of(node, loc))
                 for loc, reason in playbook_checks.problems(playbook, catalog)]
    if problems:
        raise _errors(problems)
    return playbook


def _errors(problems: list[PlaybookError]) -> PlaybookError:
    """One error, or all of them, in line order."""
    problems = sorted(problems, key=lambda p: p.line or 0)
    return problems[0] if len(problems) == 1 else PlaybookErrors(problems)


def _describe(error: Any) -> str:
    """One pydantic error as a playbook problem and its fix, without the offending value."""
    # Keys come from the file: one with control characters is shown escaped, never sent raw to a terminal.
    location = ".".join(str(p) if str(p).isprintable() else repr(p) for p in error["loc"]) or "playbook"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key; remove it or fix its spelling"
    if kind == "missing":
        return f"{location}: missing; add it"
    return f"{location}: {error['msg']}"


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of the deepest ancestor that exists."""
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        mark: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            # The key's line: a block value (`params:` then its entries) starts on the line after it. The last
            # of duplicate keys, as it is the one loading keeps.
            child, mark = next(((v, k) for k, v in reversed(node.value) if k.value == key), (None, None))
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = mark = node.value[key]
        else:
            child = None
        if child is None or mark is None:
            break
        node, line = child, mark.start_mark.line + 1
    return line


def load_playbooks(directory: Path, catalog: Mapping[str, ActionSpec]) -> tuple[Playbook, ...]:
    """Load and validate every `*.yaml`/`*.yml` in `directory`; raise `PlaybookError` on the first problem."""
    if not directory.is_dir():
        raise PlaybookError(str(directory), "playbooks directory does not exist")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise PlaybookError(str(directory), "no playbooks (*.yaml) found")
    playbooks: list[Playbook] = []
    problems: list[PlaybookError] = []
    for file in files:
        try:
            playbooks.append(parse_playbook(file.read_text(encoding="utf-8"), str(file), catalog))
        except PlaybookErrors as exc:
            problems += exc.problems
        except PlaybookError as exc:
            problems.append(exc)
    if problems:
        raise problems[0] if len(problems) == 1 else PlaybookErrors(problems)
    _check_unique_names(playbooks)
    _check_unambiguous(playbooks)
    return tuple(playbooks)


def _check_unique_names(playbooks: Sequence[Playbook]) -> None:
    seen: dict[str, str] = {}
    for playbook in playbooks:
        if playbook.name in seen:
            raise PlaybookError(playbook.path, f"playbook name {playbook.name!r} is also used by {seen[playbook.name]}")
        seen[playbook.name] = playbook.path


def _check_unambiguous(playbooks: Sequence[Playbook]) -> None:
    """Two playbooks of equal specificity that can match the same exposure would make routing a coin toss."""
    for i, a in enumerate(playbooks):
        for b in playbooks[i + 1:]:
            if a.match.specificity != b.match.specificity or not set(a.match.kinds) & set(b.match.kinds):
                continue
            if _overlap(a.match.severities, b.match.severities) and _overlap(a.match.detectors, b.match.detectors):
                raise PlaybookError(b.path, f"matches the same exposures as {a.path} ({a.name}); "
                                            "narrow one with severities or detectors")


def _overlap(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool:
    return a is None or b is None or bool(set(a) & set(b))
