"""The safety rules as pure code and over an in-memory run store: the policy file and its matcher, the brake's
window, approval rules, the approvals book (requester refused, first answer wins, expiry), the guard, and the
shipped playbooks' reversible-first order."""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import provenance
from orchestrator.audit import Auditor
from orchestrator.auth import Role
from orchestrator.brake import RateBrake
from orchestrator.errors import PlaybookError
from orchestrator.events import Exposure
from orchestrator.guard import Guard, Verdict
from orchestrator.lanes import PrioritySlots, stepped_aside
from orchestrator.playbooks import load_playbooks, parse_playbook
from orchestrator.policy import BrakePolicy, Policy, Protected, load_policy, parse_policy
from orchestrator.providers import catalog
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR
from orchestrator.store import RunStore, content_of
from orchestrator.store.approvals import Answer, ApprovalBook, Decision, GateKind
from orchestrator.store.states import State, can_move
from orchestrator.store.store import utcnow

# -- the policy file ---------------------------------------------------------------------------------------


def test_a_policy_file_parses_protected_groups_brake_and_approval() -> None:
    """Every section of the documented example loads into the model."""
    policy = parse_policy(
        "protected:\n  okta:\n    owners: [breakglass-*@example.com, group:admins]\n"
        "    credentials: [00uADMIN000000000001]\n  aws:\n    owners: [prod-*]\n"
        "groups:\n  admins: [alice@example.com]\n"
        "brake: {limit: 7, window_s: 60, providers: {okta: 3}, timeout_s: 10, on_timeout: drop}\n"
        "approval: {timeout_s: 30}\n", "policy.yaml")
    assert policy.brake.limit_for("okta") == 3 and policy.brake.limit_for("aws") == 7
    assert policy.brake.on_timeout.value == "drop" and policy.approval.timeout_s == 30
    assert policy.protects("okta.user", "Alice@Example.com", None) == "okta owner group:admins"
    assert policy.protects("okta.session", None, "00uADMIN000000000001") is not None
    assert policy.protects("aws.access_key", "arn:aws:iam::1:user/prod-api", "AKIA0") == "aws owner prod-*"
    assert policy.protects("gcp.service_account_key", "prod-x", None) is None


@pytest.mark.parametrize(("text", "line", "words"), [
    ("protected:\n  okta:\n    owners: [a]\n  nope:\n    owners: [b]\n", 4, "unknown provider 'nope'"),
    ("brake:\n  limit: 0\n", 2, "greater than or equal to 1"),
    ("brake:\n  on_timeout: later\n", 2, "on_timeout"),
    ("protected:\n  okta:\n    ownerz: [a]\n", 3, "ownerz"),
    ("protected:\n  okta:\n    owners: ['*']\n", 3, "bare `*`"),
    ("protected:\n  okta:\n\n    owners: [group:ghosts]\n", 4, "unknown group 'ghosts'"),
    ("brake: [1, 2\n", 2, "not valid YAML"),
])
def test_a_bad_policy_is_refused_naming_file_line_and_reason(text: str, line: int, words: str) -> None:
    """Wrong providers, limits, keys, catch-all patterns and unknown groups stop start-up with file:line."""
    with pytest.raises(PlaybookError) as caught:
        parse_policy(text, "/etc/orch/policy.yaml")
    assert str(caught.value).startswith(f"/etc/orch/policy.yaml:{line}") and words in str(caught.value)


_NAME = st.text(alphabet=string.ascii_letters + string.digits + "@.-_/:", min_size=1, max_size=30)


@settings(max_examples=80, deadline=None)
@given(name=_NAME, cut=st.integers(min_value=0, max_value=30), shout=st.booleans())
def test_a_prefix_glob_protects_every_principal_it_starts(name: str, cut: int, shout: bool) -> None:
    """`prefix*` protects every owner starting with the prefix, whatever the case or padding."""
    prefix = name[:cut]
    policy = Policy(protected={"okta": Protected(owners=[prefix.replace("[", "?") + "*"])}) if prefix.strip() \
        else Policy(protected={"okta": Protected(owners=[name])})
    spelled = f"  {name.upper() if shout else name} "
    assert policy.protects("okta.user", spelled, None) is not None


