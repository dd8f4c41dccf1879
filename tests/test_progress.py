"""How audit records read to people: lines that fit 100 columns, colours by outcome, plans worded as plans,
a closing sentence, plain lines for pipes, escaped text everywhere, log levels that follow outcomes."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from orchestrator import logs, store_cli
from orchestrator.audit import AuditEvent
from orchestrator.live_view import LiveView, as_text, printer
from orchestrator.progress import DETAIL_INDENT, Story, Tone, in_time_order, phrase, plain
from tests.support import captured_logs

RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
RUN = "5ad5c0ffee0123456789abcdef012345"


def _record(event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": "2026-12-02T04:10:00.123456+00:00", "event": event, "exposure_id": "manual-7f3a", "run_id": RUN,
            **fields}


def _trail(*, dry_run: bool = False, failing: bool = False) -> list[dict[str, Any]]:
    flag = {"dry_run": True} if dry_run else {}
    steps = [
        _record("exposure.received", target="okta.user:sam@example.com", severity="critical", **flag),
        _record("run.started", playbook="okta-user-compromise", **flag),
        _record("step.started", step="clear-sessions", action="okta.clear_user_sessions", target="user=sam"),
        _record("step.retrying", step="clear-sessions", action="okta.clear_user_sessions", target="user=sam",
                attempt=1, retry_in_s=2.0, rate_limited=True, error="429 Too Many Requests"),
        _record("step.succeeded", step="clear-sessions", action="okta.clear_user_sessions", target="user:00u1",
                attempt=2, duration_ms=900, calls=["DELETE /api/v1/users/00u1/sessions"] if dry_run else None),
        _record("step.started", step="suspend-user", action="okta.suspend_user", target="user=sam"),
    ]
    if failing:
        return [*steps, _record("step.failed", step="suspend-user", action="okta.suspend_user", target="user:00u1",
                                attempt=1, error="HTTP 403 E0000006 you do not have permission"),
                _record("run.failed", duration_ms=1400, error="failed steps: suspend-user")]
    return [*steps, _record("step.succeeded", step="suspend-user", action="okta.suspend_user", target="user:00u1",
                            attempt=1, duration_ms=300),
            _record("run.planned" if dry_run else "run.completed", duration_ms=1400, plan=[] if dry_run else None)]


def _lines(trail: list[dict[str, Any]], **options: Any) -> list[Any]:
    story = Story(**options)
    return [line for record in trail for line in story.add(record)]


def test_a_run_ends_with_a_sentence_saying_what_was_done_to_whom() -> None:
    """run.completed reads "Cleared the sessions and suspended the user for sam@example.com in 1.4 s; run 5ad5…"."""
    last = _lines(_trail())[-1]
    assert last.tone is Tone.SUCCESS
    assert last.headline.endswith("Cleared the sessions and suspended the user for sam@example.com in 1.4 s; "
                                  "run 5ad5c0ff…")


def test_dry_runs_are_worded_as_plans() -> None:
    """A dry run says "would suspend the user", never "suspended", and ends saying nothing was changed."""
    lines = _lines(_trail(dry_run=True))
    text = "\n".join(line.text for line in lines)
    assert "would suspend the user · user:00u1" in text and "would clear the sessions" in text
    assert "suspended" not in text and "cleared" not in text
    assert "call 1: DELETE /api/v1/users/00u1/sessions" in text
    assert " ".join(lines[-1].text.split()).endswith("Dry run for sam@example.com: would clear the sessions and "
                                                     "would suspend the user; nothing was changed; run 5ad5c0ff…")


def test_colours_follow_outcomes() -> None:
    """Failures are red, retries and rate-limit waits yellow, successes green."""
    lines = _lines(_trail(failing=True))
    tones = [line.tone for line in lines]
    assert tones == [Tone.INFO, Tone.INFO, Tone.WAITING, Tone.SUCCESS, Tone.FAILURE, Tone.FAILURE]
    assert "rate limited; retrying in 2.0 s" in lines[2].headline
    assert " ".join(lines[-1].text.split()).startswith(
        "04:10:00 ✗ Run failed for sam@example.com in 1.4 s; before that it cleared the sessions; run 5ad5c0ff…")
    assert str(as_text(lines[-1]).style) == "bold red" and str(as_text(lines[3]).style) == "green"
    assert str(as_text(lines[2]).style) == "yellow"


def test_the_step_in_progress_is_known_for_the_spinner() -> None:
    """After step.started the story names the running step; its end clears it."""
    story = Story()
    for record in _trail()[:3]:
        story.add(record)
    assert story.running is not None and "clear-sessions" in story.running and "clear the sessions" in story.running
    story.add(_trail()[4])
    assert story.running is None


def test_long_details_wrap_indented_under_a_line_that_fits() -> None:
    """A 300-character error leaves the headline within 100 columns and wraps, indented, under it."""
    record = _record("step.failed", step="s" * 40, action="okta.suspend_user", target="user:" + "u" * 80,
                     error="E0000006 " * 33)
    line = Story().add(record)[0]
    assert len(line.headline) == 100 and line.headline.endswith("…")
    assert len(line.details) >= 3 and all(len(d) <= 100 and d.startswith(" " * DETAIL_INDENT) for d in line.details)


field_text = st.text(alphabet=st.sampled_from(list("\x1b\x07\x9b\r\n[]/\\<>ab ")) | st.characters(), max_size=150)


_FIELDS = ["step", "action", "target", "error", "reason", "note", "exposure_id", "ts", "run_id", "playbook",
           "severity", "attempt", "retry_in_s", "duration_ms", "calls", "dry_run", "rate_limited"]
hostile_record = st.builds(
    lambda event, fields: {**fields, "event": event},
    st.sampled_from([e.value for e in AuditEvent] + ["other"]),
    st.dictionaries(st.sampled_from(_FIELDS), field_text | st.integers() | st.floats() | st.booleans() | st.none()
                    | st.lists(field_text, max_size=3)))


@settings(max_examples=100, deadline=None)
@given(st.lists(hostile_record, min_size=1, max_size=6), st.integers(min_value=40, max_value=160))
def test_any_records_render_escaped_lines_that_fit(records: list[dict[str, Any]], width: int) -> None:
    """Property: whatever a story's records hold, every line fits the width and no raw control character is
    printed, in the live lines and the plain ones."""
    story = Story(width=width, with_id=True)
    for record in records:
        for line in story.add(record):
            assert len(line.headline) <= width
            for text in (line.headline, *line.more, *line.details):
                assert not RAW_CONTROL.search(text) and len(text) <= width
        assert not RAW_CONTROL.search(plain(record))
    assert story.running is None or not RAW_CONTROL.search(story.running)


def test_plain_lines_keep_their_shape_for_scripts() -> None:
    """Non-terminal output is the stable one-line form, with control characters escaped."""
    record = _record("step.failed", step="suspend-user", action="okta.suspend_user", error="403\r\x1b[2K")
    assert plain(record) == ("04:10:00.123  manual-7f3a                      step.failed         step=suspend-user  "
                             "action=okta.suspend_user  error=403\\x0d\\x1b[2K")


def test_records_are_put_in_time_order() -> None:
    """Records read partition by partition come out sorted by timestamp."""
    records = [{"ts": "2026-12-02T04:00:02"}, {"ts": "2026-12-02T04:00:01"}, {"ts": "2026-12-02T04:00:03"}]
    assert [r["ts"][-1] for r in in_time_order(records)] == ["1", "2", "3"]


def test_live_view_prints_lines_that_fit_100_columns() -> None:
    """On a 100-column terminal each printed line fits without wrapping; the closing sentence comes last."""
    shown = []
    with LiveView(Console(file=io.StringIO(), width=100, force_terminal=True)) as view:
        for record in _trail():
            shown += view.show({**record, "note": "n" * 250} if record["event"] == "step.succeeded" else record)
    out = Console(file=io.StringIO(), width=100, record=True)
    for line in shown:
        out.print(as_text(line))
    text = out.export_text().splitlines()
    assert len(text) == sum(1 + len(line.more) + len(line.details) for line in shown)  # nothing wrapped a second time
    assert all(len(line) <= 100 for line in text)
    assert "Cleared the sessions and suspended the user" in text[-1]


def test_log_levels_follow_outcomes() -> None:
    """Failures log at error/warning, retries and unmatched at warning, everything else at info."""
    assert AuditEvent.RUN_FAILED.log_level == "error"
    assert {AuditEvent(e).log_level for e in ("step.failed", "exposure.rejected", "exposure.unmatched",
                                              "step.retrying")} == {"warning"}
    assert {e.log_level for e in (AuditEvent.RUN_COMPLETED, AuditEvent.STEP_SUCCEEDED, AuditEvent.RUN_STARTED)} == \
        {"info"}


def test_console_logs_escape_values_from_outside() -> None:
    """The dev console's log lines show an escape sequence in a value as text, never send it to the terminal."""
    stream = io.StringIO()
    logs.configure("console", stream=stream, colors=False)
    try:
        structlog.get_logger("orchestrator.audit").warning("step.failed", exposure_id="x\x1b]52;c;aGk=\x07\r\x1b[2K")
    finally:
        logging.getLogger().handlers.clear()
    shown = stream.getvalue().rstrip("\n")
    assert "x1b]52;c;aGk=" in shown and "x0d" in shown and not RAW_CONTROL.search(shown)


