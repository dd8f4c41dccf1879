"""Responder CLI commands as a person runs them: real subprocesses against the broker, the Okta emulator and
an orchestrator consuming in this process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pexpect
import pytest

from orchestrator import kafka
from orchestrator.auth import load_tokens
from orchestrator.embedded import free_port
from tests.conftest import Emulator, okta_token
from tests.support import Harness, collect, end_offsets, events_of, fresh_settings, read_all
from tests.terminal import COLUMNS, GREEN, received, screen_lines, spawn, terminal

__all__ = ["terminal"]  # the fixture, imported for the live-view test

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))


@dataclass(frozen=True)
class Result:
    """What a finished CLI process left behind."""

    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module: each test works on users and tokens of its own."""
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token)
    # Its fingerprint key beside its run store, where the commands (ORCHESTRATOR_DATA_DIR) find it and sign.
    async with Harness(replace(settings, data_dir=settings.store.data_dir)) as running:
        yield running


def cli_env(harness: Harness, **overrides: str) -> dict[str, str]:
    """The environment `orchestrator` needs to reach this harness's broker and topics."""
    settings = harness.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "OKTA_CLIENT_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
               ORCHESTRATOR_EXPOSURES_TOPIC=settings.exposures_topic,
               ORCHESTRATOR_AUDIT_TOPIC=settings.audit_topic, ORCHESTRATOR_DLQ_TOPIC=settings.dlq_topic,
               ORCHESTRATOR_DATA_DIR=str(settings.store.data_dir))
    env.update(overrides)
    return env


async def cli(*args: str, env: dict[str, str], stdin: str | None = None, timeout_s: float = 60) -> Result:
    """Run `orchestrator ARGS` without blocking the event loop (the in-process orchestrator keeps consuming)."""
    process = await asyncio.create_subprocess_exec(
        ORCHESTRATOR, *args, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(timeout_s):
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def _user(okta: Emulator) -> str:
    login = f"oncall.{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": [f"102{secrets.token_hex(8)}", f"102{secrets.token_hex(8)}"],
                          "factors": 2}]})
    return login


def _state_user(okta: Emulator, login: str) -> dict[str, Any]:
    users: list[dict[str, Any]] = okta.control("GET", "state")["users"]
    return next(u for u in users if u["login"] == login)


def _one_line_error(result: Result) -> None:
    assert result.out == ""
    assert result.err.startswith("orchestrator: ") and result.err.count("\n") == 1
    assert "Traceback" not in result.err


async def test_trigger_wait_follows_the_run_to_completion(harness: Harness, okta: Emulator) -> None:
    """--wait shows each step live and exits 0 on run.completed; actor and reason reach the audit trail."""
    login = _user(okta)
    result = await cli("trigger", "--kind", "okta.user", "--owner", login, "--reason", "laptop stolen",
                       "--actor", "alice@oncall", "--wait", "--timeout", "30", env=cli_env(harness))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [w for line in lines[1:-1] for w in line.split() if w.startswith(("step.", "run."))] == [
        "run.started", "step.skipped", "step.started", "step.succeeded", "step.started", "step.succeeded",
        "run.completed"]
    assert lines[-1] == "run.completed"
    assert all(s["revoked"] for s in _state_user(okta, login)["sessions"])
    exposure_id = lines[0].split()[1].rstrip(";")
    trail = (await harness.collect(exposure_id))[exposure_id]
    assert {r["actor"] for r in trail} == {"alice@oncall"}
    assert trail[1]["reason"] == "laptop stolen" and trail[0]["detector"] == "cli"


async def test_trigger_wait_exits_1_when_the_run_fails(harness: Harness) -> None:
    """A run that fails (the owner does not exist: 404) makes --wait exit 1 after run.failed."""
    result = await cli("trigger", "--kind", "okta.session", "--owner", "nobody.here@example.com", "--wait",
                       "--timeout", "30", env=cli_env(harness))
    assert result.code == 1
    assert "step.failed" in result.out and result.out.splitlines()[-1].startswith("run.failed: failed steps")


