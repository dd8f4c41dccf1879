"""Keeping secrets out of everything written: logs, audit records, errors and dead-lettered records.

Three layers, each enough on its own for its case:
1. `SecretStr` values are never rendered (the event model holds `credential.secret` as one);
2. the secret values of exposures being handled are registered here, and any string that contains one
   has it replaced, whatever path it took (an SDK error echoing a token, say);
3. well-known token formats are masked even when nobody registered them.

The process-wide `REDACTOR` is the only global state of the package: logging processors need it before any
exposure arrives, and every writer must share the same set of live secrets.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
from pydantic import SecretStr

from orchestrator.events import fingerprint

MASK = "[REDACTED]"
#: Shorter strings are never scanned: no token format and no secret we accept is this short.
_SHORTEST_SECRET = 8

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


_SECRET_MEMBER = re.compile(r'("secret"\s*:\s*)"(?:[^"\\]|\\.)*("|$)')


class Redactor:
    """Masks registered secret values and well-known token formats in strings and nested structures."""

    def __init__(self) -> None:
        self._live: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._live_pattern: re.Pattern[str] | None = None

    def register(self, secret: SecretStr | None) -> None:
        """Mask this secret from now on, until `release`d as many times as registered."""
        if secret is not None and secret.get_secret_value():
            with self._lock:
                self._live[secret.get_secret_value()] += 1
                self._live_pattern = None

    def release(self, secret: SecretStr | None) -> None:
        """Stop tracking one registration of this secret."""
        if secret is None:
            return
        value = secret.get_secret_value()
        with self._lock:
            self._live[value] -= 1
            if self._live[value] <= 0:
                del self._live[value]
            self._live_pattern = None

    def text(self, value: str) -> str:
        """`value` with every live secret and well-known token masked."""
        if len(value) < _SHORTEST_SECRET:
            return value
        live = self._live_secrets()
        if live is not None:
            value = live.sub(lambda m: f"[REDACTED {self._fingerprint(m.group(0))}]", value)
        return _TOKEN_PATTERNS.sub(MASK, value) if _may_hold_token(value) else value

    def _fingerprint(self, form: str) -> str:
        """The fingerprint of the secret itself, whichever of its forms matched."""
        with self._lock:
            if form not in self._live:
                form = next((s for s in self._live if json.dumps(s)[1:-1] == form), form)
        return fingerprint(form)

    def json(self, rendered: bytes) -> bytes:
        """A rendered JSON document with live secrets and well-known tokens masked, in one pass over it.

        Secrets are matched both as they are and as JSON escapes them, so a quote or a backslash in a secret
        cannot hide it from the match.
        """
        return self.text(rendered.decode()).encode()

    def _live_secrets(self) -> re.Pattern[str] | None:
        """One alternation of every live secret (and its JSON-escaped form), longest first, rebuilt on change."""
        with self._lock:
            if self._live_pattern is None and self._live:
                forms = {form for secret in self._live for form in (secret, json.dumps(secret)[1:-1])}
                self._live_pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
            return self._live_pattern

    def value(self, value: Any) -> Any:
        """Any JSON-like value with secrets masked; `SecretStr` becomes the mask."""
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """A structlog processor."""
        for key, value in list(event_dict.items()):
            event_dict[key] = self.value(value)
        return event_dict

    def record(self, raw: bytes | None) -> bytes | None:
        """A rejected record made safe for the dead-letter topic: its `credential.secret` replaced by a fingerprint.

        Records that are not JSON get the same treatment by pattern, since their secrets cannot be located.
        """
        if raw is None:
            return None
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            text = raw.decode("utf-8", errors="replace")
            return self.text(_SECRET_MEMBER.sub(lambda m: f'{m.group(1)}"{MASK}"', text)).encode()
        credential = document.get("credential") if isinstance(document, dict) else None
        if isinstance(credential, dict) and "secret" in credential:
            secret = credential["secret"]
            credential["secret"] = f"[REDACTED {fingerprint(secret)}]" if isinstance(secret, str) else MASK
        return json.dumps(self.value(document), ensure_ascii=False).encode()


REDACTOR = Redactor()
