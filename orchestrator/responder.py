"""Responder commands of `orchestrator`: trigger, status, audit tail, playbooks list|show, api-token create.

Registered on the `orchestrator` typer app when `orchestrator.cli` is imported. Each takes `--json` for
scripts; people get rich tables. Errors go through `cli.main`: one line, and the documented exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator import escaping, live_view, triggers
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.cli import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, UsageProblem, app, playbooks_app
from orchestrator.errors import OrchestratorError
from orchestrator.events import Exposure, Severity, describe_validation_error
from orchestrator.playbooks import Playbook, load_playbooks
from orchestrator.progress import in_time_order
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR, Settings

audit_app = typer.Typer(no_args_is_help=True, help="Read the audit stream.")
token_app = typer.Typer(no_args_is_help=True, help="HTTP API tokens.")
app.add_typer(audit_app, name="audit")
app.add_typer(token_app, name="api-token")

CLI_DETECTOR = "cli"  # `source.detector` of triggers made from the command line
_SUCCESS = {"run.completed", "run.planned"}
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _console() -> Console:
    # No markup: table cells and lines print as they are, whatever brackets a name or description holds.
    return live_view.console()


def _settings() -> Settings:
    # aiokafka logs each failed connection; people get our one-line ConfigurationError instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return Settings.from_env()


def _loaded_playbooks(directory: Path | None = None) -> tuple[Playbook, ...]:
    from orchestrator.providers import catalog

    return load_playbooks(directory or Path(os.environ.get("ORCHESTRATOR_PLAYBOOKS_DIR", DEFAULT_PLAYBOOKS_DIR)),
                          catalog())


@app.command()
def trigger(
    kind: Annotated[str, typer.Option("--kind", help="Credential kind, e.g. okta.user, okta.session.")],
    credential_id: Annotated[str | None, typer.Option("--id", help="Non-secret handle (session or token id).")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Owning principal (login, user id).")] = None,
    secret_stdin: Annotated[bool, typer.Option("--secret-stdin", help="Read the raw secret from stdin "
                                               "(never pass it as an argument).")] = False,
    playbook: Annotated[str | None, typer.Option("--playbook", help="Run this playbook instead of routing.")] = None,
    severity: Annotated[Severity, typer.Option("--severity")] = Severity.HIGH,
    reason: Annotated[str | None, typer.Option("--reason", help="Why; recorded in the audit trail.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Who asks (default: user@host).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve read-only, print the plan, revoke "
                                          "nothing (implies --wait).")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run live until its terminal record.")] = False,
    allow_unmatched: Annotated[bool, typer.Option("--allow-unmatched", help="Publish even when no playbook "
                                                  "matches the kind (the run ends exposure.unmatched).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits before exit 3.", min=0.1)] = 120,
    as_json: JsonFlag = False,
) -> int:
    """Publish an exposure by hand: it runs through the same pipeline as detector events."""
    settings = _settings()
    playbooks = _loaded_playbooks(settings.playbooks_dir)
    fields = {"kind": kind, "id": credential_id, "owner": owner, "playbook": playbook, "severity": severity,
              "reason": reason, "dry_run": dry_run, "allow_unmatched": allow_unmatched}
    who = actor or triggers.default_actor()
    # Checked before the secret is asked for: a mistyped kind must not cost pasting the secret first.
    _build(fields, who, playbooks, probe=True)
    secret = _read_secret() if secret_stdin else None
    if secret_stdin and not secret:
        raise UsageProblem("--secret-stdin given but stdin held no secret")
    exposure = _build({**fields, "secret": secret}, who, playbooks)
    assert exposure is not None
    return asyncio.run(_trigger(settings, exposure.id, triggers.encode(exposure), follow_run=wait or dry_run,
                                timeout_s=timeout, as_json=as_json))


def _build(fields: dict[str, Any], actor: str, playbooks: tuple[Playbook, ...], *,
           probe: bool = False) -> Exposure | None:
    """The trigger's exposure (with `probe`, only the checks that need no secret); problems as usage errors."""
    try:
        request = triggers.TriggerRequest.model_validate(fields)
        if probe:
            triggers.check(request, detector=CLI_DETECTOR, playbooks=playbooks)
            return None
        return triggers.build_exposure(request, actor=actor, detector=CLI_DETECTOR, playbooks=playbooks)
    except triggers.UnknownPlaybookName as exc:
        raise UsageProblem(str(exc)) from None
    except triggers.UnmatchedTrigger as exc:
        raise UsageProblem(f"--kind {str(fields['kind']).strip()!r}: {exc} Add --allow-unmatched to publish it "
                           "anyway") from None
    except ValidationError as exc:
        raise UsageProblem(describe_validation_error(exc)) from None


