"""A typo never silently does nothing: `trigger` refuses a kind no playbook matches and names the closest ones."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.embedded import free_port
from orchestrator.events import Severity
from orchestrator.playbooks import Playbook, load_playbooks
from orchestrator.providers import catalog
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR
from orchestrator.triggers import (
    TriggerRequest,
    UnmatchedTrigger,
    build_exposure,
    closest_kinds,
    known_kinds,
)
from tests.support import orchestrator_command, run_cli

KNOWN = ["aws.access_key", "aws.session", "gcp.service_account_key", "github.token", "okta.api_token",
         "okta.session", "okta.user", "slack.token"]


@pytest.fixture(scope="module")
def playbooks() -> tuple[Playbook, ...]:
    """The shipped playbooks."""
    return load_playbooks(DEFAULT_PLAYBOOKS_DIR, catalog())


def test_the_shipped_playbooks_know_these_kinds(playbooks: tuple[Playbook, ...]) -> None:
    """`known_kinds` lists every kind some playbook matches, once, sorted."""
    assert known_kinds(playbooks) == KNOWN


@pytest.mark.parametrize(("typed", "suggested"), [
    ("okta.usr", "okta.user"), ("okta.sesion", "okta.session"), ("OKTA.USER", "okta.user"),
    ("slack.tokn", "slack.token"), ("aws.acces_key", "aws.access_key"), ("github_token", "github.token"),
])
def test_a_typo_suggests_the_kind_meant(typed: str, suggested: str) -> None:
    """A misspelt, mis-cased or mis-punctuated kind suggests the kind meant, first."""
    assert closest_kinds(typed, KNOWN)[0] == suggested


def test_nothing_alike_suggests_nothing() -> None:
    """A kind like no known one gets no suggestion (the refusal then lists every known kind)."""
    assert closest_kinds("zzz", KNOWN) == []


@settings(max_examples=50, deadline=None)
@given(typed=st.text(max_size=120), known=st.lists(st.text(min_size=1, max_size=40), max_size=20))
def test_suggestions_are_always_a_few_known_kinds(typed: str, known: list[str]) -> None:
    """Whatever is typed: at most three suggestions, each a known kind, no repeats; never an error."""
    suggested = closest_kinds(typed, known)
    assert len(suggested) <= 3 and len(set(suggested)) == len(suggested)
    assert set(suggested) <= set(known)


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(KNOWN), data=st.data())
def test_one_edit_away_finds_the_kind(kind: str, data: st.DataObject) -> None:
    """Any kind with one character dropped, doubled or swapped for a letter is suggested back."""
    at = data.draw(st.integers(0, len(kind) - 1))
    edit = data.draw(st.sampled_from(["drop", "double", "swap"]))
    letter = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz"))
    typed = {"drop": kind[:at] + kind[at + 1:], "double": kind[:at] + kind[at] + kind[at:],
             "swap": kind[:at] + letter + kind[at + 1:]}[edit]
    assert kind in closest_kinds(typed, KNOWN)


def _request(kind: str, **fields: object) -> TriggerRequest:
    return TriggerRequest.model_validate({"kind": kind, "owner": "sam@example.com", **fields})


def test_an_unmatched_trigger_is_refused_without_repeating_the_kind(playbooks: tuple[Playbook, ...]) -> None:
    """The refusal names the closest kinds but not the submitted one (the API sends it back to the caller)."""
    with pytest.raises(UnmatchedTrigger) as refused:
        build_exposure(_request("okta.usr"), actor="a", detector="api", playbooks=playbooks)
    assert refused.value.suggestions[0] == "okta.user" and "okta.usr'" not in str(refused.value)
    with pytest.raises(UnmatchedTrigger, match=r"known kinds: aws\.access_key, "):
        build_exposure(_request("zzz"), actor="a", detector="api", playbooks=playbooks)


def test_allow_unmatched_or_a_named_playbook_publishes_anyway(playbooks: tuple[Playbook, ...]) -> None:
    """`allow_unmatched` (and a playbook named outright) skip the check; a matching kind passes it."""
    assert build_exposure(_request("okta.usr", allow_unmatched=True), actor="a", detector="cli",
                          playbooks=playbooks).credential.kind == "okta.usr"
    assert build_exposure(_request("acme.thing", playbook="okta-user"), actor="a", detector="cli",
                          playbooks=playbooks).playbook == "okta-user"
    assert build_exposure(_request("okta.user", severity=Severity.LOW), actor="a", detector="cli",
                          playbooks=playbooks).credential.kind == "okta.user"


def test_cli_trigger_refuses_an_unknown_kind_in_one_line() -> None:
    """`orchestrator trigger --kind okta.usr` exits 2 with one line suggesting okta.user, before publishing and
    before asking for the secret (stdin here holds none: the refusal is about the kind, not the secret)."""
    nothing_there = f"127.0.0.1:{free_port()}"  # never reached: the refusal comes first
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "KAFKA_"))}
    result = subprocess.run([*orchestrator_command(), "trigger", "--kind", "okta.usr", "--severity", "critical",
                             "--secret-stdin"], env={**env, "KAFKA_BOOTSTRAP_SERVERS": nothing_there},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no playbook matches" in result.stderr and "did you mean okta.user" in result.stderr
    assert "--allow-unmatched" in result.stderr and "Traceback" not in result.stderr


async def test_cli_allow_unmatched_publishes_it(bootstrap: str) -> None:
    """With --allow-unmatched the same trigger is published (and would end `exposure.unmatched`)."""
    import asyncio

    topic = f"exposures-{free_port()}"
    result = await asyncio.to_thread(run_cli, "trigger", "--kind", "okta.usr", "--owner", "sam@example.com",
                                     "--allow-unmatched", "--json",
                                     env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                          "ORCHESTRATOR_EXPOSURES_TOPIC": topic})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["topic"] == topic
