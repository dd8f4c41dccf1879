"""Who may say what: priority comes from severity and a verified publisher role, never from `actor`; the API
publishes `actor` as the authenticated principal."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import provenance
from orchestrator.actions import Priority
from orchestrator.api_exposures import as_published
from orchestrator.auth import Principal, Role
from orchestrator.events import Exposure
from orchestrator.execution import priority_of
from orchestrator.pipeline import Admission, Origin, Pipeline

_ORIGIN = Origin("t", 0, 0)


def _exposure(**fields: object) -> Exposure:
    return Exposure.model_validate({"id": "e1", "credential": {"kind": "okta.user", "owner": "a@example.com"},
                                    **fields})


def test_a_publisher_set_actor_does_not_raise_priority() -> None:
    """`actor: rt-admin` on a record without a verified role runs at the priority its severity gives."""
    assert priority_of(_exposure(actor="rt-admin")) is Priority.NORMAL
    assert priority_of(_exposure(actor="rt-admin", severity="low")) is Priority.LOW


def test_severity_and_role_decide_priority() -> None:
    """Critical exposures and records vouched for by a responder or admin are urgent; a detector is not."""
    assert priority_of(_exposure(severity="critical")) is Priority.URGENT
    assert priority_of(_exposure(), Role.RESPONDER) is Priority.URGENT
    assert priority_of(_exposure(), Role.ADMIN) is Priority.URGENT
    assert priority_of(_exposure(), Role.DETECTOR) is Priority.NORMAL


def test_a_signed_header_vouches_for_exactly_its_record() -> None:
    """The role header verifies for the value it was made for, and for no other value or role."""
    value = b'{"id": "e1"}'
    name, raw = provenance.header(value, Role.RESPONDER)
    assert provenance.verified_role(value, [(name, raw)]) is Role.RESPONDER
    assert provenance.verified_role(value + b" ", [(name, raw)]) is None
    forged = raw.replace(b"responder", b"admin")
    assert provenance.verified_role(value, [(name, forged)]) is None
    assert provenance.verified_role(value, [(name, b"admin:" + b"0" * 64)]) is None
    assert provenance.verified_role(value, []) is None


@settings(max_examples=100, deadline=None)
@given(prefix=st.sampled_from([b"", b"admin:", b"responder:", b"detector:"]), raw=st.binary(max_size=200),
       value=st.binary(max_size=200))
def test_any_header_a_publisher_writes_vouches_for_nothing(prefix: bytes, raw: bytes, value: bytes) -> None:
    """Arbitrary header bytes, after a real role name or not, never verify, and never raise."""
    assert provenance.verified_role(value, [(provenance.HEADER, prefix + raw), ("other", None)]) is None
    assert provenance.verified_role(value, [(provenance.HEADER, b"admin:\xff\xfe" + raw)]) is None


def test_an_admission_takes_its_priority_from_the_verified_role() -> None:
    """The consumer's scheduling priority: urgent with a valid header, severity-based with a forged actor."""
    value = json.dumps({"id": "e1", "credential": {"kind": "okta.user", "owner": "a"}, "actor": "rt-admin"}).encode()
    exposure = Exposure.model_validate_json(value)
    plain = Admission(_ORIGIN, value, exposure=exposure,
                      role=provenance.verified_role(value, [(provenance.HEADER, b"admin:forged")]))
    vouched = Admission(_ORIGIN, value, exposure=exposure,
                        role=provenance.verified_role(value, [provenance.header(value, Role.ADMIN)]))
    assert (plain.priority, vouched.priority) == (Priority.NORMAL, Priority.URGENT)


def test_only_responders_and_admins_may_raise_priority() -> None:
    """A detector-only principal gets no role to vouch with; admin wins over responder."""
    assert provenance.role_of(Principal("d", frozenset({Role.DETECTOR}))) is None
    assert provenance.role_of(Principal("r", frozenset({Role.RESPONDER, Role.DETECTOR}))) is Role.RESPONDER
    assert provenance.role_of(Principal("a", frozenset({Role.ADMIN, Role.RESPONDER}))) is Role.ADMIN


def test_the_api_publishes_the_principal_as_actor_and_default_detector() -> None:
    """`actor` is replaced by the principal; `source.detector` defaults to it; other fields pass through."""
    body = json.dumps({"id": "e1", "credential": {"kind": "okta.user"}, "actor": "rt-admin",
                       "future_field": {"x": 1}}).encode()
    published = orjson.loads(as_published(body, "detector-bot"))
    assert published["actor"] == "detector-bot" and published["source"] == {"detector": "detector-bot"}
    assert published["future_field"] == {"x": 1}
    named = orjson.loads(as_published(b'{"id": "e2", "source": {"detector": "scanner", "location": "x"}}', "bot"))
    assert named["source"] == {"detector": "scanner", "location": "x"} and named["actor"] == "bot"


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=6)


@settings(max_examples=60, deadline=None)
@given(document=st.dictionaries(st.sampled_from(["id", "actor", "source", "credential", "x"]), _JSON, max_size=5),
       principal=st.text(min_size=1, max_size=20))
def test_whatever_the_body_says_the_principal_is_the_actor(document: dict[str, object], principal: str) -> None:
    """For any JSON object body, the published record's actor is the principal and its detector is set."""
    published = json.loads(as_published(json.dumps(document).encode(), principal))
    assert published["actor"] == principal
    assert isinstance(published["source"]["detector"], str) and published["source"]["detector"]


@settings(max_examples=100, deadline=None)
@given(role=st.sampled_from(["responder", "admin", "detector"]), digest=st.binary(max_size=80))
def test_a_role_header_with_any_digest_bytes_vouches_for_nothing(role: str, digest: bytes) -> None:
    """A known role followed by any bytes (non-ASCII ones too) never verifies, and never raises."""
    assert provenance.verified_role(b"{}", [(provenance.HEADER, role.encode() + b":" + digest)]) is None


def test_a_valid_exposure_with_a_non_ascii_role_header_is_admitted_unvouched() -> None:
    """`orchestrator-role: responder:\\xff…` on a valid exposure: admitted at its own priority, not rejected as
    an internal error (compare_digest raised TypeError on the non-ASCII digest)."""
    raw = orjson.dumps({"id": "e1", "credential": {"kind": "okta.user", "owner": "a@example.com"}})
    pipeline = Pipeline(auditor=None, executor=None, playbooks=[], dead_letters=None,  # type: ignore[arg-type]
                        max_event_bytes=1 << 20)
    admission = pipeline.admit(raw, _ORIGIN, [(provenance.HEADER, b"responder:\xff" * 8)])
    assert admission.rejection is None and admission.exposure is not None and admission.role is None
