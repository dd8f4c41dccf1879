"""No record, batch or waiting provider stops the consumer, and stopping always works.

Each record here once stopped the service on `main`: a compressed batch, a header key that is not UTF-8, a batch
that cannot be decoded, deep JSON, a 4,301-digit number, a lone surrogate, a record above 1 MB; and 300 exposures
waiting out GitHub's hourly budget kept a critical Okta exposure from even being received.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from orchestrator.audit_stream import follow, is_terminal
from orchestrator.embedded import free_port
from orchestrator.settings import GitHubSettings, Settings
from tests import raw_batches
from tests.conftest import Emulator
from tests.support import (
    Harness,
    committed_offsets,
    end_offsets,
    exposure,
    fresh_settings,
    isolated_settings,
    orchestrator_process,
    publish,
    read_all,
    roomy_rate_limits,
)

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.fixture(scope="module")
async def harness(bootstrap: str) -> AsyncIterator[Harness]:
    """One orchestrator acting on no provider: valid exposures of unknown kinds end `exposure.unmatched`."""
    async with Harness(isolated_settings(bootstrap, topic_partitions=1)) as running:
        yield running


def _canary() -> str:
    return "canary-" + secrets.token_hex(12)


def _poison(canary: str) -> dict[str, bytes]:
    """Records that each used to raise out of the consume loop, every one holding a canary secret."""
    secret = json.dumps(canary).encode()
    return {
        "deep nesting": b'{"id": "deep", "credential": {"secret": ' + secret + b'}, "x": '
                        + b"[" * 5000 + b"]" * 5000 + b"}",
        "4301 digits": b'{"id": "digits", "credential": {"kind": "k", "secret": ' + secret + b'}, "n": '
                       + b"7" * 4301 + b"}",
        "lone surrogate": b'{"id": "\\ud800", "credential": {"kind": "k", "secret": ' + secret + b"}}",
        "not UTF-8": b'{"id": "bad\xff", "credential": {"kind": "k", "secret": ' + secret + b"}}",
    }


async def _publish_compressed(bootstrap: str, topic: str, values: list[bytes], codec: str | None) -> None:
    """One producer, one linger window: the values travel together in one compressed batch."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, compression_type=codec,
                                linger_ms=200, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, partition=0) for value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _terminals_of(settings: Settings, ids: set[str], timeout_s: float = 30.0) -> dict[str, list[str]]:
    """Every terminal event per exposure id, once each id has one (plus a short linger for second ones)."""
    found: dict[str, list[str]] = {}

    async def read() -> None:
        async for record in follow(settings.bootstrap_servers, settings.audit_topic):
            if is_terminal(record):
                found.setdefault(record["exposure_id"], []).append(record["event"])
                if ids <= found.keys():
                    return

    try:
        async with asyncio.timeout(timeout_s):
            await read()
    except TimeoutError:
        raise AssertionError(f"no terminal record for {sorted(ids - found.keys())}; got {found}") from None
    return found


async def _assert_everything_committed(settings: Settings) -> None:
    async with asyncio.timeout(15):
        while True:
            ends, committed = await end_offsets(settings), await committed_offsets(settings)
            if {p: committed.get(p) for p in ends} == ends:
                return
            await asyncio.sleep(0.3)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
async def test_every_codec_and_every_poison_record_ends_once(harness: Harness, codec: str | None) -> None:
    """A batch in any codec, valid records beside poison ones: each ends exactly once, poison is dead-lettered
    without its secret, and the partition's offsets are committed to the end."""
    canary = _canary()
    valid = [exposure("nobody.knows", credential={"id": f"i{n}"}) for n in range(3)]
    poison = _poison(canary)
    values = [json.dumps(e).encode() for e in valid] + list(poison.values())
    settings = harness.settings
    before = (await end_offsets(settings)).get(0, 0)
    await _publish_compressed(settings.bootstrap_servers, settings.exposures_topic, values, codec)
    # None of them parses, so none has an id to claim: each is audited under its topic/partition/offset.
    labels = {f"{settings.exposures_topic}/0/{before + n}" for n in range(len(valid), len(values))}
    found = await _terminals_of(settings, {e["id"] for e in valid} | labels)
    assert all(found[e["id"]] == ["exposure.unmatched"] for e in valid), found
    assert all(found[label] == ["exposure.rejected"] for label in labels), found
    dead = [r for r in await read_all(settings.bootstrap_servers, settings.dlq_topic, idle_timeout_s=0.3)
            if int(dict(r.headers)["source.offset"]) >= before]
    assert len(dead) == len(poison)
    assert all(canary.encode() not in (r.value or b"") for r in dead)
    await _assert_everything_committed(settings)


