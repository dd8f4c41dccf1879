"""Playbook loading and validation: the shipped ones load, bad ones are refused naming file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import PlaybookError
from orchestrator.playbooks import FieldRef, OnFailure, load_playbooks, parse_playbook
from orchestrator.providers import catalog
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR
from tests.support import run_cli

GOOD = """\
name: good
match:
  kinds: [okta.session]
steps:
  - name: clear
    action: okta.clear_user_sessions
    params:
      user: {field: credential.owner}
      oauth_tokens: true
"""


def _error(text: str) -> PlaybookError:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, "bad.yaml", catalog())
    return caught.value


def test_the_shipped_playbooks_load() -> None:
    """Every playbook in playbooks/ validates, the three Okta ones among them."""
    loaded = {p.name: p for p in load_playbooks(DEFAULT_PLAYBOOKS_DIR, catalog())}
    assert {"okta-session", "okta-api-token", "okta-user"} <= loaded.keys()
    assert loaded["okta-session"].match.kinds == ["okta.session"]
    assert loaded["okta-api-token"].steps[0].params["token"] == FieldRef(field="credential.secret")
    user = loaded["okta-user"]
    assert [s.name for s in user.steps] == ["suspend", "clear-sessions", "reset-factors"]
    assert user.steps[1].on_failure is OnFailure.CONTINUE and user.steps[0].when == {"severity": ["critical"]}


def test_a_good_playbook_parses_with_literals_and_field_references() -> None:
    """Parameters are either event field references or literals; defaults fill retry and on_failure."""
    playbook = parse_playbook(GOOD, "good.yaml", catalog())
    assert playbook.steps[0].params == {"user": FieldRef(field="credential.owner"), "oauth_tokens": True}
    assert playbook.retry.max_attempts == 5 and playbook.path == "good.yaml"


@pytest.mark.parametrize(("text", "line", "reason"), [
    (GOOD.replace("okta.clear_user_sessions", "okta.obliterate"), 5, "unknown action 'okta.obliterate'"),
    (GOOD.replace("oauth_tokens: true", "oauth_tokens: true\n      colour: blue"), 10, "no parameter 'colour'"),
    (GOOD.replace("credential.owner", "credential.nickname"), 8, "unknown event field 'credential.nickname'"),
    (GOOD.replace("credential.owner", "credential.secret"), 8, "cannot take credential.secret"),
    (GOOD.replace("kinds: [okta.session]", "kinds: [okta.session"), 4, "not valid YAML"),
    (GOOD.replace("  kinds: [okta.session]", "  kinds: []"), 3, "match.kinds"),
    (GOOD + "surprise: 1\n", 10, "surprise"),
    (GOOD.replace("name: good", "name: Not Valid!"), 1, "name"),
    (GOOD + "  - name: clear\n    action: okta.end_session\n    params: {session_id: {field: credential.id}}\n",
     10, "step name 'clear' is used twice"),
    ("- just\n- a list\n", 1, "expected a mapping"),
])
def test_a_bad_playbook_names_the_line_and_reason(text: str, line: int, reason: str) -> None:
    """Unknown action, parameter or field, a secret into a plain parameter, bad YAML...: file, line and why."""
    error = _error(text)
    assert error.path == "bad.yaml" and error.line == line and reason in error.reason
    assert str(error).startswith(f"bad.yaml:{line}: ")


def test_ambiguous_playbooks_are_refused(tmp_path: Path) -> None:
    """Two playbooks that match the same exposures equally well stop loading, naming the second file."""
    (tmp_path / "a.yaml").write_text(GOOD.replace("name: good", "name: first"))
    (tmp_path / "b.yaml").write_text(GOOD.replace("name: good", "name: second"))
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path, catalog())
    assert caught.value.path == str(tmp_path / "b.yaml") and "a.yaml" in caught.value.reason


def test_a_narrower_match_is_not_ambiguous(tmp_path: Path) -> None:
    """A playbook narrowed by severity can sit beside a general one for the same kind."""
    (tmp_path / "a.yaml").write_text(GOOD.replace("name: good", "name: general"))
    (tmp_path / "b.yaml").write_text(GOOD.replace("name: good", "name: critical-only").replace(
        "  kinds: [okta.session]", "  kinds: [okta.session]\n  severities: [critical]"))
    assert {p.name for p in load_playbooks(tmp_path, catalog())} == {"general", "critical-only"}


def test_duplicate_names_and_empty_directories_are_refused(tmp_path: Path) -> None:
    """Two files with the same playbook name, or no playbooks at all, stop loading."""
    with pytest.raises(PlaybookError, match="no playbooks"):
        load_playbooks(tmp_path, catalog())
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yml").write_text(GOOD.replace("okta.session", "okta.user"))
    with pytest.raises(PlaybookError, match="also used by"):
        load_playbooks(tmp_path, catalog())


def test_playbooks_validate_exits_0_on_the_shipped_playbooks() -> None:
    """`orchestrator playbooks validate` accepts the shipped directory and lists each playbook."""
    result = run_cli("playbooks", "validate")
    assert result.returncode == 0, result.stderr
    assert "okta-session" in result.stdout and "playbooks valid" in result.stdout


def test_playbooks_validate_exits_1_naming_file_and_line(tmp_path: Path) -> None:
    """A bad playbook makes `validate` exit 1 with one line on stderr naming file and line, no traceback."""
    (tmp_path / "bad.yaml").write_text(GOOD.replace("okta.clear_user_sessions", "okta.obliterate"))
    result = run_cli("playbooks", "validate", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"orchestrator: {tmp_path / 'bad.yaml'}:5: step 'clear': unknown action 'okta.obliterate'; known: "
        + ", ".join(sorted(catalog()))]
    env_result = run_cli("playbooks", "validate", env={"ORCHESTRATOR_PLAYBOOKS_DIR": str(tmp_path)})
    assert env_result.returncode == 1 and "bad.yaml:5" in env_result.stderr
