"""Test helpers that cross process boundaries for real: publish to the broker, read the audit and DLQ topics."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import io
import json
import logging
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pytest
import structlog
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import RecordMetadata

from orchestrator import kafka, logs
from orchestrator.app import Orchestrator
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.embedded import free_port
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR, OktaSettings, Settings, StoreSettings

JOIN_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 40.0


def exposure(kind: str, **fields: Any) -> dict[str, Any]:
    """An exposure event with a fresh id; `credential` fields go in `credential=`, the rest at top level."""
    event: dict[str, Any] = {"id": f"exp-{uuid.uuid4().hex[:12]}", "credential": {"kind": kind}}
    event["credential"].update(fields.pop("credential", {}))
    event.update(fields)
    return event


async def publish(bootstrap: str, topic: str, records: Iterable[dict[str, Any] | bytes | None],
                  key: bytes | None = None, *, partition: int | None = None) -> list[RecordMetadata]:
    """Publish records (dicts as JSON, bytes as they are), wait for the broker to store them, return where."""
    producer = kafka.make_producer(bootstrap)
    await producer.start()
    try:
        futures = []
        for record in records:
            value = json.dumps(record).encode() if isinstance(record, dict) else record
            record_key = str(record["id"]).encode() if isinstance(record, dict) and key is None else key
            futures.append(await producer.send(topic, value, key=record_key, partition=partition))
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def collect(bootstrap: str, topic: str, ids: Iterable[str], *, timeout_s: float = 30.0,
                  linger_s: float = 0.0) -> dict[str, list[dict[str, Any]]]:
    """Every audit record of `ids`, until each has a terminal record (then `linger_s` more for stragglers).

    Raises TimeoutError naming the ids still open.
    """
    wanted = list(ids)
    trails: dict[str, list[dict[str, Any]]] = {i: [] for i in wanted}
    open_ids = set(wanted)

    async def read() -> None:
        async for record in follow(bootstrap, topic, exposure_ids=wanted):
            trails[record["exposure_id"]].append(record)
            if is_terminal(record):
                open_ids.discard(record["exposure_id"])
                if not open_ids:
                    return

    try:
        async with asyncio.timeout(timeout_s):
            await read()
    except TimeoutError:
        raise TimeoutError(f"no terminal audit record within {timeout_s}s for {sorted(open_ids)}") from None
    if linger_s:
        async for record in follow(bootstrap, topic, exposure_ids=wanted, idle_timeout_s=linger_s):
            if record not in trails[record["exposure_id"]]:
                trails[record["exposure_id"]].append(record)
    return trails


async def read_all(bootstrap: str, topic: str, *, idle_timeout_s: float = 1.0) -> list[Any]:
    """Every record of a topic (value, key and headers), read from the beginning until it goes quiet."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
            if not batch:
                return records
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The group's committed offset per partition of the exposures topic (-1 where none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=settings.group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.exposures_topic) or set()
        result = {}
        for p in sorted(partitions):
            offset = await consumer.committed(TopicPartition(settings.exposures_topic, p))
            result[p] = -1 if offset is None else offset
        return result
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings) -> dict[int, int]:
    """The next offset to be written in each partition of the exposures topic that holds records.

    Read from the records themselves: Tansu's ListOffsets(latest) answers the last batch's base offset + 1.
    """
    ends: dict[int, int] = {}
    for record in await read_all(settings.bootstrap_servers, settings.exposures_topic, idle_timeout_s=0.5):
        last = getattr(record, "last_offset", record.offset)  # an undecodable batch covers a range
        ends[record.partition] = max(ends.get(record.partition, 0), last + 1)
    return ends


#: A policy whose mass-action brake never engages: tests of other behaviour push far more than the default 50
#: destructive steps per 5 minutes through one orchestrator (test_safety_*.py test the brake itself).
UNBRAKED_POLICY = "brake: {limit: 1000000}\n"


