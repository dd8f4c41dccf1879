"""The passes over a HAR file: find (one streaming pass), then write the sanitized copy (a second one)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from orchestrator.har.detect import Finding, scan_entry
from orchestrator.har.reader import EntriesEnd, EntriesStart, Entry, Field, HarError, open_har, read
from orchestrator.har.sanitize import Masker, sanitize_entry

HAR_VERSION = "1.2"
_CREATOR = {"name": "orchestrator scan-har --sanitize", "version": "1"}


@dataclass(frozen=True)
class Scan:
    """What a scan found, in file order, and how many entries it read."""

    findings: list[Finding]
    entries: int

    def masker(self) -> Masker:
        """Masks every value this scan found."""
        return Masker(value for finding in self.findings for value in finding.values)


def scan_file(path: Path, *, max_bytes: int) -> Scan:
    """Every finding of a HAR file; `HarError` (one line) when it is too big, not JSON or not a HAR."""
    findings: list[Finding] = []
    entries = 0
    with open_har(path, max_bytes=max_bytes) as stream:
        for part in read(stream, name=str(path)):
            if isinstance(part, Entry):
                findings.extend(scan_entry(part.index, part.value))
                entries += 1
    return Scan(findings, entries)


def write_sanitized(source: Path, target: Path, scan: Scan, *, max_bytes: int) -> None:
    """Write a HAR 1.2 copy of `source` without any value `scan` found, replacing `target` only when done."""
    # The copy is renamed over `target`: onto /dev/stdout or a FIFO that would replace the node itself, and onto
    # the input it would destroy the very capture that was scanned.
    if target.exists() and not target.is_file():
        raise HarError(f"cannot write {target}: not a regular file (give the path of a new .har file)")
    if target.exists() and target.samefile(source):
        raise HarError(f"cannot write {target}: it is the file being scanned (give another path)")
    masker = scan.masker()
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open_har(source, max_bytes=max_bytes) as stream, partial.open("w", encoding="utf-8") as sink:
            _write(read(stream, name=str(source)), sink, masker)
        os.replace(partial, target)
    except OSError as exc:
        raise HarError(f"cannot write {target}: {exc.strerror or type(exc).__name__}") from None
    finally:
        partial.unlink(missing_ok=True)


def _write(parts: Any, sink: TextIO, masker: Masker) -> None:
    sink.write('{"log": {')
    written: set[str] = set()
    count = 0

    def field(name: str, value: Any) -> None:
        sink.write(("" if not written else ", ") + json.dumps(name) + ": " + _dumps(value))
        written.add(name)

    for part in parts:
        if isinstance(part, Field) and part.name not in written and part.name != "entries":
            field(part.name, _log_field(part.name, part.value, masker))
        elif isinstance(part, EntriesStart):
            sink.write(("" if not written else ", ") + '"entries": [\n')
            written.add("entries")
        elif isinstance(part, Entry):
            sink.write((",\n" if count else "") + _dumps(sanitize_entry(part.value, masker)))
            count += 1
        elif isinstance(part, EntriesEnd):
            sink.write("\n]")
    for name, value in (("version", HAR_VERSION), ("creator", _CREATOR)):
        if name not in written:
            field(name, value)
    sink.write("}}\n")


def _log_field(name: str, value: Any, masker: Masker) -> Any:
    """A field of `log`, masked, and made what HAR 1.2 requires of it."""
    if name == "version":
        return HAR_VERSION
    value = masker.deep(value)
    if name in ("creator", "browser"):
        value = value if isinstance(value, dict) else {}
        return {**value, "name": _text(value.get("name"), "unknown"), "version": _text(value.get("version"), "")}
    if name == "pages":
        pages = [page for page in value if isinstance(page, dict)] if isinstance(value, list) else []
        return [{**page, "startedDateTime": _text(page.get("startedDateTime"), "1970-01-01T00:00:00.000Z"),
                 "id": _text(page.get("id"), f"page_{i}"), "title": _text(page.get("title"), ""),
                 "pageTimings": page.get("pageTimings") if isinstance(page.get("pageTimings"), dict) else {}}
                for i, page in enumerate(pages)]
    return value


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:  # an infinite float the parser let through: JSON cannot write it
        return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
