"""The run store in the running orchestrator: identity by content, restarts that end nothing twice, resumption."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from datetime import timedelta
from typing import Any

from orchestrator.audit_stream import follow, is_terminal
from orchestrator.events import Exposure
from orchestrator.execution import ALREADY_SUCCEEDED
from orchestrator.settings import Settings, StoreSettings
from orchestrator.store import ClaimOutcome, RunStore, StepRow, content_of
from orchestrator.store.store import utcnow
from tests import postgres
from tests.conftest import Emulator
from tests.support import Harness, committed_offsets, end_offsets, events_of, exposure, fresh_settings, run_cli


def _user(okta: Emulator) -> str:
    login = f"store.{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": 1}]})
    return login


async def _trail(settings: Settings, exposure_id: str, *, linger_s: float = 1.5) -> list[dict[str, Any]]:
    """Every audit record of the id so far (read until the topic is quiet for `linger_s`)."""
    return [r async for r in follow(settings.bootstrap_servers, settings.audit_topic, exposure_ids=[exposure_id],
                                    idle_timeout_s=linger_s)]


async def _all_committed(settings: Settings) -> None:
    async with asyncio.timeout(30):
        while True:
            ends, committed = await end_offsets(settings), await committed_offsets(settings)
            if {p: committed.get(p) for p in ends} == ends:
                return
            await asyncio.sleep(0.3)


async def test_an_id_taken_first_by_other_content_does_not_stop_the_real_exposure(bootstrap: str,
                                                                                  okta: Emulator) -> None:
    """{"id": X, kind zzz} first, then the real critical exposure with id X: the real one runs, its records say
    the id was reused."""
    login = _user(okta)
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token)
    real = exposure("okta.session", credential={"owner": login}, severity="critical")
    squatter = {"id": real["id"], "credential": {"kind": "zzz", "id": "whatever"}}
    async with Harness(settings) as harness:
        await harness.publish(squatter, real)
        trail = await _wait_for_terminals(settings, real["id"], 2)
    terminals = [r for r in trail if is_terminal(r)]
    assert [r["event"] for r in terminals] == ["exposure.unmatched", "run.completed"]
    assert terminals[1]["id_reused"] is True and "id_reused" not in terminals[0]


async def test_a_restart_redelivering_a_finished_exposure_writes_no_second_terminal_record(
        bootstrap: str, okta: Emulator) -> None:
    """The group's offsets are lost (a new group reads from the start): the store knows the record ended."""
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token)
    event = exposure("okta.session", credential={"owner": _user(okta)})
    async with Harness(settings) as harness:
        await harness.run(event)
    again = dataclasses.replace(settings, group_id=settings.group_id + "-again")
    async with Harness(again):
        await _all_committed(again)
    trail = await _trail(settings, event["id"])
    assert [r["event"] for r in trail if is_terminal(r)] == ["run.completed"]
    assert events_of(trail).count("exposure.received") == 1


async def test_a_run_whose_owner_died_is_resumed_skipping_the_steps_that_succeeded(bootstrap: str,
                                                                                  okta: Emulator) -> None:
    """Another instance claimed it, stored a succeeded step and died (its lease expired): this one resumes."""
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token)
    event = exposure("okta.session", credential={"owner": _user(okta)})
    dead = RunStore.open(settings.store, owner="dead-instance")
    claim = await dead.claim(content_of(Exposure.model_validate(event)),
                             now=utcnow() - dead.lease - timedelta(seconds=5))
    dead.started(claim.row_id, run_id="first-run", playbook="okta-session")
    dead.step(claim.row_id, "first-run", StepRow("clear-owner-sessions", "okta.clear_user_sessions", "succeeded", 1))
    await dead.close()
    async with Harness(settings) as harness:
        trail = (await harness.run(event))[event["id"]]
    assert trail[0]["event"] == "exposure.received" and trail[0]["resumed"] is True
    skipped = [r for r in trail if r["event"] == "step.skipped"]
    assert [(r["step"], r["reason"]) for r in skipped] == [("clear-owner-sessions", ALREADY_SUCCEEDED)]
    assert "step.started" not in events_of(trail) and events_of(trail)[-1] == "run.completed"
    reader = RunStore.open(settings.store, migrate=False)
    [row] = await reader.lookup(event["id"])
    await reader.close()
    assert row["state"] == "completed" and row["claimed_by"] is None


async def _wait_for_terminals(settings: Settings, exposure_id: str, count: int) -> list[dict[str, Any]]:
    trail: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async for record in follow(settings.bootstrap_servers, settings.audit_topic, exposure_ids=[exposure_id]):
            trail.append(record)
            if sum(map(is_terminal, trail)) == count:
                return trail
    return trail


