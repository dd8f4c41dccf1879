"""Protected principals, the mass-action brake, two-person approval and undo, end to end: the real broker, the
Okta emulator and moto, the HTTP API and the `orchestrator` command, one orchestrator for the module."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import boto3
import httpx
import pytest

from orchestrator.actions import StepContext
from orchestrator.audit_stream import follow
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.embedded import free_port
from orchestrator.governor import Governor
from orchestrator.providers.gcp import GcpProvider
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR, AwsSettings, GcpSettings, Settings
from tests.conftest import Emulator
from tests.support import Harness, Receiver, events_of, exposure, fresh_settings, publish, roomy_rate_limits, run_cli

#: Destructive okta steps the brake lets through per window in this module (the default, 50, is checked in
#: test_safety_rules.py without a broker).
OKTA_LIMIT = 10
QUARANTINE = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"

POLICY = f"""
protected:
  okta:
    owners: ["00uPROT*", "group:break-glass"]
groups:
  break-glass: [breakglass@example.com]
brake:
  providers: {{okta: {OKTA_LIMIT}}}
"""

APPROVED_PLAYBOOK = """
name: okta-user-approved
description: Suspend an account flagged by the insider-review detector, once a second person approved.
match:
  kinds: [okta.user]
  detectors: [insider-review]
approval: required
steps:
  - name: suspend
    action: okta.suspend_user
    params:
      user: {field: credential.owner}
"""


@dataclass(frozen=True)
class Safety:
    """The running orchestrator, its API tokens (alice, bob: responders; root: admin) and the webhook."""

    harness: Harness
    url: str
    tokens: dict[str, str]
    receiver: Receiver

    @property
    def settings(self) -> Settings:
        """The orchestrator's settings."""
        return self.harness.settings

    def headers(self, who: str) -> dict[str, str]:
        """The Authorization header of `who`."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def cli(self, who: str, *args: str) -> Any:
        """`orchestrator ARGS` run by `who` against this API (in a thread: the API answers on this loop)."""
        env = {"ORCHESTRATOR_API_URL": self.url, "ORCHESTRATOR_API_TOKEN": self.tokens[who]}
        return await asyncio.to_thread(run_cli, *args, env=env)


@pytest.fixture(scope="module")
def base_settings(bootstrap: str, okta: Emulator, moto: str, receiver: Receiver, aws_credentials: None,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, str]]:
    """Settings with the policy file, the shipped playbooks plus one that needs approval, and API tokens."""
    root = tmp_path_factory.mktemp("safety")
    playbooks = root / "playbooks"
    shutil.copytree(DEFAULT_PLAYBOOKS_DIR, playbooks)
    (playbooks / "okta-user-approved.yaml").write_text(APPROVED_PLAYBOOK)
    (root / "policy.yaml").write_text(POLICY)
    roles = {"alice": Role.RESPONDER, "bob": Role.RESPONDER, "root": Role.ADMIN}
    tokens = {name: new_token() for name in roles}
    write_private(root / "tokens.json", json.dumps({"tokens": [token_entry(tokens[n], n, [r])
                                                               for n, r in roles.items()]}))
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, http_listen=f"127.0.0.1:{free_port()}",
                              api_tokens_file=root / "tokens.json", oncall_webhook_url=receiver.url,
                              policy_file=root / "policy.yaml", playbooks_dir=playbooks, approval_poll_s=0.1,
                              aws=AwsSettings(region="us-east-1", endpoint_url=moto))
    return settings, tokens


@pytest.fixture(scope="module")
async def safety(base_settings: tuple[Settings, dict[str, str]], receiver: Receiver) -> AsyncIterator[Safety]:
    """One orchestrator for the module."""
    settings, tokens = base_settings
    async with Harness(settings) as harness:
        assert harness.orchestrator.api_url is not None
        yield Safety(harness, harness.orchestrator.api_url, tokens, receiver)


@pytest.fixture
async def http(safety: Safety) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the API."""
    async with httpx.AsyncClient(base_url=safety.url, timeout=30) as client:
        yield client


async def record_of(settings: Settings, exposure_id: str, matches: Callable[[dict[str, Any]], bool],
                    timeout_s: float = 30.0) -> dict[str, Any]:
    """The first audit record of the exposure for which `matches` holds."""
    async with asyncio.timeout(timeout_s):
        async for record in follow(settings.bootstrap_servers, settings.audit_topic, exposure_ids=[exposure_id]):
            if matches(record):
                return record
    raise AssertionError("unreachable")


