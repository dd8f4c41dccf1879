"""`orchestrator actions list|show ACTION`: what playbooks may call, with parameters, calls and reversibility.

Registered on the `orchestrator` typer app when `orchestrator.cli` is imported.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from orchestrator.actions import ActionSpec, ParamSource
from orchestrator.cli import UsageProblem, app

actions_app = typer.Typer(no_args_is_help=True, help="The actions playbooks may use.")
app.add_typer(actions_app, name="actions")
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _catalog() -> dict[str, ActionSpec]:
    from orchestrator.providers import catalog

    return catalog()


def describe(spec: ActionSpec) -> dict[str, Any]:
    """An action as data: its parameters (type, source, shape), provider calls, destructive and undo."""
    return {
        "name": spec.name, "provider": spec.provider, "description": spec.description,
        "destructive": spec.destructive, "undo": spec.undo, "calls": list(spec.calls),
        "one_of": [sorted(group) for group in spec.one_of],
        "params": {name: {"required": p.required, "secret": p.secret, "type": p.type.value, "accepts": p.shape,
                          "source": p.source.value, "default": p.default, "description": p.description}
                   for name, p in spec.params.items()},
    }


def _reversible(spec: ActionSpec) -> str:
    if not spec.destructive:
        return "not destructive"
    return f"destructive, undo: {spec.undo}" if spec.undo else "destructive, cannot be undone"


@actions_app.command("list")
def actions_list(as_json: JsonFlag = False) -> None:
    """Every action, whether it is destructive and whether it can be undone."""
    catalog = _catalog()
    if as_json:
        print(json.dumps([describe(spec) for spec in catalog.values()], indent=2))
        return
    for name in sorted(catalog):
        spec = catalog[name]
        print(f"{name:<34} {_reversible(spec):<48} {', '.join(spec.params)}")


@actions_app.command("show")
def actions_show(
    action: Annotated[str, typer.Argument(help="The action, e.g. okta.clear_user_sessions.")],
    as_json: JsonFlag = False,
) -> None:
    """One action: its parameters (type, accepted shape, literal or from the event), provider calls, undo."""
    catalog = _catalog()
    spec = catalog.get(action)
    if spec is None:
        raise UsageProblem(f"unknown action {action!r}; `orchestrator actions list` shows them all")
    if as_json:
        print(json.dumps(describe(spec), indent=2))
        return
    lines = [f"{spec.name}: {spec.description}", f"  provider:    {spec.provider}",
             f"  destructive: {'yes' if spec.destructive else 'no'}",
             f"  undo:        {spec.undo or ('cannot be undone' if spec.destructive else 'nothing to undo')}",
             "  parameters:"]
    for name, p in spec.params.items():
        flags = [w for w, on in (("required", p.required), ("secret", p.secret)) if on]
        where = {ParamSource.ANY: "literal or event field", ParamSource.LITERAL: "literal only",
                 ParamSource.EVENT: "event field only"}[p.source]
        default = f", default {p.default}" if p.default else ""
        lines.append(f"    {name:<15} {p.shape} ({where}{default}){' [' + ', '.join(flags) + ']' if flags else ''}")
        if p.description:
            lines.append(f"    {'':<15} {p.description}")
    lines += [f"  needs one of: {', '.join(sorted(group))}" for group in spec.one_of]
    lines += ["  provider calls:", *(f"    {call}" for call in spec.calls)]
    print("\n".join(lines))
