"""CloudEvents 1.0 envelopes around an exposure: structured JSON and the Kafka binding's two content modes; pure.

Kafka protocol binding: a record whose `content-type` header starts `application/cloudevents` is in
structured mode (the value is the JSON envelope, `data` or `data_base64` holding the exposure); a record with
`ce_*` headers is in binary mode (the value is the data itself, `content-type` its media type). Errors are
`InvalidExposure` with a reason that holds no input value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import orjson

from orchestrator.errors import InvalidExposure

SPEC_VERSION = "1.0"
STRUCTURED_TYPE = "application/cloudevents+json"
#: Context attributes every CloudEvent carries (`specversion` checked on its own).
REQUIRED = ("id", "source", "type")


class Mode(StrEnum):
    """How a Kafka record carries its event."""

    PLAIN = "plain"  # our exposure event, no CloudEvents envelope
    STRUCTURED = "structured"
    BINARY = "binary"


def mode(headers: Sequence[tuple[str, bytes | None]]) -> Mode:
    """The content mode a record's headers announce."""
    names = {name.lower(): value for name, value in headers}
    content_type = _text(names.get("content-type")) or ""
    if content_type.lower().startswith("application/cloudevents"):
        return Mode.STRUCTURED
    if any(name.startswith("ce_") for name in names):
        return Mode.BINARY
    return Mode.PLAIN


def check_binary(headers: Sequence[tuple[str, bytes | None]]) -> None:
    """Check a binary-mode record's `ce_*` attributes; the record value is then the exposure itself."""
    names = {name.lower(): _text(value) for name, value in headers}
    _check_context({name[3:]: value for name, value in names.items() if name.startswith("ce_")})
    content_type = names.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise InvalidExposure("CloudEvent content-type is not JSON: expected application/json data")


def structured_data(envelope: Any) -> Any:
    """The data (the exposure document) of a structured-mode CloudEvent, checked; JSON in `data_base64` read."""
    if not isinstance(envelope, dict):
        raise InvalidExposure("CloudEvent is not a JSON object")
    _check_context(envelope)
    content_type = envelope.get("datacontenttype")
    if content_type is not None and (not isinstance(content_type, str) or not _is_json(content_type)):
        raise InvalidExposure("CloudEvent datacontenttype is not JSON: expected application/json data")
    if "data_base64" in envelope:
        encoded = envelope["data_base64"]
        if "data" in envelope or not isinstance(encoded, str):
            raise InvalidExposure("CloudEvent data_base64 must be a string, and not beside data")
        try:
            return orjson.loads(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidExposure("CloudEvent data_base64 is not base64 of a JSON document") from None
    if "data" not in envelope:
        raise InvalidExposure("CloudEvent has no data: expected an exposure in data")
    data = envelope["data"]
    if isinstance(data, str):  # JSON data may arrive as a JSON string holding the document
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidExposure("CloudEvent data is a string that is not a JSON document") from None
    return data


def _check_context(attributes: Mapping[str, Any]) -> None:
    version = attributes.get("specversion")
    if version != SPEC_VERSION:
        raise InvalidExposure("CloudEvent specversion must be \"1.0\"" if version is not None
                              else "CloudEvent has no specversion")
    missing = [name for name in REQUIRED if not isinstance(attributes.get(name), str) or not attributes[name]]
    if missing:
        raise InvalidExposure(f"CloudEvent lacks required attribute(s): {', '.join(missing)}")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None