@settings(max_examples=80, deadline=None)
@given(listed=st.lists(_NAME, min_size=1, max_size=5), other=_NAME)
def test_exact_entries_protect_exactly_the_listed_principals(listed: list[str], other: str) -> None:
    """Without glob characters, an entry protects that principal and no other (case aside)."""
    clean = [n for n in listed if not set(n) & set("*?[")] or ["x"]
    policy = Policy(protected={"aws": Protected(credentials=clean)})
    assert all(policy.protects("aws.access_key", None, n) for n in clean)
    expected = other.strip().casefold() in {n.strip().casefold() for n in clean}
    assert (policy.protects("aws.access_key", None, other) is not None) == expected
    assert policy.protects("okta.user", None, clean[0]) is None  # rules are per provider


@settings(max_examples=60, deadline=None)
@given(name=_NAME, char=st.integers(min_value=0, max_value=29))
def test_a_question_mark_stands_for_exactly_one_character(name: str, char: int) -> None:
    """`?` in place of one character matches that principal, and not one character longer."""
    index = char % len(name)
    pattern = name[:index] + "?" + name[index + 1:]
    if set(pattern) & set("*["):
        return
    policy = Policy(protected={"gcp": Protected(owners=[pattern])})
    assert policy.protects("gcp.service_account_key", name, None) is not None
    assert policy.protects("gcp.service_account_key", name + "x", None) is None


# -- the brake's window ------------------------------------------------------------------------------------


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_default_brake_admits_50_destructive_steps_in_5_minutes_then_engages_once() -> None:
    """Default policy: 50 steps pass, the 51st engages the brake (a new storm), later ones wait without paging."""
    clock = Clock()
    default = load_policy(None).brake  # no ORCHESTRATOR_POLICY_FILE
    assert (default.limit, default.window_s, default.on_timeout.value) == (50, 300.0, "wait")
    brake = RateBrake(default, clock=clock)
    assert all(brake.admit({"okta": 1}).go for _ in range(50))
    first = brake.admit({"aws": 1})
    assert not first.go and first.engaged_now and "more than 50" in str(first.reason)
    later = [brake.admit({"gcp": 1}) for _ in range(20)]
    assert not any(a.go or a.engaged_now for a in later)
    clock.now += 301  # the window emptied, but an engaged brake waits for an admin
    assert not brake.admit({"okta": 1}).go


def test_a_provider_limit_engages_below_the_overall_one() -> None:
    """Per-provider limits count that provider's steps only."""
    brake = RateBrake(BrakePolicy(limit=100, providers={"okta": 2}), clock=Clock())
    assert brake.admit({"okta": 1}).go and brake.admit({"okta": 1}).go and brake.admit({"aws": 5}).go
    assert not brake.admit({"okta": 1}).go


def test_a_released_brake_lets_the_storm_through_and_rearms_when_the_rate_falls() -> None:
    """After release the storm passes; once the window is under the limit the next storm engages again."""
    clock = Clock()
    brake = RateBrake(BrakePolicy(limit=3, window_s=10), clock=clock)
    for _ in range(3):
        brake.admit({"okta": 1})
    assert brake.admit({"okta": 1}).engaged_now
    brake.release()
    assert all(brake.admit({"okta": 1}).go for _ in range(10))
    clock.now += 11
    assert all(brake.admit({"okta": 1}).go for _ in range(3))
    assert brake.admit({"okta": 1}).engaged_now


def test_a_held_brake_holds_every_run_and_pages_nobody() -> None:
    """Hold: runs wait whatever the rate, and it is not a storm (no page)."""
    brake = RateBrake(BrakePolicy(), clock=Clock())
    brake.hold()
    answer = brake.admit({"okta": 1})
    assert not answer.go and not answer.engaged_now and "held" in str(answer.reason)


# -- states and playbooks ----------------------------------------------------------------------------------


def test_awaiting_approval_is_live_and_ends_running_or_denied() -> None:
    """running → awaiting_approval → running | denied; denied is final."""
    assert not State.AWAITING_APPROVAL.terminal and State.DENIED.terminal
    assert can_move(State.RUNNING, State.AWAITING_APPROVAL) and can_move(State.AWAITING_APPROVAL, State.RUNNING)
    assert can_move(State.AWAITING_APPROVAL, State.DENIED) and not can_move(State.DENIED, State.RUNNING)


