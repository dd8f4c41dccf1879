"""A provider that keeps failing is backed off as a whole: the circuit breaker, pure and inside the governor."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest

from orchestrator.actions import StepContext
from orchestrator.circuit import Circuit, CircuitState
from orchestrator.embedded import free_port
from orchestrator.errors import PermanentError, TransientError
from orchestrator.governor import Governor, deadline
from orchestrator.metrics import Metrics
from orchestrator.providers.slack import SlackProvider
from orchestrator.settings import Settings, SlackSettings
from tests.conftest import Emulator

T0 = 1_800_000_000.0
COOLDOWN_S = 0.3


def test_consecutive_failures_open_the_circuit() -> None:
    """Three failures in a row open a three-failure circuit; the cool-down runs from the third."""
    circuit = Circuit(failures_to_open=3, cooldown_s=30)
    assert not circuit.failed(T0)
    assert not circuit.failed(T0 + 1)
    assert circuit.failed(T0 + 2)
    assert circuit.state is CircuitState.OPEN
    assert circuit.ready_at(T0 + 3) == T0 + 32


def test_a_success_resets_the_count() -> None:
    """Failures separated by a success never add up to an open circuit."""
    circuit = Circuit(failures_to_open=3)
    for _ in range(10):
        circuit.failed(T0)
        circuit.failed(T0)
        circuit.succeeded()
    assert circuit.state is CircuitState.CLOSED


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes() -> None:
    """Half-open: the first start is the probe, nothing else starts until it answers; an answer closes."""
    circuit = Circuit(failures_to_open=1, cooldown_s=30)
    circuit.failed(T0)
    assert circuit.ready_at(T0 + 29) == T0 + 30
    assert circuit.start(T0 + 30)
    assert circuit.state is CircuitState.HALF_OPEN
    assert circuit.ready_at(T0 + 31) == float("inf")
    assert circuit.succeeded()
    assert circuit.state is CircuitState.CLOSED
    assert circuit.ready_at(T0 + 31) == T0 + 31
    assert not circuit.start(T0 + 31)


def test_a_failed_probe_opens_the_circuit_again() -> None:
    """The probe's failure starts a new cool-down at once, whatever the failure count."""
    circuit = Circuit(failures_to_open=5, cooldown_s=30)
    for _ in range(5):
        circuit.failed(T0)
    circuit.start(T0 + 30)
    assert circuit.failed(T0 + 31)
    assert circuit.state is CircuitState.OPEN
    assert circuit.ready_at(T0 + 31) == T0 + 61


def test_late_failures_do_not_extend_the_cool_down() -> None:
    """Requests started before the circuit opened and failing after it do not push the cool-down back."""
    circuit = Circuit(failures_to_open=1, cooldown_s=30)
    circuit.failed(T0)
    assert not circuit.failed(T0 + 10)
    assert circuit.ready_at(T0 + 10) == T0 + 30


def test_an_abandoned_probe_lets_another_through() -> None:
    """A probe cancelled without a verdict does not keep the circuit half-open for ever."""
    circuit = Circuit(failures_to_open=1, cooldown_s=30)
    circuit.failed(T0)
    circuit.start(T0 + 30)
    circuit.abandoned()
    assert circuit.ready_at(T0 + 31) == T0 + 31


async def test_an_open_circuit_holds_new_requests_without_failing_them() -> None:
    """Three 503s open the circuit: the next request waits the cool-down, then goes through as the probe."""
    governor = Governor("test", concurrency=10, circuit_failures=3, circuit_cooldown_s=COOLDOWN_S)
    for _ in range(3):
        async with governor.slot("b"):
            governor.observe("b", {}, status=503)
    assert governor.snapshot().circuit is CircuitState.OPEN
    started = time.monotonic()
    async with governor.slot("b"):
        assert governor.snapshot().circuit is CircuitState.HALF_OPEN
        governor.observe("b", {}, status=200)
    assert time.monotonic() - started >= COOLDOWN_S * 0.9
    assert governor.snapshot().circuit is CircuitState.CLOSED


async def test_half_open_lets_exactly_one_request_through() -> None:
    """While the probe is out, other requests keep waiting; its success lets them all start."""
    governor = Governor("test", concurrency=10, circuit_failures=1, circuit_cooldown_s=COOLDOWN_S)
    async with governor.slot("b"):
        governor.observe("b", {}, status=500)
    probe_may_answer = asyncio.Event()
    entered: list[int] = []

    async def request(n: int) -> None:
        async with governor.slot("b"):
            entered.append(n)
            if len(entered) == 1:
                await probe_may_answer.wait()
            governor.observe("b", {}, status=200)

    tasks = [asyncio.create_task(request(n)) for n in range(5)]
    await asyncio.sleep(COOLDOWN_S + 0.2)
    assert len(entered) == 1
    probe_may_answer.set()
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks)
    assert sorted(entered) == [0, 1, 2, 3, 4]


