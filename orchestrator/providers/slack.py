"""Slack, over its Web API with httpx: revoking an exposed token with `auth.revoke`, authenticated by itself.

Slack reports most failures as HTTP 200 with `{"ok": false, "error": CODE}`; this module reads every body and
turns the codes into our errors: a token that no longer authenticates is already dead (success, with a
note), server-side codes are transient, the rest permanent. HTTP 429 carries `Retry-After`.
"""

from __future__ import annotations

from orchestrator import grammar
from orchestrator.actions import ActionSpec, Params, ParamSource, ParamSpec, StepContext, StepResult, secret_value
from orchestrator.errors import PermanentError, RateLimited, TransientError
from orchestrator.events import fingerprint
from orchestrator.governor import Governor
from orchestrator.providers._http import HttpProvider, by_status, json_object, retry_after
from orchestrator.redaction import REDACTOR
from orchestrator.settings import SlackSettings

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("slack.revoke_token", "Revoke a Slack token with auth.revoke, authenticated by the token itself; "
               "a token that is already revoked or invalid counts as done.",
               {"token": ParamSpec(required=True, secret=True, description="the exposed xox* token",
                                   grammar=grammar.SLACK_TOKEN, source=ParamSource.EVENT)},
               calls=("POST /api/auth.revoke (Bearer: the exposed token)",)),
)

#: auth.revoke is Tier 3 (about 50 calls a minute per workspace): a few connections are plenty.
CONCURRENCY = 8
_BUCKET = "auth.revoke"
_CALL = "POST /auth.revoke (Bearer: the exposed token)"
#: The token no longer authenticates: nothing is left to revoke.
_ALREADY_DEAD = frozenset({"token_revoked", "invalid_auth", "token_expired", "account_inactive"})
#: Slack's own failures, documented as worth retrying.
_TRANSIENT = frozenset({"fatal_error", "internal_error", "service_unavailable", "request_timeout",
                        "team_added_to_org", "org_login_required"})
#: Slack documents `Retry-After` on every 429; this covers a proxy that drops it.
_DEFAULT_WAIT_S = 30.0


class SlackProvider(HttpProvider):
    """Performs `slack.*` actions with one httpx client."""

    name = "slack"

    def __init__(self, settings: SlackSettings, governor: Governor) -> None:
        super().__init__(settings.api_url + "/", governor, concurrency=CONCURRENCY)

    async def perform(self, action: str, params: Params, context: StepContext) -> StepResult:
        """Run one `slack.*` action."""
        token = secret_value(params, "token") or ""
        target = f"slack-token:{token[:5] if token.startswith('xox') else ''}{fingerprint(token)}"
        if context.dry_run:
            return StepResult(target, (_CALL,))
        response = await self._request(_BUCKET, context.priority, "POST", "auth.revoke",
                                       headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 429:
            raise RateLimited("slack HTTP 429 ratelimited", code="ratelimited",
                              retry_after=retry_after(response.headers, default=_DEFAULT_WAIT_S))
        if response.status_code != 200:
            raise by_status("slack", response.status_code, response.reason_phrase, response.headers)
        body = json_object(response)
        if body.get("ok") is True:
            return StepResult(target, (_CALL,))
        error = REDACTOR.clip(str(body.get("error", "")), 100)
        if not error:
            raise TransientError("slack auth.revoke: HTTP 200 without a Slack response body", status=200)
        if error in _ALREADY_DEAD:
            return StepResult(target, (_CALL,), note=f"already dead: Slack says {error}")
        kind = TransientError if error in _TRANSIENT else PermanentError
        raise kind(f"slack auth.revoke: {error}", status=200, code=error)
