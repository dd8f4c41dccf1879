"""`orchestrator dev` is a place to work: fixed ports (or free ones), a banner with lines to paste and commands to
try, sample data in every emulator (`--show-data`), the API tokens re-read on SIGHUP; and shell completion."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from orchestrator import dev as devmode
from orchestrator.cli import app
from orchestrator.embedded import ChildProcess, free_port
from orchestrator.settings import DEV_API_PORT, DEV_KAFKA_PORT
from tests.support import orchestrator_command, run_cli


@dataclass(frozen=True)
class Dev:
    """A running `orchestrator dev --show-data` and what it was asked for."""

    process: subprocess.Popen[bytes]
    log: Path
    taken_port: int
    api_port: int

    def text(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout_s: float = 90) -> None:
        """Until `needle` is in its output (it must not exit meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.1)


@contextmanager
def _dev(where: Path) -> Iterator[Dev]:
    """`orchestrator dev --show-data` with its broker port taken by another listener and a free API port."""
    log = where / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "KAFKA_", "OKTA_CLIENT_",
                                                                    "AWS_"))}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken, api_port = squatter.getsockname()[1], free_port()
        with log.open("wb") as sink:
            process = subprocess.Popen([*orchestrator_command(), "dev", "--show-data", "--kafka-port", str(taken),
                                        "--api-port", str(api_port)], cwd=where, env=env, stdout=sink,
                                       stderr=sink, start_new_session=True)
        running = Dev(process, log, taken, api_port)
        try:
            running.wait_for("consumer.assigned")
            yield running
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _exports(text: str) -> dict[str, str]:
    return dict(re.findall(r"^  export (\w+)=(\S+)$", text, re.MULTILINE))


def _check_banner(dev: Dev) -> None:
    """The banner exports the broker, run store, API URL and an API token, and names the next commands."""
    exports = _exports(dev.text())
    assert set(exports) == {"KAFKA_BOOTSTRAP_SERVERS", "ORCHESTRATOR_DATA_DIR", "ORCHESTRATOR_API_URL",
                            "ORCHESTRATOR_API_TOKEN"}
    assert exports["ORCHESTRATOR_DATA_DIR"] == str(dev.log.parent / ".orchestrator")
    assert "orchestrator trigger --kind okta.user" in dev.text() and "orchestrator exposures list" in dev.text()


