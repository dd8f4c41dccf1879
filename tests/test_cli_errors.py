"""The `orchestrator` command fails like a tool for people: one line on stderr, no traceback, a non-zero exit."""

from __future__ import annotations

from orchestrator.embedded import free_port
from tests.support import run_cli


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("orchestrator:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def test_a_mistyped_command_is_a_usage_error() -> None:
    """An unknown command exits 2 with one line that suggests the right one."""
    result = run_cli("runn")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [_one_line(result.stderr)]
    assert "No such command 'runn'" in result.stderr and "orchestrator --help" in result.stderr


def test_an_unknown_option_is_a_usage_error() -> None:
    """An unknown option exits 2 with one line."""
    result = run_cli("run", "--turbo")
    assert result.returncode == 2 and "--turbo" in _one_line(result.stderr)


def test_run_without_kafka_bootstrap_servers_says_so() -> None:
    """`orchestrator run` with KAFKA_BOOTSTRAP_SERVERS unset exits 1 naming the variable."""
    result = run_cli("run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [_one_line(result.stderr)]
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in result.stderr


def test_run_against_an_unreachable_broker_says_so() -> None:
    """`orchestrator run` with nothing listening at the bootstrap address exits 1 with one clear line."""
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("run", env={"KAFKA_BOOTSTRAP_SERVERS": address, "ORCHESTRATOR_HTTP_LISTEN": "off"},
                     timeout_s=90)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert f"cannot reach Kafka at {address}" in line and "KAFKA_BOOTSTRAP_SERVERS" in line
    assert result.stderr.strip() == line, "nothing but that line (no library log lines either)"


def test_a_bad_setting_is_one_line() -> None:
    """A malformed number in the environment exits 1 naming the variable and its value."""
    result = run_cli("run", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "ORCHESTRATOR_MAX_IN_FLIGHT": "lots"})
    assert result.returncode == 1 and "ORCHESTRATOR_MAX_IN_FLIGHT='lots'" in _one_line(result.stderr)


def test_an_unknown_schema_is_a_usage_error() -> None:
    """`orchestrator schema` with an unpublished name exits 2."""
    result = run_cli("schema", "nonsense")
    assert result.returncode == 2 and "unknown schema 'nonsense'" in _one_line(result.stderr)


# Ctrl-C on `orchestrator dev` (exit 0, no traceback): tests/test_dev_mode.py, which shares one dev process.
