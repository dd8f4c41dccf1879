"""What a structurally valid playbook must also satisfy: typed parameters, possible conditions, reachable targets.

Pure: `problems(playbook, catalog)` returns every problem as `(location, reason)`, the location a path into the
YAML document (`("steps", 0, "params", "via")`) so the loader can name its line, the reason ending in the fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from orchestrator.actions import ActionSpec, ParamSource, ParamSpec, ParamType
from orchestrator.events import SECRET_FIELD_PATHS, Severity
from orchestrator.playbooks import FieldRef, Playbook, Step

Location = tuple[str | int, ...]
Problem = tuple[Location, str]

#: Event fields whose every possible value is known, and what they are.
_SEVERITIES = tuple(s.value for s in Severity)
#: Fields a parameter may read, per the kind of value the parameter needs: a FLAG or CHOICE never comes from
#: an event (they are literal-only), and an identifier never comes from free text.
_FREE_TEXT = frozenset({"reason", "source.location", "detected_at", "severity", "id", "credential.kind"})


def problems(playbook: Playbook, catalog: Mapping[str, ActionSpec]) -> list[Problem]:
    """Every problem of `playbook` against the action catalog, in document order."""
    found: list[Problem] = []
    seen: set[str] = set()
    for index, step in enumerate(playbook.steps):
        where: Location = ("steps", index)
        if step.name in seen:
            found.append((where, f"step name {step.name!r} is used twice; give each step its own name"))
        seen.add(step.name)
        spec = catalog.get(step.action)
        if spec is None:
            found.append((where, f"step {step.name!r}: unknown action {step.action!r}; known: "
                                 f"{', '.join(sorted(catalog))}"))
        else:
            found += [((*where, *loc), f"step {step.name!r}: {reason}") for loc, reason in _params(step, spec)]
        found += [((*where, "when", *loc), f"step {step.name!r}: {reason}") for loc, reason in _when(step, playbook)]
    return found


def _params(step: Step, spec: ActionSpec) -> Iterator[Problem]:
    for name, value in step.params.items():
        param = spec.params.get(name)
        if param is None:
            yield ("params", name), (f"{spec.name} has no parameter {name!r}; it takes "
                                     f"{', '.join(sorted(spec.params))} (see `orchestrator actions show {spec.name}`)")
            continue
        reason = _param(name, value, param)
        if reason:
            yield ("params", name), reason
    for name, param in spec.params.items():
        if param.required and name not in step.params:
            yield ("params",), f"{spec.name} needs parameter {name!r}; add `{name}: {_suggest(name, param)}`"
    for group in spec.one_of:
        if not group & step.params.keys():
            names = sorted(group)
            yield ("params",), (f"{spec.name} needs one of {', '.join(names)} and the step gives none, so it can "
                                f"never run; add e.g. `{names[0]}: {_suggest(names[0], spec.params[names[0]])}`")


def _param(name: str, value: FieldRef | str | int | float | bool, param: ParamSpec) -> str | None:
    if isinstance(value, FieldRef):
        if value.field in SECRET_FIELD_PATHS and not param.secret:
            return f"parameter {name!r} is not a secret parameter and cannot take credential.secret"
        if param.source is ParamSource.LITERAL or param.type is not ParamType.TEXT:
            return (f"parameter {name!r} must be written in the playbook, not taken from the event (it decides "
                    f"what the step does); write e.g. `{name}: {_literal_example(param)}`")
        if value.field in _FREE_TEXT and param.grammar is not None:
            return (f"parameter {name!r} needs {param.grammar.description}, which event field {value.field} "
                    f"never holds; take it from credential.id or credential.owner")
        if param.secret and value.field not in SECRET_FIELD_PATHS:
            return f"parameter {name!r} is the secret itself; write `{name}: {{field: credential.secret}}`"
        return None
    if param.source is ParamSource.EVENT:
        return f"parameter {name!r} must come from the event; write `{name}: {_suggest(name, param)}`"
    if param.type is ParamType.FLAG:
        if not isinstance(value, bool):
            return f"parameter {name!r} must be true or false, not {_shown(value)}; write `{name}: true` or `false`"
        return None
    if not isinstance(value, str):
        return f"parameter {name!r} must be text, not {type(value).__name__}; quote it: `{name}: \"{value}\"`"
    if param.type is ParamType.CHOICE and value not in param.choices:
        return (f"parameter {name!r} must be one of {', '.join(param.choices)}, not {_shown(value)}; "
                f"write e.g. `{name}: {param.choices[0]}`")
    if param.grammar is not None and (problem := param.grammar.problem(value)):
        return f"parameter {name!r} {problem}: it must be {param.grammar.description}"
    return None


def _when(step: Step, playbook: Playbook) -> Iterator[Problem]:
    """Conditions that no exposure routed to this playbook could ever meet."""
    match = playbook.match
    domains: dict[str, tuple[str, ...]] = {"severity": _SEVERITIES, "credential.kind": tuple(match.kinds)}
    if match.severities is not None:
        domains["severity"] = tuple(s.value for s in match.severities)
    if match.detectors is not None:
        domains["source.detector"] = tuple(match.detectors)
    for path, accepted in step.when.items():
        if not accepted:
            yield (path,), f"`when: {{{path}: []}}` accepts nothing, so the step could never run; list values"
            continue
        domain = domains.get(path)
        if domain is None:
            continue
        folded = {d.lower() for d in domain}
        impossible = [a for a in accepted if a.lower() not in folded]
        if impossible:
            scope = "exposures this playbook matches" if path != "severity" or match.severities else "exposures"
            never = "the step could never run" if len(impossible) == len(accepted) else "those values never match"
            yield (path,), (f"`when` {path} {', '.join(repr(a) for a in impossible)} is impossible: {scope} have "
                            f"{path} in {', '.join(domain)}, so {never}; use values from that list")


def _suggest(name: str, param: ParamSpec) -> str:
    if param.secret:
        return "{field: credential.secret}"
    if param.source is ParamSource.LITERAL or param.type is not ParamType.TEXT:
        return _literal_example(param)
    return "{field: credential.id}" if name.endswith("_id") else "{field: credential.owner}"


def _literal_example(param: ParamSpec) -> str:
    if param.type is ParamType.FLAG:
        return param.default or "true"
    if param.type is ParamType.CHOICE:
        return param.default or param.choices[0]
    return "<" + (param.grammar.description if param.grammar else "text") + ">"


def _shown(value: Any) -> str:
    """A playbook literal as written (playbooks hold no secrets: secret parameters only take event fields)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
