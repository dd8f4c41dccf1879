"""Governor benchmark (issue 3): a burst of owner-based exposures against Okta's rate limits, scaled down.

Runs `orchestrator run` as a child process against a broker (Tansu, or KAFKA_BOOTSTRAP_SERVERS) and the Okta
emulator, which enforces LIMIT requests per WINDOW seconds in every bucket and 75 requests in flight.
Publishes COUNT `okta.session` exposures, each with its owner's login, so each makes two calls in two buckets:
`GET /api/v1/users/{login}` (`users.get`) and `DELETE /api/v1/users/{id}/sessions` (`users`).

"Allowed rate" is what one API token may use: SHARE * LIMIT / WINDOW requests/s per bucket (Okta's default
per-token share is 50 %). Achieved rate is measured at the emulator: requests it admitted in a bucket over
the time between the first and the last of them.

    .venv/bin/python bench/governor.py --count 2000 --limit 400 --window-s 12 --share 0.5
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
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import embedded  # noqa: E402
from orchestrator.audit_stream import follow, is_terminal  # noqa: E402
from tests.support import publish, read_all, unbraked_policy  # noqa: E402

BUCKETS = ("users.get", "users", "sessions", "api-tokens", "default")


async def _terminals(bootstrap: str, topic: str, ids: set[str], timeout_s: float) -> tuple[dict[str, str], float]:
    """The terminal event of every id, and when the last one was read."""
    found: dict[str, str] = {}
    async with asyncio.timeout(timeout_s):
        async for record in follow(bootstrap, topic):
            if is_terminal(record) and record.get("exposure_id") in ids:
                found[record["exposure_id"]] = record["event"]
                if len(found) == len(ids):
                    break
    return found, time.monotonic()


def _drain(stream: Any, sink: list[str]) -> None:
    """Read the orchestrator's log so it never blocks on a full pipe; keep the governor's state lines."""
    for line in stream:
        if "governor." in line:
            sink.append(line)


async def run(args: argparse.Namespace, bootstrap: str, okta_url: str, admin: str) -> dict[str, Any]:
    """One burst: seed, start the orchestrator, publish, wait for every terminal record, read the counters."""
    suffix = secrets.token_hex(4)
    topics = {"ORCHESTRATOR_EXPOSURES_TOPIC": f"gov.{suffix}.exposed", "ORCHESTRATOR_AUDIT_TOPIC":
              f"gov.{suffix}.audit", "ORCHESTRATOR_DLQ_TOPIC": f"gov.{suffix}.dlq"}
    logins = [f"gov.{suffix}.{i}@example.com" for i in range(args.count)]
    control = httpx.AsyncClient(base_url=f"{okta_url}/_emulator/", timeout=120)
    (await control.post("state", json={"users": [{"login": lg, "sessions": 1} for lg in logins]})).raise_for_status()
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OKTA_CLIENT_ORGURL": okta_url,
           "OKTA_CLIENT_TOKEN": admin, "OKTA_TESTING_TESTINGDISABLEHTTPSCHECK": "true",
           "ORCHESTRATOR_GROUP_ID": f"gov-{suffix}", "ORCHESTRATOR_LOG_FORMAT": "json",
           "ORCHESTRATOR_OKTA_BUCKET_SHARE": str(args.share), "ORCHESTRATOR_OKTA_CONCURRENCY": "75",
           "ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS": "6000", "ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
           "ORCHESTRATOR_HTTP_LISTEN": f"127.0.0.1:{embedded.free_port()}",
           "ORCHESTRATOR_POLICY_FILE": str(unbraked_policy())}
    command = [str(Path(sys.executable).parent / "orchestrator"), "run"]
    # Started once, before anything is measured.
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    log_lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "consumer.assigned" in line:
                break
        threading.Thread(target=_drain, args=(process.stderr, log_lines), daemon=True).start()
        limits = {"buckets": {b: {"limit": args.limit, "window_s": args.window_s} for b in BUCKETS},
                  "concurrency": 75}
        (await control.put("rate-limits", json=limits)).raise_for_status()
        (await control.post("reset")).raise_for_status()
        events = [{"id": f"gov-{suffix}-{i}", "credential": {"kind": "okta.session", "owner": lg},
                   "source": {"detector": "bench"}} for i, lg in enumerate(logins)]
        ids = {e["id"] for e in events}
        started = time.monotonic()
        waiter = asyncio.create_task(_terminals(bootstrap, topics["ORCHESTRATOR_AUDIT_TOPIC"], ids, 900))
        await publish(bootstrap, topics["ORCHESTRATOR_EXPOSURES_TOPIC"], events)
        terminals, finished = await waiter
        stats = (await control.get("okta-stats")).json()
        base = (await control.get("stats")).json()
    finally:
        await control.aclose()
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        process.kill()
    dlq = await read_all(bootstrap, topics["ORCHESTRATOR_DLQ_TOPIC"], idle_timeout_s=0.5)
    allowed = args.share * args.limit / args.window_s
    buckets = {}
    for name in ("users.get", "users"):
        b = stats["buckets"][name]
        admitted = b["requests"] - b["throttled"]
        span = b["last_at"] - b["first_at"]
        buckets[name] = {"admitted": admitted, "throttled": b["throttled"], "span_s": round(span, 2),
                         "rate_per_s": round(admitted / span, 3), "of_allowed": round(admitted / span / allowed, 3)}
    requests = sum(b["requests"] for b in stats["buckets"].values())
    throttled = sum(b["throttled"] for b in stats["buckets"].values()) + stats["concurrency"]["throttled"]
    outcomes: dict[str, int] = {}
    for event in terminals.values():
        outcomes[event] = outcomes.get(event, 0) + 1
    return {
        "count": args.count, "limit": args.limit, "window_s": args.window_s, "share": args.share,
        "allowed_per_bucket_per_s": round(allowed, 3), "buckets": buckets,
        "requests": requests, "throttled_429": throttled, "throttled_pct": round(100 * throttled / requests, 3),
        "max_in_flight": base["max_in_flight"], "terminal": outcomes, "missing": len(ids) - len(terminals),
        "dead_letters": len(dlq), "seconds": round(finished - started, 1),
        "exposures_per_s": round(args.count / (finished - started), 3),
        "governor_log_lines": len(log_lines), "exit_code": process.returncode,
    }


async def main() -> None:
    """Parse the arguments, start the broker and the emulator, run one burst, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=400, help="requests per window in every bucket")
    parser.add_argument("--window-s", type=float, default=12.0)
    parser.add_argument("--share", type=float, default=0.5)
    args = parser.parse_args()
    admin = "00" + secrets.token_urlsafe(32)[:40]
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or stack.enter_context(embedded.tansu()).url
        okta = stack.enter_context(embedded.emulator("okta", "--admin-token", admin))
        print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, broker {bootstrap}")
        print(json.dumps(await run(args, bootstrap, okta.url, admin), indent=1), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
