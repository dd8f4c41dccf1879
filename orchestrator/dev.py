"""`orchestrator dev`: the embedded default (Tansu and the provider emulators) and the 2023 Okta demo."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import secrets
import shlex
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from orchestrator import dev_data, embedded, kafka, live_view
from orchestrator.audit_stream import follow, is_terminal
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.dev_data import DEMO_ADMIN
from orchestrator.errors import ConfigurationError
from orchestrator.progress import in_time_order
from orchestrator.settings import DEV_API_PORT, DEV_KAFKA_PORT


@dataclass
class DevEnvironment:
    """What `orchestrator dev` started, and the environment the orchestrator runs with."""

    env: dict[str, str]
    started: list[str] = field(default_factory=list)
    okta_url: str | None = None
    demo: dict[str, str] = field(default_factory=dict)
    #: What each emulator was seeded with (`--show-data`).
    samples: list[dev_data.Sample] = field(default_factory=list)
    #: Variables another shell needs to use this instance: printed as `export` lines.
    exports: dict[str, str] = field(default_factory=dict)
    #: Ports asked for but taken, and where their service went instead.
    moved: list[str] = field(default_factory=list)


def pick_port(preferred: int, what: str, dev: DevEnvironment) -> int:
    """`preferred` when nothing listens on it (0: any), else a free port, noted in `dev.moved`."""
    if preferred:
        if embedded.port_is_free(preferred):
            return preferred
        port = embedded.free_port()
        dev.moved.append(f"port {preferred} is taken: {what} on {port} instead")
        return port
    return embedded.free_port()


@contextlib.contextmanager
def environment(base: Mapping[str, str], *, kafka_port: int = DEV_KAFKA_PORT,
                api_port: int = DEV_API_PORT) -> Iterator[DevEnvironment]:
    """Start Tansu and every provider's emulator, except where the environment names a real one.

    Kafka: unless `KAFKA_BOOTSTRAP_SERVERS`. Okta: unless `OKTA_CLIENT_ORGURL`. AWS: moto unless
    `AWS_ENDPOINT_URL` (with throwaway credentials, so the developer's own AWS credentials are never used).
    GitHub, Slack, GCP: unless `ORCHESTRATOR_GITHUB_API_URL`, `ORCHESTRATOR_SLACK_API_URL`,
    `ORCHESTRATOR_GCP_IAM_URL`. Each emulator is seeded with sample data (`dev.samples`). The HTTP API
    listens on `api_port` unless ORCHESTRATOR_HTTP_LISTEN says otherwise, with an admin token of its own
    unless ORCHESTRATOR_API_TOKENS_FILE is set.
    """
    env = dict(base)
    dev = DevEnvironment(env=env)
    with contextlib.ExitStack() as stack:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            broker = stack.enter_context(embedded.tansu(pick_port(kafka_port, "the broker", dev)))
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.url
            dev.started.append(f"Tansu broker (in memory) at {broker.url}")
            # The embedded broker is fresh every time: join the group quickly.
            env.setdefault("ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS", "6000")
            env.setdefault("ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS", "500")
        dev.exports["KAFKA_BOOTSTRAP_SERVERS"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        # `status` and `exposures list` read the run store: from any directory, the same one.
        env.setdefault("ORCHESTRATOR_DATA_DIR", str(Path(".orchestrator").resolve()))
        dev.exports["ORCHESTRATOR_DATA_DIR"] = env["ORCHESTRATOR_DATA_DIR"]
        _serve_api(stack, dev, api_port)
        _start_emulators(stack, dev)
        yield dev


def _serve_api(stack: contextlib.ExitStack, dev: DevEnvironment, api_port: int) -> None:
    """Put the HTTP API on `api_port` (or a free one) with a fresh admin token, unless configured already."""
    env = dev.env
    if "ORCHESTRATOR_HTTP_LISTEN" not in env:
        env["ORCHESTRATOR_HTTP_LISTEN"] = f"127.0.0.1:{pick_port(api_port, 'the HTTP API', dev)}"
    listen = env["ORCHESTRATOR_HTTP_LISTEN"].strip()
    if listen.lower() in {"", "off", "none"}:
        return
    dev.exports["ORCHESTRATOR_API_URL"] = f"http://{listen}"
    if not env.get("ORCHESTRATOR_API_TOKENS_FILE"):
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orchestrator-dev-")))
        token = new_token()
        write_private(directory / "api-tokens.json",
                      json.dumps({"tokens": [token_entry(token, "dev", [Role.ADMIN])]}))
        env["ORCHESTRATOR_API_TOKENS_FILE"] = str(directory / "api-tokens.json")
        dev.exports["ORCHESTRATOR_API_TOKEN"] = token


def _start_emulators(stack: contextlib.ExitStack, dev: DevEnvironment) -> None:
    """Start every emulator the environment does not replace, all at once (each takes about a second to
    import and listen), then seed each with its sample data, again all at once."""
    env = dev.env
    okta_token = "00" + secrets.token_urlsafe(30)[:40]
    gcp_token = "ya29.dev-" + secrets.token_urlsafe(24)
    wanted: dict[str, Callable[[], contextlib.AbstractContextManager[embedded.ChildProcess]]] = {}
    if not env.get("OKTA_CLIENT_ORGURL"):
        wanted["okta"] = functools.partial(embedded.emulator, "okta", "--admin-token", okta_token)
    emulate_aws = not env.get("AWS_ENDPOINT_URL")
    if emulate_aws:
        # Throwaway credentials and no profile: the developer's own AWS configuration is never used.
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            env.pop(variable, None)
        env.update(AWS_ACCESS_KEY_ID="AKIADEV" + secrets.token_hex(6).upper(),
                   AWS_SECRET_ACCESS_KEY=secrets.token_urlsafe(30), AWS_REGION="us-east-1")
        if embedded.moto_available():
            wanted["aws"] = embedded.moto
    for name, variable in (("github", "ORCHESTRATOR_GITHUB_API_URL"), ("slack", "ORCHESTRATOR_SLACK_API_URL"),
                           ("gcp", "ORCHESTRATOR_GCP_IAM_URL")):
        if not env.get(variable):
            wanted[name] = functools.partial(embedded.emulator, name)
    servers = stack.enter_context(embedded.together(wanted))
    seeders: dict[str, Callable[[str], list[dev_data.Sample]]] = {
        "okta": lambda url: _seed_okta(dev, url), "aws": lambda url: dev_data.seed_aws(url, env),
        "github": dev_data.seed_github, "slack": dev_data.seed_slack,
        "gcp": lambda url: dev_data.seed_gcp(url, gcp_token)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(servers), 1)) as pool:
        seeding = {name: pool.submit(seeders[name], server.url) for name, server in servers.items()}
    for name in ("okta", "aws", "github", "slack", "gcp"):  # the banner's order, whatever finished first
        if name == "aws" and emulate_aws and name not in servers:
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{embedded.free_port()}"
            dev.started.append("AWS: no emulator (pip install 'moto[server]'); aws.* steps will fail, never reach AWS")
        if name not in servers:
            continue
        url = servers[name].url
        dev.samples += seeding[name].result()
        if name == "okta":
            env.update(OKTA_CLIENT_ORGURL=url, OKTA_CLIENT_TOKEN=okta_token,
                       OKTA_TESTING_TESTINGDISABLEHTTPSCHECK="true")
            dev.okta_url = url
        elif name == "aws":
            env["AWS_ENDPOINT_URL"] = url
        elif name == "gcp":
            env.update(ORCHESTRATOR_GCP_IAM_URL=url, ORCHESTRATOR_GCP_ACCESS_TOKEN=gcp_token)
        else:
            env[f"ORCHESTRATOR_{name.upper()}_API_URL"] = url + ("/api" if name == "slack" else "")
        dev.started.append(_LABELS[name].format(url=url))


_LABELS = {"okta": "Okta emulator at {url}", "aws": "AWS (moto) at {url}", "github": "GitHub emulator at {url}",
           "slack": "Slack emulator at {url}", "gcp": "GCP IAM emulator at {url}"}


def _seed_okta(dev: DevEnvironment, url: str) -> list[dev_data.Sample]:
    samples, dev.demo = dev_data.seed_okta(url)
    return samples


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


def banner(dev: DevEnvironment, *, show_data: bool = False) -> str:
    """The loud notice of what is emulated and what, if anything, is real; the `export` lines another shell
    needs, the next commands to try, and with `show_data` the sample data."""
    emulated = " ".join(dev.started)
    real = [name for name, marker in (("Kafka", "Tansu"), ("Okta", "Okta"), ("AWS", "AWS"), ("GitHub", "GitHub"),
                                      ("Slack", "Slack"), ("GCP", "GCP")) if marker not in emulated]
    headline = ("EMBEDDED DEVELOPMENT MODE: every provider is a local emulator; nothing real is touched"
                if not real else f"DEVELOPMENT MODE: REAL {', '.join(real)} configured from the environment")
    lines = ["=" * 78, headline, *(f"  started: {s}" for s in dev.started), *(f"  note: {m}" for m in dev.moved),
             "  emulated data lives in memory and is gone when this process exits", "=" * 78,
             "In another shell, paste:",
             *(f"  export {name}={shlex.quote(value)}" for name, value in dev.exports.items()),
             "Then try:", *(f"  {command}" for command in _next_commands(dev))]
    if show_data and dev.samples:
        lines.append(dev_data.show(dev.samples))
    elif dev.samples:
        lines.append("  orchestrator dev --show-data   # lists the sample users, keys and tokens to try them on")
    return "\n".join(lines)


def _next_commands(dev: DevEnvironment) -> list[str]:
    owner = DEMO_ADMIN if dev.demo else "someone@example.com"
    commands = [f"orchestrator trigger --kind okta.user --owner {owner} --dry-run   # the plan, nothing revoked",
                f"orchestrator trigger --kind okta.user --owner {owner} --wait",
                "orchestrator exposures list", "orchestrator audit tail --follow"]
    if "ORCHESTRATOR_API_URL" in dev.exports:
        url = dev.exports["ORCHESTRATOR_API_URL"]
        commands.append(f"xdg-open {url}/docs   # the HTTP API's Swagger UI (ReDoc: {url}/redoc)")
        if "ORCHESTRATOR_API_TOKEN" in dev.exports:
            commands.append('curl -H "Authorization: Bearer $ORCHESTRATOR_API_TOKEN" '
                            '"$ORCHESTRATOR_API_URL/v1/exposures"')
    return commands


def process_env(dev: DevEnvironment) -> None:
    """Export the dev environment so the SDKs (which read the environment themselves) see it too."""
    os.environ.update(dev.env)
