"""`orchestrator dev`: the embedded default (Tansu and the provider emulators) and the 2023 Okta demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from orchestrator import embedded, kafka
from orchestrator.audit_stream import follow, is_terminal, render
from orchestrator.errors import ConfigurationError

DEMO_ADMIN = "sam.support@example.com"
DEMO_CUSTOMER = "casey.customer@example.com"


@dataclass
class DevEnvironment:
    """What `orchestrator dev` started, and the environment the orchestrator runs with."""

    env: dict[str, str]
    started: list[str] = field(default_factory=list)
    okta_url: str | None = None
    demo: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def environment(base: Mapping[str, str]) -> Iterator[DevEnvironment]:
    """Start Tansu unless `KAFKA_BOOTSTRAP_SERVERS` is set, the Okta emulator unless `OKTA_CLIENT_ORGURL` is."""
    env = dict(base)
    dev = DevEnvironment(env=env)
    with contextlib.ExitStack() as stack:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            broker = stack.enter_context(embedded.tansu())
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.url
            dev.started.append(f"Tansu broker (in memory) at {broker.url}")
            # The embedded broker is fresh every time: join the group quickly.
            env.setdefault("ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS", "6000")
            env.setdefault("ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS", "500")
        if not env.get("OKTA_CLIENT_ORGURL"):
            admin_token = "00" + secrets.token_urlsafe(30)[:40]
            okta = stack.enter_context(embedded.emulator("okta", "--admin-token", admin_token))
            env.update(OKTA_CLIENT_ORGURL=okta.url, OKTA_CLIENT_TOKEN=admin_token,
                       OKTA_TESTING_TESTINGDISABLEHTTPSCHECK="true")
            dev.okta_url = okta.url
            dev.started.append(f"Okta emulator at {okta.url}")
            dev.demo = _seed_okta_demo(okta.url)
        yield dev


def _seed_okta_demo(okta_url: str) -> dict[str, str]:
    """Users, sessions and an API token for the demo; token values are generated now, never stored."""
    session_id = "102" + secrets.token_hex(12)
    token_value = "00" + secrets.token_urlsafe(30)[:40]
    state = {
        "users": [
            {"login": DEMO_CUSTOMER, "email": DEMO_CUSTOMER, "sessions": [session_id, "102" + secrets.token_hex(12)],
             "grants": [{"clientId": "0oa-demo-portal"}], "tokens": [{"clientId": "0oa-demo-portal"}]},
            {"login": DEMO_ADMIN, "email": DEMO_ADMIN, "sessions": ["102" + secrets.token_hex(12)], "factors": 2},
        ],
        "api_tokens": [{"name": "support-automation", "login": DEMO_ADMIN, "token": token_value}],
    }
    response = httpx.post(f"{okta_url}/_emulator/state", json=state, timeout=10)
    response.raise_for_status()
    return {"session_id": session_id, "api_token": token_value}


def demo_exposures(dev: DevEnvironment) -> list[dict[str, Any]]:
    """The 2023 Okta support-system breach, as three exposures a HAR scanner and a SIEM would publish."""
    if not dev.demo:
        raise ConfigurationError("--demo seeds the Okta emulator: unset OKTA_CLIENT_ORGURL to use it")
    run = uuid.uuid4().hex[:8]
    har = {"detector": "har-scanner", "location": "support-case-00123/upload.har", "verified": True}
    return [
        {"id": f"demo-{run}-har-session", "credential": {"kind": "okta.session", "id": dev.demo["session_id"]},
         "source": har, "severity": "high"},
        {"id": f"demo-{run}-ssws-token", "credential": {"kind": "okta.api_token", "secret": dev.demo["api_token"]},
         "source": har, "severity": "critical"},
        {"id": f"demo-{run}-support-engineer", "credential": {"kind": "okta.user", "owner": DEMO_ADMIN},
         "source": {"detector": "siem:impossible-travel"}, "severity": "critical",
         "reason": "support engineer workstation compromised"},
    ]


async def publish(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Publish exposure events, keyed by id, and wait until the broker has them."""
    producer = kafka.make_producer(bootstrap)
    await kafka.start(producer, bootstrap)
    try:
        await _send_all(producer, topic, events)
    finally:
        await producer.stop()


async def _send_all(producer: AIOKafkaProducer, topic: str, events: list[dict[str, Any]]) -> None:
    futures = [await producer.send(topic, json.dumps(e).encode(), key=str(e["id"]).encode()) for e in events]
    await asyncio.gather(*futures)


async def watch(bootstrap: str, topic: str, ids: list[str], *, timeout_s: float = 120.0,
                echo: bool = True) -> dict[str, str]:
    """Print the audit trail of `ids` until each has its terminal record; return id -> terminal event."""
    terminals: dict[str, str] = {}

    async def read() -> None:
        async for record in follow(bootstrap, topic, exposure_ids=ids):
            if echo:
                print(render(record), flush=True)
            if is_terminal(record):
                terminals[record["exposure_id"]] = record["event"]
                if len(terminals) == len(ids):
                    return

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await read()
    return terminals


def banner(dev: DevEnvironment) -> str:
    """The loud notice that this is not production."""
    lines = ["=" * 78, "EMBEDDED DEVELOPMENT MODE: nothing here touches a real identity provider"
             if dev.okta_url else "DEVELOPMENT MODE", *(f"  started: {s}" for s in dev.started),
             "  data lives in memory and is gone when this process exits", "=" * 78]
    return "\n".join(lines)


def process_env(dev: DevEnvironment) -> None:
    """Export the dev environment so the SDKs (which read the environment themselves) see it too."""
    os.environ.update(dev.env)
