"""`orchestrator status`, `exposures list` and `db upgrade` against a store on each backend (no Kafka needed)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from orchestrator.settings import StoreSettings
from orchestrator.store import Content, RunStore, State, StepRow
from tests.support import run_cli


def _env(settings: StoreSettings) -> dict[str, str]:
    if settings.database_url:
        return {"ORCHESTRATOR_DATABASE_URL": settings.database_url}
    return {"ORCHESTRATOR_DATA_DIR": str(settings.data_dir)}


def _content(exposure_id: str, kind: str = "okta.user") -> Content:
    return Content(id=exposure_id, fingerprint=exposure_id.ljust(32, "0")[:32], kind=kind, target=f"{kind}:sam",
                   owner="sam@example.com", detector="trufflehog", actor=None, severity="high", playbook=None)


@pytest.fixture
async def filled(store_settings: StoreSettings) -> StoreSettings:
    """A store holding one exposure in each kind of state."""
    store = RunStore.open(store_settings, owner="test")
    done = await store.claim(_content("cli-done-1"))
    store.started(done.row_id, run_id="r1", playbook="okta-user")
    store.step(done.row_id, "r1", StepRow("suspend", "okta.suspend_user", "succeeded", 1))
    await store.finish(done.row_id, State.COMPLETED, terminal_event="run.completed")
    failed = await store.claim(_content("cli-failed-1", kind="aws.access_key"))
    store.started(failed.row_id, run_id="r2", playbook="aws-access-key")
    await store.finish(failed.row_id, State.FAILED, terminal_event="run.failed", error="failed steps: deactivate")
    running = await store.claim(_content("cli-running-1"))
    store.started(running.row_id, run_id="r3", playbook="okta-user")
    await store.close()
    return store_settings


@pytest.mark.parametrize(("exposure_id", "code", "state"), [
    ("cli-done-1", 0, "completed"), ("cli-failed", 1, "failed"), ("cli-running-1", 4, "running")])
async def test_status_exits_by_state_and_takes_a_unique_prefix(filled: StoreSettings, exposure_id: str, code: int,
                                                                state: str) -> None:
    result = await asyncio.to_thread(run_cli, "status", exposure_id, "--json", env=_env(filled))
    assert result.returncode == code, result.stderr
    document = json.loads(result.stdout)
    assert document["state"] == state and document["done"] == (code != 4)


async def test_status_refuses_an_ambiguous_prefix_and_an_unknown_id(filled: StoreSettings) -> None:
    ambiguous = await asyncio.to_thread(run_cli, "status", "cli-", env=_env(filled))
    assert ambiguous.returncode == 2 and "matches several exposures" in ambiguous.stderr
    unknown = await asyncio.to_thread(run_cli, "status", "nope", env=_env(filled))
    assert unknown.returncode == 1 and "no exposure 'nope'" in unknown.stderr
    readable = await asyncio.to_thread(run_cli, "status", "cli-done-1", env=_env(filled))
    assert "state: completed" in readable.stdout and "okta.suspend_user" in readable.stdout


async def test_exposures_list_filters_newest_first(filled: StoreSettings) -> None:
    listed = await asyncio.to_thread(run_cli, "exposures", "list", "--json", env=_env(filled))
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [
        "cli-running-1", "cli-failed-1", "cli-done-1"]
    failed = await asyncio.to_thread(run_cli, "exposures", "list", "--state", "failed", "--kind", "aws.access_key",
                                     "--since", "1h", "--json", env=_env(filled))
    assert [json.loads(line)["error"] for line in failed.stdout.splitlines()] == ["failed steps: deactivate"]
    limited = await asyncio.to_thread(run_cli, "exposures", "list", "--limit", "1", env=_env(filled))
    assert "cli-running-1" in limited.stdout and "cli-done-1" not in limited.stdout
    bad = await asyncio.to_thread(run_cli, "exposures", "list", "--state", "nonsense", env=_env(filled))
    assert bad.returncode == 2


async def test_db_upgrade_creates_the_store_and_status_says_where_it_is_missing(tmp_path: object) -> None:
    env = {"ORCHESTRATOR_DATA_DIR": f"{tmp_path}/fresh"}
    missing = await asyncio.to_thread(run_cli, "status", "x", env=env)
    assert missing.returncode == 1 and "no run store at" in missing.stderr
    created = await asyncio.to_thread(run_cli, "db", "upgrade", env=env)
    assert created.returncode == 0 and "0 exposures" in created.stdout, created.stderr
    again = await asyncio.to_thread(run_cli, "db", "upgrade", env=env)
    assert again.returncode == 0


async def test_an_unreachable_database_is_one_line_without_its_password() -> None:
    password = "pw-" + uuid.uuid4().hex
    env = {"ORCHESTRATOR_DATABASE_URL": f"postgresql://orchestrator:{password}@127.0.0.1:1/orchestrator"}
    for command in (["db", "upgrade"], ["status", "x"]):
        result = await asyncio.to_thread(run_cli, *command, env=env)
        assert result.returncode == 1 and "cannot" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and password not in result.stderr + result.stdout
