"""Dry runs recorded as plans (audit, run store, `status`, `undo`), and CLI commands that need the deployment's
fingerprint key and never create it: the real broker, the Okta emulator and the `orchestrator` command."""

from __future__ import annotations

import asyncio
import json
import secrets
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import keys, provenance
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.embedded import free_port
from orchestrator.metrics import Metrics
from orchestrator.store.rebuild import fold
from tests.conftest import Emulator
from tests.support import Harness, exposure, fresh_settings, read_all, run_cli


@pytest.fixture(scope="module")
async def harness(bootstrap: str, okta: Emulator, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[tuple[Harness, str]]:
    """One orchestrator with its HTTP API, and an admin token for `undo`."""
    root = tmp_path_factory.mktemp("dryrun")
    token = new_token()
    write_private(root / "tokens.json", json.dumps({"tokens": [token_entry(token, "root", [Role.ADMIN])]}))
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, http_listen=f"127.0.0.1:{free_port()}",
                              api_tokens_file=root / "tokens.json")
    async with Harness(settings) as running:
        yield running, token


async def test_a_dry_run_is_recorded_planned_and_undo_says_nothing_was_done(
        harness: tuple[Harness, str], okta: Emulator) -> None:
    """Every step record of a dry run says `dry_run: true`; `status` (and a rebuilt store) shows its steps planned;
    `undo` prints one line saying nothing was done and exits 1, and the user is untouched."""
    running, token = harness
    login = f"dry.{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": 1, "factors": 1}]})
    event = exposure("okta.user", credential={"owner": login}, severity="critical", dry_run=True)
    trail = (await running.run(event))[event["id"]]
    assert trail[-1]["event"] == "run.planned"
    steps = [r for r in trail if r["event"].startswith("step.")]
    assert any(r["event"] == "step.succeeded" for r in steps)
    assert all(r.get("dry_run") is True for r in steps), steps
    [rebuilt] = fold(trail)  # `db rebuild` from the audit topic reads them as planned too
    assert {s.state for s in rebuilt.steps.values() if s.state != "skipped"} == {"planned"}
    run_id = trail[-1]["run_id"]

    store_env = {"ORCHESTRATOR_DATA_DIR": str(running.settings.store.data_dir)}
    api_env = {"ORCHESTRATOR_API_URL": str(running.orchestrator.api_url), "ORCHESTRATOR_API_TOKEN": token}
    status, undo, undo_json = await asyncio.gather(
        asyncio.to_thread(run_cli, "status", event["id"], "--json", env=store_env),
        asyncio.to_thread(run_cli, "undo", run_id, env=api_env),
        asyncio.to_thread(run_cli, "undo", event["id"], "--json", env=api_env))
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["state"] == "planned"
    states = [s["state"] for s in document["steps"]]
    assert "planned" in states and "succeeded" not in states, states
    assert (undo.returncode, undo.stdout, undo.stderr) == (1, "dry run: nothing was done, nothing to undo\n", "")
    answer = json.loads(undo_json.stdout)
    assert undo_json.returncode == 1 and answer["planned"] is True and answer["irreversible"] == []
    users: list[dict[str, Any]] = okta.control("GET", "state")["users"]
    assert next(u for u in users if u["login"] == login)["status"] == "ACTIVE"


def test_metrics_count_a_dry_run_step_as_planned() -> None:
    """`orchestrator_step_duration_seconds` labels a dry run's step `planned`, never `succeeded`."""
    metrics = Metrics()
    for dry_run in (True, None, True):
        metrics.observe({"event": "step.succeeded", "action": "okta.suspend_user", "duration_ms": 5,
                         "dry_run": dry_run})
    sample = metrics.registry.get_sample_value
    labels = {"action": "okta.suspend_user"}
    assert sample("orchestrator_step_duration_seconds_count", {**labels, "outcome": "planned"}) == 2
    assert sample("orchestrator_step_duration_seconds_count", {**labels, "outcome": "succeeded"}) == 1


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=20)
       .filter(lambda n: n not in (".", "..")))
def test_a_command_never_creates_the_fingerprint_key(tmp_path: Path, name: str) -> None:
    """Without a key in the data directory, `create=False` creates nothing there and names the absolute path
    looked at and the variable that points elsewhere; the orchestrator (`create=True`) makes it once."""
    data_dir = tmp_path / name
    with pytest.raises(keys.MissingFingerprintKey) as raised:
        keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=data_dir, create=False)
    message = str(raised.value)
    assert str((data_dir / keys.FINGERPRINT_KEY_FILE).absolute()) in message and "ORCHESTRATOR_DATA_DIR" in message
    assert not data_dir.exists()
    made = keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=data_dir)
    again = keys.resolve(encryption_key=None, encryption_key_file=None, data_dir=data_dir, create=False)
    assert made.fingerprint == again.fingerprint


async def test_publish_without_the_key_refuses_unless_it_is_a_dry_run(tmp_path: Path) -> None:
    """`publish` with no key where it looks exits 2 with one line naming the path and creates nothing;
    `publish --dry-run` prints its exposures with a one-line warning."""
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"id": "by-hand-1", "credential": {"kind": "okta.user", "owner": "sam@x.io"}}]))
    env = {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "elsewhere"), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    refused, planned = await asyncio.gather(asyncio.to_thread(run_cli, "publish", str(events), env=env),
                                            asyncio.to_thread(run_cli, "publish", str(events), "--dry-run", env=env))
    path = str(tmp_path / "elsewhere" / keys.FINGERPRINT_KEY_FILE)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and path in refused.stderr and "ORCHESTRATOR_DATA_DIR" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["id"] == "by-hand-1"
    assert f"warning: no fingerprint key at {path}" in planned.stderr
    assert not (tmp_path / "elsewhere").exists()


async def test_trigger_without_the_key_warns_and_publishes_unsigned(bootstrap: str, tmp_path: Path) -> None:
    """`trigger` where no key is says so on stderr and publishes without the role header (creating no key);
    pointed at the orchestrator's data directory it signs its record."""
    topic = f"test.{secrets.token_hex(4)}.exposed"
    deployment = tmp_path / "deployment"
    keys.deployment_fingerprint_key(deployment)  # as `orchestrator run` would
    base = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ORCHESTRATOR_EXPOSURES_TOPIC": topic}
    args = ("trigger", "--kind", "okta.user", "--owner", "sam@example.com", "--json")
    unsigned, signed = await asyncio.gather(
        asyncio.to_thread(run_cli, *args, env={**base, "ORCHESTRATOR_DATA_DIR": str(tmp_path / "elsewhere")}),
        asyncio.to_thread(run_cli, *args, env={**base, "ORCHESTRATOR_DATA_DIR": str(deployment)}))
    assert unsigned.returncode == 0 and signed.returncode == 0, unsigned.stderr + signed.stderr
    assert unsigned.stderr.count("\n") == 1 and "publishing unsigned" in unsigned.stderr
    assert str(tmp_path / "elsewhere" / keys.FINGERPRINT_KEY_FILE) in unsigned.stderr
    assert signed.stderr == ""
    assert not (tmp_path / "elsewhere").exists()
    records = await read_all(bootstrap, topic, idle_timeout_s=0.3)
    headers = {record.key.decode(): dict(record.headers) for record in records}
    assert provenance.HEADER not in headers[json.loads(unsigned.stdout)["id"]]
    assert provenance.HEADER in headers[json.loads(signed.stdout)["id"]]