_BOOK = "name: p\nmatch: {kinds: [okta.user]}\nsteps:\n  - {name: s, action: okta.suspend_user, " \
        "params: {user: {field: credential.owner}}}\n"


def test_approval_rules_require_every_condition_given() -> None:
    """`approval: required` always; a rule only when severity, kind and target count all match."""
    actions = catalog()
    always = parse_playbook(_BOOK + "approval: required\n", "p.yaml", actions)
    rule = parse_playbook(_BOOK + "approval: {severities: [critical], min_targets: 1}\n", "p.yaml", actions)
    plan = [{"target": "user=x", "destructive": True}]
    high = _exposure(severity="high")
    critical = _exposure(severity="critical")
    assert always.approval_needed(high, plan) and not rule.approval_needed(high, plan)
    assert rule.approval_needed(critical, plan) and not rule.approval_needed(critical, [])
    with pytest.raises(PlaybookError, match=r"p.yaml:\d+: approval"):
        parse_playbook(_BOOK + "approval: maybe\n", "p.yaml", actions)


def test_shipped_playbooks_put_reversible_steps_before_irreversible_ones() -> None:
    """Deactivate before delete, quarantine before rotate, suspend before clearing: the first effect can be undone."""
    actions = catalog()
    for playbook in load_playbooks(DEFAULT_PLAYBOOKS_DIR, actions):
        reversible = [actions[s.action].undo is not None for s in playbook.steps]
        assert reversible == sorted(reversible, reverse=True), playbook.name
    assert all(actions[spec.undo].destructive is False for spec in actions.values() if spec.undo)


def test_only_a_role_vouched_for_by_a_signed_header_bypasses_the_brake() -> None:
    """A responder's or admin's record (signed header) bypasses; a forged or misplaced header, or none, does not."""
    guard = Guard(Policy())
    value = b'{"id": "x", "credential": {"kind": "okta.user", "owner": "u"}}'
    name, signed = provenance.header(value, Role.RESPONDER)
    assert guard.bypasses_brake(provenance.verified_role(value, [(name, signed)]))
    assert not guard.bypasses_brake(provenance.verified_role(value, [(name, b"responder:" + b"0" * 64)]))
    assert not guard.bypasses_brake(provenance.verified_role(value + b" ", [(name, signed)]))
    assert not guard.bypasses_brake(None) and not guard.bypasses_brake(Role.DETECTOR)


# -- approvals over a store --------------------------------------------------------------------------------


def _exposure(**fields: Any) -> Exposure:
    document = {"id": f"e-{fields.pop('n', 1)}", "credential": {"kind": "okta.user", "owner": "u@example.com"},
                "source": {"detector": "scanner"}, **fields}
    return Exposure.model_validate(document)


class ListSink:
    """An audit sink that keeps the decoded records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def write(self, key: str, record: bytes) -> Any:
        self.records.append(orjson.loads(record))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture
async def book() -> AsyncIterator[ApprovalBook]:
    """An approvals book over a private in-memory run store."""
    store = RunStore.in_memory()
    yield ApprovalBook(store)
    await store.close()


async def test_the_requester_cannot_answer_and_the_first_answer_wins(book: ApprovalBook) -> None:
    """alice's own approval is refused; bob approves; carol's later denial finds bob's answer."""
    await book.open(run_id="r1", exposure_id="e1", row_id=None, kind=GateKind.APPROVAL, requester="alice",
                    reason="x", plan=[], expires_at=utcnow() + timedelta(hours=1))
    assert (await book.answer("r1", Decision.APPROVED, by=" Alice ", why=None)).answer is Answer.OWN_REQUEST
    taken = await book.answer("e1", Decision.APPROVED, by="bob", why="checked the detector hit")
    assert taken.answer is Answer.TAKEN and taken.gate is not None and taken.gate.decided_by == "bob"
    late = await book.answer("r1", Decision.DENIED, by="carol", why=None)
    assert late.answer is Answer.ALREADY and late.gate is not None and late.gate.decision is Decision.APPROVED
    assert (await book.answer("nope", Decision.DENIED, by="carol", why=None)).answer is Answer.UNKNOWN


