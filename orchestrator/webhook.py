"""The on-call webhook: a non-secret summary of each failed run, of each run held for a protected principal,
and the safety pages (`brake.engaged`, approvals to give), POSTed to Slack or any JSON endpoint.

Unmatched exposures page too (no playbook ran, so nothing was revoked), once per credential kind per
interval (`UnmatchedPager`): a detector that starts sending a new kind is heard about, not flooded by.

An `Auditor` observer: it sees records after redaction and sends only named, non-secret fields. Sending is
bounded (one attempt, a timeout, a cap on notifications in flight) and never fails the pipeline: a
notification that cannot be delivered is logged and dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx
import structlog

from orchestrator import escaping

log = structlog.get_logger("orchestrator.webhook")

_FIELDS = ("exposure_id", "playbook", "credential_kind", "detector", "actor", "error", "duration_ms", "run_id",
           "ts", "reason", "protected_by")
#: Fields a safety page may carry (all non-secret).
_PAGE_FIELDS = ("exposure_id", "run_id", "kind", "reason", "requester", "credential_kind", "waiting", "follow_up")


#: Audit events that page on-call.
PAGED = frozenset({"run.failed", "exposure.unmatched"})


def summary(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The webhook body for a `run.failed`, held `run.planned` or `exposure.unmatched` record: Slack's text or JSON."""
    event = str(record.get("event", "run.failed"))
    fields = {k: record[k] for k in _FIELDS if record.get(k) is not None}
    if fmt != "slack":
        return {"event": event, **fields}
    # Every field came from an event or a provider: escaped, so none can mention (`<!here>`), link or format.
    exposure_id = escaping.slack(fields.get("exposure_id", "?"))
    if event == "exposure.unmatched":
        kind = escaping.slack(fields.get("credential_kind", "?"))
        lines = [f":warning: No playbook matches credential kind `{kind}`: exposure `{exposure_id}` was NOT revoked",
                 "(further exposures of this kind are not paged for a while)"]
        shown: tuple[str, ...] = ("detector", "actor")
    else:
        headline = "FAILED" if event == "run.failed" else "HELD (protected principal: plan only)"
        lines = [f":rotating_light: Credential revocation {headline} for exposure `{exposure_id}`"]
        shown = ("credential_kind", "playbook", "error", "actor", "detector")
    lines += [f"• {k}: {escaping.slack(fields[k])}" for k in shown if k in fields]
    lines.append(f"Follow up: `orchestrator status {exposure_id}`")
    return {"text": "\n".join(lines)}


class UnmatchedPager:
    """Which unmatched exposures page: the first of each credential kind per `interval_s`, and at most
    `max_kinds` kinds per interval, so a detector sending random kinds cannot flood on-call."""

    def __init__(self, interval_s: float, *, max_kinds: int = 20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._max_kinds = max_kinds
        self._clock = clock
        self._paged: dict[str, float] = {}  # kind -> when it last paged

    def admit(self, kind: str) -> bool:
        """True when an unmatched exposure of `kind` should page now (and remember that it did)."""
        now = self._clock()
        self._paged = {k: t for k, t in self._paged.items() if now - t < self._interval_s}
        if kind in self._paged or len(self._paged) >= self._max_kinds:
            return False
        self._paged[kind] = now
        return True


class OncallNotifier:
    """Notifies the on-call webhook of failed runs; use as an async context manager around the pipeline."""

    def __init__(self, url: str, fmt: str = "json", *, timeout_s: float = 5.0, max_pending: int = 32,
                 unmatched_interval_s: float = 3600.0) -> None:
        self._url = url
        self._unmatched = UnmatchedPager(unmatched_interval_s)
        self._fmt = fmt
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> OncallNotifier:
        self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=self._timeout_s)
        for task in self._pending:
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def observe(self, record: dict[str, Any]) -> None:
        """Audit observer: schedule a notification for each `run.failed` record, for each run held back because
        it touches a protected principal (`run.planned` with reason protected), and for the first
        `exposure.unmatched` of each credential kind per interval."""
        event = record.get("event")
        protected = event == "run.planned" and record.get("reason") == "protected"
        if event not in PAGED and not protected:
            return
        if event == "exposure.unmatched" and not self._unmatched.admit(str(record.get("credential_kind"))):
            log.info("oncall.unmatched_quiet", exposure_id=record.get("exposure_id"))
            return
        self._schedule(summary(record, self._fmt), record)

    def page(self, event: str, fields: Mapping[str, Any]) -> None:
        """A safety page (`brake.engaged`, `brake.still_engaged`, `run.awaiting_approval`): named fields only."""
        body = {k: fields[k] for k in _PAGE_FIELDS if fields.get(k) is not None}
        if self._fmt == "slack":
            lines = [f":octagonal_sign: {event}"] + [f"• {k}: {escaping.slack(v)}" for k, v in body.items()]
            body = {"text": "\n".join(lines)}
        else:
            body = {"event": event, **body}
        # Brake pages are never dropped for the cap: one per storm, and the storm itself must not silence it.
        self._schedule(body, {"exposure_id": fields.get("exposure_id")}, capped=not event.startswith("brake."))

    def _schedule(self, body: dict[str, Any], record: Mapping[str, Any], *, capped: bool = True) -> None:
        if self._client is None:
            return
        if capped and len(self._pending) >= self._max_pending:
            log.warning("oncall.dropped", exposure_id=record.get("exposure_id"), reason="too many in flight")
            return
        task = asyncio.get_running_loop().create_task(self._send(body, dict(record)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, body: dict[str, Any], record: dict[str, Any]) -> None:
        assert self._client is not None
        exposure_id = record.get("exposure_id")
        try:
            response = await self._client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            # The URL itself may be a secret (Slack's are): log the error's kind only.
            log.warning("oncall.failed", exposure_id=exposure_id, error=type(exc).__name__)
            return
        if response.is_success:
            log.info("oncall.notified", exposure_id=exposure_id, event=record.get("event"))
        else:
            log.warning("oncall.failed", exposure_id=exposure_id, status=response.status_code)
