"""Throughput benchmark (issue 2): owner-based okta.session exposures per second to terminal audit record.

Runs `orchestrator run` as a child process against a broker (Tansu, or KAFKA_BOOTSTRAP_SERVERS) and the
Okta emulator process with the given latency, publishes COUNT exposures for COUNT distinct users, and
times first publish → last terminal audit record. Peak RSS is the orchestrator process's VmHWM.

    .venv/bin/python bench/throughput.py --count 10000 --latency-ms 0 --latency-ms 20

The run store's cost, in one invocation: `--store` picks the backends to run with (`sqlite`, the default file
under a temp ORCHESTRATOR_DATA_DIR; `memory`, SQLite in memory; `postgresql`, a throwaway server started as
the tests start it), and `--baseline REF` adds a run of the code at git REF (e.g. the commit before the run
store), checked out in a temporary worktree and run with this environment's interpreter:

    .venv/bin/python bench/throughput.py --count 10000 --latency-ms 20 --baseline 2fd5892 \
        --store memory --store sqlite --store postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import embedded  # noqa: E402
from orchestrator.audit import TERMINAL_EVENTS  # noqa: E402
from tests.support import publish, read_all, unbraked_policy  # noqa: E402

_TERMINAL_MARKERS = tuple(f'"event":"{event.value}"'.encode() for event in TERMINAL_EVENTS)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _count_terminals(bootstrap: str, topic: str, want: int, timeout_s: float) -> float:
    """Wait until `want` terminal records are on the audit topic; return the time the last one was seen."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen}/{want} terminal records after {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    # A substring test is enough here and spares the benchmark parsing every record.
                    if any(marker in record.value for marker in _TERMINAL_MARKERS):
                        seen += 1
        return time.monotonic()
    finally:
        await consumer.stop()


async def run_once(bootstrap: str, okta_url: str, admin_token: str, count: int, latency_ms: int,
                   owner: str = "login", store: dict[str, str] | None = None,
                   code: Path | None = None) -> dict[str, float]:
    suffix = secrets.token_hex(4)
    topics = {"ORCHESTRATOR_EXPOSURES_TOPIC": f"bench.{suffix}.exposed", "ORCHESTRATOR_AUDIT_TOPIC":
              f"bench.{suffix}.audit", "ORCHESTRATOR_DLQ_TOPIC": f"bench.{suffix}.dlq"}
    logins = [f"bench.{suffix}.{i}@example.com" for i in range(count)]
    seeded = httpx.post(f"{okta_url}/_emulator/state", json={"users": [{"login": lg, "sessions": 1} for lg in logins]},
                        timeout=120)
    seeded.raise_for_status()
    if owner == "id":  # a user id needs no lookup: one Okta call per exposure instead of two
        logins = [user["id"] for user in seeded.json()["users"]]
    httpx.put(f"{okta_url}/_emulator/latency", json={"ms": latency_ms}, timeout=10).raise_for_status()
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OKTA_CLIENT_ORGURL": okta_url,
           "OKTA_CLIENT_TOKEN": admin_token, "OKTA_TESTING_TESTINGDISABLEHTTPSCHECK": "true",
           "ORCHESTRATOR_GROUP_ID": f"bench-{suffix}", "ORCHESTRATOR_LOG_FORMAT": "json",
           "ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS": "6000", "ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
           "ORCHESTRATOR_HTTP_LISTEN": f"127.0.0.1:{embedded.free_port()}",
           "ORCHESTRATOR_POLICY_FILE": str(unbraked_policy()), **(store or {})}
    command = [str(Path(sys.executable).parent / "orchestrator"), "run"]
    if code is not None:  # another checkout's code, with this interpreter and its packages
        env["PYTHONPATH"] = str(code)
        command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "run"]
    if profile := os.environ.get("BENCH_PROFILE"):  # a cProfile output path: profile the orchestrator
        command = [sys.executable, "-m", "cProfile", "-o", profile, *command]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:  # wait until the group is joined and partitions are assigned
            if "consumer.assigned" in line:
                break
        events = [{"id": f"bench-{suffix}-{i}", "credential": {"kind": "okta.session", "owner": lg},
                   "source": {"detector": "bench"}} for i, lg in enumerate(logins)]
        started = time.monotonic()
        waiter = asyncio.create_task(_count_terminals(bootstrap, topics["ORCHESTRATOR_AUDIT_TOPIC"], count, 600))
        await publish(bootstrap, topics["ORCHESTRATOR_EXPOSURES_TOPIC"], events)
        published = time.monotonic()
        finished = await waiter
        rss = _peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        process.kill()
    dlq = await read_all(bootstrap, topics["ORCHESTRATOR_DLQ_TOPIC"], idle_timeout_s=0.5)
    audit = [json.loads(r.value) for r in await read_all(bootstrap, topics["ORCHESTRATOR_AUDIT_TOPIC"],
                                                          idle_timeout_s=0.5)]
    steps = sorted(r["duration_ms"] for r in audit if r["event"] == "step.succeeded")
    runs = sorted(r["duration_ms"] for r in audit if r["event"] == "run.completed")
    stats = httpx.get(f"{okta_url}/_emulator/okta-stats", timeout=10).json()
    throttled = sum(b.get("throttled", 0) for b in stats.get("buckets", {}).values())
    throttled += stats.get("concurrency", {}).get("throttled", 0)
    return {"owner": owner, "latency_ms": latency_ms, "count": count, "seconds": finished - started,
            "exposures_per_s": count / (finished - started), "publish_s": published - started,
            "peak_rss_mb": rss, "dead_letters": len(dlq), "throttled_429": throttled,
            "max_in_flight": stats.get("max_in_flight"), "exit_code": process.returncode,
            "run_ms_p50": _pct(runs, 50), "run_ms_p99": _pct(runs, 99), "step_ms_p50": _pct(steps, 50),
            "step_ms_p99": _pct(steps, 99)}


