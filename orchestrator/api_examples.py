"""Examples the HTTP API's OpenAPI document shows in Swagger UI (/docs) and ReDoc (/redoc), one set per route.

Secrets in them are obvious placeholders, never real-looking values.
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

_ID = "manual-5ad5c1e0f3a94f1d9d1f6a2b7c3e8d40"


def _json(example: Any, description: str = "") -> dict[str, Any]:
    """A `responses` entry carrying one JSON example."""
    return {"description": description, "content": {"application/json": {"example": example}}}


EXPOSURE_BODY: dict[str, Example] = {
    "har-session": Example(summary="An Okta session cookie found in a HAR upload", value={
        "id": "har-scanner-2026-12-02-0001", "credential": {"kind": "okta.session", "id": "102EXAMPLEsession"},
        "source": {"detector": "har-scanner", "location": "support-case-00123/upload.har", "verified": True},
        "severity": "high"}),
    "aws-key": Example(summary="An AWS access key pushed to a repository", value={
        "id": "repo-scan-7731", "credential": {"kind": "aws.access_key", "id": "AKIAEXAMPLEKEYID0000",
                                               "owner": "ci-deployer"},
        "source": {"detector": "repo-scanner", "location": "github.com/acme/infra@4f2a1c9"},
        "severity": "critical"}),
}
EXPOSURE_ACCEPTED = _json({"id": "har-scanner-2026-12-02-0001"}, "published to the exposures topic")

TRIGGER_BODY: dict[str, Example] = {
    "dry-run-user": Example(summary="Preview what would be done to a compromised user", value={
        "kind": "okta.user", "owner": "sam.support@example.com", "severity": "critical",
        "reason": "laptop compromised, INC-4211", "dry_run": True}),
    "leaked-token": Example(summary="Revoke a leaked Slack token (the value is used, never echoed)", value={
        "kind": "slack.token", "secret": "xoxb-EXAMPLE-not-a-real-token", "reason": "pasted in #general"}),
    "named-playbook": Example(summary="Run a named playbook instead of routing", value={
        "kind": "okta.user", "owner": "sam.support@example.com", "playbook": "okta-user"}),
}
TRIGGER_ACCEPTED = _json({"id": _ID, "actor": "pagerduty-runbook", "dry_run": True,
                          "status": f"/v1/exposures/{_ID}"}, "published; follow it at `status`")
TRIGGER_REFUSED = _json({"detail": "kind: no playbook matches this kind; did you mean okta.user? Set "
                                   "allow_unmatched to publish it anyway."},
                        "a field is invalid, or no playbook would run (never echoes the values sent)")

_EXPOSURE_ROW = {"id": _ID, "state": "completed", "credential_kind": "okta.user",
                 "target": "okta-user:sam.support@example.com", "playbook": "okta-user", "actor": "responder-bot",
                 "detector": "api", "terminal_event": "run.completed", "error": None,
                 "received_at": "2026-12-02T03:14:07Z", "finished_at": "2026-12-02T03:14:08Z"}
EXPOSURE_LIST = _json({"exposures": [_EXPOSURE_ROW], "next": "eyJyb3ciOiA0Mn0"}, "newest first")
EXPOSURE_ONE = _json({**_EXPOSURE_ROW, "done": True, "steps": [
    {"step": "clear-sessions", "action": "okta.clear_user_sessions", "state": "succeeded", "attempts": 1,
     "error": None, "finished_at": "2026-12-02T03:14:08Z"}], "runs": []}, "the exposure and its steps")
EXPOSURE_ID = {"full id": Example(value=_ID), "unique prefix": Example(value="manual-5ad5")}
STATE_FILTER = {"failed runs": Example(value="failed"), "still running": Example(value="running")}
SINCE_FILTER = {"an ISO 8601 time": Example(value="2026-12-02T00:00:00Z")}

HEALTHY = _json({"status": "ok"}, "alive")
READY: dict[int | str, dict[str, Any]] = {200: _json({"status": "ready"}, "ready"),
         503: _json({"status": "not ready", "reason": "no partitions of the exposures topic assigned yet"},
                    "not ready")}
_PROMETHEUS = ('# TYPE orchestrator_exposures_total counter\n'
               'orchestrator_exposures_total{outcome="run.completed"} 42.0\n')
METRICS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text format", "content": {"text/plain": {"example": _PROMETHEUS}}}}

INGEST_FORMAT = {"GitHub secret scanning": Example(value="github-secret-scanning"),
                 "GitGuardian": Example(value="gitguardian"), "SSF push (a SET)": Example(value="ssf")}
INGEST: dict[int | str, dict[str, Any]] = {
    202: _json({"published": 1, "ids": ["github-secret-scanning-acme-infra-42"]}, "verified and published"),
    400: _json({"detail": "not a secret_scanning_alert payload: `alert.secret_type` is missing"},
               "not a valid payload of the format"),
    401: _json({"detail": "bad signature"}, "bad, missing, stale or replayed signature"),
}

_RUN = "run-7f3a9c2e"
_GATE = {"run_id": _RUN, "exposure_id": _ID, "kind": "approval", "requester": "alice",
         "reason": "okta.suspend_user on a protected principal", "plan": [
             {"step": "suspend", "action": "okta.suspend_user", "target": "okta-user:sam.support@example.com"}],
         "created_at": "2026-12-02T03:14:07Z", "expires_at": "2026-12-02T04:14:07Z", "decision": None,
         "decided_by": None, "decided_at": None, "why": None, "position": 1}
_ANSWERED = {**_GATE, "decision": "approved", "decided_by": "bob", "decided_at": "2026-12-02T03:16:40Z",
             "why": "confirmed with the user's manager"}
WHY_BODY = {"with a reason": Example(value={"why": "confirmed with the user's manager"})}
APPROVALS = _json({"waiting": [_GATE]}, "runs waiting for a person, oldest first")
ANSWERED = _json(_ANSWERED, "the answer, recorded")
BRAKE = _json({"engaged": True, "held": False, "window_s": 60, "limit": 50, "total": 57,
               "providers": {"okta": {"count": 57, "limit": 50}}, "updated_by": None, "why": None,
               "waiting": [{**_GATE, "kind": "brake", "reason": "okta: 57 destructive steps in 60 s (limit 50)"}]},
              "the brake and the runs it holds")
RELEASED = _json({"released": [_RUN], "by": "root"}, "the runs let through")
HELD = _json({"held": True, "by": "root"}, "the brake is held")
UNDONE = _json({"run_id": _RUN, "exposure_id": _ID, "undo_id": "undo-1c9e", "by": "root",
                "reversed": [{"step": "suspend", "action": "okta.unsuspend_user"}], "failed": [],
                "already_undone": [], "irreversible": ["clear-sessions"]}, "what was reversed, skipped and failed")
REPLAYED = _json({"id": _ID, "state": "failed", "playbook": "okta-user", "skip": ["clear-sessions"],
                  "run": ["reset-factors"], "source": "store", "replayable": True, "problem": None,
                  "request_id": "replay-4b1d", "actor": "responder-bot", "status": f"/v1/exposures/{_ID}"},
                 "published: a new run that skips the steps already succeeded")
REPLAY_BODY = {"replay": Example(value={"reason": "Okta was down, INC-4212"}),
               "dry run": Example(value={"dry_run": True})}
