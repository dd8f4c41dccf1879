"""The gcp-service-account-key playbook end to end against the GCP IAM emulator process, and the provider's edge."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orchestrator.actions import StepContext
from orchestrator.errors import PermanentError
from orchestrator.governor import Governor
from orchestrator.providers.gcp import GcpProvider
from orchestrator.settings import GcpSettings
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure, isolated_settings

PROJECT = "leaky-project"


def _key(gcp: Emulator) -> tuple[str, str]:
    email = f"sa-{secrets.token_hex(4)}@{PROJECT}.iam.gserviceaccount.com"
    key_id = secrets.token_hex(20)
    gcp.seed({"keys": [{"project": PROJECT, "email": email, "key_id": key_id}]})
    return email, key_id


def _state(gcp: Emulator, key_id: str) -> dict[str, Any]:
    return next(k for k in gcp.control("GET", "state")["keys"] if k["key_id"] == key_id)


def _event(email: str, key_id: str, **extra: Any) -> dict[str, Any]:
    return exposure("gcp.service_account_key", credential={"owner": email, "id": key_id}, **extra)


@pytest.fixture
def gc(gcp: Emulator) -> Iterator[Emulator]:
    """The GCP emulator with faults and counters cleared."""
    gcp.reset()
    yield gcp
    gcp.reset()


@pytest.fixture(scope="module")
async def harness(bootstrap: str, gcp: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module, pointed at the GCP emulator with a fixed access token."""
    settings = isolated_settings(bootstrap, gcp=GcpSettings(iam_url=gcp.url, access_token=gcp.admin_token))
    async with Harness(settings) as running:
        yield running


async def test_key_is_disabled_then_deleted(harness: Harness, gc: Emulator) -> None:
    """The exposed key is disabled (reason EXPOSED), then deleted; both steps succeed."""
    email, key_id = _key(gc)
    event = _event(email, key_id)
    trail = (await harness.run(event))[event["id"]]
    assert [r["step"] for r in trail if r["event"] == "step.succeeded"] == ["disable-key", "delete-key"]
    assert events_of(trail)[-1] == "run.completed"
    assert _state(gc, key_id) | {"disabled": True, "deleted": True} == _state(gc, key_id)
    requests = [(r["method"], r["path"]) for r in gc.control("GET", "requests")]
    assert [m for m, _ in requests] == ["POST", "DELETE"] and requests[0][1].endswith(f"/keys/{key_id}:disable")


async def test_already_deleted_key_counts_as_done(harness: Harness, gc: Emulator) -> None:
    """A key that is already gone (404) is the end state: both steps succeed with a note."""
    email, key_id = _key(gc)
    await harness.run(_event(email, key_id))
    event = _event(email, key_id)
    trail = (await harness.run(event))[event["id"]]
    notes = [r["note"] for r in trail if r["event"] == "step.succeeded"]
    assert notes == ["key already deleted", "key already deleted"]
    assert events_of(trail)[-1] == "run.completed"


async def test_server_error_is_retried_then_succeeds(harness: Harness, gc: Emulator) -> None:
    """An injected 503 on disable is retried; the key ends up disabled and deleted."""
    email, key_id = _key(gc)
    gc.control("POST", "faults", {"method": "POST", "path": ":disable$", "status": 503,
                                  "body": {"error": {"code": 503, "status": "UNAVAILABLE", "message": "try again"}}})
    event = _event(email, key_id)
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail).count("step.retrying") == 1 and events_of(trail)[-1] == "run.completed"
    assert _state(gc, key_id)["deleted"]


async def test_unknown_service_account_fails_without_retrying(harness: Harness, gc: Emulator) -> None:
    """IAM's 403 for an account it cannot find is permanent: both steps fail at once, the run fails."""
    event = _event(f"ghost-{secrets.token_hex(3)}@{PROJECT}.iam.gserviceaccount.com", secrets.token_hex(20))
    trail = (await harness.run(event))[event["id"]]
    failed = [r for r in trail if r["event"] == "step.failed"]
    assert [(r["step"], r["status"], r["error_code"], r["attempt"]) for r in failed] == [
        ("disable-key", 403, "PERMISSION_DENIED", 1), ("delete-key", 403, "PERMISSION_DENIED", 1)]
    assert events_of(trail)[-1] == "run.failed"


async def test_dry_run_plans_both_calls_and_changes_nothing(harness: Harness, gc: Emulator) -> None:
    """A dry run plans the disable and delete calls and sends nothing to IAM."""
    email, key_id = _key(gc)
    event = _event(email, key_id, dry_run=True)
    trail = (await harness.run(event))[event["id"]]
    plan = trail[-1]["plan"]
    assert [step["calls"][0].split(" ")[0] for step in plan] == ["POST", "DELETE"]
    assert "SERVICE_ACCOUNT_KEY_DISABLE_REASON_EXPOSED" in plan[0]["calls"][0]
    assert gc.control("GET", "requests") == [] and not _state(gc, key_id)["disabled"]


async def test_bad_access_token_is_permanent(gc: Emulator) -> None:
    """A token IAM rejects (401 UNAUTHENTICATED) is a PermanentError, not something to retry."""
    email, key_id = _key(gc)
    settings = GcpSettings(iam_url=gc.url, access_token="ya29." + secrets.token_urlsafe(16))
    async with GcpProvider(settings, Governor("gcp", concurrency=1)) as provider:
        with pytest.raises(PermanentError) as caught:
            await provider.perform("gcp.delete_service_account_key", {"email": email, "key_id": key_id},
                                   StepContext("direct"))
    assert caught.value.status == 401 and caught.value.code == "UNAUTHENTICATED"