async def test_a_header_key_that_is_not_utf8_does_not_stop_the_loop(harness: Harness) -> None:
    """aiokafka raised UnicodeDecodeError out of getmany for every later call: now the record is read as it is."""
    settings = harness.settings
    odd, plain = (exposure("nobody.knows", credential={"id": "h"}) for _ in range(2))
    raw = raw_batches.batch([(None, json.dumps(odd).encode(), [("HKEY", b"v")]),
                             (None, json.dumps(plain).encode(), [("ok", b"v")])])
    await raw_batches.produce(settings.bootstrap_servers, settings.exposures_topic, 0,
                              raw_batches.replace(raw, b"HKEY", b"H\xff\xfeY"))
    later = exposure("nobody.knows", credential={"id": "after"})
    await harness.publish(later)
    found = await _terminals_of(settings, {odd["id"], plain["id"], later["id"]})
    assert [found[e["id"]] for e in (odd, plain, later)] == [["exposure.unmatched"]] * 3
    await _assert_everything_committed(settings)


async def test_an_undecodable_batch_is_reported_once_with_its_offsets(harness: Harness) -> None:
    """A gzip batch whose body is not gzip (the broker stored it): one rejection naming the partition and offset
    range, a dead letter, and the loop goes on to the next record. (Brokers refuse an unknown codec on produce;
    tests/test_record_batches.py reads one directly.)"""
    settings = harness.settings
    events = [exposure("nobody.knows", credential={"id": f"b{n}"}) for n in range(3)]
    before = (await end_offsets(settings)).get(0, 0)
    raw = raw_batches.batch([(None, json.dumps(e).encode(), []) for e in events], compression=1)
    broken = raw_batches.with_valid_crc(bytearray(raw[:61]) + bytearray(b"\x1f\x8b" + b"\x00" * (len(raw) - 63)))
    await raw_batches.produce(settings.bootstrap_servers, settings.exposures_topic, 0, broken)
    later = exposure("nobody.knows", credential={"id": "after"})
    await harness.publish(later)
    label = f"{settings.exposures_topic}/0/{before}-{before + 2}"
    found = await _terminals_of(settings, {label, later["id"]})
    assert found[label] == ["exposure.rejected"] and found[later["id"]] == ["exposure.unmatched"]
    assert not {e["id"] for e in events} & found.keys()
    trail = await harness.collect(label)
    assert "undecodable batch at offsets" in trail[label][-1]["reason"]
    await _assert_everything_committed(settings)


async def test_a_record_above_a_megabyte_ends_and_does_not_stall_commits(harness: Harness) -> None:
    """A detector that raised its own message.max.bytes: the record is rejected, and the partition commits on."""
    settings = harness.settings
    before = (await end_offsets(settings)).get(0, 0)
    big = {"id": "big", "credential": {"kind": "k", "secret": _canary()}, "padding": "x" * (1200 * 1024)}
    later = exposure("nobody.knows", credential={"id": "after"})
    await _publish_compressed(settings.bootstrap_servers, settings.exposures_topic, [json.dumps(big).encode()], None)
    await harness.publish(later)
    found = await _terminals_of(settings, {"big", later["id"]})
    assert found["big"][-1] == "exposure.rejected" and found[later["id"]] == ["exposure.unmatched"]
    trail = await harness.collect("big")
    assert "above the" in trail["big"][-1]["reason"] and int(trail["big"][-1]["source_offset"]) == before
    await _assert_everything_committed(settings)