def unbraked_policy() -> Path:
    """A policy file (written once per process) holding UNBRAKED_POLICY."""
    global _unbraked
    if _unbraked is None or not _unbraked.exists():
        _unbraked = Path(tempfile.mkdtemp(prefix="orchestrator-policy-")) / "policy.yaml"
        _unbraked.write_text(UNBRAKED_POLICY)
    return _unbraked


_unbraked: Path | None = None


def isolated_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with their own topics and group, fast group joins and short timeouts; `overrides` win."""
    suffix = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = dict(policy_file=unbraked_policy(),
        bootstrap_servers=bootstrap, exposures_topic=f"test.{suffix}.exposed", audit_topic=f"test.{suffix}.audit",
        dlq_topic=f"test.{suffix}.dlq", group_id=f"test-{suffix}", topic_partitions=3, session_timeout_ms=6000,
        heartbeat_interval_ms=500, commit_interval_s=0.2, step_timeout_s=5.0, drain_timeout_s=10.0,
        store=StoreSettings(data_dir=Path(tempfile.mkdtemp(prefix="orchestrator-store-"))),
    )
    return Settings(**{**fields, **overrides})


def fresh_settings(bootstrap: str, okta_url: str, okta_token: str, **overrides: Any) -> Settings:
    """`isolated_settings` acting on an Okta org (the emulator's URL and admin token)."""
    return isolated_settings(bootstrap, okta=OktaSettings(org_url=okta_url, token=okta_token), **overrides)


@contextmanager
def orchestrator_process(settings: Settings, okta: Any, log: Path,
                         **env_extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`orchestrator run` configured by environment variables (`env_extra` added), started and joined to its group;
    `okta` is the Okta emulator it acts on."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "ORCHESTRATOR_EXPOSURES_TOPIC": settings.exposures_topic, "ORCHESTRATOR_AUDIT_TOPIC": settings.audit_topic,
           "ORCHESTRATOR_DLQ_TOPIC": settings.dlq_topic, "ORCHESTRATOR_GROUP_ID": settings.group_id,
           "ORCHESTRATOR_TOPIC_PARTITIONS": "3", "ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS": "500", "ORCHESTRATOR_DRAIN_TIMEOUT_S": "30",
           "ORCHESTRATOR_LOG_FORMAT": "json", "ORCHESTRATOR_HTTP_LISTEN": "off",
           "ORCHESTRATOR_DATA_DIR": str(settings.store.data_dir), "ORCHESTRATOR_POLICY_FILE": str(unbraked_policy()),
           "OKTA_CLIENT_ORGURL": okta.url, "OKTA_CLIENT_TOKEN": okta.admin_token,
           # A SIGKILLed member's claims are taken over once their lease expires: seconds here, not a minute.
           "ORCHESTRATOR_CLAIM_LEASE_S": "5", **env_extra}
    with log.open("ab") as sink:
        process = subprocess.Popen([*orchestrator_command(), "run"], env=env, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "consumer.assigned" not in log.read_text(errors="replace"):
            assert process.poll() is None, f"orchestrator exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"orchestrator not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextmanager
def captured_logs(*, level: int = logging.INFO, also: logging.Handler | None = None) -> Iterator[io.StringIO]:
    """The process logging as `orchestrator run` sets it up (JSON lines) writing into a buffer, `also` added to
    the root logger; the previous logging configuration restored after."""
    saved_config, root = structlog.get_config(), logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("json", level=level, stream=stream)
    if also is not None:
        root.addHandler(also)
    try:
        yield stream
    finally:
        structlog.configure(**saved_config)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


class _Controlled(Protocol):
    def control(self, method: str, path: str, body: Any = None) -> Any: ...


@contextmanager
def roomy_rate_limits(emulator: _Controlled, *, limit: int = 100_000) -> Iterator[None]:
    """Raise every bucket limit of an emulator (so the governor does not pace a big batch); restore after."""
    saved = emulator.control("GET", "state")["rate_limits"]
    window = {name: {"limit": limit, "window_s": spec["window_s"]} for name, spec in saved["buckets"].items()}
    emulator.control("PUT", "rate-limits", {"buckets": window})
    try:
        yield
    finally:
        emulator.control("PUT", "rate-limits", {"buckets": saved["buckets"]})


def playbooks_with_retry(directory: Path, **retry: float) -> Path:
    """Copy the shipped playbooks into `directory` with a playbook-level `retry:` policy; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in DEFAULT_PLAYBOOKS_DIR.glob("*.yaml"):
        # Replaced, not appended: a second `retry:` key is refused as a duplicate (only the last would count).
        document = {**yaml.safe_load(source.read_text()), "retry": retry}
        (directory / source.name).write_text(yaml.safe_dump(document, sort_keys=False))
    return directory


def orchestrator_command() -> list[str]:
    """The `orchestrator` console script of this interpreter's environment (else the same via `python -c`)."""
    script = shutil.which("orchestrator", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from orchestrator.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the `orchestrator` command in a child process (`env` replaces the environment's orchestrator and
    Kafka variables); return its exit code and output."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ORCHESTRATOR_", "KAFKA_", "OKTA_CLIENT_"))}
    return subprocess.run([*orchestrator_command(), *args],
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


class Harness:
    """An `Orchestrator` running in a task of this event loop, joined to its group and ready."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.orchestrator = Orchestrator(settings)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        await self.orchestrator.__aenter__()
        self._task = asyncio.create_task(self.orchestrator.run())
        assert self.orchestrator.consumer is not None
        async with asyncio.timeout(JOIN_TIMEOUT_S):
            await self.orchestrator.consumer.assigned.wait()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop consuming, drain, commit, close every resource."""
        if self._task is None:
            return
        self.orchestrator.stop()
        task, self._task = self._task, None
        try:
            await task
        finally:
            await self.orchestrator.__aexit__(None, None, None)

    async def publish(self, *records: dict[str, Any] | bytes | None) -> None:
        """Publish to this orchestrator's exposures topic."""
        await publish(self.settings.bootstrap_servers, self.settings.exposures_topic, records)

    async def collect(self, *ids: str, timeout_s: float = 30.0,
                      linger_s: float = 0.0) -> dict[str, list[dict[str, Any]]]:
        """The audit trails of `ids` once each is terminal."""
        return await collect(self.settings.bootstrap_servers, self.settings.audit_topic, ids,
                             timeout_s=timeout_s, linger_s=linger_s)

    async def run(self, *events: dict[str, Any], timeout_s: float = 30.0) -> dict[str, list[dict[str, Any]]]:
        """Publish `events` and return their audit trails once each is terminal."""
        await self.publish(*events)
        return await self.collect(*(e["id"] for e in events), timeout_s=timeout_s)


def events_of(trail: list[dict[str, Any]]) -> list[str]:
    """The `event` names of a trail, in order."""
    return [record["event"] for record in trail]


@contextmanager
def gzip_server(content: bytes) -> Iterator[str]:
    """An HTTP server answering every GET with `content` gzip-encoded; its URL."""
    encoded = gzip.compress(content, compresslevel=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/keys"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Receiver:
    """An on-call webhook endpoint: an aiohttp server in this process that keeps every page it was sent."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.arrived.set()
        return web.Response(text="ok")

    def events(self, name: str) -> list[dict[str, Any]]:
        """The pages of one event."""
        return [page for page in self.received if page.get("event") == name]


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A `Receiver` listening on a free port until the block ends."""
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield hook
    finally:
        await runner.cleanup()


@contextmanager
def fake_aws_credentials() -> Iterator[None]:
    """Credentials for the standard AWS chain, generated now; no profile, no instance metadata."""
    with pytest.MonkeyPatch.context() as patch:
        alphabet = string.ascii_uppercase + string.digits
        patch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)))
        patch.setenv("AWS_SECRET_ACCESS_KEY", secrets.token_urlsafe(30))
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        yield