async def test_a_pending_approval_expires_to_denied_in_the_audit_trail(book: ApprovalBook) -> None:
    """Nobody answers within approval.timeout_s: the run ends `run.denied`, reason approval expired."""
    sink = ListSink()
    guard = Guard(Policy.model_validate({"approval": {"timeout_s": 0.2}}), book, poll_s=0.05)
    await guard.start()
    playbook = parse_playbook(_BOOK + "approval: required\n", "p.yaml", catalog())
    trail = Auditor(sink, echo=False).trail("e-1")
    plan = [{"step": "s", "action": "okta.suspend_user", "target": "user=u", "destructive": True}]
    try:
        async with asyncio.timeout(10):
            clearance = await guard.clear(_exposure(), playbook, plan, trail, run_id="r-exp", row_id=None)
    finally:
        await guard.close()
    assert clearance.verdict is Verdict.DENIED and clearance.fields["reason"] == "approval expired"
    assert clearance.fields["decided_by"] == "expiry"
    waiting = next(r for r in sink.records if r["event"] == "run.awaiting_approval")
    assert waiting["requester"] == "scanner" and waiting["plan"] == plan and waiting["kind"] == "approval"


async def test_the_brake_timeout_policy_drop_ends_held_runs(book: ApprovalBook) -> None:
    """on_timeout: drop: a run held past the brake's timeout ends denied, dropped; one page for the storm."""
    pages: list[tuple[str, dict[str, Any]]] = []

    class Pager:
        def page(self, event: str, fields: Any) -> None:
            pages.append((event, dict(fields)))

    policy = Policy.model_validate({"brake": {"limit": 1, "timeout_s": 0.2, "on_timeout": "drop"}})
    guard = Guard(policy, book, Pager(), poll_s=0.05)
    await guard.start()
    playbook = parse_playbook(_BOOK, "p.yaml", catalog())
    plan = [{"step": "s", "action": "okta.suspend_user", "target": "user=u", "destructive": True}]
    auditor = Auditor(ListSink(), echo=False)
    try:
        async with asyncio.timeout(10):
            first = await guard.clear(_exposure(n=1), playbook, plan, auditor.trail("e-1"), run_id="r1", row_id=None)
            held = await asyncio.gather(*(guard.clear(_exposure(n=n), playbook, plan, auditor.trail(f"e-{n}"),
                                                      run_id=f"r{n}", row_id=None) for n in (2, 3)))
    finally:
        await guard.close()
    assert first.verdict is Verdict.GO
    assert [c.verdict for c in held] == [Verdict.DENIED] * 2 and held[0].fields["decision"] == "dropped"
    assert [e for e, _ in pages] == ["brake.engaged"]
    assert json.dumps(pages)  # pages carry plain, non-secret fields only


async def test_a_run_resumed_after_a_crash_keeps_the_answer_its_first_run_got(book: ApprovalBook) -> None:
    """Approved, then its owner died mid-run: the resumed run (a new run id) goes on without asking again."""
    exposure = _exposure(n=9)
    claim = await book.store.claim(content_of(exposure))
    await book.open(run_id="first", exposure_id=exposure.id, row_id=claim.row_id, kind=GateKind.APPROVAL,
                    requester="scanner", reason=None, plan=[], expires_at=utcnow() + timedelta(hours=1))
    await book.answer("first", Decision.APPROVED, by="bob", why="real leak")
    sink = ListSink()
    playbook = parse_playbook(_BOOK + "approval: required\n", "p.yaml", catalog())
    plan = [{"step": "s", "action": "okta.suspend_user", "target": "user=u", "destructive": True}]
    clearance = await Guard(Policy(), book).clear(exposure, playbook, plan, Auditor(sink, echo=False).trail("e-9"),
                                                  run_id="second", row_id=claim.row_id, resumed=True)
    assert clearance.verdict is Verdict.GO
    assert [(r["event"], r["decided_by"]) for r in sink.records] == [("run.approved", "bob")]


