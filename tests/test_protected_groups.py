"""Protected Okta groups and verified actors: the policy's `protected.okta.groups` (membership asked of Okta at
exposure time, failing safe), the emulator's `GET /api/v1/users/{id}/groups`, and `actor_verified` on audit
records, end to end against the real broker, the Okta emulator and the HTTP API (one orchestrator)."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import provenance
from orchestrator.audit import Auditor
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.embedded import free_port
from orchestrator.emulators.okta_state import OktaState
from orchestrator.errors import NotFound, PermanentError, PlaybookError
from orchestrator.events import Exposure
from orchestrator.governor import Governor
from orchestrator.guard import Clearance, Guard, Verdict
from orchestrator.playbooks import parse_playbook
from orchestrator.policy import Policy, Protected, parse_policy
from orchestrator.providers import catalog
from orchestrator.providers.okta import OktaProvider
from orchestrator.settings import OktaSettings
from orchestrator.triggers import publish_record
from tests.conftest import Emulator
from tests.support import Harness, events_of, exposure, fresh_settings

GROUP = "break-glass-admins"
POLICY = f"protected:\n  okta:\n    groups: [{GROUP}]\nbrake: {{limit: 1000000}}\n"

# -- the policy file ---------------------------------------------------------------------------------------


def test_okta_groups_parse_and_protect_members_by_name_or_id_ignoring_case() -> None:
    """`protected.okta.groups` loads; a member of a listed group (by name or id, any case, or glob) is protected."""
    policy = parse_policy("protected:\n  okta:\n    groups: [Break-Glass-Admins, 00gPROD*]\n", "policy.yaml")
    assert policy.directory_groups("okta.user") == ["Break-Glass-Admins", "00gPROD*"]
    assert policy.protects_member("okta.user", ["00gX", "break-glass-admins"]) == "okta group Break-Glass-Admins"
    assert policy.protects_member("okta.session", ["00gPROD0001"]) == "okta group 00gPROD*"
    assert policy.protects_member("okta.user", ["everyone", "00gOTHER"]) is None
    assert policy.directory_groups("aws.access_key") == []


@pytest.mark.parametrize(("text", "line", "words"), [
    ("protected:\n  aws:\n    owners: [a]\n    groups: [admins]\n", 4, "protected.aws.groups"),
    ("protected:\n  okta:\n\n    groups: ['*']\n", 4, "bare `*`"),
    ("protected:\n  okta:\n    groups: admins\n", 3, "list"),
])
def test_a_bad_groups_entry_is_refused_naming_file_line_and_reason(text: str, line: int, words: str) -> None:
    """Groups of a provider that cannot be asked, catch-all patterns and non-lists stop start-up with file:line."""
    with pytest.raises(PlaybookError) as caught:
        parse_policy(text, "/etc/orch/policy.yaml")
    assert str(caught.value).startswith(f"/etc/orch/policy.yaml:{line}") and words in str(caught.value)


_GROUP = st.text(alphabet=string.ascii_letters + string.digits + "-_ .", min_size=1, max_size=20).filter(
    lambda g: g.strip() not in ("", "*", "**"))


@settings(max_examples=60, deadline=None)
@given(listed=st.lists(_GROUP, min_size=1, max_size=4), member_of=st.lists(_GROUP, max_size=6))
def test_a_user_is_protected_exactly_when_in_a_listed_group(listed: list[str], member_of: list[str]) -> None:
    """Without glob characters, membership of any listed group protects, and of no listed group does not."""
    policy = Policy(protected={"okta": Protected(groups=listed)})
    wanted = {g.strip().casefold() for g in listed}
    expected = any(g.strip().casefold() in wanted for g in member_of)
    assert (policy.protects_member("okta.user", member_of) is not None) == expected


class Directory:
    """Our `guard.Directory` protocol answered from a table (or by raising), counting the questions asked."""

    def __init__(self, groups: dict[str, tuple[str, ...]], error: Exception | None = None) -> None:
        self.groups, self.error, self.asked = groups, error, []

    async def member_groups(self, user: str | None, session_id: str | None, *, exposure_id: str) -> tuple[str, ...]:
        self.asked.append((user, session_id))
        if self.error is not None:
            raise self.error
        return self.groups.get(user or session_id or "", ())


_PLAN = [{"step": "s", "action": "okta.suspend_user", "target": "user=u", "destructive": True}]
_PLAYBOOK = "name: p\nmatch: {kinds: [okta.user]}\nsteps:\n  - {name: s, action: okta.suspend_user, " \
            "params: {user: {field: credential.owner}}}\n"


async def _clear(directory: Directory | None, credential: dict[str, str]) -> Clearance:
    guard = Guard(Policy(protected={"okta": Protected(groups=[GROUP])}),
                  directories={"okta": directory} if directory else None)
    exposure = Exposure.model_validate({"id": "e-1", "credential": credential, "source": {"detector": "scanner"}})
    trail = Auditor(_NoSink(), echo=False).trail("e-1")
    return await guard.clear(exposure, parse_playbook(_PLAYBOOK, "p.yaml", catalog()), _PLAN, trail, run_id="r",
                             row_id=None)


class _NoSink:
    async def send(self, exposure_id: str, record: bytes) -> Any:
        raise AssertionError("the guard records nothing for a run it clears or protects")


async def test_the_guard_protects_members_and_fails_safe_when_membership_cannot_be_read() -> None:
    """Member: protected; non-member: go; a lookup that raises (or Okta not configured): protected, with a
    note naming why but not the error's text when it is not ours; an exposure naming no user: nothing asked."""
    user = {"kind": "okta.user", "owner": "alice@example.com"}
    directory = Directory({"alice@example.com": ("00g1", GROUP.upper())})
    member = await _clear(directory, user)
    assert member.verdict is Verdict.PROTECTED and member.fields["protected_by"] == f"okta group {GROUP}"
    assert (await _clear(Directory({}), user)).verdict is Verdict.GO
    broken = await _clear(Directory({}, RuntimeError("secret-ish text")), user)
    assert broken.verdict is Verdict.PROTECTED and broken.fields["reason"] == "protected"
    assert "could not be checked (RuntimeError)" in broken.fields["note"] and "secret" not in broken.fields["note"]
    unconfigured = await _clear(None, user)
    assert unconfigured.verdict is Verdict.PROTECTED and "okta is not configured" in unconfigured.fields["note"]
    by_session = Directory({"102abc": (GROUP,)})
    assert (await _clear(by_session, {"kind": "okta.user", "id": "102abc"})).verdict is Verdict.PROTECTED
    assert by_session.asked == [(None, "102abc")]
    tokens = Directory({}, RuntimeError("must not be asked"))
    assert (await _clear(tokens, {"kind": "okta.api_token", "id": "00T1"})).verdict is Verdict.GO
    assert tokens.asked == []


