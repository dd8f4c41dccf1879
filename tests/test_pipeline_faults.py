"""Provider failures end to end: permanent errors fail without retries, transient ones and 429s are retried."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.embedded import free_port
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure, fresh_settings, playbooks_with_retry

SESSIONS_PATH = r"^/api/v1/users/[^/]+/sessions$"


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator) -> AsyncIterator[Harness]:
    """One orchestrator for the module; each test uses its own user and clears the emulator's faults."""
    async with Harness(fresh_settings(bootstrap, okta.url, okta.admin_token)) as running:
        yield running


def _seeded_login(okta: Emulator) -> str:
    login = f"fault.{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": 2}]})
    return login


def _requests(okta: Emulator) -> list[tuple[str, str, int]]:
    return [(r["method"], r["path"], r["status"]) for r in okta.control("GET", "requests")]


async def test_unknown_owner_fails_the_run_without_retrying(harness: Harness, okta_clean: Emulator) -> None:
    """A 404 for the owner is permanent: step.failed and run.failed after exactly one attempt."""
    login = f"nobody.{secrets.token_hex(4)}@example.com"
    event = exposure("okta.session", credential={"owner": login})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started", "step.started", "step.failed", "run.failed"]
    failed = trail[3]
    assert failed["attempt"] == 1 and failed["status"] == 404 and failed["error"].startswith("not found")
    requests = _requests(okta_clean)
    assert requests.count(("GET", f"/api/v1/users/{login}", 404)) == 1
    assert all(method == "GET" for method, _, _ in requests)


async def test_a_503_is_retried_and_then_succeeds(harness: Harness, okta_clean: Emulator) -> None:
    """One 503 from Okta: step.retrying for attempt 1, then step.succeeded on attempt 2."""
    login = _seeded_login(okta_clean)
    okta_clean.control("POST", "faults", {"method": "DELETE", "path": SESSIONS_PATH, "status": 503, "count": 1})
    event = exposure("okta.session", credential={"owner": login})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started", "step.started", "step.retrying",
                                "step.succeeded", "run.completed"]
    retrying, succeeded = trail[3], trail[4]
    assert retrying["attempt"] == 1 and retrying["error"].startswith("transient") and "503" in retrying["error"]
    assert succeeded["attempt"] == 2
    deletes = [status for method, _, status in _requests(okta_clean) if method == "DELETE"]
    assert deletes == [503, 204]


async def test_a_429_waits_for_the_rate_limit_reset(harness: Harness, okta_clean: Emulator) -> None:
    """A 429 with X-Rate-Limit-Reset two seconds ahead: the retry waits until the reset, then succeeds."""
    login = _seeded_login(okta_clean)
    reset = math.ceil(time.time()) + 2
    okta_clean.control("POST", "faults", {
        "method": "DELETE", "path": SESSIONS_PATH, "status": 429, "count": 1,
        "headers": {"X-Rate-Limit-Limit": "600", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(reset)},
        "body": {"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests.",
                 "errorLink": "E0000047", "errorId": "oaefault", "errorCauses": []},
    })
    event = exposure("okta.session", credential={"owner": login})
    trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started", "step.started", "step.retrying",
                                "step.succeeded", "run.completed"]
    retrying, succeeded = trail[3], trail[4]
    assert retrying["rate_limited"] is True and retrying["error"].startswith("rate limited")
    assert retrying["retry_in_s"] >= 1.0
    assert datetime.fromisoformat(succeeded["ts"]).timestamp() >= reset
    assert [status for method, _, status in _requests(okta_clean) if method == "DELETE"] == [429, 204]


async def test_a_refused_connection_is_retried_then_fails_cleanly(bootstrap: str, okta: Emulator,
                                                                  tmp_path: Path) -> None:
    """Okta unreachable: transient, retried up to the playbook's limit, then run.failed with a clean error."""
    playbooks = playbooks_with_retry(tmp_path / "playbooks", max_attempts=3, initial_delay_s=0.05, max_delay_s=0.1)
    closed = f"http://127.0.0.1:{free_port()}"
    settings = fresh_settings(bootstrap, closed, okta.admin_token, playbooks_dir=playbooks)
    event = exposure("okta.session", credential={"owner": "someone@example.com"})
    async with Harness(settings) as harness:
        trail = (await harness.run(event))[event["id"]]
    assert events_of(trail) == ["exposure.received", "run.started", "step.started", "step.retrying",
                                "step.retrying", "step.failed", "run.failed"]
    failed = trail[5]
    assert failed["attempt"] == 3
    assert failed["error"].startswith("transient: okta unreachable")
    assert all("AttributeError" not in str(record.get("error")) for record in trail)
