"""The safety policy (ORCHESTRATOR_POLICY_FILE): protected principals, the mass-action brake, approval expiry.

A policy file:

    protected:                       # per provider (the part of credential.kind before the dot)
      okta:
        owners: [breakglass-*@example.com, group:break-glass]   # credential.owner: exact or glob
        credentials: [00uADMIN000000000001]                     # credential.id: exact or glob
        groups: [break-glass-admins, prod-*]    # Okta groups (name or id, exact or glob): their members at the
                                                # time of the exposure, asked of Okta (okta only)
      aws:
        owners: [prod-*]             # an ARN owner is also tested by its last path segment
    groups:                          # named lists, used above as `group:NAME`
      break-glass: [alice@example.com, bob@example.com]
    brake:
      limit: 50                      # destructive steps per window, overall...
      window_s: 300
      providers: {okta: 20}          # ...and per provider (default: `limit`)
      timeout_s: 3600                # a brake left alone this long...
      on_timeout: wait               # ...pages again and keeps waiting (or `release`, or `drop`)
    approval:
      timeout_s: 3600                # a pending approval expires (denied) after this long

Pure: loading validates (naming file, line and fix, like playbooks); `Policy.protects` is a pure matcher.
Matching ignores case and surrounding whitespace: a principal spelled differently is still protected.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator import yaml_source
from orchestrator.errors import PlaybookError
from orchestrator.events import describe_validation_error

#: Providers a `protected:` section may name.
PROVIDERS = ("okta", "aws", "gcp", "github", "slack")
#: Providers whose own groups a `protected.<provider>.groups` list may name (membership asked at exposure time).
DIRECTORY_PROVIDERS = ("okta",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnTimeout(StrEnum):
    """What a brake left alone past its timeout does with the runs it holds."""

    WAIT = "wait"  # keep them waiting and page on-call again
    RELEASE = "release"  # let them run, in order
    DROP = "drop"  # end them as denied


class BrakePolicy(_Strict):
    """The mass-action brake: at most `limit` destructive steps per `window_s`, overall and per provider."""

    limit: int = Field(default=50, ge=1, le=1_000_000)
    window_s: float = Field(default=300.0, gt=0, le=86_400)
    providers: dict[str, int] = Field(default_factory=dict)
    timeout_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    on_timeout: OnTimeout = OnTimeout.WAIT

    @field_validator("providers")
    @classmethod
    def _known(cls, providers: dict[str, int]) -> dict[str, int]:
        for name, limit in providers.items():
            if name not in PROVIDERS:
                raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
            if limit < 1:
                raise ValueError(f"the limit of {name} must be at least 1")
        return providers

    def limit_for(self, provider: str) -> int:
        """The provider's own limit, else the overall one."""
        return self.providers.get(provider, self.limit)


class ApprovalPolicy(_Strict):
    """Two-person approvals: how long one may stay pending before it expires (as denied)."""

    timeout_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)


