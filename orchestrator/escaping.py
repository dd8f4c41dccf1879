"""Escaping of outside text (event fields, provider answers) for each place it is shown: terminal, rich, Slack, HTML.

Anything an exposure or a provider sent is hostile until escaped: an id can carry an OSC 52 clipboard write, a
carriage return and a line erase that draw a fake line on a responder's terminal; a `reason` of `[/]` is rich
markup; a `<!here>` pages a whole Slack channel. Each function here is pure and total: any string in, safe text
out.
"""

from __future__ import annotations

import html as _html
import re

from rich.markup import escape as _rich_escape

# C0 controls (newline and tab included: one field must stay on one line), DEL, C1 controls, and the Unicode
# formatting characters that reorder or split what is shown (bidi overrides and isolates, line and paragraph
# separators) without being visible themselves.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
# Lone surrogates (from a JSON `\ud800` escape) cannot be written as UTF-8: shown escaped as well.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _code(match: re.Match[str]) -> str:
    point = ord(match.group())
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def terminal(text: object) -> str:
    """`text` with every control or invisible formatting character shown as a `\\x1b`-style escape."""
    value = text if isinstance(text, str) else str(text)
    return _SURROGATE.sub(_code, _UNSAFE.sub(_code, value))


def terminal_block(text: object) -> str:
    """Like `terminal`, for text of several lines (a stored body, a traceback): line breaks and tabs are kept."""
    value = text if isinstance(text, str) else str(text)
    return "\n".join("\t".join(terminal(part) for part in line.split("\t")) for line in value.split("\n"))


def markup(text: object) -> str:
    """`text` made safe for a terminal and then for rich markup: it prints as itself, never as a style, whatever
    markup follows it (rich's escape also doubles a trailing backslash, which would otherwise escape that)."""
    return _rich_escape(terminal(text))


# Slack reads `<...>` as a mention, channel or link and `&` as an entity; with those escaped, text from an
# event can no longer ping `@here` or hide a link behind friendly words. Backticks would end a code span and
# `*`, `_`, `~` switch on formatting: those are shown as look-alikes so the text reads the same.
_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "\u02cb"})


def slack(text: object) -> str:
    """`text` for a Slack `mrkdwn` message: `&`, `<`, `>` escaped, so no mention or link comes from it."""
    return terminal(text).translate(_SLACK)


def html(text: object) -> str:
    """`text` for an HTML page: `&`, `<`, `>`, quotes escaped, control characters shown as escapes."""
    return _html.escape(terminal(text), quote=True)
