"""The github-token playbook end to end (Kafka in, the GitHub emulator process, audit out), and the provider's edge."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orchestrator.actions import StepContext
from orchestrator.embedded import free_port
from orchestrator.errors import PermanentError, TransientError
from orchestrator.governor import Governor
from orchestrator.providers.github import GitHubProvider
from orchestrator.settings import GitHubSettings
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure, isolated_settings, read_all

APP_ID = "Iv1." + secrets.token_hex(8)
APP_SECRET = secrets.token_hex(20)
GENEROUS = {"core": {"limit": 10_000, "window_s": 3600}, "secondary": None, "status": 403}


def _token(prefix: str = "ghp_") -> str:
    return prefix + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")


def _revoked(github: Emulator, token: str) -> bool:
    state = github.control("GET", "state")["tokens"]
    return bool(state[hashlib.sha256(token.encode()).hexdigest()]["revoked"])


def _calls(github: Emulator, method: str, path_start: str) -> list[dict[str, Any]]:
    return [r for r in github.control("GET", "requests") if r["method"] == method and r["path"].startswith(path_start)]


def _seeded(github: Emulator, count: int = 1, prefix: str = "ghp_") -> list[str]:
    tokens = [_token(prefix) for _ in range(count)]
    app = {"app_client_id": APP_ID} if prefix == "gho_" else {}
    github.seed({"tokens": [{"token": t, "owner": "octo-leaker", **app} for t in tokens]})
    return tokens


@pytest.fixture
def gh(github: Emulator) -> Iterator[Emulator]:
    """The GitHub emulator with its app seeded, generous limits, and faults and counters cleared."""
    github.seed({"apps": [{"client_id": APP_ID, "client_secret": APP_SECRET}]})
    github.control("PUT", "rate-limits", GENEROUS)
    github.reset()
    yield github
    github.control("PUT", "rate-limits", GENEROUS)
    github.reset()


@pytest.fixture(scope="module")
async def harness(bootstrap: str, github: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module, pointed at the GitHub emulator with OAuth app credentials."""
    settings = isolated_settings(bootstrap, github=GitHubSettings(
        api_url=github.url, app_client_id=APP_ID, app_client_secret=APP_SECRET))
    async with Harness(settings) as running:
        yield running


async def test_github_token_is_revoked_through_credentials_revoke(harness: Harness, gh: Emulator) -> None:
    """A leaked PAT is revoked by an unauthenticated POST /credentials/revoke and the run completes."""
    [token] = _seeded(gh)
    event = exposure("github.token", credential={"secret": token})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert _revoked(gh, token)
    assert [r["status"] for r in _calls(gh, "POST", "/credentials/revoke")] == [202]


async def test_oauth_token_is_deleted_through_its_app(harness: Harness, gh: Emulator) -> None:
    """A gho_ token goes to DELETE /applications/{client_id}/token with the app's Basic credentials."""
    [token] = _seeded(gh, prefix="gho_")
    event = exposure("github.token", credential={"secret": token})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert _revoked(gh, token)
    assert [r["status"] for r in _calls(gh, "DELETE", f"/applications/{APP_ID}/token")] == [204]
    assert _calls(gh, "POST", "/credentials/revoke") == []


async def test_tokens_arriving_together_share_one_revoke_call(harness: Harness, gh: Emulator) -> None:
    """Twenty tokens published at once are all revoked by far fewer than twenty calls."""
    tokens = _seeded(gh, 20)
    events = [exposure("github.token", credential={"secret": t}) for t in tokens]
    trails = await harness.run(*events)
    assert all(events_of(t)[-1] == "run.completed" for t in trails.values())
    assert all(_revoked(gh, t) for t in tokens)
    assert 1 <= len(_calls(gh, "POST", "/credentials/revoke")) <= 3


