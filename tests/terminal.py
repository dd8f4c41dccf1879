"""Driving `orchestrator` in a real pseudo-terminal (pexpect): what a person at a 100-column terminal sees."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator

import pexpect
import pytest

from tests.support import orchestrator_command

COLUMNS = 100
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GREEN, YELLOW, RED = "\x1b[32m", "\x1b[33m", "\x1b[1;31m"


def terminal_env(bootstrap: str, audit_topic: str, **extra: str) -> dict[str, str]:
    """The environment of a colour terminal of 100 columns reaching this broker and audit topic."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "KAFKA_", "OKTA_CLIENT_"))}
    base.pop("NO_COLOR", None)
    return {**base, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ORCHESTRATOR_AUDIT_TOPIC": audit_topic,
            "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": "40", **extra}


@pytest.fixture
def terminal() -> Iterator[list[pexpect.spawn]]:
    """Spawned terminals, closed (the process killed) after the test whatever happened."""
    spawned: list[pexpect.spawn] = []
    yield spawned
    for child in spawned:
        child.close(force=True)


def spawn(spawned: list[pexpect.spawn], env: dict[str, str], *args: str) -> pexpect.spawn:
    """`orchestrator ARGS` in a new 40-line, 100-column pseudo-terminal; what it draws is kept for `received`."""
    command, *rest = orchestrator_command()
    child = pexpect.spawn(command, [*rest, *args], env=env, dimensions=(40, COLUMNS), encoding="utf-8",
                          timeout=20, codec_errors="replace")
    child.logfile_read = io.StringIO()
    spawned.append(child)
    return child


def received(child: pexpect.spawn) -> str:
    """Everything the terminal received from the child so far, escape sequences included."""
    return str(child.logfile_read.getvalue())


def screen_lines(raw: str) -> list[str]:
    """What each finished line shows: the text after its last carriage return, without colour codes."""
    return [ANSI.sub("", line.split("\r")[-1]) for line in raw.replace("\r\n", "\n").split("\n")]
