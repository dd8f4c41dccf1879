"""The slack-token playbook end to end against the Slack emulator process, and the provider's reading of ok:false."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from orchestrator.actions import StepContext
from orchestrator.errors import PermanentError, TransientError
from orchestrator.governor import Governor
from orchestrator.providers.slack import SlackProvider
from orchestrator.settings import SlackSettings
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure, isolated_settings

GENEROUS = {"auth.revoke": {"limit": 10_000, "window_s": 60}}


def _token() -> str:
    return f"xoxb-{secrets.randbelow(10**12)}-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}"


def _seeded(slack: Emulator, count: int = 1, team: str | None = None) -> list[str]:
    team = team or "T" + secrets.token_hex(5).upper()
    tokens = [_token() for _ in range(count)]
    slack.seed({"tokens": [{"token": t, "user": "U" + secrets.token_hex(4).upper(), "team": team} for t in tokens]})
    return tokens


def _revoked(slack: Emulator, token: str) -> bool:
    return bool(slack.control("GET", "state")["tokens"][hashlib.sha256(token.encode()).hexdigest()]["revoked"])


def _ok_false(error: str) -> dict[str, object]:
    return {"method": "POST", "path": "^/api/auth.revoke$", "status": 200, "body": {"ok": False, "error": error}}


@pytest.fixture
def sl(slack: Emulator) -> Iterator[Emulator]:
    """The Slack emulator with generous limits, and faults and counters cleared."""
    slack.control("PUT", "rate-limits", GENEROUS)
    slack.reset()
    yield slack
    slack.control("PUT", "rate-limits", GENEROUS)
    slack.reset()


@pytest.fixture(scope="module")
async def harness(bootstrap: str, slack: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module, pointed at the Slack emulator."""
    async with Harness(isolated_settings(bootstrap, slack=SlackSettings(api_url=f"{slack.url}/api"))) as running:
        yield running


async def test_slack_token_is_revoked(harness: Harness, sl: Emulator) -> None:
    """A leaked bot token is revoked with auth.revoke and the run completes."""
    [token] = _seeded(sl)
    event = exposure("slack.token", credential={"secret": token})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert _revoked(sl, token)


async def test_already_revoked_and_unknown_tokens_count_as_done(harness: Harness, sl: Emulator) -> None:
    """token_revoked and invalid_auth mean the token is dead: the step succeeds with a note, no retry."""
    [revoked] = _seeded(sl)
    events = [exposure("slack.token", credential={"secret": revoked}),
              exposure("slack.token", credential={"secret": _token()})]
    await harness.run(events[0])
    events[0] = exposure("slack.token", credential={"secret": revoked})
    trails = await harness.run(*events)
    notes = sorted(next(r["note"] for r in trails[e["id"]] if r["event"] == "step.succeeded") for e in events)
    assert notes == ["already dead: Slack says invalid_auth", "already dead: Slack says token_revoked"]
    assert all(events_of(t)[-1] == "run.completed" and "step.retrying" not in events_of(t) for t in trails.values())


async def test_ok_false_permanent_error_fails_the_step(harness: Harness, sl: Emulator) -> None:
    """HTTP 200 with ok:false and a client-side error fails the step at once, naming the Slack error."""
    [token] = _seeded(sl)
    sl.control("POST", "faults", _ok_false("not_allowed_token_type"))
    event = exposure("slack.token", credential={"secret": token})
    trail = (await harness.run(event))[event["id"]]
    failed = next(r for r in trail if r["event"] == "step.failed")
    assert failed["error_code"] == "not_allowed_token_type" and failed["attempt"] == 1
    assert events_of(trail)[-1] == "run.failed" and not _revoked(sl, token)


async def test_ok_false_server_error_is_retried(harness: Harness, sl: Emulator) -> None:
    """HTTP 200 with ok:false, error fatal_error is transient: retried, then the token is revoked."""
    [token] = _seeded(sl)
    sl.control("POST", "faults", _ok_false("fatal_error"))
    event = exposure("slack.token", credential={"secret": token})
    trail = (await harness.run(event))[event["id"]]
    assert "step.retrying" in events_of(trail) and events_of(trail)[-1] == "run.completed"
    assert _revoked(sl, token)


async def test_http_429_waits_for_retry_after(harness: Harness, sl: Emulator) -> None:
    """Over auth.revoke's limit, Slack's 429 Retry-After is waited out (audited) and both tokens are revoked."""
    sl.control("PUT", "rate-limits", {"auth.revoke": {"limit": 1, "window_s": 2}})
    tokens = _seeded(sl, 2)
    events = [exposure("slack.token", credential={"secret": t}) for t in tokens]
    trails = await harness.run(*events)
    waits = [r for t in trails.values() for r in t if r["event"] == "step.retrying"]
    assert waits and all(r["rate_limited"] and 0 < r["retry_in_s"] <= 2 for r in waits)
    assert all(events_of(t)[-1] == "run.completed" for t in trails.values())
    assert all(_revoked(sl, t) for t in tokens)


@pytest.fixture
async def provider(sl: Emulator) -> AsyncIterator[SlackProvider]:
    """A provider client used directly, without the pipeline."""
    async with SlackProvider(SlackSettings(api_url=f"{sl.url}/api"), Governor("slack", concurrency=2)) as client:
        yield client


@pytest.mark.parametrize(("error", "kind"), [("internal_error", TransientError), ("missing_scope", PermanentError)])
async def test_ok_false_errors_translate(provider: SlackProvider, sl: Emulator, error: str,
                                         kind: type[Exception]) -> None:
    """Slack's documented server errors are transient, the others permanent; the code is kept."""
    sl.control("POST", "faults", _ok_false(error))
    with pytest.raises(kind) as caught:
        await provider.perform("slack.revoke_token", {"token": _token()}, StepContext("direct"))
    assert getattr(caught.value, "code", None) == error


async def test_dry_run_sends_nothing(provider: SlackProvider, sl: Emulator) -> None:
    """A dry run returns the auth.revoke call it would make and leaves the token alive."""
    [token] = _seeded(sl)
    result = await provider.perform("slack.revoke_token", {"token": token}, StepContext("direct", dry_run=True))
    assert result.calls == ("POST /auth.revoke (Bearer: the exposed token)",)
    assert sl.control("GET", "requests") == [] and not _revoked(sl, token)