def _check_ports(dev: Dev) -> None:
    """The broker's port was taken: it listens on another, and says so; the API listens on the port asked for,
    with the token the banner printed."""
    exports = _exports(dev.text())
    moved_to = int(exports["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert moved_to != dev.taken_port and f"port {dev.taken_port} is taken: the broker on {moved_to}" in dev.text()
    assert exports["ORCHESTRATOR_API_URL"] == f"http://127.0.0.1:{dev.api_port}"
    answer = httpx.get(f"{exports['ORCHESTRATOR_API_URL']}/v1/exposures", timeout=10,
                       headers={"Authorization": f"Bearer {exports['ORCHESTRATOR_API_TOKEN']}"})
    assert answer.status_code == 200, answer.text


def _check_sample_data(dev: Dev) -> None:
    """--show-data lists Okta users, sessions and an API token, IAM users' keys, a GCP service account's keys,
    GitHub and Slack tokens (fresh values with the right prefixes), and each emulator really holds them."""
    text = dev.text()
    for provider in ("okta", "aws", "github", "slack", "gcp"):
        assert f"\n  {provider}:\n" in text, provider
    assert re.search(r"SSWS API token of \S+: 00\w", text) and re.search(r": ghp_[A-Za-z0-9]{36}\n", text)
    assert re.search(r": xoxb-\d+-\d+-\w+\n", text) and re.search(r": xoxp-\d+-\d+-\w+\n", text)
    urls = dict(re.findall(r"started: (\w+)(?: IAM)? emulator at (\S+)", text))
    github = httpx.get(f"{urls['GitHub']}/_emulator/state", timeout=10).json()
    slack = httpx.get(f"{urls['Slack']}/_emulator/state", timeout=10).json()
    gcp = httpx.get(f"{urls['GCP']}/_emulator/state", timeout=10).json()
    assert len(github["tokens"]) == 2 and len(slack["tokens"]) == 2 and len(gcp["keys"]) == 2
    okta = httpx.get(f"{urls['Okta']}/_emulator/state", timeout=10).json()
    assert {u["login"] for u in okta["users"]} == {devmode.dev_data.DEMO_ADMIN, devmode.dev_data.DEMO_CUSTOMER}
    key_ids = re.findall(r"access key \(id (AKIA\w+), owner ([\w.-]+)\)", text)
    assert [owner for _, owner in key_ids] == list(devmode.dev_data.AWS_USERS)
    moto = re.search(r"started: AWS \(moto\) at (\S+)", text)
    assert moto is not None
    listed = httpx.post(moto.group(1), data={"Action": "ListAccessKeys", "UserName": key_ids[0][1],
                                             "Version": "2010-05-08"},
                        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEV/20261202/us-east-1/iam/"
                                                  "aws4_request, SignedHeaders=host, Signature=0"}, timeout=10)
    assert key_ids[0][0] in listed.text


def _check_sighup_then_ctrl_c(dev: Dev) -> None:
    """SIGHUP to `orchestrator dev` re-reads its API tokens file; then Ctrl-C at the terminal (SIGINT to the
    whole foreground group): the embedded broker and emulators are not killed under the orchestrator (they run
    in sessions of their own); it drains, stops them, and exits 0 with no traceback."""
    os.kill(dev.process.pid, signal.SIGHUP)
    dev.wait_for("api_tokens.reloaded", timeout_s=15)
    os.killpg(dev.process.pid, signal.SIGINT)
    assert dev.process.wait(timeout=40) == 0, dev.text()
    assert "Traceback" not in dev.text()


def test_dev_is_a_place_to_work(tmp_path: Path) -> None:
    """One `orchestrator dev --show-data` (started once: it is the slow part) whose broker port is taken and
    whose API port is free: each check above, in order, ending with SIGHUP and Ctrl-C."""
    with _dev(tmp_path) as dev:
        _check_banner(dev)
        _check_ports(dev)
        _check_sample_data(dev)
        _check_sighup_then_ctrl_c(dev)


def test_a_free_preferred_port_is_kept_and_a_taken_one_replaced() -> None:
    """`pick_port` keeps the port asked for when free; else picks another and notes it; the defaults are
    Kafka's 9092 and the API's 8080."""
    defaults = {p.name: p.default for p in typer.main.get_command(app).commands["dev"].params}
    assert (defaults["kafka_port"], defaults["api_port"]) == (9092, 8080)
    assert (DEV_KAFKA_PORT, DEV_API_PORT) == (9092, 8080)
    environment = devmode.DevEnvironment(env={})
    wanted = free_port()
    assert devmode.pick_port(wanted, "x", environment) == wanted and environment.moved == []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        assert devmode.pick_port(taken, "the broker", environment) != taken
    assert environment.moved[0].startswith(f"port {taken} is taken: the broker on ")


@pytest.mark.parametrize(("shell", "installed"), [("bash", ".bash_completions/orchestrator.sh"),
                                                  ("zsh", ".zfunc/_orchestrator"),
                                                  ("fish", ".config/fish/completions/orchestrator.fish")])
def test_install_completion_writes_a_script_for_each_shell(shell: str, installed: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`orchestrator --install-completion SHELL` installs a completion script calling back `orchestrator`."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # typer's way to name the shell
    result = CliRunner().invoke(app, ["--install-completion", shell], prog_name="orchestrator")
    assert result.exit_code == 0, result.output
    assert "_ORCHESTRATOR_COMPLETE" in (tmp_path / installed).read_text()


def test_completion_completes_subcommands() -> None:
    """The installed scripts' call-back completes commands (bash) and sub-commands (zsh, fish)."""
    bash = run_cli(env={"_ORCHESTRATOR_COMPLETE": "complete_bash", "COMP_WORDS": "orchestrator tri",
                        "COMP_CWORD": "1"})
    assert bash.returncode == 0 and bash.stdout.split() == ["trigger"]
    zsh = CliRunner().invoke(app, [], prog_name="orchestrator", env={"_ORCHESTRATOR_COMPLETE": "complete_zsh",
                                                                     "_TYPER_COMPLETE_ARGS": "orchestrator dlq "})
    assert '"list"' in zsh.output and '"show"' in zsh.output
    fish = CliRunner().invoke(app, [], prog_name="orchestrator",
                              env={"_ORCHESTRATOR_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                                   "_TYPER_COMPLETE_ARGS": "orchestrator exposures "})
    assert fish.output.startswith("list\t")


def test_one_emulator_failing_to_start_stops_the_others() -> None:
    """`embedded.together`: when one child process cannot start, those that did are stopped and its error raised."""
    from orchestrator.embedded import emulator, together
    from orchestrator.errors import ConfigurationError

    seen: list[subprocess.Popen[bytes]] = []

    @contextmanager
    def watched() -> Iterator[ChildProcess]:
        with emulator("slack") as child:
            seen.append(child.process)
            yield child

    with pytest.raises(ConfigurationError, match="no-such emulator did not start"), \
            together({"slack": watched, "broken": lambda: emulator("no-such")}):
        pytest.fail("entered although one emulator did not start")
    assert len(seen) == 1 and seen[0].poll() is not None
