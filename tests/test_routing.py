"""Pure routing: which playbook an exposure gets, which steps apply, which parameters each step receives."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from orchestrator.events import Exposure
from orchestrator.playbooks import Playbook
from orchestrator.routing import UnknownPlaybook, resolve_params, route, step_applies


def _playbook(name: str, kinds: list[str], **match: Any) -> Playbook:
    return Playbook.model_validate({
        "name": name, "match": {"kinds": kinds, **match},
        "steps": [{"name": "act", "action": "okta.clear_user_sessions",
                   "params": {"user": {"field": "credential.owner"}, "session_id": {"field": "credential.id"},
                              "oauth_tokens": True},
                   "when": {"severity": ["high", "critical"]}}],
    })


def _exposure(kind: str = "okta.session", **fields: Any) -> Exposure:
    credential = {"kind": kind, "owner": "a@example.com", **fields.pop("credential", {})}
    return Exposure.model_validate({"id": "e", "credential": credential, **fields})


GENERAL = _playbook("general", ["okta.session", "okta.user"])
CRITICAL = _playbook("critical", ["okta.session"], severities=["critical"])
HAR = _playbook("har", ["okta.session"], detectors=["har-scanner"])
PLAYBOOKS = [GENERAL, CRITICAL, HAR]


def test_the_kind_selects_the_playbook() -> None:
    """An exposure goes to a playbook whose kinds include its credential kind."""
    assert route(_exposure("okta.user"), PLAYBOOKS) is GENERAL


def test_nothing_matching_is_none() -> None:
    """A kind no playbook lists routes to None (the pipeline reports it unmatched)."""
    assert route(_exposure("aws.access_key"), PLAYBOOKS) is None


def test_the_more_specific_match_wins() -> None:
    """A severity or detector filter that matches beats the general playbook; one that does not, does not."""
    assert route(_exposure(severity="critical"), PLAYBOOKS) is CRITICAL
    assert route(_exposure(source={"detector": "har-scanner"}), PLAYBOOKS) is HAR
    assert route(_exposure(severity="low", source={"detector": "trufflehog"}), PLAYBOOKS) is GENERAL


def test_the_playbook_field_overrides_routing() -> None:
    """`playbook` in the event picks that playbook even when the kind does not match it."""
    assert route(_exposure("aws.access_key", playbook="har"), PLAYBOOKS) is HAR


def test_an_unknown_playbook_override_raises() -> None:
    """`playbook` naming nothing loaded raises UnknownPlaybook with the name."""
    with pytest.raises(UnknownPlaybook, match="nope"):
        route(_exposure(playbook="nope"), PLAYBOOKS)


def test_when_conditions_gate_steps() -> None:
    """A step with `when` runs only for the listed values."""
    step = GENERAL.steps[0]
    assert step_applies(step, _exposure(severity="critical"))
    assert not step_applies(step, _exposure(severity="low"))


def test_parameters_are_picked_from_the_event_and_absent_ones_left_out() -> None:
    """Field references resolve to event values, literals pass through, absent fields do not appear."""
    assert resolve_params(GENERAL.steps[0], _exposure()) == {"user": "a@example.com", "oauth_tokens": True}
    with_id = resolve_params(GENERAL.steps[0], _exposure(credential={"id": "102s"}))
    assert with_id["session_id"] == "102s"


def test_a_secret_parameter_stays_a_secretstr() -> None:
    """credential.secret reaches a secret parameter as SecretStr, never as plain text."""
    playbook = Playbook.model_validate({
        "name": "token", "match": {"kinds": ["okta.api_token"]},
        "steps": [{"name": "revoke", "action": "okta.revoke_api_token",
                   "params": {"token": {"field": "credential.secret"}}}],
    })
    params = resolve_params(playbook.steps[0], _exposure("okta.api_token", credential={"secret": "00abcdefghijkl"}))
    assert isinstance(params["token"], SecretStr) and params["token"].get_secret_value() == "00abcdefghijkl"