# --- a provider waiting out its budget holds only its own lane; stop always works ---------------------------------


def _github_token() -> str:
    return "ghp_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")


@pytest.fixture
def github_spent(github: Emulator) -> Iterator[list[str]]:
    """GitHub with one call left this hour; 41 seeded tokens. Generous limits are restored after."""
    github.control("PUT", "rate-limits", {"core": {"limit": 1, "window_s": 3600}, "secondary": None})
    tokens = [_github_token() for _ in range(41)]
    github.seed({"tokens": [{"token": t, "owner": "octo-waiter"} for t in tokens]})
    try:
        yield tokens
    finally:
        github.control("PUT", "rate-limits", {"core": {"limit": 10_000, "window_s": 3600}, "secondary": None})


def _waiting_orchestrator(bootstrap: str, okta: Emulator, github: Emulator, log: Path, *,
                          drain_timeout_s: int = 3, **env: str) -> tuple[Settings, Any]:
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, github=GitHubSettings(api_url=github.url))
    process = orchestrator_process(
        settings, okta, log, ORCHESTRATOR_GITHUB_API_URL=github.url, ORCHESTRATOR_MAX_IN_FLIGHT="8",
        ORCHESTRATOR_MAX_IN_FLIGHT_PER_PROVIDER="4", ORCHESTRATOR_DRAIN_TIMEOUT_S=str(drain_timeout_s), **env)
    return settings, process


async def _until_waiting(settings: Settings, tokens: list[str]) -> None:
    """Publish the GitHub tokens and return once one run is waiting for GitHub's reset."""
    events = [exposure("github.token", credential={"secret": t}) for t in tokens]
    await publish(settings.bootstrap_servers, settings.exposures_topic, events)
    async with asyncio.timeout(30):
        async for record in follow(settings.bootstrap_servers, settings.audit_topic):
            if record["event"] == "step.retrying":
                return


