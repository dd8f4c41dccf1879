"""The chaos suite's rig: the orchestrator as a supervised child process, topics read back, and the tallies.

Everything crosses a process boundary for real: `python -m orchestrator run` is started, SIGKILLed and
restarted like a container under `restart: unless-stopped`; the broker and the providers are processes too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from orchestrator import embedded
from orchestrator.audit import TERMINAL_EVENTS, AuditEvent

ROOT = Path(__file__).resolve().parent.parent
EVENTS = frozenset(e.value for e in AuditEvent)
TERMINAL = frozenset(e.value for e in TERMINAL_EVENTS)
_MB = 1024 * 1024


@dataclass(frozen=True)
class Names:
    """One scenario's own topics and consumer group, so scenarios never see each other's records."""

    exposed: str
    audit: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls, scenario: str) -> Names:
        """New names with a random suffix."""
        suffix = f"{scenario}.{secrets.token_hex(4)}"
        return cls(f"chaos.{suffix}.exposed", f"chaos.{suffix}.audit", f"chaos.{suffix}.dlq", f"chaos-{suffix}")

    def env(self) -> dict[str, str]:
        """The orchestrator's variables naming them."""
        return {"ORCHESTRATOR_EXPOSURES_TOPIC": self.exposed, "ORCHESTRATOR_AUDIT_TOPIC": self.audit,
                "ORCHESTRATOR_DLQ_TOPIC": self.dlq, "ORCHESTRATOR_GROUP_ID": self.group}


def _unbraked_policy() -> str:
    """A policy file whose mass-action brake never engages: a chaos run is a storm by design."""
    path = Path(tempfile.mkdtemp(prefix="chaos-policy-")) / "policy.yaml"
    path.write_text("brake: {limit: 1000000}\n")
    return str(path)