async def test_a_hold_and_a_release_in_the_store_reach_every_instance(book: ApprovalBook) -> None:
    """`brake hold` from one process holds another's brake at its next poll; `brake release` lets it go again."""
    guard = Guard(Policy(), book)
    await guard.start()
    try:
        await book.hold_brake(by="root", why="investigating")
        await guard.poll()
        assert guard.brake.held and not guard.brake.admit({"okta": 1}).go
        assert (await book.brake_state())["updated_by"] == "root"
        await book.release_brake(by="root", why="done")
        await guard.poll()
        assert not guard.brake.held and guard.brake.admit({"okta": 1}).go
    finally:
        await guard.close()


class Pages:
    """A pager that keeps its pages."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.arrived = asyncio.Event()

    def page(self, event: str, fields: Any) -> None:
        self.sent.append(event)
        self.arrived.set()


async def test_a_brake_left_alone_pages_again_and_keeps_waiting_until_released(book: ApprovalBook) -> None:
    """Default on_timeout (wait): past the timeout on-call is paged again, the run still waits; release lets it go."""
    pages = Pages()
    guard = Guard(Policy.model_validate({"brake": {"limit": 1, "timeout_s": 0.2}}), book, pages, poll_s=0.05)
    await guard.start()
    playbook = parse_playbook(_BOOK, "p.yaml", catalog())
    plan = [{"step": "s", "action": "okta.suspend_user", "target": "user=u", "destructive": True}]
    auditor = Auditor(ListSink(), echo=False)
    try:
        assert (await guard.clear(_exposure(n=1), playbook, plan, auditor.trail("e-1"), run_id="w1",
                                  row_id=None)).verdict is Verdict.GO
        held = asyncio.create_task(guard.clear(_exposure(n=2), playbook, plan, auditor.trail("e-2"), run_id="w2",
                                               row_id=None))
        async with asyncio.timeout(10):
            while "brake.still_engaged" not in pages.sent:
                pages.arrived.clear()
                await pages.arrived.wait()
        assert not held.done()
        await book.release_brake(by="root", why=None)
        async with asyncio.timeout(10):
            released = await held
    finally:
        await guard.close()
    assert released.verdict is Verdict.GO and pages.sent[0] == "brake.engaged"


async def test_a_denial_ends_the_run_with_who_when_and_why(book: ApprovalBook) -> None:
    """bob denies: the run's clearance is DENIED with bob, the time and his reason, for `run.denied`."""
    guard = Guard(Policy(), book, poll_s=0.05)
    await guard.start()
    playbook = parse_playbook(_BOOK + "approval: required\n", "p.yaml", catalog())
    plan = [{"step": "s", "action": "okta.suspend_user", "target": "user=u", "destructive": True}]
    try:
        waiting = asyncio.create_task(guard.clear(_exposure(n=4), playbook, plan,
                                                  Auditor(ListSink(), echo=False).trail("e-4"), run_id="d1",
                                                  row_id=None))
        async with asyncio.timeout(10):
            await _opened(book, "d1")
            await book.answer("d1", Decision.DENIED, by="bob", why="a test fixture, not a leak")
            clearance = await waiting
    finally:
        await guard.close()
    assert clearance.verdict is Verdict.DENIED and clearance.fields["reason"] == "denied"
    assert (clearance.fields["decided_by"], clearance.fields["why"]) == ("bob", "a test fixture, not a leak")
    assert clearance.fields["decided_at"].endswith("Z")


async def _opened(book: ApprovalBook, run_id: str) -> None:
    """Return once the run's gate is in the store (polled: the guard writes it from another task)."""
    for _ in range(500):
        if await book.get(run_id) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no gate for {run_id}")


async def test_a_run_waiting_for_a_person_gives_its_run_slot_back_meanwhile() -> None:
    """While stepped aside another run takes the only slot; after, and after a cancelled wait, the count is whole."""
    slots = PrioritySlots(1)
    aside, resume = asyncio.Event(), asyncio.Event()

    async def waiting() -> None:
        async with slots.slot(1):
            async with stepped_aside():
                aside.set()
                await resume.wait()

    async with asyncio.timeout(5):
        task = asyncio.create_task(waiting())
        await aside.wait()
        async with slots.slot(0):  # the waiting run's slot, meanwhile
            pass
        resume.set()
        await task
        cancelled = asyncio.create_task(waiting())
        aside.clear()
        resume.clear()
        await aside.wait()
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        async with slots.slot(0):
            assert slots.waiting == 0 and slots._free == 0  # exactly one slot, taken now
    assert slots._free == 1
