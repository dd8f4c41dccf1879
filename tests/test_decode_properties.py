"""Property: whatever a publisher sends, `decode` returns an exposure or raises `InvalidExposure`, nothing else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InvalidExposure
from orchestrator.events import Exposure, decode

MAX = 64 * 1024

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
#: Field values of the wrong type, odd strings (control characters, escapes, surrogates once escaped) and extremes.
odd_values = json_values | st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["", " ", "..", "current", "\u202e", "\x1b[31m", "a" * 3000, 10**30, -1, 1e308, [], {}])

exposure_like = st.fixed_dictionaries(
    {"id": odd_values, "credential": st.fixed_dictionaries({"kind": odd_values}, optional={
        "id": odd_values, "owner": odd_values, "secret": odd_values}) | odd_values},
    optional={"severity": odd_values, "source": odd_values, "detected_at": odd_values, "dry_run": odd_values,
              "playbook": odd_values, "actor": odd_values},
)


def _decodes_or_rejects(raw: bytes | None) -> None:
    try:
        assert isinstance(decode(raw, max_bytes=MAX), Exposure)
    except InvalidExposure as exc:
        assert str(exc)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes(raw: bytes) -> None:
    """Random bytes, invalid UTF-8 included."""
    _decodes_or_rejects(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_document(document: Any) -> None:
    """Any JSON value, nested or not."""
    _decodes_or_rejects(json.dumps(document).encode())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(exposure_like)
def test_exposure_shaped_documents_with_wrong_values(document: dict[str, Any]) -> None:
    """Documents shaped like an exposure whose fields hold anything."""
    _decodes_or_rejects(json.dumps(document).encode())


@given(st.integers(min_value=1, max_value=20_000), st.sampled_from(["[", "{\"a\":"]))
def test_any_nesting_depth(depth: int, opener: str) -> None:
    """Nesting at any depth (CPython's json raised RecursionError past ~1000)."""
    closer = "]" if opener == "[" else "}"
    _decodes_or_rejects((opener * depth + "1" + closer * depth).encode())


@given(st.integers(min_value=1, max_value=6000), st.booleans())
def test_numbers_of_any_length(digits: int, negative: bool) -> None:
    """Integers of any length (CPython's json raised ValueError past 4,300 digits)."""
    number = ("-" if negative else "") + "7" * digits
    _decodes_or_rejects(f'{{"id": "e", "credential": {{"kind": "k", "id": "i"}}, "n": {number}}}'.encode())


@given(st.integers(min_value=0xD800, max_value=0xDFFF), st.sampled_from(["id", "kind", "secret"]))
def test_escaped_lone_surrogates(code: int, field: str) -> None:
    """A lone surrogate escaped in any field is rejected, never carried into the pipeline."""
    document = {"id": "e", "credential": {"kind": "k", "secret": "s" * 10}}
    target: dict[str, Any] = document if field == "id" else document["credential"]  # type: ignore[assignment]
    target[field] = "PLACEHOLDER"
    raw = json.dumps(document).replace("PLACEHOLDER", f"\\u{code:04x}").encode()
    try:
        decode(raw, max_bytes=MAX)
    except InvalidExposure as exc:
        assert "surrogate" in str(exc)
    else:
        raise AssertionError("a lone surrogate was accepted")
