"""`orchestrator dlq` mistakes: one line on stderr and the documented exit code, never a traceback."""

from __future__ import annotations

import secrets

import pytest

from orchestrator.embedded import free_port
from tests.support import run_cli


@pytest.fixture
def nowhere() -> dict[str, str]:
    """Settings pointing at a port where no broker listens."""
    return {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}


@pytest.mark.parametrize("args, code, message", [
    (("dlq", "show", "not-a-name"), 2, "is not a dead letter name: expected PARTITION:OFFSET"),
    (("dlq", "decrypt", "0:1"), 2, "set ORCHESTRATOR_ENCRYPTION_KEY or ORCHESTRATOR_ENCRYPTION_KEY_FILE"),
    (("dlq", "list"), 1, "cannot reach Kafka"),
])
def test_dlq_mistakes_are_one_line(nowhere: dict[str, str], args: tuple[str, ...], code: int, message: str) -> None:
    """A bad name, a missing key or no broker: one line naming the fix."""
    result = run_cli(*args, env=nowhere)
    assert result.returncode == code and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_malformed_key_is_refused_without_showing_it(nowhere: dict[str, str]) -> None:
    """A key of the wrong size: exit 1, the variable named, its value not shown."""
    bad = secrets.token_hex(20)
    result = run_cli("dlq", "decrypt", "0:1", env={**nowhere, "ORCHESTRATOR_ENCRYPTION_KEY": bad})
    assert result.returncode == 1 and "ORCHESTRATOR_ENCRYPTION_KEY must hold a 32-byte key" in result.stderr
    assert bad not in result.stderr and result.stderr.count("\n") == 1
