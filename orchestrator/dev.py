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

from orchestrator import embedded, kafka, live_view
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.errors import ConfigurationError
from orchestrator.progress import in_time_order

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
    """Start Tansu and every provider's emulator, except where the environment names a real one.

    Kafka: unless `KAFKA_BOOTSTRAP_SERVERS`. Okta: unless `OKTA_CLIENT_ORGURL`. AWS: moto unless
    `AWS_ENDPOINT_URL` (with throwaway credentials, so the developer's own AWS credentials are never used).
    GitHub, Slack, GCP: unless `ORCHESTRATOR_GITHUB_API_URL`, `ORCHESTRATOR_SLACK_API_URL`,
    `ORCHESTRATOR_GCP_IAM_URL`.
    """
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
        if not env.get("AWS_ENDPOINT_URL"):
            _emulate_aws(stack, dev)
        for name, label, variable, path in (("github", "GitHub", "ORCHESTRATOR_GITHUB_API_URL", ""),
                                            ("slack", "Slack", "ORCHESTRATOR_SLACK_API_URL", "/api")):
            if not env.get(variable):
                server = stack.enter_context(embedded.emulator(name))
                env[variable] = server.url + path
                dev.started.append(f"{label} emulator at {server.url}")
        if not env.get("ORCHESTRATOR_GCP_IAM_URL"):
            server = stack.enter_context(embedded.emulator("gcp"))
            token = "ya29.dev-" + secrets.token_urlsafe(24)
            httpx.post(f"{server.url}/_emulator/state", json={"access_tokens": [token]}, timeout=10).raise_for_status()
            env.update(ORCHESTRATOR_GCP_IAM_URL=server.url, ORCHESTRATOR_GCP_ACCESS_TOKEN=token)
            dev.started.append(f"GCP IAM emulator at {server.url}")
        yield dev


def _emulate_aws(stack: contextlib.ExitStack, dev: DevEnvironment) -> None:
    """Point AWS at moto with throwaway credentials; without moto, at a closed port so nothing real is called."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        dev.env.pop(variable, None)
    dev.env.update(AWS_ACCESS_KEY_ID="AKIADEV" + secrets.token_hex(6).upper(),
                   AWS_SECRET_ACCESS_KEY=secrets.token_urlsafe(30), AWS_REGION="us-east-1")
    if embedded.moto_available():
        server = stack.enter_context(embedded.moto())
        dev.env["AWS_ENDPOINT_URL"] = server.url
        dev.started.append(f"AWS (moto) at {server.url}")
    else:
        dev.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{embedded.free_port()}"
        dev.started.append("AWS: no emulator (pip install 'moto[server]'); aws.* steps will fail, never reach AWS")


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
    """Collect the audit trail of `ids` until each has its terminal record, print it in time order.

    Records of different exposures sit on different partitions and arrive partition by partition, so the
    trail is sorted by `ts` before printing. Returns id -> terminal event.
    """
    terminals: dict[str, str] = {}
    trail: list[dict[str, Any]] = []

    async def read() -> None:
        async for record in follow(bootstrap, topic, exposure_ids=ids):
            trail.append(record)
            if is_terminal(record):
                terminals[record["exposure_id"]] = record["event"]
                if len(terminals) == len(ids):
                    return

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await read()
    if echo:  # coloured lines and closing sentences on a terminal, plain stable lines elsewhere
        with live_view.printer(live_view.console(), with_id=True) as show:
            for record in in_time_order(trail):
                show(record)
    return terminals


def banner(dev: DevEnvironment) -> str:
    """The loud notice of what is emulated and what, if anything, is real."""
    emulated = " ".join(dev.started)
    real = [name for name, marker in (("Kafka", "Tansu"), ("Okta", "Okta"), ("AWS", "AWS"), ("GitHub", "GitHub"),
                                      ("Slack", "Slack"), ("GCP", "GCP")) if marker not in emulated]
    headline = ("EMBEDDED DEVELOPMENT MODE: every provider is a local emulator; nothing real is touched"
                if not real else f"DEVELOPMENT MODE: REAL {', '.join(real)} configured from the environment")
    return "\n".join(["=" * 78, headline, *(f"  started: {s}" for s in dev.started),
                      "  emulated data lives in memory and is gone when this process exits", "=" * 78])


def process_env(dev: DevEnvironment) -> None:
    """Export the dev environment so the SDKs (which read the environment themselves) see it too."""
    os.environ.update(dev.env)