def _vouching_role(settings: Settings) -> Role | None:
    """The CLI vouches for its trigger as a responder (raising its priority) only when it holds the deployment's
    own fingerprint key, as the orchestrator does; it never creates one. Without one the trigger still goes
    (revoking a leaked credential must not wait on a key file) unsigned, at the priority its severity gives,
    and one line on stderr says so and where it looked."""
    from orchestrator import keys

    try:
        keys.install(keys.from_settings(settings, create=False))
    except OrchestratorError as exc:
        print(f"orchestrator: warning: {exc}; publishing unsigned (no responder priority, no brake bypass)",
              file=sys.stderr)
        return None
    return Role.RESPONDER


def _read_secret() -> str:
    if sys.stdin.isatty():  # typed or pasted by a person: do not echo it to the screen
        return getpass.getpass("secret (not echoed): ").strip()
    return sys.stdin.read().strip()


async def _trigger(settings: Settings, exposure_id: str, value: bytes, *, follow_run: bool, timeout_s: float,
                   as_json: bool) -> int:
    role = _vouching_role(settings)
    if not follow_run:
        await triggers.publish_record(settings.bootstrap_servers, settings.exposures_topic, exposure_id, value,
                                      role=role)
        _print_json({"id": exposure_id, "topic": settings.exposures_topic}) if as_json else \
            print(f"published {exposure_id} to {settings.exposures_topic}; follow it with "
                  f"`orchestrator status {exposure_id}`")
        return EXIT_OK
    # A fresh id has no history: only live progress is read, from the audit topic's end as it is before
    # publishing (never the topic from its beginning: that is minutes with months of records).
    positioned = asyncio.Event()
    arrived: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(_stream(settings, exposure_ids=[exposure_id], from_beginning=False,
                                                   positioned=positioned)) as records:
                async for record in records:
                    arrived.put_nowait(record)
        finally:
            arrived.put_nowait(None)

    reader = asyncio.create_task(pump())
    ready = asyncio.create_task(positioned.wait())
    out = live_view.console()
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.wait([reader, ready], return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()  # the reader failed (no broker): its error, as one line
            await triggers.publish_record(settings.bootstrap_servers, settings.exposures_topic, exposure_id, value,
                                          role=role)
            if not as_json:
                print(f"published {exposure_id}; following its audit trail (up to {timeout_s:g}s)", file=out.file,
                      flush=True)
            ended: dict[str, Any] | None = None
            with live_view.printer(out, as_json=as_json) as show:  # the live region closes before the summary
                while (record := await arrived.get()) is not None:
                    show(record)
                    if is_terminal(record):
                        ended = record
                        break
            if ended is not None:
                return _finish(ended, as_json, out)
            reader.result()
    except TimeoutError:
        pass
    finally:
        reader.cancel()
        ready.cancel()
        await asyncio.gather(reader, ready, return_exceptions=True)
    print(f"orchestrator: timed out after {timeout_s:g}s waiting for {exposure_id} to finish; it may still "
          f"complete: `orchestrator status {exposure_id}`", file=sys.stderr)
    return EXIT_TIMEOUT


def _stream(settings: Settings, **options: Any) -> AsyncGenerator[dict[str, Any], None]:
    """The audit stream as the generator it is, so it can be closed (and its consumer stopped) on timeout."""
    return cast(AsyncGenerator[dict[str, Any], None], follow(settings.bootstrap_servers, settings.audit_topic,
                                                              **options))


def _finish(record: dict[str, Any], as_json: bool, out: Console) -> int:
    event = str(record.get("event"))
    if not as_json:
        if event == "run.planned":
            out.print(_plan_table(record.get("plan") or []))
        if not out.is_terminal:  # the live view ended with its closing sentence; pipes keep their last line
            detail = record.get("error") or record.get("reason") or ""
            print(escaping.terminal(f"{event}{': ' + str(detail) if detail else ''}"), file=out.file)
    return EXIT_OK if event in _SUCCESS else EXIT_FAILED


def _plan_table(plan: list[dict[str, Any]]) -> Table:
    table = Table("step", "action", "target", "calls it would make", title="Plan (dry run: nothing was changed)")
    for item in plan:
        table.add_row(*(Text(escaping.terminal(item.get(k))) for k in ("step", "action", "target")),
                      Text("\n".join(escaping.terminal(c) for c in item.get("calls") or [])))
    return table


def _cell(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


@audit_app.command("tail")
def audit_tail(
    keep_following: Annotated[bool, typer.Option("--follow", help="Keep printing new records.")] = False,
    exposure: Annotated[list[str] | None, typer.Option("--exposure", help="Only this exposure (repeatable).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only records from then on: 30s, 15m, 2h, 1d "
                                              "ago, or an ISO 8601 time.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print audit records, readably or as JSON lines; with --follow, until interrupted."""
    settings = _settings()
    after = parse_since(since) if since else None
    asyncio.run(_tail(settings, exposure or None, after, keep_following, as_json))


async def _tail(settings: Settings, exposure_ids: list[str] | None, after: datetime | None, keep_following: bool,
                as_json: bool) -> None:
    # The records already on the topic arrive partition by partition: hold them until the reader has caught
    # up, then print them in time order; what arrives after that is printed as it comes.
    backlog: list[dict[str, Any]] = []
    caught_up = False
    # Lines name their exposure unless only one is followed.
    with_id = exposure_ids is None or len(set(exposure_ids)) != 1
    with live_view.printer(live_view.console(), as_json=as_json, with_id=with_id) as show:

        def catch_up() -> None:
            nonlocal caught_up
            for held in in_time_order(backlog):
                show(held)
            backlog.clear()
            caught_up = True

        stream = _stream(settings, exposure_ids=exposure_ids, idle_timeout_s=None if keep_following else 1.0,
                         on_idle=catch_up)
        async with contextlib.aclosing(stream) as records:
            async for record in records:
                if after is not None and _when(record) < after:
                    continue
                if caught_up:
                    show(record)
                else:
                    backlog.append(record)
        catch_up()


def parse_since(text: str) -> datetime:
    """`30s`, `15m`, `2h`, `1d` ago, or an ISO 8601 time (UTC when it has no offset)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip()
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageProblem(f"--since {text!r}: expected e.g. 15m, 2h, 1d or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(record: dict[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(str(record.get("ts")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@playbooks_app.command("list")
def playbooks_list(as_json: JsonFlag = False) -> None:
    """The loaded playbooks and what each matches."""
    loaded = _loaded_playbooks()
    if as_json:
        _print_json([_describe(p) for p in loaded])
        return
    table = Table("name", "kinds", "severities", "detectors", "steps", "file")
    for p in loaded:
        table.add_row(p.name, ", ".join(p.match.kinds), ", ".join(p.match.severities or ["any"]),
                      ", ".join(p.match.detectors or ["any"]), str(len(p.steps)), Path(p.path).name)
    _console().print(table)


@playbooks_app.command("show")
def playbooks_show(name: Annotated[str, typer.Argument(help="Playbook name.")], as_json: JsonFlag = False) -> None:
    """One playbook: what it matches and each step's action, parameters and condition."""
    loaded = _loaded_playbooks()
    playbook = next((p for p in loaded if p.name == name), None)
    if playbook is None:
        raise UsageProblem(f"unknown playbook {name!r}; known: {', '.join(p.name for p in loaded)}")
    if as_json:
        _print_json(_describe(playbook))
        return
    console = _console()
    heading = Text(escaping.terminal(playbook.name), style="bold")
    heading.append(escaping.terminal_block(
        f"  ({playbook.path})\n{playbook.description.strip()}\nmatch: kinds {', '.join(playbook.match.kinds)}; "
        f"severities {', '.join(playbook.match.severities or ['any'])}; detectors "
        f"{', '.join(playbook.match.detectors or ['any'])}"))
    console.print(heading)
    table = Table("step", "action", "params", "when", "on failure", "retry (attempts)")
    for step in playbook.steps:
        params = ", ".join(f"{k}={v.field if hasattr(v, 'field') else v}" for k, v in step.params.items())
        when = "; ".join(f"{k} in {', '.join(v)}" for k, v in step.when.items()) or "always"
        table.add_row(step.name, step.action, params, when, step.on_failure.value,
                      str(playbook.retry_for(step).max_attempts))
    console.print(table)


def _describe(playbook: Playbook) -> dict[str, Any]:
    return {**playbook.model_dump(mode="json"), "path": playbook.path}


@token_app.command("create")
def api_token_create(
    principal: Annotated[str, typer.Option("--principal", help="Who the token is for (shown as the actor).")],
    role: Annotated[list[Role], typer.Option("--role", help="detector, responder or admin (repeatable).")],
    tokens_file: Annotated[Path | None, typer.Option("--file", help="Also append the entry to this tokens "
                                                     "file (created, mode 600).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a new API token: prints it once, and the tokens-file entry (its hash) to add."""
    token = new_token()
    entry = token_entry(token, principal.strip(), role)
    if tokens_file is not None:
        _append_entry(tokens_file, entry)
    if as_json:
        _print_json({"token": token, "entry": entry, "file": str(tokens_file) if tokens_file else None})
        return
    print(f"API token for {entry['principal']} (roles: {', '.join(entry['roles'])}); shown only now:\n  {token}")
    where = f"added to {tokens_file}" if tokens_file else 'add it to ORCHESTRATOR_API_TOKENS_FILE ({"tokens": [...]})'
    print(f"Entry ({where}):\n  {json.dumps(entry)}")


def _append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Add `entry` to the tokens file, rewritten atomically with mode 0600 (created when absent)."""
    try:
        document: Any = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    except OSError as exc:
        raise OrchestratorError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise OrchestratorError(f"{path}: not JSON ({exc}); fix it or give another --file") from None
    entries = document.get("tokens") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise OrchestratorError(f"{path}: expected {{\"tokens\": [...]}}")
    entries.append(entry)
    try:
        write_private(path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise OrchestratorError(f"{path}: cannot write it ({exc.strerror})") from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str), flush=True)
