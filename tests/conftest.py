"""Shared fixtures: a real Kafka-protocol broker and real emulator processes, never in-process fakes.

The broker is `KAFKA_BOOTSTRAP_SERVERS` when set, else an embedded Tansu process for the session.
Each test gets its own topics and consumer group, so tests never see each other's records.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from orchestrator import embedded
from orchestrator.settings import Settings, StoreSettings
from orchestrator.store import RunStore
from tests.support import Harness, Receiver, fake_aws_credentials, fresh_settings, receiving

# okta-sdk-python refuses plain-http org URLs unless this is set; only the emulator is plain http.
os.environ.setdefault("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")


@dataclass(frozen=True)
class Emulator:
    """A running emulator process and a client for its control API."""

    url: str
    admin_token: str = ""

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call the emulator's control API (`/_emulator/...`) and return the decoded JSON."""
        response = httpx.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def seed(self, state: dict[str, Any]) -> Any:
        """Add users, tokens, keys... (the emulator's seed format)."""
        return self.control("POST", "state", state)

    def reset(self) -> None:
        """Clear faults, latency and counters."""
        self.control("POST", "reset")


def okta_token() -> str:
    """A random value shaped like an Okta API token; generated per run, never a real one."""
    return "00" + secrets.token_urlsafe(32)[:40]


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """Bootstrap address of the broker the tests use."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with embedded.tansu() as broker:
        yield broker.url


@pytest.fixture(scope="session")
def okta() -> Iterator[Emulator]:
    """The project's Okta emulator, as a process, with a random admin token."""
    token = okta_token()
    with embedded.emulator("okta", "--admin-token", token) as process:
        yield Emulator(process.url, token)


@pytest.fixture(scope="session")
def github() -> Iterator[Emulator]:
    """The project's GitHub emulator, as a process."""
    with embedded.emulator("github") as process:
        yield Emulator(process.url)


@pytest.fixture(scope="session")
def slack() -> Iterator[Emulator]:
    """The project's Slack emulator, as a process; the Web API lives under `/api`."""
    with embedded.emulator("slack") as process:
        yield Emulator(process.url)


@pytest.fixture(scope="session")
def gcp() -> Iterator[Emulator]:
    """The project's GCP IAM emulator, as a process, with a random access token (`admin_token`) seeded."""
    token = "ya29." + secrets.token_urlsafe(32)
    with embedded.emulator("gcp") as process:
        emulator = Emulator(process.url, token)
        emulator.seed({"access_tokens": [token]})
        yield emulator


@pytest.fixture
def okta_clean(okta: Emulator) -> Iterator[Emulator]:
    """The Okta emulator with faults, latency and counters cleared before and after the test."""
    okta.reset()
    yield okta
    okta.reset()


@pytest.fixture
def settings(bootstrap: str, okta: Emulator) -> Settings:
    """Settings for one test: its own topics and group, the Okta emulator, fast group joins."""
    return fresh_settings(bootstrap, okta.url, okta.admin_token)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    """An orchestrator running in this process against the broker, plus publish/collect helpers."""
    async with Harness(settings) as running:
        yield running


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """moto_server as a process (AWS managed policies loaded), yielding its endpoint URL."""
    with embedded.moto() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server for the session (or ORCHESTRATOR_TEST_DATABASE_URL)."""
    from tests import postgres

    with postgres.server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Any) -> StoreSettings:
    """Settings of an empty run store, once per backend: the same test runs against both."""
    if request.param == "sqlite":
        return StoreSettings(data_dir=tmp_path / "data")
    from tests import postgres

    return StoreSettings(database_url=postgres.fresh_database(request.getfixturevalue("postgres_server")))


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    """An on-call webhook endpoint for the module, keeping every page."""
    async with receiving() as hook:
        yield hook


@pytest.fixture(scope="module")
def aws_credentials() -> Iterator[None]:
    """Fake credentials for the standard AWS chain for the module, generated now."""
    with fake_aws_credentials():
        yield


@pytest.fixture
async def store(store_settings: StoreSettings) -> AsyncIterator[RunStore]:
    """An empty run store of each backend, opened and started as `orchestrator run` opens it."""
    opened = RunStore.open(store_settings, owner="me")
    await opened.start()
    yield opened
    await opened.close()