class Protected(_Strict):
    """Protected principals of one provider: owners and credentials, each exact, glob or `group:NAME`; and
    (Okta) the provider's own groups whose members are protected."""

    owners: list[str] = Field(default_factory=list)
    credentials: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    @field_validator("owners", "credentials", "groups")
    @classmethod
    def _non_empty(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern.strip() or pattern.strip() in {"*", "**"}:
                raise ValueError("an empty pattern or a bare `*` protects nothing or everything: name principals")
        return patterns


class Policy(_Strict):
    """The whole policy; `Policy()` is the default when no file is configured (nothing protected)."""

    protected: dict[str, Protected] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    brake: BrakePolicy = BrakePolicy()
    approval: ApprovalPolicy = ApprovalPolicy()

    @field_validator("protected")
    @classmethod
    def _known_providers(cls, protected: dict[str, Protected]) -> dict[str, Protected]:
        for name in protected:
            if name not in PROVIDERS:
                raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
        return protected

    def directory_groups(self, kind: str) -> list[str]:
        """The provider groups (name or id patterns) whose members an exposure of `kind` must be checked against."""
        rules = self.protected.get(kind.partition(".")[0])
        return rules.groups if rules is not None else []

    def protects_member(self, kind: str, member_of: Sequence[str]) -> str | None:
        """Which `groups` rule protects a user who is a member of `member_of` (group names and ids), or None."""
        provider = kind.partition(".")[0]
        for pattern in self.directory_groups(kind):
            if any(_matches(group.strip(), pattern) for group in member_of):
                return f"{provider} group {pattern}"
        return None

    def protects(self, kind: str, owner: str | None, credential_id: str | None) -> str | None:
        """Which rule protects an exposure of `kind` with this owner and id (e.g. `okta owner admin-*`), or None."""
        provider = kind.partition(".")[0]
        rules = self.protected.get(provider)
        if rules is None:
            return None
        for field, value, patterns in (("owner", owner, rules.owners), ("credential", credential_id,
                                                                           rules.credentials)):
            if value is None:
                continue
            for pattern in patterns:
                if any(_matches(candidate, expanded) for candidate in _candidates(value)
                       for expanded in self._expand(pattern)):
                    return f"{provider} {field} {pattern}"
        return None

    def _expand(self, pattern: str) -> Sequence[str]:
        if pattern.startswith("group:"):
            return self.groups.get(pattern.removeprefix("group:"), ())
        return (pattern,)


def _candidates(value: str) -> tuple[str, ...]:
    """The forms of a principal that are tested: as given, and an ARN's last path segment (the name)."""
    clean = value.strip()
    if clean.startswith("arn:") and "/" in clean:
        return clean, clean.rsplit("/", 1)[-1]
    return (clean,)


def _matches(value: str, pattern: str) -> bool:
    """Exact or glob (`*`, `?`, `[...]`), ignoring case: `fnmatchcase` on case-folded text."""
    return fnmatch.fnmatchcase(value.casefold(), pattern.strip().casefold())


def parse_policy(text: str, path: str) -> Policy:
    """Validate a policy document; raise `PlaybookError` (a `ConfigurationError`) naming file, line and fix."""
    node, document = yaml_source.load(text, path)
    if document is None:
        return Policy()
    if not isinstance(document, dict):
        raise PlaybookError(path, "expected a mapping with protected, groups, brake and approval", 1)
    for section in (("protected",), ("brake", "providers")):
        unknown = _unknown_key(node, section, PROVIDERS)
        if unknown is not None:
            name, line = unknown
            raise PlaybookError(path, f"{'.'.join(section)}: unknown provider {name!r}; known: "
                                      f"{', '.join(PROVIDERS)}", line)
    try:
        policy = Policy.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        reason = describe_validation_error(exc).replace("Value error, ", "")
        raise PlaybookError(path, reason, _line_of(node, first["loc"])) from None
    for provider, rules in policy.protected.items():
        if rules.groups and provider not in DIRECTORY_PROVIDERS:
            raise PlaybookError(path, f"protected.{provider}.groups: group membership is looked up only for "
                                      f"{', '.join(DIRECTORY_PROVIDERS)}; list {provider} principals under owners: "
                                      "(a named list under groups: is used there as group:NAME)",
                                _line_of(node, ("protected", provider, "groups")))
        for index, pattern in enumerate([*rules.owners, *rules.credentials]):
            name = pattern.removeprefix("group:")
            if pattern.startswith("group:") and name not in policy.groups:
                key = "owners" if index < len(rules.owners) else "credentials"
                raise PlaybookError(path, f"protected.{provider}: unknown group {name!r}; define it under groups:",
                                    _line_of(node, ("protected", provider, key)))
    return policy


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`, or the default policy when None."""
    if path is None:
        return Policy()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError(str(path), f"ORCHESTRATOR_POLICY_FILE cannot be read ({exc.strerror})") from None
    return parse_policy(text, str(path))


def _unknown_key(node: yaml.Node | None, section: Sequence[str], known: Sequence[str]) -> tuple[str, int] | None:
    """The first key of the mapping at `section` that is not in `known`, and its line."""
    for key in section:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if k.value == key), None)
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, _ in node.value:
        if key_node.value not in known:
            return str(key_node.value), key_node.start_mark.line + 1
    return None


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line