# -- the emulator and the provider -------------------------------------------------------------------------


def _user_id() -> str:
    return "00u" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(17))


def test_the_emulator_lists_a_users_groups_as_okta_does_one_page_at_a_time(okta: Emulator) -> None:
    """`GET /api/v1/users/{id}/groups`: Okta Group objects, `limit` pages with a `Link` rel=next, 404 unknown user."""
    uid = _user_id()
    okta.seed({"users": [{"id": uid, "login": f"{uid}@example.com"}],
               "groups": [{"name": f"g-{uid}-{n}", "description": "d", "members": [uid]} for n in range(3)]})
    headers = {"Authorization": f"SSWS {okta.admin_token}"}
    first = httpx.get(f"{okta.url}/api/v1/users/{uid}@example.com/groups?limit=2", headers=headers)
    assert first.status_code == 200 and len(first.json()) == 2 and 'rel="next"' in first.headers["Link"]
    group = first.json()[0]
    assert group["id"].startswith("00g") and group["type"] == "OKTA_GROUP"
    assert group["objectClass"] == ["okta:user_group"] and group["profile"]["name"].startswith(f"g-{uid}-")
    assert {"created", "lastUpdated", "lastMembershipUpdated", "_links"} <= group.keys()
    after = first.headers["Link"].split('rel="self", <', 1)[1].split(">", 1)[0]
    rest = httpx.get(after, headers=headers)
    assert len(rest.json()) == 1 and 'rel="next"' not in rest.headers["Link"]
    assert {g["id"] for g in first.json()} | {rest.json()[0]["id"]} == {
        g["id"] for g in httpx.get(f"{okta.url}/api/v1/users/{uid}/groups", headers=headers).json()}
    missing = httpx.get(f"{okta.url}/api/v1/users/{_user_id()}/groups", headers=headers)
    assert missing.status_code == 404 and missing.json()["errorCode"] == "E0000007"
    assert httpx.get(f"{okta.url}/api/v1/users/{uid}/groups?limit=0", headers=headers).status_code == 400