async def test_a_lost_store_is_rebuilt_from_the_audit_topic(bootstrap: str, okta: Emulator) -> None:
    """`orchestrator db rebuild` after the store file is deleted: status answers again, and the rebuilt store
    still knows the exposure ended (a redelivery would be a duplicate)."""
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token)
    done = exposure("okta.session", credential={"owner": _user(okta)})
    unmatched = exposure("nobody.knows", credential={"id": "n1"})
    async with Harness(settings) as harness:
        await harness.run(done, unmatched)
        await _store_has_ended(settings, done["id"], unmatched["id"])
    for leftover in settings.store.data_dir.glob("orchestrator.db*"):
        leftover.unlink()
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "ORCHESTRATOR_AUDIT_TOPIC": settings.audit_topic,
           "ORCHESTRATOR_DATA_DIR": str(settings.store.data_dir)}
    rebuilt = await asyncio.to_thread(run_cli, "db", "rebuild", env=env)
    assert rebuilt.returncode == 0 and "2 added" in rebuilt.stdout, rebuilt.stderr
    status = await asyncio.to_thread(run_cli, "status", done["id"], "--json", env=env)
    document = json.loads(status.stdout)
    assert status.returncode == 0 and document["terminal_event"] == "run.completed"
    assert [(s["step"], s["state"]) for s in document["steps"]] == [("clear-owner-sessions", "succeeded")]
    store = RunStore.open(settings.store, migrate=False)
    again = await store.claim(content_of(Exposure.model_validate(done)))
    await store.close()
    assert again.outcome is ClaimOutcome.DUPLICATE


async def _store_has_ended(settings: Settings, *exposure_ids: str) -> None:
    store = RunStore.open(settings.store, migrate=False)
    try:
        async with asyncio.timeout(10):
            for exposure_id in exposure_ids:
                while True:
                    rows = await store.lookup(exposure_id)
                    if rows and rows[0]["finished_at"] is not None:
                        break
                    await asyncio.sleep(0.1)
    finally:
        await store.close()


async def test_runs_interrupted_by_shutdown_end_once_resumed_after_the_restart(bootstrap: str,
                                                                              okta_clean: Emulator) -> None:
    """A stop while runs are still waiting for a slow Okta: no terminal record for them (they did not end), their
    claims released; the restart resumes them at once and each ends exactly once."""
    logins = [_user(okta_clean) for _ in range(3)]
    settings = fresh_settings(bootstrap, okta_clean.url, okta_clean.admin_token, drain_timeout_s=0.5,
                              step_timeout_s=30.0)
    events = [exposure("okta.session", credential={"owner": login}) for login in logins]
    okta_clean.control("PUT", "latency", {"ms": 5000})
    try:
        async with Harness(settings) as harness:
            await harness.publish(*events)
            async with asyncio.timeout(30):
                started = set()
                async for record in follow(settings.bootstrap_servers, settings.audit_topic):
                    if record["event"] == "step.started":
                        started.add(record["exposure_id"])
                    if len(started) == len(events):
                        break
    finally:
        okta_clean.control("PUT", "latency", {"ms": 0})
    before = [r for e in events for r in await _trail(settings, e["id"], linger_s=0.5)]
    assert not any(is_terminal(r) for r in before), "a run ended before the stop"
    async with Harness(settings) as harness:
        await harness.collect(*(e["id"] for e in events))
    for event in events:
        trail = await _trail(settings, event["id"], linger_s=0.5)
        assert [r["event"] for r in trail if is_terminal(r)] == ["run.completed"], event["id"]
        received = [r.get("resumed") for r in trail if r["event"] == "exposure.received"]
        assert received == [None, True], event["id"]


async def test_a_nul_in_a_stored_field_is_rejected_not_retried_forever(bootstrap: str, okta: Emulator,
                                                                       postgres_server: str) -> None:
    """With PostgreSQL, `{"id": "…\\u0000…"}` or an owner with a NUL used to fail every claim (store.claim_failed
    again and again, the partition stuck): now such a record is rejected and the next one runs."""
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token,
                              store=StoreSettings(database_url=postgres.fresh_database(postgres_server)))
    bad_id = {"id": f"nul-{secrets.token_hex(4)}\u0000x", "credential": {"kind": "zzz", "owner": "a"}}
    bad_owner = {"id": f"nul-{secrets.token_hex(4)}", "credential": {"kind": "zzz", "owner": "a\u0000b"}}
    good = exposure("zzz", credential={"owner": "someone"})
    async with Harness(settings) as harness:
        trails = await harness.run(bad_id, bad_owner, good, timeout_s=20)
    assert [r["event"] for r in trails[bad_id["id"]] if is_terminal(r)] == ["exposure.rejected"]
    assert [r["event"] for r in trails[bad_owner["id"]] if is_terminal(r)] == ["exposure.rejected"]
    assert [r["event"] for r in trails[good["id"]] if is_terminal(r)] == ["exposure.unmatched"]