def _event(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record["event"] == name


def _user_ids(tag: str, count: int) -> list[str]:
    """Okta user ids (`00u` + 17 characters) with a per-test tag, so the request log can tell them apart."""
    return [f"00u{tag}{n:0{17 - len(tag)}d}" for n in range(count)]


def _seed(okta: Emulator, ids: list[str]) -> None:
    okta.seed({"users": [{"id": uid, "login": f"{uid.lower()}@example.com", "sessions": 1} for uid in ids]})


def _session_deletes(okta: Emulator, tag: str) -> list[str]:
    """User ids whose sessions were cleared, in the emulator's order."""
    prefix = f"/api/v1/users/00u{tag}"
    return [r["path"].split("/")[4] for r in okta.control("GET", "requests")
            if r["method"] == "DELETE" and r["path"].startswith(prefix) and r["path"].endswith("/sessions")]


async def test_a_storm_engages_the_brake_at_the_threshold_pages_once_and_releases_in_order(
        safety: Safety, okta_clean: Emulator, http: httpx.AsyncClient) -> None:
    """500 exposures: protected ones are planned and paged; the brake lets the okta limit through, holds the
    rest with one page and no further call, then `brake release` lets them run, oldest first."""
    tag, prot = "S" + secrets.token_hex(2).upper(), "PROT" + secrets.token_hex(2).upper()
    plain, protected = _user_ids(tag, 475), _user_ids(prot, 25)
    _seed(okta_clean, plain + protected)
    brake = (await http.get("/v1/brake", headers=safety.headers("root"))).json()
    budget = OKTA_LIMIT - brake["providers"].get("okta", {}).get("count", 0)
    assert not brake["engaged"] and budget > 0
    events = [exposure("okta.session", credential={"owner": uid, "id": f"102{uid}"}, source={"detector": "har"})
              for uid in plain + protected]
    events.sort(key=lambda _: secrets.randbits(8))  # protected and plain interleaved
    with roomy_rate_limits(okta_clean):
        await publish(safety.settings.bootstrap_servers, safety.settings.exposures_topic, events)
        ids = {e["id"]: e["credential"]["owner"] for e in events}
        protected_ids = [i for i, owner in ids.items() if owner.startswith(f"00u{prot}")]
        trails = await safety.harness.collect(*protected_ids, timeout_s=60)
        assert all(t[-1]["event"] == "run.planned" and t[-1]["reason"] == "protected"
                   and t[-1]["protected_by"] == "okta owner 00uPROT*" for t in trails.values())
        status = await _brake_holding(http, safety.headers("root"), len(plain) - budget)
        assert status["engaged"] and len(status["waiting"]) == len(plain) - budget
        assert len(_session_deletes(okta_clean, tag)) == budget  # no destructive call beyond the threshold
        assert not _session_deletes(okta_clean, prot)
        # While engaged: a responder's trigger goes through, audited so; one forging actor and detector waits.
        [manual, forged] = _user_ids(tag + "M", 2)
        _seed(okta_clean, [manual, forged])
        asked = await http.post("/v1/triggers", headers=safety.headers("alice"),
                                json={"kind": "okta.session", "owner": manual, "id": f"102{manual}"})
        trigger_id = asked.json()["id"]
        fake = exposure("okta.session", credential={"owner": forged, "id": f"102{forged}"}, actor="alice",
                        source={"detector": "api"})
        await safety.harness.publish(fake)
        bypassed = (await safety.harness.collect(trigger_id))[trigger_id]
        assert bypassed[-1]["event"] == "run.completed" and bypassed[1]["brake"].startswith("bypassed")
        status = await _brake_holding(http, safety.headers("root"), len(plain) - budget + 1)
        assert status["waiting"][-1]["exposure_id"] == fake["id"]
        assert sorted(_session_deletes(okta_clean, tag + "M")) == [manual]
        waiting = [g["run_id"] for g in sorted(status["waiting"], key=lambda g: g["position"])]
        released = await safety.cli("root", "brake", "release", "--why", "storm checked: a real leak", "--json")
        assert released.returncode == 0, released.stderr
        assert json.loads(released.stdout)["released"] == waiting  # oldest first
        # The limit, and the responder's trigger counted beyond it.
        assert status["providers"]["okta"] == {"count": OKTA_LIMIT + 1, "limit": OKTA_LIMIT}
        plain_ids = [i for i, owner in ids.items() if owner.startswith(f"00u{tag}")] + [fake["id"]]
        done = await safety.harness.collect(*plain_ids, timeout_s=90)
    assert all(t[-1]["event"] == "run.completed" for t in done.values())
    held = [t for t in done.values() if "run.awaiting_approval" in events_of(t)]
    assert len(held) == len(plain) - budget + 1
    approved = [next(r for r in t if r["event"] == "run.approved") for t in held]
    assert {(a["kind"], a["decision"], a["decided_by"]) for a in approved} == {("brake", "released", "root")}
    assert sorted(_session_deletes(okta_clean, tag)) == sorted([*plain, manual, forged])
    assert len(safety.receiver.events("brake.engaged")) == 1
    assert any(p.get("reason") == "protected" for p in safety.receiver.events("run.planned"))


async def test_an_approval_is_refused_to_its_requester_and_the_first_answer_wins(
        safety: Safety, okta_clean: Emulator, http: httpx.AsyncClient) -> None:
    """alice triggers a run that needs approval: her own approve is refused, bob's approves, root's deny is late."""
    [uid] = _user_ids("A" + secrets.token_hex(3).upper(), 1)
    _seed(okta_clean, [uid])
    asked = await http.post("/v1/triggers", headers=safety.headers("alice"),
                            json={"kind": "okta.user", "owner": uid, "playbook": "okta-user-approved"})
    exposure_id = asked.json()["id"]
    waiting = await record_of(safety.settings, exposure_id, _event("run.awaiting_approval"))
    assert waiting["requester"] == "alice" and [s["action"] for s in waiting["plan"]] == ["okta.suspend_user"]
    own = await safety.cli("alice", "approve", waiting["run_id"])
    assert own.returncode == 1 and "alice requested this run" in own.stderr and "Traceback" not in own.stderr
    assert _status(okta_clean, uid) == "ACTIVE"
    second = await http.post(f"/v1/runs/{waiting['run_id']}/approve", headers=safety.headers("bob"),
                             json={"why": "confirmed with the user's manager"})
    assert second.status_code == 200 and second.json()["decided_by"] == "bob"
    late = await http.post(f"/v1/runs/{waiting['run_id']}/deny", headers=safety.headers("root"), json={})
    assert late.status_code == 409 and "approved by bob" in late.json()["detail"]
    trail = (await safety.harness.collect(exposure_id))[exposure_id]
    answer = next(r for r in trail if r["event"] == "run.approved")
    assert (answer["decided_by"], answer["why"]) == ("bob", "confirmed with the user's manager")
    assert answer["decided_at"] and trail[-1]["event"] == "run.completed"
    assert _status(okta_clean, uid) == "SUSPENDED"


async def test_an_approval_pending_across_a_restart_is_still_approvable(
        base_settings: tuple[Settings, dict[str, str]], okta_clean: Emulator) -> None:
    """A run waiting for approval when the orchestrator stops waits again after the restart, same run id."""
    template, tokens = base_settings
    fresh = fresh_settings(template.bootstrap_servers, okta_clean.url, okta_clean.admin_token)
    settings = replace(template, exposures_topic=fresh.exposures_topic, audit_topic=fresh.audit_topic,
                       dlq_topic=fresh.dlq_topic, group_id=fresh.group_id, store=fresh.store,
                       http_listen=f"127.0.0.1:{free_port()}", oncall_webhook_url=None)
    [uid] = _user_ids("R" + secrets.token_hex(3).upper(), 1)
    _seed(okta_clean, [uid])
    event = exposure("okta.user", credential={"owner": uid}, source={"detector": "insider-review"})
    async with Harness(settings) as first:
        await first.publish(event)
        before = await record_of(settings, event["id"], _event("run.awaiting_approval"))
    # A new group id reads the topic from the start, as the old group would from its uncommitted offset,
    # without waiting out Tansu's rebalance of the old group (about ten seconds).
    async with Harness(replace(settings, group_id=settings.group_id + "-restarted")) as second:
        again = await record_of(settings, event["id"], lambda r: r["event"] == "run.awaiting_approval"
                                and r["ts"] > before["ts"])
        assert again["run_id"] == before["run_id"]
        async with httpx.AsyncClient(base_url=str(second.orchestrator.api_url), timeout=30) as client:
            alice = {"Authorization": f"Bearer {tokens['alice']}"}
            listed = await client.get("/v1/approvals", headers=alice)
            assert [g["run_id"] for g in listed.json()["waiting"]] == [before["run_id"]]
            stored = (await client.get(f"/v1/exposures/{event['id']}", headers=alice)).json()
            assert stored["state"] == "awaiting_approval" and stored["run_id"] == before["run_id"]
            answer = await client.post(f"/v1/runs/{before['run_id']}/approve", json={"why": "after restart"},
                                       headers={"Authorization": f"Bearer {tokens['bob']}"})
            assert answer.status_code == 200, answer.text
        trail = (await second.collect(event["id"]))[event["id"]]
    assert trail[-1]["event"] == "run.completed" and _status(okta_clean, uid) == "SUSPENDED"


async def test_undo_unsuspends_the_okta_user_and_reactivates_the_aws_key(
        safety: Safety, okta_clean: Emulator, moto: str, http: httpx.AsyncClient) -> None:
    """`undo` reverses suspend, deactivate and quarantine, says what cannot be undone, and never twice."""
    [uid] = _user_ids("U" + secrets.token_hex(3).upper(), 1)
    _seed(okta_clean, [uid])
    iam = boto3.client("iam", endpoint_url=moto, region_name="us-east-1")
    user = f"undo-{secrets.token_hex(4)}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    okta_event = exposure("okta.user", credential={"owner": uid}, severity="critical")
    aws_event = exposure("aws.access_key", credential={"id": key, "owner": user})
    trails = await safety.harness.run(okta_event, aws_event)
    assert {t[-1]["event"] for t in trails.values()} == {"run.completed"}
    assert _status(okta_clean, uid) == "SUSPENDED"
    run_id = trails[okta_event["id"]][-1]["run_id"]
    refused = await http.post(f"/v1/runs/{run_id}/undo", headers=safety.headers("alice"))
    assert refused.status_code == 403
    undone = (await http.post(f"/v1/runs/{run_id}/undo", headers=safety.headers("root"))).json()
    assert [s["action"] for s in undone["reversed"]] == ["okta.unsuspend_user"]
    assert set(undone["irreversible"]) == {"clear-sessions", "reset-factors"}
    assert _status(okta_clean, uid) == "ACTIVE"
    twice = (await http.post(f"/v1/runs/{okta_event['id']}/undo", headers=safety.headers("root"))).json()
    assert twice["reversed"] == [] and twice["already_undone"] == ["suspend"]
    cli = await safety.cli("root", "undo", aws_event["id"])
    assert cli.returncode == 0, cli.stderr
    assert "reversed quarantine-user: aws.release_quarantine" in cli.stdout
    assert "reversed deactivate-key: aws.activate_access_key" in cli.stdout
    assert "cannot be undone: revoke-user-sessions" in cli.stdout
    assert iam.list_access_keys(UserName=user)["AccessKeyMetadata"][0]["Status"] == "Active"
    assert QUARANTINE not in {p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)
                              ["AttachedPolicies"]}
    audit = await record_of(safety.settings, okta_event["id"], _event("undo.completed"))
    assert audit["actor"] == "root" and audit["reversed"] == ["suspend"]


