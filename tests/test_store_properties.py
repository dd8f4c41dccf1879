"""Property tests of the store's input boundaries: page cursors from clients, audit records from the topic,
and the content identity of exposures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.events import Exposure
from orchestrator.store import content_of
from orchestrator.store.rebuild import fold
from orchestrator.store.store import decode_cursor, encode_cursor

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@given(st.text(max_size=200))
def test_any_cursor_text_decodes_or_is_refused_with_value_error(text: str) -> None:
    try:
        at, row_id = decode_cursor(text)
    except ValueError:
        return
    assert isinstance(at, datetime) and isinstance(row_id, int)


@given(st.datetimes(), st.integers(min_value=1, max_value=2**62))
def test_cursors_round_trip(at: datetime, row_id: int) -> None:
    assert decode_cursor(encode_cursor({"received_at": at, "row_id": row_id})) == (at, row_id)


record_fields = st.fixed_dictionaries({}, optional={
    "exposure_id": st.text(max_size=10) | json_values, "content_fingerprint": st.text(max_size=10) | json_values,
    "event": st.sampled_from(["exposure.received", "run.started", "step.succeeded", "step.failed", "run.completed",
                              "run.failed", "exposure.duplicate", "bogus"]) | json_values,
    "ts": st.datetimes().map(lambda d: d.isoformat()) | json_values,
    "run_id": st.text(max_size=5) | json_values, "step": st.text(max_size=5) | json_values,
    "attempt": st.integers(0, 5), "error": st.text(max_size=10) | st.none()})


@given(st.lists(record_fields, max_size=30))
def test_folding_any_audit_records_never_fails_and_never_ends_a_row_twice(records: list[dict[str, Any]]) -> None:
    for row in fold(records):
        assert row.values["state"] in {"received", "running", "completed", "failed", "planned", "rejected",
                                       "unmatched", "duplicate"}
        assert row.state.terminal == ("terminal_event" in row.values)


handles = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=8)


@given(handles, handles, handles, st.booleans())
def test_identity_is_the_content_not_the_id(exposure_id: str, owner: str, other: str, dry_run: bool) -> None:
    def event(**credential: Any) -> Exposure:
        return Exposure.model_validate({"id": exposure_id, "credential": {"kind": "okta.user", **credential},
                                        "dry_run": dry_run})

    same = content_of(event(owner=owner)), content_of(event(owner=owner))
    assert same[0] == same[1]
    if other != owner:
        assert content_of(event(owner=other)).fingerprint != same[0].fingerprint
    assert content_of(event(owner=owner, id="x")).fingerprint != same[0].fingerprint


def test_a_planned_run_does_not_make_the_real_one_a_duplicate() -> None:
    base = {"id": "X", "credential": {"kind": "okta.user", "owner": "sam"}}
    planned = content_of(Exposure.model_validate({**base, "dry_run": True}))
    real = content_of(Exposure.model_validate(base))
    assert planned.fingerprint != real.fingerprint


@pytest.mark.parametrize("kind", ["zzz", "okta.session"])
def test_the_same_id_with_another_kind_is_other_content(kind: str) -> None:
    real = content_of(Exposure.model_validate({"id": "X", "credential": {"kind": "okta.user", "id": "1"}}))
    assert content_of(Exposure.model_validate({"id": "X", "credential": {"kind": kind, "id": "1"}})) != real
