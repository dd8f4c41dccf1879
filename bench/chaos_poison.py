"""Poison records for the chaos suite, drawn by hypothesis: every shape a hostile or broken publisher sends.

Random bytes, invalid UTF-8, lone surrogates, deep nesting, huge numbers, wrong types, UTF-16, tombstones and
1 MB values, each with a random key and odd headers (empty, long, control characters, not UTF-8). Every one
of them must end in `exposure.rejected` with a reason. The records are drawn by a real `@given` test run
(generation phase only, seeded), not by `.example()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

KINDS = ("random-bytes", "invalid-utf8", "lone-surrogate", "deep-nesting", "huge-number", "wrong-types",
         "utf16", "tombstone", "huge-value")
#: Python's recursion limit and the JSON number limit sit far below these; the broker takes them all.
_MAX_DEPTH = 20_000
_HUGE_VALUE_BYTES = 1024 * 1024 + 17
_OVER_LIMIT_BYTES = 64 * 1024 + 17


class RawKey(str):
    """A header key that reaches the wire as bytes that are not UTF-8 (aiokafka encodes keys itself)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawKey:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """The raw bytes, whatever encoding is asked for."""
        return self.raw


@dataclass(frozen=True)
class Poison:
    """One record to publish: value (None is a tombstone), key and headers, and what kind of poison it is."""

    kind: str
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                          st.text(max_size=20))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                     max_leaves=8)


_CONTAINERS = st.one_of(st.lists(_JSON, max_size=3), st.dictionaries(st.text(max_size=4), _JSON, max_size=3))
_NOT_TEXT = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), _CONTAINERS)


@st.composite
def _wrong_types(draw: st.DrawFn) -> bytes:
    """A plausible exposure with one field of a type no lax parser coerces (so never a valid one)."""
    doc: dict[str, object] = {"id": "wrong-" + draw(st.uuids()).hex,
                              "credential": {"kind": "okta.user", "owner": "someone@example.com"}}
    wrong = draw(st.sampled_from(["id", "credential", "kind", "owner", "severity", "dry_run", "source"]))
    value = draw({"severity": st.one_of(st.integers(), st.text(alphabet="0123456789!?", min_size=1)),
                  "dry_run": _CONTAINERS, "source": st.one_of(st.integers(), st.booleans(), st.lists(_JSON)),
                  "credential": st.one_of(st.integers(), st.booleans(), st.text(), st.lists(_JSON))}
                 .get(wrong, _NOT_TEXT))
    if wrong in ("kind", "owner"):
        doc["credential"] = {"kind": "okta.user", "owner": value} if wrong == "owner" else {"kind": value}
    else:
        doc[wrong] = value
    return json.dumps(doc).encode()


@st.composite
def _value(draw: st.DrawFn, kind: str) -> bytes | None:
    body = json.dumps({"id": draw(st.text(max_size=20)), "credential": {"kind": "okta.user",
                                                                        "owner": draw(st.text(max_size=20))}})
    if kind == "random-bytes":
        return draw(st.binary(max_size=2000))
    if kind == "invalid-utf8":
        cut = draw(st.integers(0, len(body)))
        return body[:cut].encode() + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xf0\x28\x8c"])) + \
            body[cut:].encode()
    if kind == "lone-surrogate":
        surrogate = draw(st.sampled_from(["\\ud800", "\\udfff", "\\udbff"]))
        where = draw(st.sampled_from(["id", "owner", "secret"]))
        if where == "secret":
            serial = draw(st.integers(0, 10**6))
            secret = "xoxb-" + surrogate * 8
            return f'{{"id":"x{serial}","credential":{{"kind":"slack.token","secret":"{secret}"}}}}'.encode()
        identity = surrogate if where == "id" else "s-1"
        owner = surrogate if where == "owner" else "x@example.com"
        return f'{{"id":"{identity}","credential":{{"kind":"okta.user","owner":"{owner}"}}}}'.encode()
    if kind == "deep-nesting":
        depth = draw(st.integers(1_000, _MAX_DEPTH))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = '{"id":"deep"}' if opener == "[" else "1"
        return (opener * depth + inner + closer * depth).encode()
    if kind == "huge-number":
        digits = draw(st.integers(4_301, 50_000))
        place = draw(st.sampled_from(["top", "id", "nested"]))
        number = "9" * digits
        if place == "id":
            return f'{{"id":{number},"credential":{{"kind":"okta.user"}}}}'.encode()
        nested = number if place == "nested" else "1"
        return f'{{"id":"n-1","credential":{{"kind":"okta.user","owner":"a@b.c","n":{nested}}},"x":{number}}}'.encode()
    if kind == "wrong-types":
        return draw(_wrong_types())
    if kind == "utf16":
        return body.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    if kind == "tombstone":
        return None
    return draw(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))).encode()  # grown by `generate`


def _huge(filler: bytes, size: int) -> bytes:
    """A record whose one value is `size` bytes of `filler` (kept out of hypothesis: it draws small)."""
    owner = filler.decode() * (size // len(filler))
    return json.dumps({"id": "huge", "credential": {"kind": "okta.user", "owner": owner}}, ensure_ascii=False).encode()


_HEADER_KEY = st.one_of(st.just(""), st.text(max_size=30), st.text(alphabet=st.characters(max_codepoint=31),
                                                                  max_size=5),
                        st.integers(200, 2000).map(lambda n: "k" * n),
                        st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)).map(RawKey))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def poison(draw: st.DrawFn) -> Poison:
    """One poison record (a `huge-value` holds only its filler character until `generate` grows it)."""
    kind = draw(st.sampled_from(KINDS))
    key = draw(st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=20).map(str.encode)))
    headers = tuple(draw(st.lists(st.tuples(_HEADER_KEY, st.binary(max_size=32)), max_size=3)))
    value = draw(_value(kind))
    if value is None and key is None:  # a tombstone needs a key (the producer refuses a record with neither)
        key = b"tombstone"
    return Poison(kind, value, key, headers)


def generate(count: int, *, seed_value: int, max_huge: int) -> list[Poison]:
    """`count` poison records drawn by a seeded `@given` run; at most `max_huge` of them 1 MB values, the
    other `huge-value` records just above the orchestrator's 64 KiB limit (the broker would hold them all)."""
    drawn: list[Poison] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def draw_all(data: st.DataObject) -> None:
        drawn.append(data.draw(poison()))

    while len(drawn) < count:  # hypothesis may stop a little short of max_examples: draw again
        draw_all()
    grown, huge = [], 0
    for record in drawn[:count]:
        if record.kind == "huge-value" and record.value is not None:
            size = _HUGE_VALUE_BYTES if huge < max_huge else _OVER_LIMIT_BYTES
            huge += size == _HUGE_VALUE_BYTES
            record = Poison(record.kind, _huge(record.value, size), record.key, record.headers)
        grown.append(record)
    return grown
