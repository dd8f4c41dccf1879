"""`orchestrator replay (--exposure ID | --state failed --since T) [--dry-run]`: run failed exposures again.

Reads the run store to choose and check what to replay, then publishes one replay request per exposure on
the exposures topic; the orchestrator's consumer runs them (`orchestrator.replaying`). `--dry-run` only
says what each replay would skip and run, or why it cannot run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError

from orchestrator import kafka, replay, triggers
from orchestrator.cli import EXIT_FAILED, EXIT_OK, UsageProblem, app
from orchestrator.errors import ConfigurationError, OrchestratorError
from orchestrator.store import AmbiguousPrefix

#: Most exposures one `--state failed` replay asks for.
MAX_REPLAYS = 1000


@app.command("replay")
def replay_command(
    exposure: Annotated[str | None, typer.Option("--exposure", help="The failed exposure's id (or a unique "
                                                 "prefix).")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Every exposure in this state (only `failed`) "
                                              "received since --since.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="With --state: 30s, 15m, 2h, 1d ago, or an "
                                              "ISO 8601 time.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be skipped and run; publish "
                                          "nothing.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the audit trail.")] = "replayed from "
                                                                                                  "the command line",
    actor: Annotated[str | None, typer.Option("--actor", help="Who asks (default: user@host).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per exposure.")] = False,
) -> int:
    """Run failed exposures again, as new runs that skip the steps already succeeded. Exit 1 when one cannot."""
    from orchestrator.responder import _loaded_playbooks, _settings, parse_since
    from orchestrator.store_cli import opened

    if (exposure is None) == (state is None):
        raise UsageProblem("give either --exposure ID or --state failed --since T")
    if state is not None and state != "failed":
        raise UsageProblem(f"--state {state!r}: only failed exposures can be replayed (--state failed)")
    if state is not None and since is None:
        raise UsageProblem("--state failed needs --since T (e.g. --since 1h), so a replay never sweeps all history")
    after = parse_since(since) if since else None
    with opened() as store:
        if exposure is not None:
            try:
                found = store.lookup_sync(exposure)
            except AmbiguousPrefix as exc:
                raise UsageProblem(str(exc)) from None
            if not found:
                raise OrchestratorError(f"no exposure {exposure!r} in the run store")
            rows = found[:1]  # the latest report of the id
        else:
            rows, _ = store.recent_sync(state="failed", since=after, limit=MAX_REPLAYS)
            rows = [r for r in (store.row_sync(r["row_id"]) for r in rows) if r is not None]
    plans = [replay.plan(row, _loaded_playbooks()) for row in rows]
    if dry_run:
        for p in plans:
            _print_plan(p, as_json, verb="would replay")
        return EXIT_OK if all(p.possible for p in plans) else EXIT_FAILED
    settings = _settings()
    who = actor or triggers.default_actor()
    by_row = {r["row_id"]: r for r in rows}
    requests = [replay.new_request(by_row[p.row_id], actor=who, reason=reason, at=datetime.now(UTC))
                for p in plans if p.possible]
    asyncio.run(_publish(settings.bootstrap_servers, settings.exposures_topic, requests))
    for p in plans:
        _print_plan(p, as_json, verb="replay requested for")
    if not plans and not as_json:
        print("no failed exposures in that period")
    return EXIT_OK if all(p.possible for p in plans) else EXIT_FAILED


async def _publish(bootstrap: str, topic: str, requests: list[replay.ReplayRequest]) -> None:
    """Publish the requests through one producer; errors as one line."""
    producer = kafka.make_producer(bootstrap)
    try:
        await kafka.start(producer, bootstrap)
        for request in requests:
            await triggers.send(producer, topic, request.exposure_id, replay.encode(request))
    except KafkaError as exc:
        raise ConfigurationError(f"could not publish to {topic} on {bootstrap}: {type(exc).__name__}") from None
    finally:
        await producer.stop()


def _print_plan(plan: replay.Plan, as_json: bool, *, verb: str) -> None:
    if as_json:
        print(json.dumps(plan.describe()), flush=True)
        return
    if not plan.possible:
        print(f"{plan.exposure_id}: {plan.problem}", flush=True)
        return
    parts: list[Any] = [f"{verb} {plan.exposure_id} ({plan.playbook}):"]
    parts.append(f"skip {', '.join(plan.skip)};" if plan.skip else "no step to skip;")
    parts.append(f"run {', '.join(plan.run)};" if plan.run else "nothing left to run;")
    parts.append("from the original record in " + plan.source if plan.source != "store" else
                 "rebuilt from the run store")
    print(" ".join(parts), flush=True)