async def test_spent_rate_limit_waits_for_the_reset(bootstrap: str, gh: Emulator) -> None:
    """With the budget spent (x-ratelimit-remaining 0), the next token waits for the reset, audited, then succeeds."""
    gh.control("PUT", "rate-limits", {"core": {"limit": 1, "window_s": 2}})
    first, second = _seeded(gh, 2)
    # A fresh orchestrator: its governor has learned nothing from the module's generous limits.
    async with Harness(isolated_settings(bootstrap, github=GitHubSettings(api_url=gh.url))) as fresh:
        await fresh.run(exposure("github.token", credential={"secret": first}))
        event = exposure("github.token", credential={"secret": second})
        trail = (await fresh.run(event))[event["id"]]
    waits = [r for r in trail if r["event"] == "step.retrying"]
    assert waits and all(r["rate_limited"] for r in waits) and 0 < waits[0]["retry_in_s"] <= 3
    assert events_of(trail)[-1] == "run.completed"
    assert _revoked(gh, second)
    assert len([r for r in _calls(gh, "POST", "/credentials/revoke") if r["status"] == 403]) <= 1


async def test_server_error_is_retried_then_succeeds(harness: Harness, gh: Emulator) -> None:
    """One injected 503 on /credentials/revoke is retried; the token ends up revoked."""
    gh.control("POST", "faults", {"method": "POST", "path": "^/credentials/revoke$", "status": 503})
    [token] = _seeded(gh)
    event = exposure("github.token", credential={"secret": token})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started", "step.started", "step.retrying",
                                "step.succeeded", "run.completed"]
    assert _revoked(gh, token)


async def test_dry_run_plans_without_calling(harness: Harness, gh: Emulator) -> None:
    """A dry run returns the planned call and sends nothing to GitHub."""
    [token] = _seeded(gh)
    event = exposure("github.token", credential={"secret": token}, dry_run=True)
    trail = (await harness.run(event))[event["id"]]
    planned = trail[-1]
    assert planned["event"] == "run.planned"
    assert planned["plan"][0]["calls"][0].startswith("POST /credentials/revoke")
    assert gh.control("GET", "requests") == [] and not _revoked(gh, token)


async def test_canary_token_never_reaches_audit_or_logs(harness: Harness, gh: Emulator,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """The token value appears in no audit record and no log line; the target is its fingerprint."""
    [canary] = _seeded(gh)
    gh.control("POST", "faults", {"method": "POST", "path": "^/credentials/revoke$", "status": 503})
    event = exposure("github.token", credential={"secret": canary})
    trail = (await harness.run(event))[event["id"]]
    records = await read_all(harness.settings.bootstrap_servers, harness.settings.audit_topic)
    assert records and all(canary.encode() not in (r.value or b"") for r in records)
    out, err = capfd.readouterr()
    assert canary not in out + err
    assert any(r.get("target", "").startswith("github-token:ghp_hmac-sha256:") for r in trail)


@pytest.fixture
async def provider(gh: Emulator) -> AsyncIterator[GitHubProvider]:
    """A provider client used directly, without the pipeline."""
    async with GitHubProvider(GitHubSettings(api_url=gh.url), Governor("github", concurrency=2),
                              batch_window_s=0.01) as client:
        yield client


async def test_validation_failure_is_permanent(provider: GitHubProvider, gh: Emulator) -> None:
    """A 422 from /credentials/revoke is a PermanentError carrying the status."""
    gh.control("POST", "faults", {"path": "^/credentials/revoke$", "status": 422,
                                  "body": {"message": "Validation Failed"}})
    with pytest.raises(PermanentError) as caught:
        await provider.perform("github.revoke_token", {"token": _token()}, StepContext("direct"))
    assert caught.value.status == 422


async def test_unreachable_github_is_transient() -> None:
    """A refused connection becomes a TransientError, never an httpx exception."""
    settings = GitHubSettings(api_url=f"http://127.0.0.1:{free_port()}")
    async with GitHubProvider(settings, Governor("github", concurrency=1), batch_window_s=0.01) as client:
        with pytest.raises(TransientError):
            await client.perform("github.revoke_token", {"token": _token()}, StepContext("direct"))
