"""Identifier grammars: generated valid ids are accepted, and nothing that could redirect a URL path gets through."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator import grammar
from orchestrator.grammar import RESERVED, Grammar, segment
from orchestrator.providers import catalog

_ALNUM = string.ascii_letters + string.digits
_BASE32 = string.ascii_uppercase + "234567"
_HEX = "0123456789abcdef"
_IAM = _ALNUM + "+=,.@_-"


def _text(alphabet: str, size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size if max_size is None else max_size)


def _no_dots(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy.filter(lambda v: v not in (".", "..") and v.casefold() not in RESERVED)


#: A generator of valid values for each grammar, built from the providers' documented shapes.
VALID: dict[str, st.SearchStrategy[str]] = {
    grammar.OKTA_USER_ID.name: _text(_ALNUM, 17).map(lambda s: "00u" + s),
    grammar.OKTA_USER.name: st.one_of(_text(_ALNUM, 17).map(lambda s: "00u" + s),
                                      st.tuples(_text(_ALNUM, 1, 30), _text(string.ascii_lowercase, 2, 20))
                                      .map(lambda t: f"{t[0]}@{t[1]}.com")),
    grammar.OKTA_SESSION_ID.name: _text(_ALNUM + "_-", 22, 30).map(lambda s: "102" + s),
    grammar.OKTA_API_TOKEN_ID.name: _text(_ALNUM, 17).map(lambda s: "00T" + s),
    grammar.OKTA_API_TOKEN.name: _text(_ALNUM + "_-", 40).map(lambda s: "00" + s),
    grammar.AWS_ACCESS_KEY_ID.name: st.tuples(st.sampled_from(["AKIA", "ASIA"]), _text(_BASE32, 16))
    .map("".join),
    grammar.AWS_USER.name: _no_dots(_text(_IAM, 1, 64)),
    grammar.AWS_ROLE.name: st.tuples(st.text(string.digits, min_size=12, max_size=12),
                                     _no_dots(_text(_IAM, 1, 64)))
    .map(lambda t: f"arn:aws:iam::{t[0]}:role/service/{t[1]}"),
    grammar.GCP_KEY_ID.name: _text(_HEX, 40),
    grammar.GCP_SERVICE_ACCOUNT.name: st.tuples(_text(string.ascii_lowercase, 6, 30),
                                                _text(string.ascii_lowercase, 6, 30))
    .map(lambda t: f"{t[0]}@{t[1]}.iam.gserviceaccount.com"),
    grammar.GITHUB_TOKEN.name: st.tuples(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]),
                                         _text(_ALNUM, 36)).map("".join),
    grammar.SLACK_TOKEN.name: st.tuples(st.sampled_from(["xoxb", "xoxp", "xoxe.xoxp", "xapp"]),
                                        _text(_ALNUM + "-", 10, 60)).map(lambda t: f"{t[0]}-{t[1]}"),
}
GRAMMARS = {g.name: g for g in grammar.ALL}
#: Things that must never pass whatever grammar they are offered to, ARNs included.
HOSTILE_ANYWHERE = st.one_of(
    st.sampled_from(sorted(RESERVED)).flatmap(lambda w: st.sampled_from([w, w.upper(), w.title()])),
    st.sampled_from([".", "..", "%2e%2e", "%2E.", ".%2e", "..%2f", "a/../b", "..\\", "%2F", "x%00", "a/./b"]),
    st.tuples(st.text(_ALNUM, max_size=20), st.sampled_from(["/../", "/./", "\\..\\"]), st.text(_ALNUM, max_size=20))
    .map("".join),
    st.tuples(st.text(_ALNUM, max_size=20), st.characters(min_codepoint=0, max_codepoint=31),
              st.text(_ALNUM, max_size=20)).map(lambda t: t[0] + t[1] + t[2]),
)
#: ...and, for identifiers that go into a URL path, any `/` or `\\` at all.
HOSTILE = st.one_of(HOSTILE_ANYWHERE, st.tuples(st.text(_ALNUM, max_size=20), st.sampled_from(["/", "\\"]),
                                                st.text(_ALNUM, max_size=20)).map("".join))


@pytest.mark.parametrize("name", sorted(VALID))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_generated_valid_ids_are_accepted(name: str, data: st.DataObject) -> None:
    """Every id generated from a provider's documented shape passes its grammar."""
    value = data.draw(VALID[name])
    assert GRAMMARS[name].problem(value) is None, value