async def _brake_holding(http: httpx.AsyncClient, headers: dict[str, str], count: int) -> dict[str, Any]:
    """`GET /v1/brake` once it holds `count` runs (polled: the runs arrive from the broker)."""
    for _ in range(300):
        status: dict[str, Any] = (await http.get("/v1/brake", headers=headers)).json()
        if len(status["waiting"]) >= count:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"the brake holds {len(status['waiting'])} runs, not {count}")


def _status(okta: Emulator, uid: str) -> str:
    users = okta.control("GET", "state")["users"]
    found = users.get(uid) if isinstance(users, dict) else next(u for u in users if u["id"] == uid)
    return str(found["status"])


async def test_a_disabled_gcp_key_is_enabled_again_by_its_undo(gcp: Emulator) -> None:
    """gcp.disable_service_account_key hands back what its undo needs; gcp.enable_service_account_key restores it."""
    email, key_id = f"sa-{secrets.token_hex(4)}@undo-project.iam.gserviceaccount.com", secrets.token_hex(20)
    gcp.seed({"keys": [{"project": "undo-project", "email": email, "key_id": key_id}]})
    settings = GcpSettings(iam_url=gcp.url, access_token=gcp.admin_token)
    async with GcpProvider(settings, Governor("gcp", concurrency=1)) as provider:
        disabled = await provider.perform("gcp.disable_service_account_key", {"email": email, "key_id": key_id},
                                          StepContext("undo"))
        assert disabled.undo == {"email": email, "key_id": key_id} and _gcp_key(gcp, key_id)["disabled"]
        await provider.perform("gcp.enable_service_account_key", dict(disabled.undo), StepContext("undo"))
    assert not _gcp_key(gcp, key_id)["disabled"]


def _gcp_key(gcp: Emulator, key_id: str) -> dict[str, Any]:
    return dict(next(k for k in gcp.control("GET", "state")["keys"] if k["key_id"] == key_id))