async def test_trigger_wait_exits_3_on_timeout(harness: Harness) -> None:
    """Nobody consumes the topic: --wait gives up after --timeout, says so on one line and exits 3."""
    unconsumed = f"test.{secrets.token_hex(4)}.unconsumed"
    await kafka.ensure_topics(harness.settings.bootstrap_servers, [unconsumed], partitions=1)
    result = await cli("trigger", "--kind", "okta.user", "--owner", "x@example.com", "--wait", "--timeout", "1.5",
                       env=cli_env(harness, ORCHESTRATOR_EXPOSURES_TOPIC=unconsumed))
    assert result.code == 3
    assert "timed out after 1.5s" in result.err and "Traceback" not in result.err


async def test_dry_run_prints_the_plan_and_revokes_nothing(harness: Harness, okta: Emulator) -> None:
    """--dry-run ends in run.planned, prints each step's calls as a table, and leaves the user untouched."""
    login = _user(okta)
    before = _state_user(okta, login)
    result = await cli("trigger", "--kind", "okta.user", "--owner", login, "--severity", "critical", "--dry-run",
                       env=cli_env(harness))
    assert result.code == 0, result.err
    assert "Plan (dry run" in result.out and result.out.splitlines()[-1] == "run.planned"
    user_id = before["id"]
    for call in (f"DELETE /api/v1/users/{user_id}/sessions", f"/api/v1/users/{user_id}/lifecycle/suspend"):
        assert call in result.out
    after = _state_user(okta, login)
    assert after["sessions"] == before["sessions"] and after["status"] == "ACTIVE" and after["factors"] == 2


async def test_secret_from_stdin_is_used_but_never_shown_or_audited(harness: Harness, okta: Emulator) -> None:
    """--secret-stdin: the token is revoked with it, yet it is in neither the output nor the audit topic."""
    value = okta_token()
    login = _user(okta)
    token_id = okta.seed({"api_tokens": [{"name": "ci", "login": login, "token": value}]})["api_tokens"][0]["id"]
    result = await cli("trigger", "--kind", "okta.api_token", "--secret-stdin", "--wait", "--json",
                       env=cli_env(harness), stdin=value + "\n")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert records[-1]["event"] == "run.completed"
    tokens = okta.control("GET", "state")["api_tokens"]
    assert next(t for t in tokens if t["id"] == token_id)["revoked"] is True
    audit = await read_all(harness.settings.bootstrap_servers, harness.settings.audit_topic)
    assert audit and all(value.encode() not in r.value for r in audit)
    assert value not in result.out + result.err


async def test_trigger_status_and_audit_tail_tell_the_same_story(harness: Harness, okta: Emulator) -> None:
    """trigger --json prints the id; status (from the run store) and audit tail (readable and --json) show its
    history."""
    login = _user(okta)
    env = cli_env(harness)
    published = await cli("trigger", "--kind", "okta.session", "--owner", login, "--json", env=env)
    assert published.code == 0, published.err
    exposure_id = json.loads(published.out)["id"]
    trail = (await collect(harness.settings.bootstrap_servers, harness.settings.audit_topic, [exposure_id]))
    expected = events_of(trail[exposure_id])
    status = await cli("status", exposure_id, "--json", env=env)
    document = json.loads(status.out)
    assert status.code == 0 and document["state"] == "completed" and document["done"] is True
    assert document["terminal_event"] == "run.completed" and document["id"] == exposure_id
    succeeded = [e for e in expected if e == "step.succeeded"]
    assert [s["state"] for s in document["steps"] if s["state"] == "succeeded"] == ["succeeded"] * len(succeeded)
    readable = await cli("status", exposure_id[:-4], env=env)  # a unique prefix will do
    assert "state: completed" in readable.out and "okta.clear_user_sessions" in readable.out
    tail = await cli("audit", "tail", "--exposure", exposure_id, "--since", "1h", "--json", env=env)
    assert [json.loads(line)["event"] for line in tail.out.splitlines()] == expected
    later = await cli("audit", "tail", "--exposure", exposure_id, "--since", "2999-01-01T00:00:00", env=env)
    assert later.code == 0 and later.out == ""
    unknown = await cli("status", "no-such-exposure", env=env)
    assert unknown.code == 1 and "no exposure 'no-such-exposure' in the run store" in unknown.err


async def test_unknown_playbook_is_a_usage_error_and_publishes_nothing(harness: Harness) -> None:
    """--playbook naming no loaded playbook: one line, exit 2, and nothing reaches the exposures topic."""
    before = await end_offsets(harness.settings)
    result = await cli("trigger", "--kind", "okta.user", "--owner", "a@example.com", "--playbook", "nope",
                       env=cli_env(harness))
    assert result.code == 2
    _one_line_error(result)
    assert "unknown playbook 'nope'" in result.err
    assert await end_offsets(harness.settings) == before


