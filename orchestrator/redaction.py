"""Keeping secrets out of everything written: logs, audit records, errors and dead-lettered records.

Three layers, each enough on its own for its case:
1. `SecretStr` values are never rendered (the event model holds `credential.secret` as one);
2. the secret values of exposures being handled are registered here, and any string value that contains
   one has it replaced, whatever path it took (an SDK error echoing a token, say) and in every encoding a
   value can carry it (`secret_forms`), including a prefix of 8+ characters that a foreign truncation left
   (at the end of the string, or before an ellipsis);
3. well-known token formats are masked even when nobody registered them.

Redaction is structural: it replaces parts of string *values* before anything is rendered, never text in
rendered JSON, so a record stays valid JSON with the same fields whatever the secrets are. Identifier
fields (`IDENTIFIER_FIELDS`: the event name, ids, playbook and step names) are never touched, so one
exposure's secret cannot change another exposure's record's identity or event (a secret `complete` must
not turn `run.completed` into something else). Truncate only after redacting: `clip` does both in order.

The process-wide `REDACTOR` is the only global state of the package: logging processors need it before any
exposure arrives, and every writer must share the same set of live secrets.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

from orchestrator.events import fingerprint

MASK = "[REDACTED]"
#: Shorter strings are never scanned and shorter secrets never registered: no token format and no secret we
#: accept is this short. It is also the shortest truncated prefix of a secret that is masked.
_SHORTEST_SECRET = 8
#: Fields that name things rather than describe them; never redacted (see the module docstring).
IDENTIFIER_FIELDS = frozenset({"event", "ts", "exposure_id", "run_id", "playbook", "step", "action", "severity"})
#: A log or audit event name (`run.completed`, `orchestrator.started`): the `event` of a log line is free
#: text only when it is not one of these (a dependency's message).
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")
#: Characters a truncating writer may append after a cut (an ellipsis, a closing quote).
_TRAILERS = " .\u2026\"'`)]}>\t\r\n"
#: Width of the substrings indexed to find candidate secrets in a value; forms are at least 2*_GRAM-1 long
#: so every occurrence covers one gram starting at a multiple of _GRAM (the value is probed only there).
_GRAM = 4

#: Well-known token formats, each with the lower-case literals one of which any match contains. Scanning
#: for the literals first is ~15x cheaper than running the patterns over every record; a format without a
#: literal (Okta's bare `00…` tokens) has a pattern of its own that starts with one.
_TOKEN_FORMATS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    (("github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    (("xox",), r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
    (("xapp-",), r"\bxapp-[A-Za-z0-9-]{10,}"),
    (("ssws",), r"\b(?i:SSWS)\s*[A-Za-z0-9_-]{20,}"),
    ((), r"\b00[A-Za-z0-9_-]{40}\b"),
    (("bearer",), r"\b(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*"),
    (("ya29.",), r"\bya29\.[A-Za-z0-9._-]{16,}"),
    (("aws_secret_access_key",), r"(?i:aws_secret_access_key)[\"'\s:=]+[A-Za-z0-9/+=]{40}"),
    (("private key",), r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
)
_TOKEN_PATTERNS = re.compile("|".join(pattern for _, pattern in _TOKEN_FORMATS))
_TOKEN_LITERALS = re.compile("|".join(re.escape(literal) for literals, _ in _TOKEN_FORMATS for literal in literals))
_OKTA_TOKEN_HINT = re.compile(r"00[A-Za-z0-9_-]{40}")


def _may_hold_token(value: str) -> bool:
    return _TOKEN_LITERALS.search(value.lower()) is not None or _OKTA_TOKEN_HINT.search(value) is not None


def secret_forms(secret: str) -> frozenset[str]:
    """Every text a value can carry `secret` as: raw, JSON-escaped (ASCII or not, `/` escaped or not),
    URL-encoded (`quote`, `quote_plus`, either hex case), and base64 of the raw or JSON-escaped secret
    (standard and URL-safe, padded or not, alone or at any of the 3 byte alignments inside a larger blob)."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms |= {form.replace("/", "\\/") for form in forms}
    # surrogatepass: a JSON string may hold a lone surrogate, and so may a secret decoded from one.
    for encoded in (quote(secret, safe="", errors="surrogatepass"), quote(secret, errors="surrogatepass"),
                    quote_plus(secret, errors="surrogatepass"), quote_plus(secret, safe="/", errors="surrogatepass")):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded))
    # Base64 of the secret as raw UTF-8 or inside JSON (a JSON body, encoded, echoed back).
    for text in {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
        data = text.encode("utf-8", "surrogatepass")
        for offset in range(3):
            # Only the characters whose 6 bits all come from the secret: the same whatever surrounds it.
            first_whole, end = (8 * offset + 5) // 6, 8 * (offset + len(data)) // 6
            core = base64.b64encode(bytes(offset) + data).decode()[first_whole:end]
            forms.update((core, core.replace("+", "-").replace("/", "_")))
    return frozenset(form for form in forms if len(form) >= _SHORTEST_SECRET)


def _mask_for(secret: str, forms: frozenset[str]) -> str:
    """`[REDACTED <fingerprint>]`, unless the secret is part of that text (`REDACTED`, say): then a mask
    that cannot hold it, so no output ever shows the secret, not even as part of a mask."""
    tag = fingerprint(secret)
    for mask in (f"[REDACTED {tag}]", f"[{tag.replace(':', ' ')}]", "*" * _SHORTEST_SECRET, "#" * _SHORTEST_SECRET):
        if not any(form in mask for form in forms):
            return mask
    return "#" * _SHORTEST_SECRET  # unreachable: a secret of 8+ characters cannot be both `***…` and `###…`


def _grams(form: str) -> set[str]:
    return {form[i:i + _GRAM] for i in range(len(form) - _GRAM + 1)}


class Redactor:
    """Masks registered secret values and well-known token formats in strings and nested structures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: Counter[str] = Counter()
        #: Each live secret's forms, kept so releasing it need not compute them again.
        self._forms_of: dict[str, frozenset[str]] = {}
        #: form → [mask, registrations]; a form two secrets share is masked until both are released.
        self._forms: dict[str, list[Any]] = {}
        #: gram → the live forms containing it: finds candidate forms without a regex rebuilt on each change.
        self._index: dict[str, set[str]] = {}

    def register(self, secret: SecretStr | str | None) -> None:
        """Mask this secret from now on, until `release`d as many times as registered."""
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not value or len(value) < _SHORTEST_SECRET:
            return
        with self._lock:
            self._live[value] += 1
            if self._live[value] > 1:
                return
            forms = self._forms_of[value] = secret_forms(value)
            mask = _mask_for(value, forms)
            index = self._index
            for form in forms:
                entry = self._forms.setdefault(form, [mask, 0])
                entry[1] += 1
                if entry[1] > 1:
                    continue
                for gram in _grams(form):
                    holders = index.get(gram)
                    if holders is None:
                        index[gram] = {form}
                    else:
                        holders.add(form)

    def release(self, secret: SecretStr | str | None) -> None:
        """Stop tracking one registration of this secret."""
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not value or len(value) < _SHORTEST_SECRET:
            return
        with self._lock:
            if value not in self._live:  # never registered (or released too often): nothing to undo
                return
            if self._live[value] > 1:
                self._live[value] -= 1
                return
            del self._live[value]
            index = self._index
            for form in self._forms_of.pop(value):
                entry = self._forms[form]
                entry[1] -= 1
                if entry[1] > 0:
                    continue
                del self._forms[form]
                for gram in _grams(form):
                    holders = index[gram]
                    holders.discard(form)
                    if not holders:
                        del index[gram]

    def text(self, value: str) -> str:
        """`value` with every live secret (in any of its forms) and well-known token masked."""
        if len(value) < _SHORTEST_SECRET:
            return value
        if self._index:
            value = self._mask_live(value)
        return _TOKEN_PATTERNS.sub(MASK, value) if _may_hold_token(value) else value

    def clip(self, value: str, limit: int) -> str:
        """`value` redacted, then cut to `limit` characters: never cut first (a cut secret is a prefix)."""
        value = self.text(value)
        return value if len(value) <= limit else value[:limit - 1] + "\u2026"

    def _mask_live(self, value: str) -> str:
        candidates: set[str] = set()
        with self._lock:
            index = self._index
            for start in range(0, len(value) - _GRAM + 1, _GRAM):
                holders = index.get(value[start:start + _GRAM])
                if holders:
                    candidates |= holders
            if not candidates:
                return value
            masks = {form: self._forms[form][0] for form in candidates}
        for form in sorted(candidates, key=len, reverse=True):
            if form in value:
                value = value.replace(form, masks[form])
        for form in candidates:
            value = _mask_cut_prefix(value, form, masks[form])
        return value

    def value(self, value: Any) -> Any:
        """Any JSON-like value with secrets masked in its strings (not its keys); `SecretStr` becomes the mask."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An audit record's fields with every value redacted except identifiers (`IDENTIFIER_FIELDS`)."""
        return {key: value if key in IDENTIFIER_FIELDS and isinstance(value, str) else self.value(value)
                for key, value in record.items()}

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """A structlog processor: like `fields`, but a log line's `event` is kept only if it is an event name."""
        for key, value in list(event_dict.items()):
            if key in IDENTIFIER_FIELDS and isinstance(value, str) and (key != "event" or _EVENT_NAME.fullmatch(value)):
                continue
            event_dict[key] = self.value(value)
        return event_dict


def _mask_cut_prefix(value: str, form: str, mask: str) -> str:
    """`value` with each cut prefix of `form` (8+ characters) masked: one that ends the string (before any
    trailer such as a closing quote), or that an ellipsis follows."""
    anchor = form[:_SHORTEST_SECRET]
    found = value.find(anchor)
    while found != -1:
        kept = _shared_prefix(value[found:found + len(form)], form)
        rest = value[found + kept:]
        if not rest.strip(_TRAILERS) or rest.startswith(("...", "\u2026")):
            value = value[:found] + mask + rest
            found = value.find(anchor, found + len(mask))
        else:
            found = value.find(anchor, found + 1)
    return value


def _shared_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search: slices compare in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


REDACTOR = Redactor()