async def _exit_within(process: subprocess.Popen[bytes], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        assert time.monotonic() < deadline, f"still running {seconds}s after the signal"
        await asyncio.sleep(0.05)
    return process.returncode


async def test_a_critical_exposure_starts_while_another_provider_waits_its_hour(
        bootstrap: str, okta_clean: Emulator, github: Emulator, github_spent: list[str], tmp_path: Path) -> None:
    """40 GitHub tokens wait for the hourly reset, more than every run slot: a critical Okta exposure published
    behind them completes at once; then SIGTERM exits within the drain timeout, every slot still taken."""
    login = f"lane.{secrets.token_hex(4)}@example.com"
    okta_clean.seed({"users": [{"login": login, "sessions": 1}]})
    log = tmp_path / "run.log"
    port = free_port()
    settings, running = _waiting_orchestrator(bootstrap, okta_clean, github, log,
                                              ORCHESTRATOR_HTTP_LISTEN=f"127.0.0.1:{port}")
    with roomy_rate_limits(okta_clean), running as process:
        await _until_waiting(settings, github_spent)
        async with httpx.AsyncClient() as client:
            exposition = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        waiting = re.search(r'^orchestrator_runs_waiting\{provider="github"\} (\S+)$', exposition, re.M)
        assert waiting and float(waiting.group(1)) > 0, exposition
        critical = exposure("okta.session", credential={"owner": login}, severity="critical")
        published = time.monotonic()
        await publish(settings.bootstrap_servers, settings.exposures_topic, [critical])
        found = await _terminals_of(settings, {critical["id"]}, timeout_s=20)
        assert found[critical["id"]] == ["run.completed"] and time.monotonic() - published < 10
        process.send_signal(signal.SIGTERM)
        assert await _exit_within(process, 3 + 10) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


async def test_a_second_signal_exits_at_once(bootstrap: str, okta_clean: Emulator, github: Emulator,
                                             github_spent: list[str], tmp_path: Path) -> None:
    """SIGTERM starts a 60 s drain; a second SIGTERM ends the process straight away."""
    log = tmp_path / "run.log"
    settings, running = _waiting_orchestrator(bootstrap, okta_clean, github, log, drain_timeout_s=60)
    with running as process:
        await _until_waiting(settings, github_spent)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert process.poll() is None  # draining
        process.send_signal(signal.SIGTERM)
        assert await _exit_within(process, 3) == 128 + signal.SIGTERM


async def test_stop_works_with_the_broker_gone(okta_clean: Emulator, github: Emulator, github_spent: list[str],
                                               tmp_path: Path) -> None:
    """The broker dies while runs wait: SIGTERM still exits within the drain timeout plus a few seconds."""
    from orchestrator import embedded

    log = tmp_path / "run.log"
    with embedded.tansu() as broker:
        settings, running = _waiting_orchestrator(broker.url, okta_clean, github, log)
        with running as process:
            await _until_waiting(settings, github_spent)
            broker.process.kill()
            broker.process.wait()
            process.send_signal(signal.SIGTERM)
            await _exit_within(process, 3 + 20)
    assert "Traceback" not in log.read_text()



async def test_a_broker_that_comes_back_empty_gets_no_stale_offsets(okta_clean: Emulator) -> None:
    """Tansu keeps nothing: after a restart the topics are new. Runs that were in flight when it went away finish
    afterwards, but their offsets belong to the old topic and must not be committed onto the new one (that would
    skip its first records); what is published after the restart is processed and committed."""
    from orchestrator import embedded

    logins = [f"stale.{secrets.token_hex(4)}@example.com" for _ in range(10)]
    okta_clean.seed({"users": [{"login": login, "sessions": 1} for login in logins]})
    port = embedded.free_port()
    with roomy_rate_limits(okta_clean), embedded.tansu(port) as broker:
        settings = fresh_settings(broker.url, okta_clean.url, okta_clean.admin_token, topic_partitions=1)
        async with Harness(settings) as running:
            okta_clean.control("PUT", "latency", {"ms": 1500})
            await running.publish(*(exposure("okta.session", credential={"owner": login}) for login in logins))
            await asyncio.sleep(0.5)  # fetched and in flight at Okta
            broker.process.kill()
            broker.process.wait()
            await asyncio.sleep(3)
            okta_clean.control("PUT", "latency", {"ms": 0})
            with embedded.tansu(port):
                # Publish once the orchestrator has re-created its topics, as /readyz would tell a publisher: a
                # publisher that auto-creates the topic first races it (see the README's note on Tansu).
                broker_health = running.orchestrator.broker
                assert broker_health is not None
                async with asyncio.timeout(30):
                    while not broker_health.healthy:  # noqa: ASYNC110 - a property, not an event
                        await asyncio.sleep(0.2)
                after = [exposure("nobody.knows", credential={"id": f"new{n}"}) for n in range(3)]
                await running.publish(*after)
                found = await _terminals_of(settings, {e["id"] for e in after}, timeout_s=60)
                assert all(found[e["id"]] == ["exposure.unmatched"] for e in after)
                await _assert_everything_committed(settings)
                assert max((await committed_offsets(settings)).values()) == len(after)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_librdkafka_batches_in_every_codec(harness: Harness, codec: str) -> None:
    """What a detector team sends with confluent-kafka (librdkafka) and compression on: all of it is handled."""
    from confluent_kafka import Producer

    events = [exposure("nobody.knows", credential={"id": f"rd{n}"}) for n in range(20)]
    producer = Producer({"bootstrap.servers": harness.settings.bootstrap_servers, "compression.type": codec,
                         "linger.ms": 50})
    for event in events:
        producer.produce(harness.settings.exposures_topic, key=event["id"], value=json.dumps(event))
    assert await asyncio.to_thread(producer.flush, 15) == 0
    found = await _terminals_of(harness.settings, {e["id"] for e in events})
    assert all(found[e["id"]] == ["exposure.unmatched"] for e in events)
