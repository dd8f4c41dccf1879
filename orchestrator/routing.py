"""Pure routing: which playbook handles an exposure, and which parameters each step receives."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.actions import ParamValue
from orchestrator.events import Exposure
from orchestrator.playbooks import FieldRef, Playbook, Step


class UnknownPlaybook(LookupError):
    """The exposure names a playbook that is not loaded."""


def route(exposure: Exposure, playbooks: Sequence[Playbook]) -> Playbook | None:
    """The playbook named by the exposure, else the most specific one that matches it, else None."""
    if exposure.playbook is not None:
        for playbook in playbooks:
            if playbook.name == exposure.playbook:
                return playbook
        raise UnknownPlaybook(exposure.playbook)
    candidates = [p for p in playbooks if matches(p, exposure)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.match.specificity, p.name))


def matches(playbook: Playbook, exposure: Exposure) -> bool:
    """True when the playbook's `match` accepts the exposure."""
    match = playbook.match
    if exposure.credential.kind not in match.kinds:
        return False
    if match.severities is not None and exposure.severity not in match.severities:
        return False
    detector = exposure.source.detector
    return match.detectors is None or detector in match.detectors


def step_applies(step: Step, exposure: Exposure) -> bool:
    """True when every `when` condition of the step holds for the exposure."""
    for path, accepted in step.when.items():
        value = exposure.field(path)
        if value is None or str(value).lower() not in {a.lower() for a in accepted}:
            return False
    return True


def resolve_params(step: Step, exposure: Exposure) -> dict[str, ParamValue]:
    """The step's parameters, event fields picked from the exposure; absent fields are left out."""
    params: dict[str, ParamValue] = {}
    for name, value in step.params.items():
        resolved = exposure.field(value.field) if isinstance(value, FieldRef) else value
        if resolved is not None:
            params[name] = resolved
    return params
