"""Safety commands of `orchestrator`: approve, deny, undo, brake status|release|hold.

They act through the running orchestrator's HTTP API with the caller's own API token, so the token's principal
is who answers (an approval by the run's requester is refused) and its role is checked by the server
(approve/deny: responder; undo and brake: admin). ORCHESTRATOR_API_URL says where (default: derived from
ORCHESTRATOR_HTTP_LISTEN, else http://127.0.0.1:8080); ORCHESTRATOR_API_TOKEN is the caller's token.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from orchestrator.cli import UsageProblem, app
from orchestrator.errors import OrchestratorError
from orchestrator.escaping import terminal as t
from orchestrator.settings import DEFAULT_HTTP_LISTEN

brake_app = typer.Typer(no_args_is_help=True, help="The mass-action brake (role admin): status, release, hold.")
app.add_typer(brake_app, name="brake")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
WhyOption = Annotated[str | None, typer.Option("--why", help="Why; recorded in the audit trail.")]
RunArgument = Annotated[str, typer.Argument(help="The run id (or the exposure id) of the waiting run.")]


def _endpoint() -> tuple[str, str]:
    token = os.environ.get("ORCHESTRATOR_API_TOKEN", "").strip()
    if not token:
        raise UsageProblem("ORCHESTRATOR_API_TOKEN is not set: set it to your own API token "
                           "(`orchestrator api-token create`); your token's principal is who answers")
    url = os.environ.get("ORCHESTRATOR_API_URL", "").strip()
    if not url:
        listen = os.environ.get("ORCHESTRATOR_HTTP_LISTEN", "").strip() or DEFAULT_HTTP_LISTEN
        url = f"http://{listen}"
    return url.rstrip("/"), token


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    url, token = _endpoint()
    try:
        response = httpx.request(method, url + path, json=body, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise OrchestratorError(f"cannot reach the orchestrator API at {url} ({type(exc).__name__}): "
                                "set ORCHESTRATOR_API_URL") from None
    if response.is_success:
        answer: dict[str, Any] = response.json()
        return answer
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise OrchestratorError(t(f"HTTP {response.status_code}: {detail}"))


def _print(value: dict[str, Any], as_json: bool, line: str) -> None:
    print(json.dumps(value, default=str) if as_json else line, flush=True)


@app.command()
def approve(run_id: RunArgument, why: WhyOption = None, as_json: JsonFlag = False) -> None:
    """Approve a run waiting for a second person: it goes on (role responder; not its requester)."""
    gate = _call("POST", f"/v1/runs/{run_id}/approve", {"why": why})
    _print(gate, as_json, t(f"approved run {gate['run_id']} (exposure {gate['exposure_id']}) as {gate['decided_by']}"))


@app.command()
def deny(run_id: RunArgument, why: WhyOption = None, as_json: JsonFlag = False) -> None:
    """Deny a run waiting for a second person: it ends, nothing revoked (role responder; not its requester)."""
    gate = _call("POST", f"/v1/runs/{run_id}/deny", {"why": why})
    _print(gate, as_json, t(f"denied run {gate['run_id']} (exposure {gate['exposure_id']}) as {gate['decided_by']}"))


@app.command()
def undo(run_id: Annotated[str, typer.Argument(help="The run id (or exposure id) to reverse.")],
         as_json: JsonFlag = False) -> None:
    """Reverse a run's reversible steps (reactivate a key, unsuspend a user), audited (role admin)."""
    result = _call("POST", f"/v1/runs/{run_id}/undo")
    if result.get("planned"):
        # Exit 1: a script that undoes a run must not read "nothing to undo" as "reversed".
        _print(result, as_json, "dry run: nothing was done, nothing to undo")
        raise typer.Exit(1)
    lines = [f"undo {result['undo_id']} of run {result['run_id']} (exposure {result['exposure_id']}):"]
    lines += [f"  reversed {s['step']}: {s['action']} {s['target']}" for s in result["reversed"]]
    lines += [f"  FAILED   {s['step']}: {s['action']}: {s['error']}" for s in result["failed"]]
    lines += [f"  already undone: {', '.join(result['already_undone'])}"] if result["already_undone"] else []
    lines += [f"  cannot be undone: {', '.join(result['irreversible'])}"] if result["irreversible"] else []
    # Ids, targets and errors came from events and providers: no control character reaches the terminal.
    _print(result, as_json, "\n".join(t(line) for line in lines))
    if result["failed"]:
        raise typer.Exit(1)


@brake_app.command("status")
def brake_status(as_json: JsonFlag = False) -> None:
    """Whether the brake is engaged or held, the window's counts, and the runs it holds (oldest first)."""
    status = _call("GET", "/v1/brake")
    state = "HELD" if status["held"] else "ENGAGED" if status["engaged"] else "armed"
    lines = [f"brake {state}: {status['total']} destructive steps in the last {status['window_s']:g}s "
             f"(limit {status['limit']}); {len(status['waiting'])} run{'' if len(status['waiting']) == 1 else 's'} "
             "waiting"]
    lines += [f"  {g['position']:>6}  {g['run_id']}  {g['exposure_id']}  {g['reason']}" for g in status["waiting"]]
    _print(status, as_json, "\n".join(t(line) for line in lines))


@brake_app.command("release")
def brake_release(why: WhyOption = None, as_json: JsonFlag = False) -> None:
    """Release every run the brake holds, oldest first (and end a hold)."""
    result = _call("POST", "/v1/brake/release", {"why": why})
    _print(result, as_json, f"released {len(result['released'])} runs, oldest first, as {result['by']}")


@brake_app.command("hold")
def brake_hold(why: WhyOption = None, as_json: JsonFlag = False) -> None:
    """Hold the brake: every run that would act waits until `brake release`."""
    result = _call("POST", "/v1/brake/hold", {"why": why})
    _print(result, as_json, f"brake held by {result['by']}: runs that would act wait until `brake release`")