@pytest.mark.parametrize("name", sorted(GRAMMARS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_slashes_dot_segments_control_characters_and_reserved_words_are_refused(name: str, data: st.DataObject) -> None:
    """`current`, `me`, `.`, `..` (also encoded) and control characters fail every grammar; `/` and `\\` fail
    every grammar of an identifier that goes into a URL path."""
    value = data.draw(HOSTILE if GRAMMARS[name].segment else HOSTILE_ANYWHERE)
    assert GRAMMARS[name].problem(value) is not None


@settings(max_examples=100, deadline=None)
@given(value=HOSTILE)
def test_a_hostile_value_is_never_a_path_segment(value: str) -> None:
    """`segment` refuses dot segments and reserved words, and encodes `/`, so nothing leaves its segment."""
    try:
        encoded = segment(value)
    except ValueError:
        return
    assert "/" not in encoded and encoded not in (".", "..") and "\\" not in encoded


def test_access_key_ids_are_base32_and_twenty_characters() -> None:
    """AKIA/ASIA plus 16 of A-Z2-7: a hex digit 0, 1, 8 or 9, a wrong prefix or a wrong length is refused."""
    key = grammar.AWS_ACCESS_KEY_ID
    assert key.problem("AKIAIOSFODNN7EXAMPLE") is None
    for bad in ("AKIAIOSFODNN7EXAMPL0", "AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPLEE", "AGPAIOSFODNN7EXAMPLE",
                "akiaiosfodnn7example"):
        assert key.problem(bad) is not None, bad


def test_iam_names_follow_the_documented_character_set_and_length() -> None:
    """IAM names: 1-64 of letters, digits and +=,.@_-; 65 characters or a space are refused."""
    user = grammar.AWS_USER
    assert user.problem("deploy.bot+ci=1,x@corp_-") is None
    assert user.problem("arn:aws:iam::123456789012:user/team/deploy") is None
    assert user.problem("a" * 65) is not None and user.problem("two words") is not None
    assert user.problem("arn:aws:iam::123456789012:user/../admin") is not None


def test_a_bad_target_is_a_problem_naming_the_parameter_never_its_value() -> None:
    """`ActionSpec.invalid` names the parameter and the expected shape, not the value it refused."""
    spec = catalog()["okta.revoke_api_token"]
    problem = spec.invalid({"token_id": "current"})
    assert problem is not None and "'token_id'" in problem and "reserved" in problem
    secret = "../" + "x" * 30
    leaked = spec.invalid({"token": SecretStr(secret)})
    assert leaked is not None and "'token'" in leaked and secret not in leaked
    assert spec.invalid({"token_id": "00T" + "a" * 17}) is None


def test_every_identifier_parameter_declares_a_grammar() -> None:
    """Each text parameter of every action has a grammar: none takes free text to a provider."""
    untyped = [f"{spec.name}.{name}" for spec in catalog().values() for name, param in spec.params.items()
               if param.type.value == "text" and param.grammar is None]
    assert untyped == []


def test_a_grammar_is_its_pattern_and_its_rules() -> None:
    """A custom grammar applies the shared rules before its pattern."""
    word = Grammar("word", r"[a-z.]+", "a word")
    assert word.problem("ok") is None and word.problem("a.b") is None
    assert word.problem("..") is not None and word.problem("me") is not None and word.problem("A") is not None