@settings(max_examples=60, deadline=None)
@given(count=st.integers(min_value=0, max_value=12), others=st.integers(min_value=0, max_value=4),
       limit=st.integers(min_value=1, max_value=5))
def test_following_the_after_cursor_lists_each_of_a_users_groups_once(count: int, others: int, limit: int) -> None:
    """Emulator paging: pages of at most `limit`, a cursor while more remain, every membership exactly once."""
    state = OktaState()
    ids = state.seed({"users": [{"login": "a@example.com"}, {"login": "b@example.com"}],
                      "groups": [*({"name": f"a{n}", "members": ["a@example.com"]} for n in range(count)),
                                 *({"name": f"b{n}", "members": ["b@example.com"]} for n in range(others))]})
    seen: list[str] = []
    after: str | None = None
    while True:
        page, after = state.user_groups("a@example.com", after=after, limit=limit)
        assert len(page) <= limit
        seen += [g.name for g in page]
        if after is None:
            break
    assert sorted(seen) == sorted(f"a{n}" for n in range(count)) and len(ids["groups"]) == count + others


async def test_the_provider_reads_memberships_through_the_sdk_and_refuses_a_partial_list(okta: Emulator) -> None:
    """`member_groups` returns names and ids via okta-sdk; more than one page, or an unknown user, raises."""
    member, crowded, nobody = _user_id(), _user_id(), _user_id()
    okta.seed({"users": [{"id": u, "login": f"{u}@example.com"} for u in (member, crowded)],
               "groups": [{"name": f"{GROUP}-{member}", "members": [member]},
                          *({"name": f"many-{crowded}-{n}", "members": [crowded]} for n in range(201))]})
    settings = OktaSettings(org_url=okta.url, token=okta.admin_token)
    async with OktaProvider(settings, Governor("okta", concurrency=8)) as provider:
        groups = await provider.member_groups(f"{member}@example.com", None, exposure_id="exp-1")
        assert f"{GROUP}-{member}" in groups and any(g.startswith("00g") for g in groups)
        with pytest.raises(PermanentError, match="more groups than one page"):
            await provider.member_groups(crowded, None, exposure_id="exp-2")
        with pytest.raises(NotFound):
            await provider.member_groups(nobody, None, exposure_id="exp-3")


# -- end to end --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def running(bootstrap: str, okta: Emulator,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Harness, str, str]]:
    """One orchestrator with the group policy and the HTTP API; a detector's token for it."""
    root = tmp_path_factory.mktemp("groups")
    (root / "policy.yaml").write_text(POLICY)
    token = new_token()
    write_private(root / "tokens.json", json.dumps({"tokens": [token_entry(token, "det-1", [Role.DETECTOR])]}))
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, policy_file=root / "policy.yaml",
                              http_listen=f"127.0.0.1:{free_port()}", api_tokens_file=root / "tokens.json")
    async with Harness(settings) as harness:
        assert harness.orchestrator.api_url is not None
        yield harness, harness.orchestrator.api_url, token