def orchestrator_env(bootstrap: str, names: Names, http_port: int, *, checkout: Path = ROOT,
                     **extra: str) -> dict[str, str]:
    """The environment of `python -m orchestrator run`: the `orchestrator` package of `checkout` (default:
    this one), fast group joins, JSON logs, no real AWS."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ORCHESTRATOR_", "KAFKA_", "OKTA_", "AWS_"))}
    closed = f"http://127.0.0.1:{embedded.free_port()}"  # providers a scenario does not use: nothing listens
    return {
        **base, **names.env(), "PYTHONPATH": str(checkout), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ORCHESTRATOR_LOG_FORMAT": "json", "ORCHESTRATOR_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS": "6000", "ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "ORCHESTRATOR_TOPIC_PARTITIONS": "6", "ORCHESTRATOR_DRAIN_TIMEOUT_S": "5",
        "AWS_ENDPOINT_URL": closed, "AWS_ACCESS_KEY_ID": "AKIACHAOS" + secrets.token_hex(4).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30), "AWS_REGION": "us-east-1",
        "ORCHESTRATOR_GITHUB_API_URL": closed, "ORCHESTRATOR_SLACK_API_URL": closed + "/api",
        "ORCHESTRATOR_GCP_IAM_URL": closed, "ORCHESTRATOR_GCP_ACCESS_TOKEN": "ya29.chaos-" + secrets.token_hex(8),
        "OKTA_TESTING_TESTINGDISABLEHTTPSCHECK": "true",
        # The run store, kept across the scenario's restarts; a SIGKILLed process's claims are taken over
        # after this lease (60 s by default would outlast the scenario's wait).
        "ORCHESTRATOR_DATA_DIR": tempfile.mkdtemp(prefix="chaos-store-"), "ORCHESTRATOR_CLAIM_LEASE_S": "5",
        "ORCHESTRATOR_POLICY_FILE": _unbraked_policy(),
        **extra,
    }


class Broker:
    """An in-memory Tansu broker that can be stopped and started again on the same port (empty again)."""

    def __init__(self) -> None:
        self.port = embedded.free_port()
        self.url = f"127.0.0.1:{self.port}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        """Start it (on the same port every time)."""
        stack = contextlib.ExitStack()
        stack.enter_context(embedded.tansu(self.port))
        self._running = stack

    def stop(self) -> None:
        """Stop it, if it runs."""
        if self._running is not None:
            self._running.close()
            self._running = None


class Supervised:
    """`python -m orchestrator run` restarted whenever it exits on its own, like `restart: unless-stopped`.

    Counts crashes (exits nobody asked for) and kills (SIGKILLs the suite sent); samples the peak RSS
    (VmHWM) of every incarnation; appends stdout and stderr of all of them to one log file.
    """

    def __init__(self, env: dict[str, str], log_path: Path, *, max_restarts: int = 10) -> None:
        self.env = env
        self.log_path = log_path
        self.http = "http://" + env["ORCHESTRATOR_HTTP_LISTEN"]
        self.max_restarts = max_restarts
        self.crashes = 0
        self.exit_codes: list[int] = []
        self.kills = 0
        self.peak_rss_mb = 0.0
        self.gave_up = False
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._expected_exit = False

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "orchestrator", "run"], env=self.env,
                                             stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.env["PYTHONPATH"])
        self._expected_exit = False

    async def start(self, *, ready_timeout_s: float = 60.0) -> None:
        """Start it, watch it, and wait until `/readyz` answers 200."""
        self._spawn()
        self._watch = asyncio.create_task(self._supervise())
        await self.wait_ready(ready_timeout_s)

    @property
    def pid(self) -> int | None:
        """The running incarnation's pid."""
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        """True while an incarnation runs."""
        return self._process is not None and self._process.poll() is None

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until `/readyz` answers 200; False when it did not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline and not self.gave_up:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.http + "/readyz")).status_code == 200:
                        return True
                await asyncio.sleep(0.2)
        return False

    def _sample_rss(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)

    async def _supervise(self) -> None:
        while True:
            self._sample_rss()
            process = self._process
            if process is not None and process.poll() is not None and not self._expected_exit:
                self.crashes += 1
                self.exit_codes.append(process.returncode)
                if self.crashes > self.max_restarts:
                    self.gave_up = True
                    return
                await asyncio.sleep(1.0)  # compose's restart delay is about this
                self._spawn()
            await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL the running incarnation (no drain, no commit) and start a new one at once."""
        assert self._process is not None
        self._sample_rss()
        self._expected_exit = True
        self._process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self._process.wait)
        self.kills += 1
        self._spawn()

    async def stop(self, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM and wait; returns (exit code or None when it had to be killed, seconds it took)."""
        if self._watch:
            self._watch.cancel()
        if self._process is None or self._process.poll() is not None:
            return (self._process.returncode if self._process else None), 0.0
        self._sample_rss()
        self._expected_exit = True
        started = time.monotonic()
        self._process.send_signal(signal.SIGTERM)
        try:
            code: int | None = await asyncio.to_thread(self._process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            code = None
        return code, time.monotonic() - started


@dataclass(frozen=True)
class Published:
    """One record the suite published: an exposure (by id) or poison (by partition and offset)."""

    partition: int
    offset: int
    exposure_id: str | None = None


async def producer(bootstrap: str, *, compression: str | None = None) -> AIOKafkaProducer:
    """A started producer: aiokafka's own, with the codec asked for and room for 1 MB+ records."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                              compression_type=compression, max_request_size=4 * _MB, linger_ms=5,
                              request_timeout_ms=30_000)
    await client.start()
    return client


@contextlib.contextmanager
def python_record_builder() -> Iterator[None]:
    """aiokafka's pure-Python batch builder while inside: the only one that writes header keys as given bytes.

    Its Cython builder insists on exact `str` keys and encodes them as UTF-8, so a header key that is not
    UTF-8 (as librdkafka and Java clients can send) is only reachable this way.
    """
    from aiokafka.producer import message_accumulator
    from aiokafka.producer import producer as producer_module
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

    saved = message_accumulator.DefaultRecordBatchBuilder, producer_module.DefaultRecordBatchBuilder
    message_accumulator.DefaultRecordBatchBuilder = _DefaultRecordBatchBuilderPy
    producer_module.DefaultRecordBatchBuilder = _DefaultRecordBatchBuilderPy
    try:
        yield
    finally:
        message_accumulator.DefaultRecordBatchBuilder, producer_module.DefaultRecordBatchBuilder = saved


async def publish_exposures(bootstrap: str, topic: str, events: Iterable[dict[str, Any]]) -> list[Published]:
    """Publish exposure events (JSON, keyed by id); return where each landed once the broker has it."""
    client = await producer(bootstrap)
    try:
        sent = [(str(e["id"]), await client.send(topic, json.dumps(e).encode(), key=str(e["id"]).encode()))
                for e in events]
        return [Published(m.partition, m.offset, i) for i, m in [(i, await f) for i, f in sent]]
    finally:
        await client.stop()


async def read_topic(bootstrap: str, topic: str, *, idle_s: float = 0.7,
                     timeout_s: float = 60.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic from the beginning, read groupless until it goes quiet; [] if unreachable."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=8 * _MB, fetch_max_bytes=64 * _MB)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            await consumer.topics()  # refreshes metadata
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                return []
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while batch := await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000):
                for part in batch.values():
                    records.extend(part)
    except (KafkaError, TimeoutError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return records


def ends_of(published: Iterable[Published]) -> dict[int, int]:
    """Each partition's end offset (last record + 1) from what the suite itself published."""
    ends: dict[int, int] = {}
    for item in published:
        ends[item.partition] = max(ends.get(item.partition, 0), item.offset + 1)
    return ends


async def lag(bootstrap: str, topic: str, group: str, ends: dict[int, int] | None = None) -> tuple[int, int]:
    """(records not yet committed by the group, stale commits).

    Tansu's ListOffsets(latest) is wrong after multi-record batches, so each partition's end is its last
    record's offset + 1: from `ends` (what the suite published) or else from the records read back. A
    commit past that end is stale: an offset of a previous incarnation of the topic.
    """
    if ends is None:
        ends = ends_of(Published(r.partition, r.offset) for r in await read_topic(bootstrap, topic, idle_s=0.5))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    behind = stale = 0
    try:
        async with asyncio.timeout(30):
            await consumer.start()
            partitions = consumer.partitions_for_topic(topic) or set(ends)
            for p in sorted(set(partitions) | set(ends)):
                committed = await consumer.committed(TopicPartition(topic, p)) or 0
                behind += max(ends.get(p, 0) - committed, 0)
                stale += committed > ends.get(p, 0)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return behind, stale


async def wait_lag_zero(bootstrap: str, names: Names, ends: dict[int, int] | None = None,
                        timeout_s: float = 20.0) -> tuple[int, int]:
    """Poll the group's lag until it is 0 (commits are periodic); return the last (lag, stale) seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        behind, stale = await lag(bootstrap, names.exposed, names.group, ends)
        if behind == 0 or time.monotonic() > deadline:
            return behind, stale
        await asyncio.sleep(1.0)


@dataclass
class Tally:
    """What the audit topic says about the published records."""

    terminals_by_id: Counter[str] = field(default_factory=Counter)
    terminals_by_origin: Counter[tuple[int, int]] = field(default_factory=Counter)
    terminal_records: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    unparsable: int = 0
    unknown_event: int = 0

    @classmethod
    def of(cls, audit: Iterable[ConsumerRecord[bytes, bytes]]) -> Tally:
        """Tally audit records: terminal records by exposure id and, for rejections, by source offset."""
        tally = cls()
        for record in audit:
            tally.records += 1
            try:
                doc = json.loads(record.value or b"")
            except ValueError:
                tally.unparsable += 1
                continue
            if not isinstance(doc, dict):
                tally.unparsable += 1
                continue
            event = doc.get("event")
            if event not in EVENTS:
                tally.unknown_event += 1
            if event in TERMINAL:
                tally.terminal_records.append(doc)
                tally.terminals_by_id[str(doc.get("exposure_id"))] += 1
                if isinstance(doc.get("source_partition"), int) and isinstance(doc.get("source_offset"), int):
                    tally.terminals_by_origin[(doc["source_partition"], doc["source_offset"])] += 1
        return tally

    def terminals(self, item: Published) -> int:
        """How many terminal records `item` got."""
        if item.exposure_id is not None:
            return self.terminals_by_id[item.exposure_id]
        return self.terminals_by_origin[(item.partition, item.offset)]

    def lost_and_duplicated(self, published: Iterable[Published]) -> tuple[int, int]:
        """(records with no terminal record, records with more than one)."""
        counts = [self.terminals(p) for p in published]
        return sum(c == 0 for c in counts), sum(c > 1 for c in counts)


async def wait_terminals(bootstrap: str, audit_topic: str, published: list[Published], *, timeout_s: float,
                         supervised: Supervised | None = None) -> Tally:
    """Re-read the audit topic until every published record has a terminal record or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        tally = Tally.of(await read_topic(bootstrap, audit_topic))
        lost, _ = tally.lost_and_duplicated(published)
        gave_up = supervised is not None and supervised.gave_up
        if lost == 0 or time.monotonic() > deadline or gave_up:
            return tally
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class Canary:
    """A planted secret and the byte strings that would betray it, in each encoding it could travel in."""

    value: str
    needles: tuple[bytes, ...]

    @classmethod
    def of(cls, value: str, *, raw_is_evidence: bool = True) -> Canary:
        """Needles: raw, JSON-escaped (ASCII and not), URL-encoded, base64, and a 16-character prefix of a
        long one. `raw_is_evidence=False` for a value the orchestrator legitimately writes itself (a JSON
        fragment such as `"event":"run.completed"`): then only its escaped and encoded forms count."""
        forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], quote(value, safe=""),
                 quote_plus(value), base64.b64encode(value.encode()).decode()}
        if raw_is_evidence:
            forms.add(value)
            if len(value) >= 24:
                forms.add(value[:16])
        else:
            forms.discard(value)
        return cls(value, tuple(sorted({f.encode() for f in forms if f})))

    def hits(self, blob: bytes) -> int:
        """Occurrences of any needle in `blob`."""
        return sum(blob.count(n) for n in self.needles)

    @property
    def label(self) -> str:
        """How the report names it: never its value."""
        return "canary:" + hashlib.sha256(self.value.encode()).hexdigest()[:8]


