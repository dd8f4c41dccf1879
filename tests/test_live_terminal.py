"""The live view in a real pseudo-terminal of 100 columns (pexpect): colours by outcome, a spinner with the
elapsed time, a closing sentence, plain output for NO_COLOR, and ids that cannot draw on the screen.

Audit records are published by hand to a topic of this module: what is drawn, and when, is then up to the test.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

from orchestrator.settings import StoreSettings
from orchestrator.store import Content, RunStore
from tests.support import publish, run_cli
from tests.terminal import COLUMNS, GREEN, RED, YELLOW, received, screen_lines, spawn, terminal, terminal_env

__all__ = ["terminal"]  # the fixture, imported for this module's tests



@pytest.fixture(scope="module")
def audit_topic(bootstrap: str) -> str:
    """An audit topic of this module's own."""
    return f"test.live.{secrets.token_hex(4)}.audit"


def _records(exposure_id: str, *events: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    run = secrets.token_hex(16)
    return [{"ts": f"2026-12-02T04:10:0{i}.000000+00:00", "event": event, "exposure_id": exposure_id, "run_id": run,
             **fields} for i, (event, fields) in enumerate(events)]


def _send(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    asyncio.run(publish(bootstrap, topic, records, key=str(records[0]["exposure_id"]).encode()))


STEP = {"step": "clear-sessions", "action": "okta.clear_user_sessions", "target": "user=sam@example.com"}
BEGIN = (("exposure.received", {"target": "okta.user:sam@example.com", "severity": "critical"}),
         ("run.started", {"playbook": "okta-user-compromise"}), ("step.started", STEP))


def test_audit_tail_follow_draws_live_progress_at_100_columns(bootstrap: str, audit_topic: str,
                                                              terminal: list[pexpect.spawn]) -> None:
    """A spinner with the elapsed time while a step runs, a yellow retry, a green step and closing sentence,
    every line within 100 columns, and Ctrl-C leaving quietly (exit 130, no traceback)."""
    exposure_id = f"live-{secrets.token_hex(4)}"
    tail = spawn(terminal, terminal_env(bootstrap, audit_topic), "audit", "tail", "--follow", "--exposure", exposure_id)
    records = _records(exposure_id, *BEGIN,
                       ("step.retrying", {**STEP, "attempt": 1, "retry_in_s": 2.0, "rate_limited": True,
                                          "error": "429 Too Many Requests " * 8}),
                       ("step.succeeded", {**STEP, "target": "user:00u1", "attempt": 2, "duration_ms": 2400}),
                       ("run.completed", {"duration_ms": 2600}))
    _send(bootstrap, audit_topic, records[:3])
    tail.expect(r"clear-sessions +clear the sessions · user=sam@example.com +\d+\.\d s")  # the spinner
    _send(bootstrap, audit_topic, records[3:4])
    tail.expect_exact(f"{YELLOW}04:10:03 ↻ clear-sessions")
    tail.expect_exact("attempt 1 rate limited; retrying in 2.0 s")
    _send(bootstrap, audit_topic, records[4:])
    tail.expect_exact(f"{GREEN}04:10:04 ✓ clear-sessions")
    tail.expect_exact("Cleared the sessions for sam@example.com in 2.6 s; run ")
    tail.expect_exact("…")
    tail.sendintr()
    tail.expect(pexpect.EOF)
    tail.close()
    assert tail.exitstatus == 130 and "Traceback" not in tail.before
    lines = screen_lines(received(tail))
    assert max(len(line) for line in lines) <= COLUMNS
    assert any(line.startswith("      error: 429 Too Many Requests") for line in lines)  # wrapped, indented


def test_status_follow_shows_a_running_exposure_until_it_fails(bootstrap: str, audit_topic: str, tmp_path: Path,
                                                               terminal: list[pexpect.spawn]) -> None:
    """`status --follow` on a running exposure draws its steps live, the failure in red, and exits 1."""
    exposure_id = f"follow-{secrets.token_hex(4)}"
    store_settings = StoreSettings(data_dir=tmp_path / "data")

    async def running() -> None:
        store = RunStore.open(store_settings, owner="test")
        claim = await store.claim(Content(id=exposure_id, fingerprint=exposure_id.ljust(32, "0")[:32],
                                          kind="okta.user", target="okta.user:sam", owner="sam@example.com",
                                          detector="cli", actor=None, severity="high", playbook=None))
        store.started(claim.row_id, run_id="r1", playbook="okta-user")
        await store.close()

    asyncio.run(running())
    status = spawn(terminal, terminal_env(bootstrap, audit_topic, ORCHESTRATOR_DATA_DIR=str(store_settings.data_dir)),
                    "status", exposure_id[:12], "--follow")
    records = _records(exposure_id, *BEGIN, ("step.failed", {**STEP, "attempt": 1, "error": "HTTP 403 E0000006"}),
                       ("run.failed", {"duration_ms": 800, "error": "failed steps: clear-sessions"}))
    _send(bootstrap, audit_topic, records)
    status.expect_exact(f"{RED}04:10:03 ✗ clear-sessions   failed to clear the sessions")
    status.expect_exact("Run failed for sam@example.com in 0.8 s; nothing was changed; run ")
    status.expect(pexpect.EOF)
    status.close()
    assert status.exitstatus == 1


def test_an_id_with_terminal_escapes_cannot_draw_a_fake_line(bootstrap: str, audit_topic: str,
                                                             terminal: list[pexpect.spawn]) -> None:
    """An exposure id carrying an OSC 52 clipboard write, a carriage return and a line erase is shown as escaped
    text by `audit tail`: it writes no clipboard and draws no fake line. With NO_COLOR, no colour either."""
    hostile = (f"x{secrets.token_hex(3)}\x1b]52;c;ZWNobyBwd25lZA==\x07\r\x1b[2K"
               "04:10:09.000  exp-admin                        run.completed")
    _send(bootstrap, audit_topic, _records(hostile, ("step.failed", {**STEP, "error": "\x9b2J\x1b[1A[/]"}),
                                           ("run.failed", {"duration_ms": 100, "error": "failed steps: x"})))
    # Two exposures followed: each line names its exposure, the hostile id included.
    tail = spawn(terminal, terminal_env(bootstrap, audit_topic, NO_COLOR="1"), "audit", "tail", "--exposure", hostile,
                 "--exposure", "another")
    tail.expect(pexpect.EOF)
    tail.close()
    shown = received(tail)
    assert tail.exitstatus == 0
    assert "\x1b]52" not in shown and "\r\x1b[2K04:10:09" not in shown and "\x9b" not in shown
    assert "\\x1b]52;c;ZW" in shown and "error: \\x9b2J\\x1b[1A[/]" in shown  # the id and error, as text
    assert not any("run.completed" in line and "exp-admin" in line and "\\x" not in line
                   for line in screen_lines(shown))
    assert "✗" in shown and "Run failed" in shown and not re.search(r"\x1b\[[0-9;]*3[0-7]m", shown)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception a command raises reaches people as one escaped line (exit 1); --debug adds the traceback."""
    from orchestrator import cli

    @cli.app.command("boom", hidden=True)
    def boom() -> None:
        raise RuntimeError("bad \x1b[2K value")

    try:
        for argv in (["orchestrator", "boom"], ["orchestrator", "--debug", "boom"]):
            monkeypatch.setattr(sys, "argv", argv)
            with pytest.raises(SystemExit) as exited:
                cli.main()
            assert exited.value.code == 1
        quiet, loud = capsys.readouterr().err.split("\n", 1)
    finally:
        cli.app.registered_commands.pop()
    assert quiet == "orchestrator: unexpected error: RuntimeError: bad \\x1b[2K value (run again with --debug for " \
                    "the traceback)"
    assert loud.startswith("Traceback (most recent call last):") and "RuntimeError: bad \\x1b[2K value" in loud
    assert "\x1b" not in loud  # the traceback quotes outside text too: escaped



def test_audit_tail_prints_records_in_time_order_across_partitions(bootstrap: str, audit_topic: str) -> None:
    """Records of two exposures on two partitions come out of `audit tail --since` sorted by time, not
    partition by partition."""
    first, second = f"order-a-{secrets.token_hex(3)}", f"order-b-{secrets.token_hex(3)}"

    def record(exposure_id: str, second_of_minute: int) -> dict[str, Any]:
        return {"ts": f"2026-12-02T04:20:{second_of_minute:02d}.000000+00:00", "event": "step.started",
                "exposure_id": exposure_id, "step": f"s{second_of_minute}"}

    async def send() -> None:
        await publish(bootstrap, audit_topic, [record(first, 1), record(first, 3)], key=first.encode(), partition=0)
        await publish(bootstrap, audit_topic, [record(second, 2), record(second, 4)], key=second.encode(),
                      partition=1)

    asyncio.run(send())
    result = run_cli("audit", "tail", "--since", "2026-12-02T04:00:00", "--exposure", first, "--exposure", second,
                     "--json", env=terminal_env(bootstrap, audit_topic))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["step"] for line in result.stdout.splitlines()] == ["s1", "s2", "s3", "s4"]