async def test_transport_failures_count_and_client_errors_do_not() -> None:
    """Refused connections and timeouts (no status) count as failures; a 4xx answer is the provider alive."""
    governor = Governor("test", concurrency=10, circuit_failures=2, circuit_cooldown_s=30)
    with pytest.raises(TransientError):
        async with governor.slot("b"):
            raise TransientError("test unreachable: ConnectError")
    with pytest.raises(PermanentError):
        async with governor.slot("b"):
            governor.observe("b", {}, status=403)
            raise PermanentError("test HTTP 403", status=403)
    with pytest.raises(TransientError):
        async with governor.slot("b"):
            raise TransientError("test unreachable: ReadTimeout")
    assert governor.snapshot().circuit is CircuitState.CLOSED
    with pytest.raises(TransientError):
        async with governor.slot("b"):
            raise TransientError("test unreachable: ReadTimeout")
    assert governor.snapshot().circuit is CircuitState.OPEN


async def test_a_request_cut_by_the_step_deadline_counts_as_a_failure() -> None:
    """A provider that hangs until the step's deadline fires is failing, as a timeout would say."""
    governor = Governor("test", concurrency=10, circuit_failures=1, circuit_cooldown_s=30)
    with pytest.raises(TimeoutError):
        async with deadline(0.05), governor.slot("b"):
            await asyncio.sleep(1)
    assert governor.snapshot().circuit is CircuitState.OPEN


async def test_time_held_by_an_open_circuit_does_not_count_against_the_step_deadline() -> None:
    """A 0.1 s step deadline does not fire while the request waits out a 0.3 s cool-down."""
    governor = Governor("test", concurrency=10, circuit_failures=1, circuit_cooldown_s=COOLDOWN_S)
    async with governor.slot("b"):
        governor.observe("b", {}, status=502)
    async with deadline(0.1), governor.slot("b"):
        governor.observe("b", {}, status=200)
    assert governor.snapshot().circuit is CircuitState.CLOSED


async def test_the_circuit_is_on_metrics() -> None:
    """`orchestrator_provider_circuit_open{provider}` is 1 while open, 0 once closed."""
    governor = Governor("okta", concurrency=10, circuit_failures=1, circuit_cooldown_s=COOLDOWN_S)
    metrics = Metrics()
    metrics.watch_governors([governor])
    async with governor.slot("b"):
        governor.observe("b", {}, status=503)
    assert 'orchestrator_provider_circuit_open{provider="okta"} 1.0' in (await metrics.render()).decode()
    async with governor.slot("b"):
        governor.observe("b", {}, status=204)
    assert 'orchestrator_provider_circuit_open{provider="okta"} 0.0' in (await metrics.render()).decode()


def test_thresholds_come_from_the_environment() -> None:
    """ORCHESTRATOR_CIRCUIT_FAILURES and ORCHESTRATOR_CIRCUIT_COOLDOWN_S; defaults 5 and 30 s."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "localhost:9092"}
    assert (Settings.from_env(env).circuit_failures, Settings.from_env(env).circuit_cooldown_s) == (20, 10.0)
    tuned = Settings.from_env({**env, "ORCHESTRATOR_CIRCUIT_FAILURES": "8", "ORCHESTRATOR_CIRCUIT_COOLDOWN_S": "2.5"})
    assert (tuned.circuit_failures, tuned.circuit_cooldown_s) == (8, 2.5)


def _slack_token() -> str:
    return f"xoxb-{secrets.randbelow(10**12)}-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}"


@pytest.fixture
def slack_clean(slack: Emulator) -> Iterator[Emulator]:
    """The Slack emulator process with generous limits, faults and counters cleared before and after."""
    slack.control("PUT", "rate-limits", {"auth.revoke": {"limit": 10_000, "window_s": 60}})
    slack.reset()
    yield slack
    slack.reset()


@pytest.mark.integration
async def test_a_provider_serving_503s_is_backed_off_as_a_whole(slack_clean: Emulator) -> None:
    """Against the Slack emulator: three 503s open the circuit; no request reaches Slack during the cool-down;
    the next call waits it out and, answered, closes the circuit."""
    token = _slack_token()
    slack_clean.seed({"tokens": [{"token": token, "user": "U1", "team": "T1"}]})
    slack_clean.control("POST", "faults", {"method": "POST", "path": "^/api/auth.revoke$", "status": 503, "count": 3})
    governor = Governor("slack", concurrency=4, circuit_failures=3, circuit_cooldown_s=1.0)
    async with SlackProvider(SlackSettings(api_url=f"{slack_clean.url}/api"), governor) as provider:
        for _ in range(3):
            with pytest.raises(TransientError):
                await provider.perform("slack.revoke_token", {"token": token}, StepContext("direct"))
        assert governor.snapshot().circuit is CircuitState.OPEN
        started = time.monotonic()
        waiting = asyncio.create_task(provider.perform("slack.revoke_token", {"token": token}, StepContext("direct")))
        await asyncio.sleep(0.5)
        assert not waiting.done() and slack_clean.control("GET", "stats")["requests"] == 3
        await waiting
    assert time.monotonic() - started >= 0.9
    assert governor.snapshot().circuit is CircuitState.CLOSED


@pytest.mark.integration
async def test_refused_connections_open_the_circuit() -> None:
    """Nothing listening where the provider should be: transport errors count like 5xx."""
    governor = Governor("slack", concurrency=4, circuit_failures=2, circuit_cooldown_s=30)
    async with SlackProvider(SlackSettings(api_url=f"http://127.0.0.1:{free_port()}/api"), governor) as provider:
        for _ in range(2):
            with pytest.raises(TransientError):
                await provider.perform("slack.revoke_token", {"token": _slack_token()}, StepContext("direct"))
    assert governor.snapshot().circuit is CircuitState.OPEN