async def test_people_get_one_line_errors(harness: Harness) -> None:
    """A missing flag exits 2; an unreachable broker or no KAFKA_BOOTSTRAP_SERVERS exits 1: one line each."""
    missing_flag = await cli("trigger", "--owner", "a@example.com", env=cli_env(harness))
    assert missing_flag.code == 2 and "--kind" in missing_flag.err
    _one_line_error(missing_flag)
    unreachable = await cli("audit", "tail", env=cli_env(harness, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"))
    assert unreachable.code == 1 and "cannot reach Kafka" in unreachable.err
    _one_line_error(unreachable)
    unset = await cli("audit", "tail", env=cli_env(harness, KAFKA_BOOTSTRAP_SERVERS=""))
    assert unset.code == 1 and "KAFKA_BOOTSTRAP_SERVERS is not set" in unset.err
    _one_line_error(unset)


async def test_playbooks_list_and_show(harness: Harness) -> None:
    """playbooks list/show describe the loaded playbooks; show of an unknown name exits 2."""
    env = cli_env(harness)
    listed = await cli("playbooks", "list", "--json", env=env)
    assert {"okta-user", "okta-session", "okta-api-token"} <= {p["name"] for p in json.loads(listed.out)}
    shown = await cli("playbooks", "show", "okta-user", "--json", env=env)
    assert [s["action"] for s in json.loads(shown.out)["steps"]] == [
        "okta.suspend_user", "okta.clear_user_sessions", "okta.reset_factors"]
    readable = await cli("playbooks", "show", "okta-user", env=env)
    assert "severity in critical" in readable.out
    unknown = await cli("playbooks", "show", "nope", env=env)
    assert unknown.code == 2
    _one_line_error(unknown)


async def test_api_token_create_stores_only_the_hash(harness: Harness, tmp_path: Path) -> None:
    """api-token create prints the token once and writes only its hash, which then authenticates it."""
    tokens_file = tmp_path / "tokens.json"
    result = await cli("api-token", "create", "--principal", "pager-bot", "--role", "responder", "--role",
                       "detector", "--file", str(tokens_file), "--json", env=cli_env(harness))
    assert result.code == 0, result.err
    token = json.loads(result.out)["token"]
    assert token not in tokens_file.read_text()
    principal = load_tokens(tokens_file).authenticate(token)
    assert principal is not None and principal.name == "pager-bot"
    assert {r.value for r in principal.roles} == {"responder", "detector"}
    assert oct(tokens_file.stat().st_mode & 0o777) == "0o600"


async def test_trigger_wait_in_a_terminal_ends_with_what_was_done(harness: Harness, okta: Emulator,
                                                                   terminal: list[pexpect.spawn]) -> None:
    """`trigger --wait` on a 100-column terminal: green steps and the closing sentence naming the user; a dry
    run is worded as a plan ("would suspend the user") and ends saying nothing was changed."""
    login = f"live.{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": [f"102{secrets.token_hex(8)}"], "factors": 1}]})
    env = {**cli_env(harness), "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": "40"}
    children = []
    for mode in ("--dry-run", "--wait"):  # one after the other: the plan must see the user still active
        child = spawn(terminal, env, "trigger", "--kind", "okta.user", "--owner", login, "--severity", "critical",
                      mode, "--timeout", "30")
        await asyncio.to_thread(child.expect, pexpect.EOF)
        child.close()
        children.append(child)
    plan, real = children
    planned, done = received(plan), received(real)
    assert plan.exitstatus == 0 and real.exitstatus == 0, (planned, done)
    assert "→ suspend          would suspend the user · user:" in planned and "suspended" not in planned
    assert f"Dry run for {login}: would suspend the user, would clear the sessions and would reset the MFA factors;" \
        in " ".join(" ".join(screen_lines(planned)).split())
    assert f"{GREEN}" in done and "✓ suspend          suspended the user · user:" in done
    sentence = " ".join(" ".join(screen_lines(done)).split())
    assert re.search(f"Suspended the user, cleared the sessions and reset the MFA factors for {re.escape(login)} "
                     r"in [\d.]+ m?s; run [0-9a-f]{8}…", sentence)
    assert max(len(line) for line in screen_lines(planned + done)) <= COLUMNS