def _pct(values: list[float], pct: int) -> float:
    return values[min(len(values) - 1, len(values) * pct // 100)] if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, action="append", default=None)
    parser.add_argument("--owner", choices=("login", "id"), default="login",
                        help="what credential.owner holds: a login (user lookup + revoke) or a user id (revoke only)")
    parser.add_argument("--store", choices=("sqlite", "memory", "postgresql"), action="append", default=None,
                        help="run store backend (repeatable; default sqlite)")
    parser.add_argument("--baseline", metavar="REF", help="also run the code at this git commit (no run store)")
    parser.add_argument("--rounds", type=int, default=1, help="run every configuration this many times, "
                        "interleaved (load on a shared machine drifts)")
    args = parser.parse_args()
    latencies = args.latency_ms or [0, 20]
    admin = "00" + secrets.token_urlsafe(32)[:40]
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or stack.enter_context(embedded.tansu()).url
        okta = stack.enter_context(embedded.emulator("okta", "--admin-token", admin))
        # Rate limits are issue 3's benchmark; here the emulator must not throttle.
        httpx.put(f"{okta.url}/_emulator/rate-limits", json={"buckets": {b: {"limit": 10**9, "window_s": 60}
                  for b in ("users.get", "users", "sessions", "api-tokens", "default")}, "concurrency": 75},
                  timeout=10).raise_for_status()
        print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, broker {bootstrap}")
        configs: list[tuple[str, dict[str, str], Path | None]] = []
        if args.baseline:
            configs.append((f"none ({args.baseline})", {}, stack.enter_context(_checkout(args.baseline))))
        for backend in args.store or ["sqlite"]:
            configs.append((backend, _store_env(backend, stack), None))
        for latency in [lat for lat in latencies for _ in range(args.rounds)]:
            for name, store, code in configs:
                result = await run_once(bootstrap, okta.url, admin, args.count, latency, args.owner, store, code)
                result = {"store": name, **result}
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}),
                      flush=True)


def _store_env(backend: str, stack: contextlib.ExitStack) -> dict[str, str]:
    """The orchestrator's environment for one run-store backend."""
    if backend == "memory":
        return {"ORCHESTRATOR_DATABASE_URL": "sqlite://"}
    if backend == "postgresql":
        from tests import postgres

        server = stack.enter_context(postgres.server())
        return {"ORCHESTRATOR_DATABASE_URL": postgres.fresh_database(server)}
    return {"ORCHESTRATOR_DATA_DIR": stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-store-"))}


@contextlib.contextmanager
def _checkout(ref: str) -> Iterator[Path]:
    """The project at git `ref`, in a temporary worktree."""
    directory = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(directory / "code"), ref],
                   check=True, capture_output=True)
    try:
        yield directory / "code"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(directory / "code")],
                       check=False, capture_output=True)


if __name__ == "__main__":
    asyncio.run(main())
