"""Run-store commands of `orchestrator`: status, exposures list, db upgrade|rebuild.

They read the store, not the audit topic: answers in milliseconds whatever the history's length, and no
Kafka needed (except `db rebuild`, which reads the audit topic to refill the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from orchestrator import escaping, live_view
from orchestrator.cli import UsageProblem, app
from orchestrator.errors import OrchestratorError
from orchestrator.settings import StoreSettings
from orchestrator.store import EXIT_CODES, AmbiguousPrefix, RunStore, State
from orchestrator.store.engine import SQLITE_FILE

exposures_app = typer.Typer(no_args_is_help=True, help="Exposures in the run store.")
db_app = typer.Typer(no_args_is_help=True, help="The run store's database.")
app.add_typer(exposures_app, name="exposures")
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
#: `status` exit code while the exposure has not ended.
EXIT_RUNNING = 4


@contextmanager
def opened(*, migrate: bool = False, must_exist: bool = True) -> Iterator[RunStore]:
    """The configured store; its failures as one-line errors that never show the database URL."""
    settings = StoreSettings.from_env()
    where = "the PostgreSQL run store (ORCHESTRATOR_DATABASE_URL)" if settings.database_url else \
        f"the run store {settings.data_dir / SQLITE_FILE}"
    if must_exist and settings.database_url is None and not (settings.data_dir / SQLITE_FILE).exists():
        raise OrchestratorError(f"no run store at {settings.data_dir / SQLITE_FILE}: set ORCHESTRATOR_DATA_DIR "
                                "(or ORCHESTRATOR_DATABASE_URL) as the orchestrator has it")
    try:
        store = RunStore.open(settings, migrate=migrate)
    except SQLAlchemyError as exc:
        raise OrchestratorError(f"cannot open {where}: {type(exc).__name__}") from None
    try:
        yield store
    except SQLAlchemyError as exc:
        hint = "; run `orchestrator db upgrade`" if "no such table" in str(exc) or "does not exist" in str(exc) \
            else ""
        raise OrchestratorError(f"cannot read {where}: {type(exc).__name__}{hint}") from None
    finally:
        store.engine.dispose()


@app.command()
def status(
    exposure_id: Annotated[str, typer.Argument(help="The exposure's id, or a prefix matching only one.")],
    keep_following: Annotated[bool, typer.Option("--follow", help="While it runs, show its steps live (from the "
                                                 "audit topic) until it ends.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Where an exposure stands, from the run store. Exit 0 completed/planned, 1 failed/rejected/unmatched,
    4 still running."""
    with opened() as store:
        try:
            rows = store.lookup_sync(exposure_id)
        except AmbiguousPrefix as exc:
            raise UsageProblem(escaping.terminal(exc)) from None
    if not rows:
        raise OrchestratorError(f"no exposure {escaping.terminal(repr(exposure_id))} in the run store")
    latest = rows[0]
    state = State(latest["state"])
    if keep_following and not state.terminal:
        raise typer.Exit(asyncio.run(_follow(str(latest["id"]), as_json)))
    if as_json:
        print(json.dumps({**_public(latest), "done": state.terminal, "runs": [_public(r) for r in rows[1:]]},
                         default=_jsonable))
    else:
        _print_status(latest, len(rows))
    raise typer.Exit(EXIT_CODES[state])


async def _follow(exposure_id: str, as_json: bool) -> int:
    """Follow one exposure's audit trail until its terminal record; the exit code of the state it ends in."""
    from orchestrator.audit import AuditEvent
    from orchestrator.audit_stream import follow, is_terminal
    from orchestrator.settings import Settings
    from orchestrator.store.states import EVENT_STATES

    settings = Settings.from_env()
    stream = follow(settings.bootstrap_servers, settings.audit_topic, exposure_ids=[exposure_id])
    async with contextlib.aclosing(stream) as records:  # type: ignore[type-var]
        with live_view.printer(live_view.console(), as_json=as_json) as show:
            async for record in records:
                show(record)
                if is_terminal(record):
                    return EXIT_CODES[EVENT_STATES[AuditEvent(record["event"])]]
    return EXIT_RUNNING


