"""API tokens files are handled like SSH keys: created 0600 atomically, refused when others may read them, re-read
when they change (or on SIGHUP) without a restart, and a broken one is one line, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.auth import Role, TokenFile, load_tokens, new_token, token_entry, write_private
from orchestrator.errors import ConfigurationError
from orchestrator.webhook import UnmatchedPager
from tests.support import captured_logs, run_cli


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_tokens(path: Path, *tokens: str) -> None:
    write_private(path, json.dumps({"tokens": [token_entry(t, f"bot-{n}", [Role.RESPONDER])
                                               for n, t in enumerate(tokens)]}))


def test_write_private_creates_the_file_0600_even_under_a_lax_umask(tmp_path: Path) -> None:
    """A new file is 0600 from its creation (not chmod-ed afterwards), and no temporary file is left behind."""
    previous = os.umask(0)
    try:
        write_private(tmp_path / "tokens.json", "{}")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "tokens.json") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]


def test_write_private_replaces_a_world_readable_file_with_a_private_one(tmp_path: Path) -> None:
    """Rewriting an existing 0644 file leaves a 0600 file with the new content (a rename, not an edit)."""
    path = tmp_path / "tokens.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o602])
def test_a_file_others_may_read_or_write_is_refused_with_the_chmod_to_run(tmp_path: Path, mode: int) -> None:
    """Group- or world-accessible: `ConfigurationError` naming the mode and the exact `chmod 600 PATH`."""
    path = tmp_path / "my tokens.json"
    _write_tokens(path, new_token())
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as refused:
        load_tokens(path)
    assert f"mode {mode:04o}" in str(refused.value)
    assert str(refused.value).endswith(f"chmod 600 '{path}'")


def test_a_changed_file_is_read_again_and_a_broken_change_keeps_the_old_tokens(tmp_path: Path) -> None:
    """Tokens added to the file work at the next request; a change that cannot be loaded (not JSON, or
    group-readable) is logged and the tokens in force stay in force."""
    path = tmp_path / "tokens.json"
    first, second = new_token(), new_token()
    _write_tokens(path, first)
    tokens = TokenFile(path)
    assert tokens.authenticate(first) is not None and tokens.authenticate(second) is None
    _write_tokens(path, first, second)
    assert tokens.authenticate(second) is not None
    with captured_logs() as logs:
        write_private(path, "{not json")
        assert tokens.authenticate(second) is not None
        _write_tokens(path, first)
        path.chmod(0o644)
        assert tokens.authenticate(second) is not None
    assert logs.getvalue().count("api_tokens.reload_failed") == 2 and "chmod 600" in logs.getvalue()
    path.chmod(0o600)
    assert tokens.authenticate(second) is None and tokens.authenticate(first) is not None


async def test_sighup_reads_the_file_again(tmp_path: Path) -> None:
    """SIGHUP re-reads the file at once, as `orchestrator run` wires it (`Orchestrator.reload_tokens`)."""
    path = tmp_path / "tokens.json"
    token = new_token()
    _write_tokens(path, new_token())
    tokens = TokenFile(path)
    _write_tokens(path, token)
    reloaded = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_hangup() -> None:
        tokens.reload()
        reloaded.set()

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        async with asyncio.timeout(5):
            await reloaded.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
    assert tokens._table.authenticate(token) is not None  # read by the signal, not by a request's check


def test_api_token_create_file_is_private_and_a_broken_one_is_one_line(tmp_path: Path) -> None:
    """`api-token create --file bad.json` exits 1 with one line naming the file (no traceback, no token, the
    file untouched); `--file NEW` creates it 0600, holding the token's hash only."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"tokens": [')
    result = run_cli("api-token", "create", "--principal", "ops", "--role", "admin", "--file", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    assert f"{bad}: not JSON" in result.stderr and bad.read_text() == '{"tokens": ['
    path = tmp_path / "tokens.json"
    result = run_cli("api-token", "create", "--principal", "ops", "--role", "admin", "--file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    token = json.loads(result.stdout)["token"]
    assert _mode(path) == 0o600 and token not in path.read_text()
    assert load_tokens(path).authenticate(token) is not None


def test_unmatched_pages_once_per_kind_per_interval() -> None:
    """The first unmatched exposure of a kind pages; the same kind again within the interval does not; after
    it, it pages again; at most `max_kinds` kinds page per interval."""
    now = [0.0]
    pager = UnmatchedPager(3600, max_kinds=2, clock=lambda: now[0])
    assert pager.admit("acme.widget") and not pager.admit("acme.widget")
    assert pager.admit("acme.gadget") and not pager.admit("acme.third")
    now[0] = 3599.0
    assert not pager.admit("acme.widget")
    now[0] = 3600.0
    assert pager.admit("acme.widget") and pager.admit("acme.third")


def test_orchestrator_run_refuses_a_readable_tokens_file_in_one_line(tmp_path: Path) -> None:
    """`orchestrator run` with a group-readable tokens file stops before connecting: one line, the chmod to run."""
    path = tmp_path / "tokens.json"
    _write_tokens(path, new_token())
    path.chmod(0o640)
    result = run_cli("run", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "ORCHESTRATOR_API_TOKENS_FILE": str(path),
                                 "ORCHESTRATOR_HTTP_LISTEN": "127.0.0.1:0"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"orchestrator: ORCHESTRATOR_API_TOKENS_FILE {path} is accessible to "
                                                  f"group or others (mode 0640); like an SSH key it must be private: "
                                                  f"chmod 600 {path}"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file away")
def test_write_private_keeps_the_owner_of_the_file_it_replaces(tmp_path: Path) -> None:
    """Rewriting a tokens file owned by another uid (a container's) leaves it owned by that uid, still 0600."""
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    os.chown(path, 10001, 10001)
    write_private(path, '{"tokens": []}')
    assert (path.stat().st_uid, path.stat().st_gid, _mode(path)) == (10001, 10001, 0o600)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=12)
_ENTRY = st.fixed_dictionaries({"principal": _JSON | st.text(max_size=20), "roles": _JSON | st.lists(
    st.sampled_from(["detector", "responder", "admin", "root"]), max_size=3), "sha256": _JSON | st.text(
        "0123456789abcdefg", min_size=64, max_size=64)})


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_JSON | st.fixed_dictionaries({"tokens": st.lists(_ENTRY | _JSON, max_size=3)}) | st.binary(
    max_size=200))
def test_any_tokens_file_loads_or_is_one_configuration_error(tmp_path: Path, document: object) -> None:
    """Whatever a tokens file holds, loading it gives a token table or a `ConfigurationError` naming the file,
    never another exception, and the message never quotes a hash from the file."""
    path = tmp_path / "tokens.json"
    write_private(path, document.decode(errors="replace") if isinstance(document, bytes) else json.dumps(document))
    try:
        table = load_tokens(path)
    except ConfigurationError as exc:
        assert str(exc).startswith(f"ORCHESTRATOR_API_TOKENS_FILE {path}")
        hashes = re.findall(r"[0-9a-g]{64}", path.read_text())
        assert not any(h in str(exc) for h in hashes)
    else:
        assert table.authenticate(new_token()) is None