def canary_hits(canaries: list[Canary], blobs: Iterable[bytes]) -> int:
    """Total occurrences of every canary in every blob."""
    return sum(c.hits(b) for b in blobs for c in canaries)


def record_blobs(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[bytes]:
    """Every byte a consumer of these records would see: value, key, header keys and values."""
    blobs = []
    for r in records:
        blobs += [r.value or b"", r.key or b""]
        blobs += [k.encode(errors="surrogateescape") + b"=" + (v or b"") for k, v in r.headers]
    return blobs


def emulator_control(url: str, method: str, path: str, body: Any = None) -> Any:
    """Call an emulator's (or the fault proxy's) control API."""
    response = httpx.request(method, f"{url}/_emulator/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def roomy_limits(okta_url: str | None, slack_url: str | None) -> None:
    """Lift the emulators' rate limits: the suite injects its own 429s where it wants them."""
    if okta_url:
        buckets = {b: {"limit": 10**9, "window_s": 60} for b in ("users.get", "users", "sessions", "api-tokens",
                                                                 "default")}
        emulator_control(okta_url, "PUT", "rate-limits", {"buckets": buckets, "concurrency": 10_000})
    if slack_url:
        emulator_control(slack_url, "PUT", "rate-limits", {"auth.revoke": {"limit": 10**9, "window_s": 60}})


def write_tokens_file(path: Path) -> str:
    """An API tokens file granting one admin token; returns the token."""
    token = "orch_" + secrets.token_urlsafe(32)
    entry = {"principal": "chaos", "roles": ["admin"], "sha256": hashlib.sha256(token.encode()).hexdigest()}
    path.write_text(json.dumps({"tokens": [entry]}))
    path.chmod(0o600)  # the orchestrator refuses a tokens file others may read
    return token
