"""The AWS playbooks end to end: Kafka in, aiobotocore through the fault proxy to moto_server, audit out."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest

from orchestrator import embedded
from orchestrator.providers.aws import QUARANTINE_POLICY_ARN, REVOKE_POLICY_NAME, role_name
from orchestrator.providers.aws_rotation import TAG_KEY_ID, TAG_REPLACES
from orchestrator.settings import AwsSettings, Settings
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure, unbraked_policy

SECRET_PREFIX = "credential-orchestrator/rotated-access-keys"
ROTATE = "aws-access-key-rotate"


@pytest.fixture(scope="module")
def proxy(moto: str) -> Iterator[Emulator]:
    """The fault-injecting proxy in front of moto_server."""
    with embedded.emulator("faultproxy", "--upstream", moto) as process:
        yield Emulator(process.url)


@pytest.fixture(scope="module")
def iam(moto: str, aws_credentials: None) -> Any:
    """A plain boto3 IAM client straight to moto, for arranging and checking state."""
    return boto3.client("iam", endpoint_url=moto, region_name="us-east-1")


@pytest.fixture(scope="module")
def secretsmanager(moto: str, aws_credentials: None) -> Any:
    """A plain boto3 Secrets Manager client straight to moto."""
    return boto3.client("secretsmanager", endpoint_url=moto, region_name="us-east-1")


@pytest.fixture(scope="module")
async def aws(bootstrap: str, proxy: Emulator, aws_credentials: None) -> AsyncIterator[Harness]:
    """One orchestrator for the module, its AWS clients pointed at the proxy."""
    suffix = secrets.token_hex(4)
    settings = Settings(
        bootstrap_servers=bootstrap, exposures_topic=f"test.{suffix}.exposed", audit_topic=f"test.{suffix}.audit",
        dlq_topic=f"test.{suffix}.dlq", group_id=f"test-{suffix}", topic_partitions=3, session_timeout_ms=6000,
        heartbeat_interval_ms=500, commit_interval_s=0.2, step_timeout_s=5.0, drain_timeout_s=10.0,
        aws=AwsSettings(region="us-east-1", endpoint_url=proxy.url, concurrency=8), policy_file=unbraked_policy(),
    )
    async with Harness(settings) as running:
        yield running


@pytest.fixture
def faults(proxy: Emulator) -> Iterator[Emulator]:
    """The proxy with no AWS faults queued before and after the test."""
    proxy.control("DELETE", "aws-faults")
    yield proxy
    proxy.control("DELETE", "aws-faults")


def _user(iam: Any, keys: int = 1) -> tuple[str, list[str]]:
    name = f"user-{uuid.uuid4().hex[:10]}"
    iam.create_user(UserName=name)
    return name, [iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"] for _ in range(keys)]


def _keys(iam: Any, user: str) -> dict[str, str]:
    return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def _steps(trail: list[dict[str, Any]], event: str) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in trail if r["event"] == event}


async def test_access_key_is_contained_with_owner_resolved_from_the_key(aws: Harness, iam: Any) -> None:
    """aws.access_key without owner: user found by GetAccessKeyLastUsed; key inactive, quarantined, sessions denied."""
    user, (key,) = _user(iam)
    event = exposure("aws.access_key", credential={"id": key}, source={"detector": "github-secret-scanning"})
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert _steps(trail, "step.succeeded")["deactivate-key"]["target"] == f"iam-user:{user} access-key:{key}"
    assert _keys(iam, user) == {key: "Inactive"}
    attached = iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [QUARANTINE_POLICY_ARN]
    document = iam.get_user_policy(UserName=user, PolicyName=REVOKE_POLICY_NAME)["PolicyDocument"]
    statement = document["Statement"][0]
    assert statement["Effect"] == "Deny"
    assert "aws:TokenIssueTime" in statement["Condition"]["DateLessThan"]


async def test_the_orchestrators_own_iam_user_is_never_quarantined(aws: Harness, iam: Any, moto: str) -> None:
    """Another key of the user the orchestrator runs as leaks: that key is deactivated, but quarantining the
    user or denying its sessions (which would stop the orchestrator) is refused with the reason."""
    own = boto3.client("sts", endpoint_url=moto, region_name="us-east-1").get_caller_identity()["Arn"]
    name = own.rsplit("/", 1)[-1]
    if name not in {u["UserName"] for u in iam.list_users()["Users"]}:
        iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    try:
        event = exposure("aws.access_key", credential={"id": key, "owner": name})
        trail = (await aws.run(event))[event["id"]]
        assert events_of(trail)[-1] == "run.failed"
        assert set(_steps(trail, "step.succeeded")) == {"deactivate-key"}
        failed = _steps(trail, "step.failed")
        assert set(failed) == {"quarantine-user", "revoke-user-sessions"}
        assert all("the orchestrator itself runs as" in r["error"] for r in failed.values())
        assert iam.list_attached_user_policies(UserName=name)["AttachedPolicies"] == []
        assert REVOKE_POLICY_NAME not in iam.list_user_policies(UserName=name)["PolicyNames"]
    finally:
        iam.delete_access_key(UserName=name, AccessKeyId=key)


async def test_access_key_repeat_succeeds_with_notes(aws: Harness, iam: Any) -> None:
    """A second exposure of the same key completes, noting the key already inactive and the policy attached."""
    user, (key,) = _user(iam)
    first = exposure("aws.access_key", credential={"id": key, "owner": user})
    second = exposure("aws.access_key", credential={"id": key, "owner": user})
    await aws.run(first)
    trail = (await aws.run(second))[second["id"]]
    assert events_of(trail)[-1] == "run.completed"
    done = _steps(trail, "step.succeeded")
    assert done["deactivate-key"]["note"] == "access key already inactive"
    assert done["quarantine-user"]["note"] == "AWSCompromisedKeyQuarantineV2 already attached"
    assert len(iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]) == 1


async def test_dry_run_lists_the_calls_and_changes_nothing(aws: Harness, iam: Any) -> None:
    """A dry run ends in run.planned with the exact IAM calls, and the key stays active with no policies."""
    user, (key,) = _user(iam)
    event = exposure("aws.access_key", credential={"id": key}, dry_run=True)
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.planned"
    calls = [c for step in trail[-1]["plan"] for c in step["calls"]]
    assert f"iam:UpdateAccessKey UserName={user} AccessKeyId={key} Status=Inactive" in calls
    assert f"iam:AttachUserPolicy UserName={user} PolicyArn={QUARANTINE_POLICY_ARN}" in calls
    assert any(c.startswith(f"iam:PutUserPolicy UserName={user} PolicyName={REVOKE_POLICY_NAME}") for c in calls)
    assert _keys(iam, user) == {key: "Active"}
    assert iam.list_attached_user_policies(UserName=user)["AttachedPolicies"] == []
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == []


async def test_session_exposure_denies_the_roles_older_sessions(aws: Harness, iam: Any) -> None:
    """aws.session with a role ARN: the role gets the AWSRevokeOlderSessions deny."""
    role = f"role-{uuid.uuid4().hex[:10]}"
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    event = exposure("aws.session", credential={"id": "ASIA" + secrets.token_hex(8).upper(), "owner": arn},
                     source={"detector": "guardduty:InstanceCredentialExfiltration.OutsideAWS"})
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    document = iam.get_role_policy(RoleName=role, PolicyName=REVOKE_POLICY_NAME)["PolicyDocument"]
    assert "aws:TokenIssueTime" in document["Statement"][0]["Condition"]["DateLessThan"]


async def test_unknown_role_fails_as_not_found(aws: Harness) -> None:
    """A role that does not exist fails the step as not found, without retries."""
    event = exposure("aws.session", credential={"owner": f"missing-{uuid.uuid4().hex[:8]}"})
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-2:] == ["step.failed", "run.failed"]
    assert trail[-2]["error"].startswith("not found") and trail[-2]["attempt"] == 1


async def test_rotation_stores_one_replacement_even_when_redelivered(
        aws: Harness, iam: Any, secretsmanager: Any) -> None:
    """The same exposed key delivered twice: one replacement, stored in the secret, exposed key deleted."""
    user, (key,) = _user(iam)
    first = exposure("aws.access_key", credential={"id": key}, playbook=ROTATE)
    again = exposure("aws.access_key", credential={"id": key}, playbook=ROTATE)
    trails = await aws.run(first, again)
    assert [events_of(trails[e["id"]])[-1] for e in (first, again)] == ["run.completed", "run.completed"]
    keys = _keys(iam, user)
    assert len(keys) == 1 and key not in keys
    (replacement,) = keys
    secret = secretsmanager.describe_secret(SecretId=f"{SECRET_PREFIX}/{user}")
    tags = {t["Key"]: t["Value"] for t in secret["Tags"]}
    assert tags == {TAG_KEY_ID: replacement, TAG_REPLACES: key}
    value = json.loads(secretsmanager.get_secret_value(SecretId=f"{SECRET_PREFIX}/{user}")["SecretString"])
    assert value["AccessKeyId"] == replacement
    audit = json.dumps(trails)
    assert value["SecretAccessKey"] not in audit


async def test_rotation_after_a_restart_reuses_the_stored_replacement(
        aws: Harness, iam: Any, secretsmanager: Any) -> None:
    """A replacement stored by a run that stopped before deleting is reused: no third key, no quota error."""
    user, (key, replacement) = _user(iam, keys=2)
    secretsmanager.create_secret(Name=f"{SECRET_PREFIX}/{user}", SecretString="{}",
                                 Tags=[{"Key": TAG_KEY_ID, "Value": replacement}, {"Key": TAG_REPLACES, "Value": key}])
    event = exposure("aws.access_key", credential={"id": key, "owner": user}, playbook=ROTATE)
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert _steps(trail, "step.succeeded")["rotate-key"]["note"].endswith("already stored by an earlier run")
    assert _keys(iam, user) == {replacement: "Active"}


async def test_rotation_refuses_to_exceed_the_two_key_quota(aws: Harness, iam: Any) -> None:
    """A user already holding an unrelated second key: the rotation fails permanently and creates nothing."""
    user, (key, other) = _user(iam, keys=2)
    event = exposure("aws.access_key", credential={"id": key}, playbook=ROTATE)
    trail = (await aws.run(event))[event["id"]]
    failed = _steps(trail, "step.failed")["rotate-key"]
    assert failed["error_code"] == "RotationConflict" and "quota" in failed["error"] and failed["attempt"] == 1
    assert _keys(iam, user) == {key: "Inactive", other: "Active"}


async def test_throttling_is_waited_out_then_succeeds(aws: Harness, iam: Any, faults: Emulator) -> None:
    """Two IAM `400 Throttling` answers on UpdateAccessKey: rate-limited retries, then the key is deactivated."""
    user, (key,) = _user(iam)
    faults.control("POST", "aws-faults", {"service": "iam", "action": "UpdateAccessKey", "code": "Throttling",
                                          "count": 2})
    event = exposure("aws.access_key", credential={"id": key, "owner": user})
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    retries = [r for r in trail if r["event"] == "step.retrying"]
    assert len(retries) == 2 and all(r["rate_limited"] for r in retries)
    assert _keys(iam, user) == {key: "Inactive"}


async def test_server_error_mid_rotation_is_retried_without_a_second_replacement(
        aws: Harness, iam: Any, secretsmanager: Any, faults: Emulator) -> None:
    """503 on CreateSecret after the key was created: the retry stores that same key, and only it."""
    user, (key,) = _user(iam)
    faults.control("POST", "aws-faults", {"service": "secretsmanager", "action": "CreateSecret",
                                          "code": "ServiceUnavailable", "status": 503})
    event = exposure("aws.access_key", credential={"id": key}, playbook=ROTATE)
    trail = (await aws.run(event))[event["id"]]
    assert events_of(trail)[-1] == "run.completed"
    assert [r["step"] for r in trail if r["event"] == "step.retrying"] == ["rotate-key"]
    (replacement,) = _keys(iam, user)
    value = json.loads(secretsmanager.get_secret_value(SecretId=f"{SECRET_PREFIX}/{user}")["SecretString"])
    assert value["AccessKeyId"] == replacement != key
    assert value["SecretAccessKey"] not in json.dumps(trail)


async def test_a_key_named_with_the_wrong_owner_is_not_taken_as_done(aws: Harness, iam: Any) -> None:
    """An owner who does not hold the key fails every step (OwnerMismatch): neither user is touched."""
    user, (key,) = _user(iam)
    other, _ = _user(iam)
    event = exposure("aws.access_key", credential={"id": key, "owner": other})
    trail = (await aws.run(event))[event["id"]]
    failed = _steps(trail, "step.failed")
    assert set(failed) == {"deactivate-key", "quarantine-user", "revoke-user-sessions"}
    assert all(f["error_code"] == "OwnerMismatch" and user in f["error"] for f in failed.values())
    assert _keys(iam, user) == {key: "Active"}
    assert iam.list_attached_user_policies(UserName=other)["AttachedPolicies"] == []
    assert iam.list_user_policies(UserName=other)["PolicyNames"] == []


def test_role_names_are_taken_from_role_and_assumed_role_arns() -> None:
    """Role name, role ARN with a path and assumed-role ARN all give the role name."""
    assert role_name("deploy") == "deploy"
    assert role_name("arn:aws:iam::123456789012:role/service/deploy") == "deploy"
    assert role_name("arn:aws:sts::123456789012:assumed-role/deploy/i-0abc") == "deploy"
