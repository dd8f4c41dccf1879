"""Typed playbooks: wrong types, unknown enum values, impossible conditions, duplicate keys and unsatisfiable
parameters are refused naming file, line and fix, one line per problem; `orchestrator actions list|show`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import cli
from orchestrator.errors import PlaybookError, PlaybookErrors
from orchestrator.playbooks import load_playbooks, parse_playbook
from orchestrator.providers import catalog

SESSION = """\
name: typed
match:
  kinds: [okta.session]
steps:
  - name: clear
    action: okta.clear_user_sessions
    params:
      user: {field: credential.owner}
      oauth_tokens: true
"""
GITHUB = """\
name: typed-github
match:
  kinds: [github.token]
steps:
  - name: revoke
    action: github.revoke_token
    params:
      token: {field: credential.secret}
      via: auto
"""

_MORE_STEPS = """\
steps:
  - name: end
    action: okta.end_session
    params: {session_id: {field: credential.id}}
"""


def _refused(text: str) -> PlaybookError:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, "bad.yaml", catalog())
    return caught.value


@pytest.mark.parametrize(("text", "line", "reason", "fix"), [
    (SESSION.replace("oauth_tokens: true", "oauth_tokens: ture"), 9, "must be true or false", "`oauth_tokens: true`"),
    (GITHUB.replace("via: auto", "via: bogus"), 9, "must be one of auto, credentials-revoke, oauth-app",
     "`via: auto`"),
    (SESSION + "    when: {severity: [urgent]}\n", 10, "'urgent' is impossible", "use values from that list"),
    (SESSION + _MORE_STEPS, 10, "key 'steps' appears twice", "merge them"),
    (SESSION.replace("      user: {field: credential.owner}\n", ""), 7, "needs one of session_id, user",
     "`session_id: {field: credential.id}`"),
    (GITHUB.replace("via: auto", "via: {field: credential.id}"), 9, "must be written in the playbook",
     "`via: auto`"),
    (SESSION.replace("credential.owner", "severity"), 8, "never holds", "credential.owner"),
    (SESSION.replace("user: {field: credential.owner}", "user: current"), 8, "reserved word",
     "Okta user id (00u...), login or email"),
    (SESSION.replace("user: {field: credential.owner}", "user: 42"), 8, "must be text", "quote it"),
])
def test_a_mistyped_playbook_is_refused_with_line_and_fix(text: str, line: int, reason: str, fix: str) -> None:
    """Each kind of mistake in the issue names its line, the problem and what to write instead."""
    error = _refused(text)
    assert (error.path, error.line) == ("bad.yaml", line), str(error)
    assert reason in error.reason and fix in error.reason, error.reason


def test_a_condition_outside_the_playbooks_match_is_impossible() -> None:
    """`when: {severity: [low]}` in a playbook matching only high and critical exposures can never hold."""
    text = SESSION.replace("  kinds: [okta.session]", "  kinds: [okta.session]\n  severities: [high, critical]")
    error = _refused(text + "    when: {severity: [low]}\n")
    assert error.line == 11 and "'low' is impossible" in error.reason and "high, critical" in error.reason


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    """Several problems in several files: all reported, one `file:line: reason` line each, in line order."""
    (tmp_path / "a.yaml").write_text(SESSION.replace("oauth_tokens: true", "oauth_tokens: ture")
                                     + "    when: {severity: [urgent]}\n")
    (tmp_path / "b.yaml").write_text(GITHUB.replace("via: auto", "via: bogus"))
    with pytest.raises(PlaybookErrors) as caught:
        load_playbooks(tmp_path, catalog())
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{tmp_path / 'a.yaml'}:9", f"{tmp_path / 'a.yaml'}:10", f"{tmp_path / 'b.yaml'}:9"]


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["orchestrator", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_validate_prints_one_line_per_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`orchestrator playbooks validate DIR` exits 1 with each problem on its own line, no traceback."""
    (tmp_path / "a.yaml").write_text(SESSION.replace("oauth_tokens: true", "oauth_tokens: ture")
                                     + "    when: {severity: [urgent]}\n")
    code, _, err = _main(monkeypatch, capsys, "playbooks", "validate", str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert [line.split(": ", 2)[1] for line in err.strip().splitlines()] == [
        f"{tmp_path / 'a.yaml'}:9", f"{tmp_path / 'a.yaml'}:10"]


def test_actions_list_says_destructive_and_undo(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`orchestrator actions list` shows every action with whether it is destructive and can be undone."""
    code, out, _ = _main(monkeypatch, capsys, "actions", "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.strip().splitlines()}
    assert rows.keys() == catalog().keys()
    for name, spec in catalog().items():
        expected = ("not destructive" if not spec.destructive else
                    f"undo: {spec.undo}" if spec.undo else "cannot be undone")
        assert expected in rows[name]


def test_actions_show_prints_parameters_and_calls(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`orchestrator actions show ACTION`: each parameter's shape and source, the provider calls, undo."""
    code, out, _ = _main(monkeypatch, capsys, "actions", "show", "github.revoke_token")
    assert code == 0
    assert "via             auto | credentials-revoke | oauth-app (literal only, default auto)" in out
    assert "token" in out and "event field only" in out and "POST /credentials/revoke" in out
    assert "destructive: yes" in out and "undo:" in out


def test_actions_show_of_an_unknown_action_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped action name: exit 2 and one line saying what to run."""
    code, _, err = _main(monkeypatch, capsys, "actions", "show", "okta.obliterate")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "orchestrator actions list" in err


_LINES = st.lists(st.sampled_from(SESSION.splitlines() + GITHUB.splitlines() + [
    "steps:", "  - name: x", "    when: {severity: [urgent]}", "    params:", "      via: bogus", "? [a, b]",
    "  : c", "{a: 1}: 2", "&x a: *x", "oauth_tokens: ture", "  kinds: []", "- 1"]), max_size=14)


@settings(max_examples=80, deadline=None)
@given(lines=_LINES)
def test_any_document_is_a_playbook_or_a_playbook_error(lines: list[str]) -> None:
    """Shuffled and broken playbook lines: parsing returns a playbook or raises PlaybookError, nothing else."""
    try:
        parse_playbook("\n".join(lines) + "\n", "fuzz.yaml", catalog())
    except PlaybookError as exc:
        assert str(exc).startswith("fuzz.yaml")


async def test_start_up_refuses_a_mistyped_playbook(tmp_path: Path) -> None:
    """The orchestrator does not start on a playbook directory with a typing mistake, naming file and line."""
    from orchestrator.app import Orchestrator
    from orchestrator.settings import Settings

    (tmp_path / "a.yaml").write_text(GITHUB.replace("via: auto", "via: bogus"))
    with pytest.raises(PlaybookError, match=r"a\.yaml:9: step 'revoke': parameter 'via' must be one of"):
        async with Orchestrator(Settings(bootstrap_servers="127.0.0.1:9", playbooks_dir=tmp_path)):
            pass


def test_a_key_with_control_characters_is_shown_escaped() -> None:
    """An unknown key holding an escape sequence is named escaped in the error, never raw."""
    error = _refused(SESSION + '"\\e[31mred": 1\n')
    assert "\x1b" not in str(error) and "\\x1b[31mred" in str(error) and error.line == 10
