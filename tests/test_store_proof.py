"""The run store's proof: two orchestrator processes in one group share a PostgreSQL store; a rebalance and a
SIGKILL in the middle of 2,000 exposures end each exactly once, and rotate each AWS key exactly once."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import orjson

from orchestrator.audit_stream import follow, is_terminal
from orchestrator.providers.aws_rotation import TAG_KEY_ID, TAG_REPLACES
from orchestrator.settings import StoreSettings
from tests import postgres
from tests.conftest import Emulator
from tests.support import exposure, fresh_settings, orchestrator_process, publish, read_all, roomy_rate_limits

CHEAP, SESSIONS, ROTATIONS = 1500, 460, 40
SECRET_PREFIX = "credential-orchestrator/rotated-access-keys"


def _aws_env(moto: str) -> dict[str, str]:
    """Fake credentials generated now, for moto."""
    alphabet = string.ascii_uppercase + string.digits
    key_id = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    return {"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


async def _until(count: int, terminals: Counter[str]) -> None:
    async with asyncio.timeout(60):
        while sum(terminals.values()) < count:  # noqa: ASYNC110 - the counter is filled by the watcher
            await asyncio.sleep(0.05)


def _seed(okta: Emulator, iam: Any, run: str) -> list[dict[str, Any]]:
    """IAM users with one access key each and Okta users with a session; the exposures about them, shuffled."""
    rotations: dict[str, str] = {}  # exposed key id → user
    for n in range(ROTATIONS):
        user = f"proof-{run}-{n}"
        iam.create_user(UserName=user)
        rotations[iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]] = user
    logins = [f"proof.{run}.{n}@example.com" for n in range(SESSIONS)]
    okta.seed({"users": [{"login": login, "sessions": 1} for login in logins]})
    events: list[dict[str, Any]] = [exposure("proof.cheap", credential={"id": f"c{n}"}) for n in range(CHEAP)]
    events += [exposure("okta.session", credential={"owner": login}) for login in logins]
    events += [exposure("aws.access_key", credential={"id": key, "owner": user},
                        source={"detector": "aws-key-rotation"}) for key, user in rotations.items()]
    events.sort(key=lambda _: secrets.randbits(32))  # rotations spread through both halves
    return events


async def test_two_processes_a_rebalance_and_a_sigkill_end_every_exposure_once_and_rotate_each_key_once(
        bootstrap: str, okta_clean: Emulator, moto: str, postgres_server: str, tmp_path: Path) -> None:
    """2,000 exposures on 4 partitions; a second member joins after the first 1,000 (a rebalance), the first is
    SIGKILLed with runs of the second 1,000 in flight: every exposure has exactly one terminal record, and each
    IAM user exactly one replacement key (the one its secret names, unless the kill fell between creating and
    storing it: then the run that took over fails rather than create a second)."""
    okta, aws = okta_clean, _aws_env(moto)
    clients = {name: boto3.client(name, endpoint_url=moto, region_name="us-east-1",
                                  aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                                  aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])
               for name in ("iam", "secretsmanager")}
    # Seeded in a thread while the first process starts (that wait blocks this loop).
    seeding = asyncio.get_running_loop().run_in_executor(None, _seed, okta, clients["iam"], secrets.token_hex(3))
    database = postgres.fresh_database(postgres_server)
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, store=StoreSettings(database_url=database))
    env = {**aws, "ORCHESTRATOR_DATABASE_URL": database, "ORCHESTRATOR_TOPIC_PARTITIONS": "4",
           # A dead member is noticed in ~3 s, its claims taken over 3 s after its last renewal.
           "ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS": "3000", "ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
           "ORCHESTRATOR_CLAIM_LEASE_S": "3",
           # Instances sharing a store share the fingerprint key.
           "ORCHESTRATOR_ENCRYPTION_KEY": secrets.token_hex(32)}
    terminals: Counter[str] = Counter()
    resumed: set[str] = set()

    async def watch(ids: set[str]) -> None:
        async for record in follow(bootstrap, settings.audit_topic, exposure_ids=ids):
            if is_terminal(record):
                terminals[record["exposure_id"]] += 1
            if record.get("resumed"):
                resumed.add(record["exposure_id"])

    okta.control("PUT", "latency", {"ms": 100})  # keeps runs in flight when the member dies
    with roomy_rate_limits(okta), orchestrator_process(settings, okta, tmp_path / "a.log", **env) as first:
        events = await seeding
        ids = {e["id"] for e in events}
        watcher = asyncio.create_task(watch(ids))
        try:
            await publish(bootstrap, settings.exposures_topic, events[:1000])
            with orchestrator_process(settings, okta, tmp_path / "b.log", **env):  # joins: a rebalance
                await publish(bootstrap, settings.exposures_topic, events[1000:])
                await _until(1300, terminals)
                first.kill()  # SIGKILL, runs in flight: the survivor takes its partitions and claims over
                first.wait()
                await _until(len(events), terminals)
                await asyncio.sleep(1.0)  # a second terminal record, if any, would land now
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            okta.control("PUT", "latency", {"ms": 0})
    records = [orjson.loads(r.value) for r in await read_all(bootstrap, settings.audit_topic)]
    ends = Counter(r["exposure_id"] for r in records if is_terminal(r))
    assert {i: n for i, n in ends.items() if n != 1} == {} and set(ends) == ids
    assert resumed, "the SIGKILL interrupted no run: the proof proved nothing"
    ended = {r["exposure_id"]: r for r in records if is_terminal(r)}
    for event in (e for e in events if e["credential"]["kind"] == "aws.access_key"):
        exposed, user = event["credential"]["id"], event["credential"]["owner"]
        keys = [k["AccessKeyId"] for k in clients["iam"].list_access_keys(UserName=user)["AccessKeyMetadata"]]
        replacements = [k for k in keys if k != exposed]
        assert len(replacements) == 1, (user, keys)  # created exactly once, whoever ran the step
        end = ended[event["id"]]
        if end["event"] == "run.completed":
            tags = {t["Key"]: t["Value"] for t in
                    clients["secretsmanager"].describe_secret(SecretId=f"{SECRET_PREFIX}/{user}")["Tags"]}
            assert keys == replacements and tags == {TAG_KEY_ID: replacements[0], TAG_REPLACES: exposed}
        else:
            # Killed between creating the key and storing it: its value died with the process, and the run that
            # took over refuses to create a second one (the rotator's conflict), for a person to decide.
            refused = [r for r in records if r["exposure_id"] == event["id"] and r["event"] == "step.failed"]
            assert end["event"] == "run.failed" and [r.get("error_code") for r in refused] == ["RotationConflict"]
