"""The chaos suite's short form (issue 8): the same scenarios as `make chaos`, at sizes CI can afford.

Each test runs one scenario of `bench/chaos.py` against its own Tansu broker, emulator processes and a real
`python -m orchestrator run` child process, and asserts every invariant the scenario checks: nothing lost, no
crash, lag back to 0, no stale commit, no canary anywhere, every audit record parses.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import chaos
from bench.chaos_poison import KINDS, generate
from orchestrator import embedded
from orchestrator.emulators.faultproxy import Chaos
from tests.conftest import Emulator

pytestmark = pytest.mark.integration


async def _scenario(name: str, tmp_path: Path, *options: str, wait_s: float = 30) -> chaos.Outcome:
    args = chaos.parse_args([name, "--seed", "20261202", "--log-dir", str(tmp_path), "--wait-s", str(wait_s),
                             *options])
    return await chaos.run_scenario(name, args)


def _verdict(outcome: chaos.Outcome) -> str:
    return json.dumps({"failures": outcome.failures, "details": outcome.details}, default=str, indent=1)


async def test_sigkilled_orchestrator_loses_no_exposure(tmp_path: Path) -> None:
    """150 exposures while the orchestrator is SIGKILLed 2 times and restarted: each has a terminal record."""
    outcome = await _scenario("kills", tmp_path, "--exposures", "150", "--kills", "2")
    assert outcome.kills == 2 and outcome.exposures == 150
    assert not outcome.failures, _verdict(outcome)


async def test_failing_providers_end_every_run_with_a_reason(tmp_path: Path) -> None:
    """503s, timeouts, 429 bursts and slow answers: every run completes or fails with its reason, in budget."""
    # A run may retry two steps five times each through timeouts: give it the time before calling it lost.
    outcome = await _scenario("faults", tmp_path, "--faults-exposures", "30", wait_s=90)
    assert outcome.faults > 0
    assert not outcome.failures, _verdict(outcome)


async def test_broker_outage_is_survived(tmp_path: Path) -> None:
    """The broker gone for 6 s and back empty: no crash, /readyz 503 meanwhile, later records all processed."""
    outcome = await _scenario("outage", tmp_path, "--outage-s", "6", "--outage-exposures", "20")
    assert not outcome.failures, _verdict(outcome)


async def test_poison_records_in_every_codec_are_rejected(tmp_path: Path) -> None:
    """300 hypothesis-drawn poison records, plain and compressed: each rejected with a reason, lag 0, RSS bounded."""
    outcome = await _scenario("poison", tmp_path, "--poison", "300")
    assert not outcome.failures, _verdict(outcome)


async def test_canary_secrets_are_found_nowhere(tmp_path: Path) -> None:
    """Canaries through every path: zero hits in audit, dead letters, logs, metrics, HTTP; every record parses."""
    outcome = await _scenario("canaries", tmp_path)
    assert not outcome.failures, _verdict(outcome)


def test_poison_generator_draws_every_kind() -> None:
    """The hypothesis-drawn poison covers every kind, caps 1 MB values, and is reproducible from its seed."""
    records = generate(300, seed_value=1, max_huge=2)
    assert {r.kind for r in records} == set(KINDS)
    assert sum(len(r.value or b"") > 1024 * 1024 for r in records) == 2
    assert generate(50, seed_value=9, max_huge=1) == generate(50, seed_value=9, max_huge=1)


def test_fault_proxy_injects_seeded_random_faults(slack: Emulator) -> None:
    """The fault proxy's chaos mode: seeded 503s, a burst of two 429s every tenth request, echoed credentials."""
    token = "xoxb-" + secrets.token_hex(12)
    with embedded.emulator("faultproxy", "--upstream", slack.url) as proxy:
        settings = {"error_rate": 0.5, "burst_every": 10, "burst_length": 2, "echo": True, "seed": 3}
        httpx.put(f"{proxy.url}/_emulator/chaos", json=settings, timeout=10).raise_for_status()
        statuses = [httpx.post(f"{proxy.url}/api/auth.revoke", headers={"Authorization": f"Bearer {token}"},
                               timeout=10) for _ in range(40)]
        injected = httpx.get(f"{proxy.url}/_emulator/chaos", timeout=10).json()["injected"]
    assert injected["429"] == 7 and 8 < injected["error"] < 28
    assert sum(r.status_code == 503 for r in statuses) == injected["error"]
    throttled = [r for r in statuses if r.status_code == 429]
    assert len(throttled) == 7 and all(r.headers["Retry-After"] == "1" for r in throttled)
    assert all(token in r.text for r in statuses if r.status_code == 503)
    assert all(r.json()["ok"] in (True, False) for r in statuses if r.status_code == 200)


@given(error=st.floats(0, 1), timeout=st.floats(0, 1), slow=st.floats(0, 1), every=st.integers(0, 20),
       length=st.integers(0, 5), seed_value=st.integers(0, 2**31))
def test_fault_proxy_draws_only_known_faults_and_counts_each(error: float, timeout: float, slow: float, every: int,
                                                             length: int, seed_value: int) -> None:
    """Whatever the settings, each request draws one known fault or none, and every drawn fault is counted."""
    chaos_mode = Chaos()
    chaos_mode.configure({"error_rate": error, "timeout_rate": timeout, "slow_rate": slow, "burst_every": every,
                          "burst_length": length, "seed": seed_value})
    drawn = [chaos_mode.draw() for _ in range(200)]
    assert set(drawn) <= {None, "429", "error", "timeout", "slow"}
    assert chaos_mode.injected == {k: drawn.count(k) for k in set(drawn) if k is not None}
    if every == 0 or length == 0:
        assert "429" not in drawn
    if error + timeout + slow == 0:
        assert set(drawn) <= {None, "429"}
