"""Reading a HAR file as a stream: its log's fields and its entries one at a time, in bounded memory.

ijson (yajl2 C backend) parses events; only one entry (or one other field of `log`) is built at a time,
so a 100 MB capture needs memory for its largest entry, not for the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from orchestrator.errors import OrchestratorError

#: Deeper values are refused: every later stage (and `json.dumps`) may then recurse safely.
MAX_DEPTH = 256
#: Above this a file is refused before it is read (ORCHESTRATOR_HAR_MAX_BYTES).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class HarError(OrchestratorError):
    """The file is not a HAR this scanner can read; the message is one line and names no value in it."""


@dataclass(frozen=True)
class Field:
    """A field of `log` other than `entries` (version, creator, browser, pages, comment)."""

    name: str
    value: Any


@dataclass(frozen=True)
class Entry:
    """One entry of `log.entries`, numbered from 0 in file order."""

    index: int
    value: Any


@dataclass(frozen=True)
class EntriesStart:
    """`log.entries` begins here (the other fields of `log` may come before or after it)."""


@dataclass(frozen=True)
class EntriesEnd:
    """`log.entries` ends here."""


Part = Field | EntriesStart | Entry | EntriesEnd


def open_har(path: Path, *, max_bytes: int) -> BinaryIO:
    """The file opened for reading; `HarError` when it is missing, not a file, or above `max_bytes`."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise HarError(f"{path} is not a file")
        if size == 0:
            raise HarError(f"{path} is empty")
        if size > max_bytes:
            raise HarError(f"{path} is {size} bytes, above the {max_bytes}-byte limit (ORCHESTRATOR_HAR_MAX_BYTES)")
        return path.open("rb")
    except OSError as exc:
        raise HarError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def read(stream: BinaryIO, *, name: str) -> Iterator[Part]:
    """The parts of a HAR in file order; raise `HarError` naming `name` when it is not JSON or not a HAR."""
    # basic_parse, not parse: parse keeps every level's dotted prefix (the keys above it joined), which grows with
    # the square of the depth and of the keys' length: 20,000 levels (40 kB of file) took a gigabyte.
    events = ijson.basic_parse(stream, use_float=True)
    try:
        yield from _parts(events, name)
    except ijson.JSONError as exc:
        raise HarError(f"{name} is not valid JSON ({_reason(exc)})") from None
    except UnicodeDecodeError:
        raise HarError(f"{name} is not UTF-8 text") from None


def _parts(events: Iterator[tuple[str, Any]], name: str) -> Iterator[Part]:
    not_har = f"{name} is not a HAR file"
    first = next(events, None)
    if first is None:
        raise HarError(f"{name} is empty")
    if first[0] != "start_map":
        raise HarError(f"{not_har}: the top level is not a JSON object")
    seen_log = seen_entries = False
    for event, value in events:
        if event == "end_map":
            break
        # event is map_key at the top level
        if value != "log":
            _skip(events)
            continue
        if seen_log:  # JSON readers keep the last of duplicate keys: a copy holding both would show one
            raise HarError(f"{not_har}: it has more than one \"log\" object")
        seen_log = True
        if next(events)[0] != "start_map":
            raise HarError(f"{not_har}: \"log\" is not an object")
        for log_event, key in events:
            if log_event == "end_map":
                break
            if key != "entries":
                yield Field(key, _build(events))
                continue
            if seen_entries:
                raise HarError(f"{not_har}: \"log\" has more than one \"entries\" array")
            seen_entries = True
            if next(events)[0] != "start_array":
                raise HarError(f"{not_har}: \"log.entries\" is not an array")
            yield EntriesStart()
            index = 0
            while True:
                entry = _build(events, end_array_ok=True)
                if entry is _END:
                    yield EntriesEnd()
                    break
                if not isinstance(entry, dict):
                    raise HarError(f"{not_har}: entry {index} is not an object")
                yield Entry(index, entry)
                index += 1
    if not seen_log:
        raise HarError(f"{not_har}: it has no top-level \"log\" object")
    if not seen_entries:
        raise HarError(f"{not_har}: \"log\" has no \"entries\" array")
    for _ in events:  # trailing content after the top-level object is an error ijson reports here
        pass


_END = object()


def _build(events: Iterator[tuple[str, Any]], *, end_array_ok: bool = False) -> Any:
    """The next whole JSON value from the event stream (`_END` at an array's end when allowed)."""
    event, value = next(events)
    if event == "end_array" and end_array_ok:
        return _END
    if event not in ("start_map", "start_array"):
        return value
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for event, value in events:
        builder.event(event, value)
        depth = _nested(event, depth)
        if depth == 0:
            return builder.value
    raise ijson.IncompleteJSONError("unexpected end of file")


def _skip(events: Iterator[tuple[str, Any]]) -> None:
    event, _ = next(events)
    depth = 1 if event in ("start_map", "start_array") else 0
    while depth:
        event, _ = next(events)
        depth = _nested(event, depth)


def _nested(event: str, depth: int) -> int:
    """The nesting depth after `event`; refuses values nested deeper than `MAX_DEPTH`."""
    if event in ("start_map", "start_array"):
        if depth >= MAX_DEPTH:
            raise HarError(f"a value nests deeper than {MAX_DEPTH} levels: not a HAR this scanner reads")
        return depth + 1
    if event in ("end_map", "end_array"):
        return depth - 1
    return depth


def _reason(exc: Exception) -> str:
    # yajl's messages quote the text around the error, which may be a secret, from their second line on:
    # keep the first ("lexical error: invalid char in json text."). Bytes messages come as their repr.
    text = str(exc)
    if text[:2] in ("b'", 'b"'):
        text = text[2:]
    first = text.replace("\\n", "\n").split("\n", 1)[0].strip()
    return first[:100] or type(exc).__name__
