"""`orchestrator run` as a real process: SIGTERM drains and commits; a crash before commit redelivers, loses nothing."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from orchestrator.audit_stream import follow, is_terminal
from orchestrator.settings import Settings
from tests.conftest import Emulator
from tests.support import (
    collect,
    committed_offsets,
    end_offsets,
    events_of,
    exposure,
    fresh_settings,
    orchestrator_process,
    publish,
    roomy_rate_limits,
)


async def _wait_for_all(settings: Settings, ids: list[str], event: str, timeout_s: float = 30.0) -> None:
    """Return once every id has an audit record `event`."""
    waiting = set(ids)
    async with asyncio.timeout(timeout_s):
        async for record in follow(settings.bootstrap_servers, settings.audit_topic, exposure_ids=ids):
            if record["event"] == event:
                waiting.discard(record["exposure_id"])
                if not waiting:
                    return


async def _exit_code(process: subprocess.Popen[bytes], timeout_s: float = 40.0) -> int:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        assert time.monotonic() < deadline, "orchestrator did not exit"
        await asyncio.sleep(0.1)
    return process.returncode


async def _assert_all_committed(settings: Settings) -> None:
    ends, committed = await end_offsets(settings), await committed_offsets(settings)
    assert sum(ends.values()) > 0
    assert {p: committed.get(p) for p in ends} == ends, committed


def _batch(okta: Emulator, count: int) -> list[dict[str, Any]]:
    logins = [f"shutdown.{secrets.token_hex(4)}@example.com" for _ in range(count)]
    okta.seed({"users": [{"login": login, "sessions": 1} for login in logins]})
    return [exposure("okta.session", credential={"owner": login}) for login in logins]


async def test_sigterm_drains_in_flight_runs_commits_and_exits_0(bootstrap: str, okta_clean: Emulator,
                                                                 tmp_path: Path) -> None:
    """SIGTERM with runs in flight: they finish with their audit records, offsets are committed, exit code 0."""
    settings = fresh_settings(bootstrap, okta_clean.url, okta_clean.admin_token)
    events = _batch(okta_clean, 20)
    ids = [e["id"] for e in events]
    with roomy_rate_limits(okta_clean), orchestrator_process(settings, okta_clean, tmp_path / "run.log") as process:
        okta_clean.control("PUT", "latency", {"ms": 1000})
        await publish(bootstrap, settings.exposures_topic, events)
        await _wait_for_all(settings, ids, "step.started")
        process.send_signal(signal.SIGTERM)
        assert await _exit_code(process) == 0, (tmp_path / "run.log").read_text()
    trails = await collect(bootstrap, settings.audit_topic, ids, timeout_s=5, linger_s=0.5)
    assert {events_of(trails[i])[-1] for i in ids} == {"run.completed"}
    assert min(len(t) for t in trails.values()) == 5
    await _assert_all_committed(settings)


async def test_a_crash_before_commit_is_redelivered_and_completes(bootstrap: str, okta_clean: Emulator,
                                                                  tmp_path: Path) -> None:
    """SIGKILL with runs in flight: a new process in the same group redelivers them and every one completes."""
    settings = fresh_settings(bootstrap, okta_clean.url, okta_clean.admin_token)
    events = _batch(okta_clean, 20)
    ids = [e["id"] for e in events]
    with roomy_rate_limits(okta_clean):
        with orchestrator_process(settings, okta_clean, tmp_path / "first.log") as first:
            okta_clean.control("PUT", "latency", {"ms": 1500})
            await publish(bootstrap, settings.exposures_topic, events)
            await _wait_for_all(settings, ids, "step.started")
            first.kill()
            first.wait()
        assert sum(max(0, o) for o in (await committed_offsets(settings)).values()) < len(events)  # work was lost
        okta_clean.control("PUT", "latency", {"ms": 0})
        with orchestrator_process(settings, okta_clean, tmp_path / "second.log") as second:
            trails = await collect(bootstrap, settings.audit_topic, ids, timeout_s=60, linger_s=1.0)
            await asyncio.sleep(1.5)  # past one commit interval
            second.send_signal(signal.SIGTERM)
            assert await _exit_code(second) == 0
    for exposure_id in ids:
        terminals = [e for e in events_of(trails[exposure_id]) if is_terminal({"event": e})]
        assert "run.completed" in terminals and set(terminals) == {"run.completed"}, exposure_id
    await _assert_all_committed(settings)
