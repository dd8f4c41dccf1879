"""How audit records read to a person: pure functions from records to escaped lines, no I/O.

`plain(record)` is the stable one-line form for pipes, files and `NO_COLOR`-less scripts. `Story` turns one
exposure's records, as they arrive, into `Line`s for the live view: one headline per step that fits the width,
details wrapped and indented under it, a tone that says which colour it gets, and a closing sentence at the end
("Cleared the sessions and suspended the user for sam@example.com in 1.4 s; run 5ad5…"). Every piece of text
that came from an event or a provider is escaped here, before anything reaches a terminal.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator import escaping
from orchestrator.audit import TERMINAL_EVENTS

#: The live view fits this many columns unless the terminal says otherwise.
DEFAULT_WIDTH = 100
DETAIL_INDENT = 6
_TERMINAL = {event.value for event in TERMINAL_EVENTS}

_SHOWN = ("playbook", "step", "action", "target", "attempt", "duration_ms", "note", "reason", "error",
          "retry_in_s", "actor")


def plain(record: Mapping[str, Any]) -> str:
    """One audit record as one line, the same shape whatever the terminal (scripts read it); escaped."""
    when = escaping.terminal(str(record.get("ts", ""))[11:23])
    details = "  ".join(f"{k}={escaping.terminal(record[k])}" for k in _SHOWN if record.get(k) not in (None, ""))
    exposure_id = escaping.terminal(record.get("exposure_id", "?"))
    event = escaping.terminal(record.get("event", "?"))
    return f"{when}  {exposure_id:<32} {event:<19} {details}".rstrip()


def in_time_order(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records sorted by their timestamp (the audit topic keeps order per partition, not across them)."""
    return sorted(records, key=lambda r: str(r.get("ts", "")))


class Tone(StrEnum):
    """What a line reports, and so its colour: failures red, waits yellow, success green."""

    SUCCESS = "success"
    FAILURE = "failure"
    WAITING = "waiting"
    PLAN = "plan"
    QUIET = "quiet"
    INFO = "info"


#: The rich style of each tone; `NO_COLOR` drops the colours and keeps the marks.
STYLES: dict[Tone, str] = {Tone.SUCCESS: "green", Tone.FAILURE: "bold red", Tone.WAITING: "yellow",
                           Tone.PLAN: "cyan", Tone.QUIET: "dim", Tone.INFO: ""}
_MARKS: dict[Tone, str] = {Tone.SUCCESS: "✓", Tone.FAILURE: "✗", Tone.WAITING: "↻", Tone.PLAN: "→",
                           Tone.QUIET: "·", Tone.INFO: "•"}


@dataclass(frozen=True)
class Line:
    """One thing that happened: a headline that fits the width, and details wrapped and indented under it."""

    tone: Tone
    headline: str
    details: tuple[str, ...] = ()
    #: The rest of a closing sentence too long for one line, wrapped and indented.
    more: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """Headline, the rest of its sentence and the details, as printed (without colour)."""
        return "\n".join((self.headline, *self.more, *self.details))


# What each action did, and what a dry run would do: (past, plan). Unknown actions read "ran <action>".
_PHRASES: dict[str, tuple[str, str]] = {
    "okta.clear_user_sessions": ("cleared the sessions", "clear the sessions"),
    "okta.end_session": ("ended the session", "end the session"),
    "okta.revoke_grants": ("revoked the OAuth grants", "revoke the OAuth grants"),
    "okta.revoke_client_tokens": ("revoked the OAuth tokens", "revoke the OAuth tokens"),
    "okta.revoke_api_token": ("revoked the API token", "revoke the API token"),
    "okta.revoke_user_api_tokens": ("revoked the API tokens", "revoke the API tokens"),
    "okta.reset_factors": ("reset the MFA factors", "reset the MFA factors"),
    "okta.suspend_user": ("suspended the user", "suspend the user"),
    "okta.expire_password": ("expired the password", "expire the password"),
    "aws.deactivate_access_key": ("deactivated the access key", "deactivate the access key"),
    "aws.quarantine_user": ("quarantined the IAM user", "quarantine the IAM user"),
    "aws.revoke_user_sessions": ("revoked the user's temporary credentials", "revoke the user's temporary credentials"),
    "aws.rotate_access_key": ("rotated the access key", "rotate the access key"),
    "aws.revoke_role_sessions": ("revoked the role's temporary credentials", "revoke the role's temporary credentials"),
    "gcp.disable_service_account_key": ("disabled the service-account key", "disable the service-account key"),
    "gcp.delete_service_account_key": ("deleted the service-account key", "delete the service-account key"),
    "github.revoke_token": ("revoked the GitHub token", "revoke the GitHub token"),
    "slack.revoke_token": ("revoked the Slack token", "revoke the Slack token"),
    # The reversals `orchestrator undo` runs.
    "okta.unsuspend_user": ("unsuspended the user", "unsuspend the user"),
    "aws.activate_access_key": ("reactivated the access key", "reactivate the access key"),
    "aws.release_quarantine": ("released the IAM user from quarantine", "release the IAM user from quarantine"),
    "gcp.enable_service_account_key": ("re-enabled the service-account key", "re-enable the service-account key"),
}


