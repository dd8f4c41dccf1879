"""Outside text is escaped for every place it is shown: terminal, rich markup, Slack, HTML (examples and properties)."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from orchestrator import escaping
from orchestrator.webhook import summary

# Raw C0, DEL and C1 controls: none may ever reach a terminal from outside text.
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Text made of what attackers send: escape sequences, markup, Slack syntax, and anything else.
hostile = st.text(alphabet=st.sampled_from(list("\x1b\x07\x9b\r\n\t\x00\x7f[]/\\<>&!|@`*_:;.=ab ")) | st.characters(),
                  max_size=80)

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # writes the victim's clipboard
FAKE_LINE = "\r\x1b[2K12:00:00.000  exp-1  run.completed"  # erases the line and draws a fake one


@pytest.mark.parametrize(("raw", "shown"), [
    (OSC52, "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"),
    (FAKE_LINE, "\\x0d\\x1b[2K12:00:00.000  exp-1  run.completed"),
    ("a\nb\tc\x00", "a\\x0ab\\x09c\\x00"),
    ("\x9b31m", "\\x9b31m"),  # the one-byte C1 form of ESC [
    ("admin\u202egnp.exe", "admin\\u202egnp.exe"),  # a bidi override reorders what follows
    ("\ud800", "\\ud800"),  # a lone surrogate from JSON cannot even be written as UTF-8
    ("sam@example.com [ok] é", "sam@example.com [ok] é"),
])
def test_terminal_shows_control_characters_as_escapes(raw: str, shown: str) -> None:
    """Control and invisible formatting characters become `\\x1b`-style text; everything else is kept."""
    assert escaping.terminal(raw) == shown


@pytest.mark.parametrize("raw", ["[/]", "[bold red]x[/bold red]", "[link=https://evil.example]ok[/link]", "a\\",
                                 "\\[b]", "[@click=quit]x"])
def test_markup_is_printed_as_itself(raw: str) -> None:
    """Rich markup from outside prints literally and never raises MarkupError (`[/]` crashed `status`)."""
    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(escaping.markup(raw) + "[bold]tail[/bold]")
    assert console.export_text().rstrip("\n") == raw + "tail"


@settings(max_examples=100, deadline=None)
@given(hostile)
def test_terminal_never_lets_a_control_character_through(raw: str) -> None:
    """Property: no escaped text holds a raw C0/C1 control or a lone surrogate, and it always encodes as UTF-8."""
    shown = escaping.terminal(raw)
    assert not RAW_CONTROL.search(shown)
    shown.encode("utf-8")
    if not RAW_CONTROL.search(raw) and raw.isprintable():
        assert shown == raw


@settings(max_examples=100, deadline=None)
@given(hostile, st.sampled_from(["[bold]x[/bold]", "[red]x[/]", "[b]x"]))
def test_markup_escaping_round_trips_before_our_own_markup(raw: str, ours: str) -> None:
    """Property: rich reads the escaped value back as exactly the terminal-escaped input, and our own markup after
    it still applies: no tag from outside survives, none of ours is swallowed (by a trailing backslash, say)."""
    parsed = Text.from_markup(escaping.markup(raw) + ours)
    assert parsed.plain == escaping.terminal(raw) + "x"
    assert [span.start for span in parsed.spans] == [len(escaping.terminal(raw))]


@pytest.mark.parametrize(("raw", "absent"), [
    ("<!here> look", "<!here>"), ("<!channel>", "<!channel>"), ("<@U123ABC>", "<@U123ABC>"),
    ("<https://evil.example|Okta login>", "<https://evil.example"), ("AT&T", "AT&T"), ("`", "`"),
])
def test_slack_escapes_mentions_links_and_entities(raw: str, absent: str) -> None:
    """Slack gets `&`, `<`, `>` escaped: no mention or disguised link comes from a field."""
    assert absent not in escaping.slack(raw)


@settings(max_examples=100, deadline=None)
@given(hostile)
def test_slack_text_has_no_raw_angle_brackets_or_controls(raw: str) -> None:
    """Property: escaped Slack text has no `<`, `>`, backtick or control character, and every `&` starts an entity."""
    shown = escaping.slack(raw)
    assert not set(shown) & {"<", ">", "`"} and not RAW_CONTROL.search(shown)
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", shown, flags=re.DOTALL)


def test_oncall_slack_message_carries_no_mention_or_link_from_the_event() -> None:
    """A run.failed record whose fields hold `<!here>` and a disguised link pages nobody and links nowhere."""
    record = {"event": "run.failed", "exposure_id": "exp-<!here>", "playbook": "okta-user",
              "error": "see <https://evil.example|the runbook> & <!channel>", "actor": "<@U0ADMIN>",
              "credential_kind": "okta.user\x1b[2K", "detector": "x>y"}
    text = summary(record, "slack")["text"]
    assert "<!" not in text and "<http" not in text and "<@" not in text and "\x1b" not in text
    assert "exp-&lt;!here&gt;" in text and "&amp; &lt;!channel&gt;" in text
    assert text.startswith(":rotating_light:")  # our own emoji code is kept


@settings(max_examples=100, deadline=None)
@given(hostile)
def test_html_has_no_tags_or_controls(raw: str) -> None:
    """Property: HTML-escaped text has no `<`, `>`, quote or control character."""
    shown = escaping.html(raw)
    assert not set(shown) & {"<", ">", '"', "'"} and not RAW_CONTROL.search(shown)


@settings(max_examples=100, deadline=None)
@given(hostile)
def test_terminal_block_keeps_only_line_breaks_and_tabs(raw: str) -> None:
    """Property: a multi-line block keeps its lines and tabs, and no other control character gets through."""
    shown = escaping.terminal_block(raw)
    assert shown.count("\n") == raw.count("\n") and shown.count("\t") == raw.count("\t")
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["exposure_id", "playbook", "credential_kind", "detector", "actor", "error"]),
                       hostile))
def test_oncall_slack_text_never_carries_slack_syntax_from_fields(fields: dict[str, str]) -> None:
    """Property: whatever the record's fields, the Slack text has no `<`/`>` (so no mention or link) and no control
    character."""
    text = summary({"event": "run.failed", **fields}, "slack")["text"]
    assert "<" not in text and ">" not in text and not RAW_CONTROL.search(text.replace("\n", ""))