def _status(okta: Emulator, uid: str) -> str:
    return str(next(u["status"] for u in okta.control("GET", "state")["users"] if u["id"] == uid))


async def test_a_member_of_a_protected_group_is_planned_not_suspended_and_a_non_member_is(
        running: tuple[Harness, str, str], okta: Emulator) -> None:
    """A member of the protected Okta group: `run.planned`, reason protected, nothing sent; a non-member is
    suspended; a user whose membership cannot be read is protected, with a note saying so."""
    harness = running[0]
    member, other, unknown = _user_id(), _user_id(), _user_id()
    okta.seed({"users": [{"id": u, "login": f"{u}@example.com", "sessions": 1} for u in (member, other)],
               "groups": [{"name": GROUP, "members": [member]}, {"name": f"staff-{other}", "members": [other]}]})
    events = [exposure("okta.user", credential={"owner": uid}, severity="critical") for uid in (member, other, unknown)]
    trails = await harness.run(*events)
    protected, plain, unchecked = (trails[e["id"]] for e in events)
    assert protected[-1]["event"] == "run.planned" and protected[-1]["reason"] == "protected"
    assert protected[-1]["protected_by"] == f"okta group {GROUP}" and "note" not in protected[-1]
    assert "step.started" not in events_of(protected) and _status(okta, member) == "ACTIVE"
    assert plain[-1]["event"] == "run.completed" and _status(okta, other) == "SUSPENDED"
    assert unchecked[-1]["event"] == "run.planned" and unchecked[-1]["reason"] == "protected"
    assert "could not be checked" in unchecked[-1]["note"] and "step.started" not in events_of(unchecked)


async def test_actor_is_audited_as_verified_only_when_a_signed_header_vouches_for_it(
        running: tuple[Harness, str, str]) -> None:
    """A record written straight to the topic claiming `actor: rt-admin` is audited (and stored)
    `actor_verified: false`; one posted to the API (actor set from the detector's token) and one the CLI signs
    are `actor_verified: true`.
    (A kind no playbook matches: the records are about who asked, not about any revocation.)"""
    harness, url, token = running
    claimed = exposure("inventory.thing", actor="rt-admin", credential={"id": "t-1"})
    posted = exposure("inventory.thing", actor="rt-admin", credential={"id": "t-2"})
    signed = exposure("inventory.thing", actor="rt-cli", credential={"id": "t-3"})
    await harness.publish(claimed)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.post("/v1/exposures", json=posted, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202
    await publish_record(harness.settings.bootstrap_servers, harness.settings.exposures_topic, signed["id"],
                         json.dumps(signed).encode(), role=Role.DETECTOR)
    trails = await harness.collect(claimed["id"], posted["id"], signed["id"])
    first = {key: trails[e["id"]][0] for key, e in (("claimed", claimed), ("posted", posted), ("signed", signed))}
    assert first["claimed"]["actor"] == "rt-admin" and first["claimed"]["actor_verified"] is False
    assert first["posted"]["actor"] == "det-1" and first["posted"]["actor_verified"] is True
    assert first["signed"]["actor"] == "rt-cli" and first["signed"]["actor_verified"] is True
    assert all(r["actor_verified"] is False for r in trails[claimed["id"]])
    store = harness.orchestrator.store
    assert store is not None  # the run store's row says the same
    assert [(await store.lookup(e["id"]))[0]["actor_verified"] for e in (claimed, posted, signed)] == [
        False, True, True]
    # A detector's signature vouches for the actor only: it never raises priority like a responder's.
    value = json.dumps(signed).encode()
    assert provenance.verified_role(value, [provenance.header(value, Role.DETECTOR)]) is None
    assert provenance.verified_publisher(value, [provenance.header(value, Role.DETECTOR)]) is Role.DETECTOR