def phrase(action: str, *, dry_run: bool) -> str:
    """What `action` did ("suspended the user") or, in a dry run, would do ("would suspend the user")."""
    shown = escaping.terminal(action)
    past, plan = _PHRASES.get(action, (f"ran {shown}", f"run {shown}"))
    return f"would {plan}" if dry_run else past


def _seconds(milliseconds: Any) -> str:
    try:
        value = float(milliseconds) / 1000
    except (TypeError, ValueError):
        return "?"
    return f"{value:.1f} s" if value >= 0.1 or value == 0 else f"{value * 1000:.0f} ms"


def _fit(text: str, width: int) -> str:
    """One line of at most `width` characters; what does not fit ends in an ellipsis (details carry the rest)."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _wrap(label: str, value: Any, width: int) -> list[str]:
    indent = " " * DETAIL_INDENT
    return textwrap.wrap(f"{label}: {escaping.terminal(value)}", width=max(width, 20), initial_indent=indent,
                         subsequent_indent=indent + "  ", break_on_hyphens=False) or []


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


@dataclass
class Story:
    """One exposure's records so far, and the lines they read as. Feed it records in order with `add`."""

    width: int = DEFAULT_WIDTH
    #: Prefix each headline with (the start of) the exposure id: for views that mix exposures.
    with_id: bool = False
    dry_run: bool = False
    subject: str = ""
    run_id: str = ""
    done: list[str] = field(default_factory=list)
    ended: bool = False
    #: The step in progress (for the spinner): its headline without the mark, or None.
    running: str | None = None

    def add(self, record: Mapping[str, Any]) -> list[Line]:
        """The lines `record` adds to the story (none for a record that only starts something)."""
        event = str(record.get("event", ""))
        if record.get("run_id"):
            self.run_id = escaping.terminal(record["run_id"])
        if event == "exposure.received":
            self.dry_run = bool(record.get("dry_run"))
            target = escaping.terminal(record.get("target") or "")
            self.subject = target.split(":", 1)[-1]
            kind = target.split(":", 1)[0]
            verb = "planning for" if self.dry_run else "received"
            severity = f" ({escaping.terminal(record['severity'])})" if record.get("severity") else ""
            return [self._line(record, Tone.INFO, f"{verb} {kind} {self.subject}{severity}")]
        if event == "run.started":
            self.dry_run = self.dry_run or bool(record.get("dry_run"))
            mode = " (dry run: nothing will be changed)" if self.dry_run else ""
            return [self._line(record, Tone.INFO, f"playbook {escaping.terminal(record.get('playbook', '?'))}{mode}",
                               reason=record.get("reason"))]
        if event == "step.started":
            self.running = self._step_text(record, _infinitive(str(record.get("action", ""))))
            return []
        if event in ("step.succeeded", "step.failed", "step.retrying", "step.skipped"):
            return [self._step(event, record)]
        if event in _TERMINAL:
            self.running = None
            self.ended = True
            return [self.closing(record)]
        return [self._line(record, Tone.INFO, escaping.terminal(event))]

    def _step(self, event: str, record: Mapping[str, Any]) -> Line:
        action = str(record.get("action", ""))
        if event == "step.retrying":
            wait = escaping.terminal(record.get("retry_in_s", "?"))
            why = "rate limited" if record.get("rate_limited") else "failed"
            attempt = escaping.terminal(record.get("attempt", "?"))
            return self._line(record, Tone.WAITING, self._step_text(
                record, f"attempt {attempt} {why}; retrying in {wait} s"), error=record.get("error"))
        self.running = None
        if event == "step.skipped":
            return self._line(record, Tone.QUIET, self._step_text(record, "skipped"), reason=record.get("reason"))
        if event == "step.failed":
            return self._line(record, Tone.FAILURE, self._step_text(record, f"failed to {_infinitive(action)}"),
                              error=record.get("error"))
        did = phrase(action, dry_run=self.dry_run)
        self.done.append(did)
        attempts = record.get("attempt")
        took = f"  ({_seconds(record.get('duration_ms'))}" + (f", {attempts} tries)" if isinstance(
            attempts, int) and attempts > 1 else ")")
        calls = record.get("calls")
        calls = calls if isinstance(calls, list) else []
        return self._line(record, Tone.PLAN if self.dry_run else Tone.SUCCESS, self._step_text(record, did) + took,
                          note=record.get("note"), **{f"call {i}": c for i, c in enumerate(calls, 1)})

    def _step_text(self, record: Mapping[str, Any], what: str) -> str:
        step = escaping.terminal(record.get("step", "?"))
        target = escaping.terminal(record.get("target") or "")
        return f"{step:<16} {what}" + (f" · {target}" if target else "")

    def closing(self, record: Mapping[str, Any]) -> Line:
        """The sentence that ends the story: what was done to whom, how long it took, which run."""
        event = str(record.get("event", ""))
        took = _seconds(record.get("duration_ms")) if record.get("duration_ms") is not None else None
        run = f"; run {self.run_id[:8]}…" if self.run_id else ""
        subject = f" for {self.subject}" if self.subject else ""
        timing = f" in {took}" if took else ""
        details: dict[str, Any] = {}
        if event == "run.completed":
            done = _join(self.done) or "nothing needed doing"
            tone, text = Tone.SUCCESS, f"{done[:1].upper()}{done[1:]}{subject}{timing}{run}"
        elif event == "run.planned":
            tone, text = Tone.PLAN, f"Dry run{subject}: {_join(self.done) or 'nothing to do'}; nothing was changed{run}"
        elif event == "run.failed":
            before = f"; before that it {_join(self.done)}" if self.done else "; nothing was changed"
            tone, text = Tone.FAILURE, f"Run failed{subject}{timing}{before}{run}"
            details["error"] = record.get("error")
        else:
            tone, text = {
                "exposure.unmatched": (Tone.FAILURE, f"Nothing was done{subject}: no playbook matched"),
                "exposure.rejected": (Tone.FAILURE, f"Rejected{subject}: nothing was done"),
            }.get(event, (Tone.QUIET, f"Already handled{subject}: nothing was done again"))
            details["reason"] = record.get("reason")
        return self._line(record, tone, text, sentence=True, **details)

    def _line(self, record: Mapping[str, Any], tone: Tone, text: str, *, sentence: bool = False,
              **details: Any) -> Line:
        """A headline cut to the width (or, for a `sentence`, wrapped: it is the answer people read), details
        wrapped and indented under it."""
        when = escaping.terminal(str(record.get("ts", ""))[11:19])
        who = ""
        if self.with_id:
            exposure_id = escaping.terminal(record.get("exposure_id", "?"))
            who = f"{_fit(exposure_id, 20):<20} "
        first = f"{when} {_MARKS[tone]} {who}{text}"
        rest: list[str] = []
        if sentence and len(first) > self.width:
            indent = " " * DETAIL_INDENT
            first, *rest = textwrap.wrap(first, width=max(self.width, 20), subsequent_indent=indent,
                                         break_on_hyphens=False, break_long_words=True)
        headline = _fit(first, self.width)
        wrapped = [w for label, value in details.items() if value not in (None, "", [])
                   for w in _wrap(label, value, self.width)]
        return Line(tone, headline, tuple(wrapped), tuple(rest))


def _infinitive(action: str) -> str:
    return phrase(action, dry_run=True).removeprefix("would ")