def _public(row: dict[str, Any]) -> dict[str, Any]:
    hidden = {"row_id", "dedup_key", "source_topic", "source_partition", "source_offset"}
    return {k: v for k, v in row.items() if k not in hidden}


def _cell(value: Any) -> Text:
    """A table cell from the store (event or provider text): escaped, and never read as markup."""
    return Text(escaping.terminal("" if value is None else value))


def _print_status(row: dict[str, Any], runs: int) -> None:
    console = live_view.console()
    table = Table("step", "action", "state", "attempts", "finished", "error",
                  title=Text(f"Exposure {escaping.terminal(row['id'])}"))
    for step in row.get("steps", []):
        table.add_row(*(_cell(step[k]) for k in ("step", "action", "state", "attempts")),
                      _cell(_when(step["finished_at"])), _cell(step["error"]))
    if row.get("steps"):
        console.print(table)
    facts = [f"state: {row['state']}", f"kind {row['credential_kind']}", f"target {row['target']}"]
    facts += [f"{name} {row[key]}" for name, key in (("playbook", "playbook"), ("run", "run_id"),
                                                     ("by", "actor"), ("detector", "detector")) if row.get(key)]
    console.print(_cell(" — ".join(facts)), soft_wrap=True)
    console.print(_cell(f"received {_when(row['received_at'])}, finished {_when(row['finished_at']) or '-'}"
                        + (f"; error: {row['error']}" if row.get("error") else "")
                        + ("; this id was used before with other content" if row.get("id_reused") else "")
                        + (f"; {runs - 1} earlier report(s) with other content" if runs > 1 else "")),
                  soft_wrap=True)


@exposures_app.command("list")
def exposures_list(
    state: Annotated[str | None, typer.Option("--state", help="Only this state.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this credential kind.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this credential owner.")] = None,
    detector: Annotated[str | None, typer.Option("--detector", help="Only this detector.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Received since: 30s, 15m, 2h, 1d ago, or an "
                                              "ISO 8601 time.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Recent exposures, newest first."""
    from orchestrator.responder import parse_since

    if state is not None and state not in State._value2member_map_:
        raise UsageProblem(f"--state {state!r}: expected one of {', '.join(s.value for s in State)}")
    after = parse_since(since) if since else None
    with opened() as store:
        rows, _ = store.recent_sync(state=state, kind=kind, owner=owner, detector=detector, since=after, limit=limit)
    if as_json:
        for row in rows:
            print(json.dumps(_public(row), default=_jsonable))
        return
    table = Table("received", "id", "kind", "target", "state", "playbook", "error")
    for row in rows:
        table.add_row(_cell(_when(row["received_at"])),
                      *(_cell(row[k]) for k in ("id", "credential_kind", "target", "state", "playbook", "error")))
    live_view.console().print(table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the run store or migrate it to this version's schema (the orchestrator also does at start)."""
    with opened(migrate=True, must_exist=False) as store:
        print(f"run store up to date ({store.engine.dialect.name}): {store.count()} exposures")


@db_app.command("rebuild")
def db_rebuild() -> None:
    """Refill the run store from the audit topic (after losing it): adds the exposures it does not know."""
    from orchestrator.audit_stream import follow
    from orchestrator.settings import Settings
    from orchestrator.store.rebuild import fold

    settings = Settings.from_env()

    async def read() -> list[dict[str, Any]]:
        return [record async for record in follow(settings.bootstrap_servers, settings.audit_topic,
                                                  idle_timeout_s=2.0)]

    records = asyncio.run(read())
    rows = fold(records)
    with opened(migrate=True, must_exist=False) as store:
        added = store.import_rows(rows)
    print(f"read {len(records)} audit records from {settings.audit_topic}: {len(rows)} exposures, {added} added")


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") + "Z" if moment else ""


def _jsonable(value: Any) -> str:
    return value.isoformat() + "Z" if isinstance(value, datetime) else str(value)
