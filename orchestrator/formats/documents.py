"""Reading detector output: one JSON document, or JSON lines, with errors that name where and never what.

orjson, not json: it refuses invalid UTF-8, lone surrogates and NaN, limits nesting without recursion, and
its messages name a position, never the input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from orchestrator.errors import FormatError


def load(format: str, data: bytes, *, where: str | None = None) -> Any:
    """One JSON document; `FormatError` naming line and column when it is not one."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        what = "UTF-8" if "UTF-8" in exc.msg else "JSON"
        raise FormatError(format, where or f"line {exc.lineno}",
                          f"not {what}: {exc.msg} at column {exc.colno}") from None


def lines(format: str, data: bytes) -> Iterator[tuple[str, Any]]:
    """Each non-blank line as a JSON value, named `line N` (1-based)."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield f"line {number}", load(format, line, where=f"line {number}")


def documents(format: str, data: bytes) -> Iterator[tuple[str, Any]]:
    """One JSON object, the items of a JSON array, or JSON lines; each named `item N` or `line N`."""
    stripped = data.lstrip()
    if stripped[:1] == b"[":
        array = load(format, data)
        if not isinstance(array, list):
            raise FormatError(format, None, "expected a JSON array")
        for index, item in enumerate(array, start=1):
            yield f"item {index}", item
        return
    try:
        single = orjson.loads(data)
    except orjson.JSONDecodeError:
        yield from lines(format, data)
        return
    yield "item 1", single


def obj(format: str, where: str, value: Any, what: str = "a JSON object") -> Mapping[str, Any]:
    """`value` when it is a JSON object, else `FormatError`."""
    if not isinstance(value, dict):
        raise FormatError(format, where, f"expected {what}, found JSON {_json_type(value)}")
    return value


def text(format: str, where: str, document: Mapping[str, Any], *keys: str, required: bool = False) -> str | None:
    """The first of `keys` in `document` holding a non-empty string (numbers are written out), else None."""
    for key in keys:
        value = document.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if value is not None and not isinstance(value, str):
            raise FormatError(format, where, f"{key} must be a string, found JSON {_json_type(value)}")
    if required:
        raise FormatError(format, where, f"missing {' or '.join(keys)}")
    return None


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