def test_auditor_echo_uses_the_outcome_level() -> None:
    """The Auditor's echo of run.failed reaches the process log at error, step.succeeded at info."""
    from orchestrator.audit import Auditor

    class Sink:
        async def write(self, key: str, record: bytes) -> Any:
            import asyncio

            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    async def run() -> None:
        trail = Auditor(Sink()).trail("exp-1")
        await trail.record(AuditEvent.STEP_SUCCEEDED, step="a")
        await trail.record(AuditEvent.RUN_FAILED, error="failed steps: a")

    import asyncio

    with captured_logs(level=logging.INFO) as stream:
        asyncio.run(run())
    lines = stream.getvalue().splitlines()
    assert any("step.succeeded" in line and "info" in line for line in lines)
    assert any("run.failed" in line and "error" in line for line in lines)


@pytest.mark.parametrize("reason", ["[/]", "[bold]x", "\x1b[31mred\x1b[0m", "a\\"])
def test_status_prints_hostile_text_without_crashing(reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`status` shows a `[/]` (once a MarkupError traceback) or an escape sequence from the store as text."""
    from datetime import datetime

    now = datetime(2026, 12, 2, 4, 10)
    row = {"id": "exp-[/]", "state": "failed", "credential_kind": "okta.user", "target": reason, "playbook": reason,
           "run_id": "r", "actor": reason, "detector": "cli", "received_at": now, "finished_at": now, "error": reason,
           "steps": [{"step": reason, "action": "okta.suspend_user", "state": "failed", "attempts": 1,
                      "finished_at": now, "error": reason}]}
    store_cli._print_status(row, 1)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "Exposure exp-[/]" in out
    assert out.count(reason.replace("\x1b", "\\x1b")) >= 3


def test_json_and_piped_output_stay_plain_even_on_a_terminal_console() -> None:
    """--json prints one JSON record per line (control characters escaped by JSON); a pipe gets plain lines."""
    record = _record("step.failed", step="s", error="\x1b[2K")
    for as_json, terminal in ((True, True), (False, False)):
        stream = io.StringIO()
        with printer(Console(file=stream, force_terminal=terminal), as_json=as_json) as show:
            show(record)
        out = stream.getvalue()
        assert out.count("\n") == 1 and "\x1b" not in out
        assert (json.loads(out) == record) if as_json else out == plain(record) + "\n"


def test_dev_console_shows_audit_records_as_coloured_lines_without_a_spinner() -> None:
    """The dev console's observer prints each record's lines in colour and never draws a live region."""
    stream = io.StringIO()
    view = LiveView(Console(file=stream, width=100, force_terminal=True, color_system="standard"), with_id=True,
                    spinner=False)
    for record in _trail(failing=True):
        view.observe(record)
    out = stream.getvalue()
    assert "\x1b[2K" not in out and "\x1b[?25l" not in out  # no live region drawn or erased
    assert "\x1b[33m" in out and "\x1b[32m" in out and "\x1b[1;31m" in out
    assert "manual-7f3a" in out and "Run failed for sam@example.com" in out


def test_every_action_has_its_own_wording() -> None:
    """Each action in the catalog reads as what it did and as a plan, not as the fallback "ran <action>"."""
    from orchestrator.providers import catalog

    for action in catalog():
        assert not phrase(action, dry_run=False).startswith("ran "), action
        assert phrase(action, dry_run=True).startswith("would ") and action not in phrase(action, dry_run=True)
