"""Okta's ids and error responses as the emulator produces them: `OktaError` and its common cases."""

from __future__ import annotations

import secrets
import string
from typing import Any

_ALNUM = string.ascii_letters + string.digits


def okta_id(prefix: str, length: int = 20) -> str:
    """A random Okta-style id: `prefix` then letters and digits, `length` characters in all."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length - len(prefix)))


class OktaError(Exception):
    """An Okta error response: status, `errorCode`, `errorSummary`, causes, and headers to send with it."""

    def __init__(self, status: int, code: str, summary: str, causes: tuple[str, ...] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(summary)
        self.status, self.code, self.summary, self.causes = status, code, summary, causes
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Okta sends for this error (a fresh `errorId` each time)."""
        return {"errorCode": self.code, "errorSummary": self.summary, "errorLink": self.code,
                "errorId": okta_id("oae", 25), "errorCauses": [{"errorSummary": c} for c in self.causes]}


def not_found(key: str, kind: str) -> OktaError:
    """Okta's 404 E0000007 for `key`, a resource of `kind`."""
    return OktaError(404, "E0000007", f"Not found: Resource not found: {key} ({kind})")


def invalid(operation: str, cause: str) -> OktaError:
    """Okta's 400 E0000001 for `operation`, with one cause."""
    return OktaError(400, "E0000001", f"Api validation failed: {operation}", (cause,))


def rate_limited(headers: dict[str, str]) -> OktaError:
    """Okta's 429 E0000047, with the rate-limit headers to send."""
    summary = "API call exceeded rate limit due to too many requests."
    return OktaError(429, "E0000047", summary, headers=headers)
