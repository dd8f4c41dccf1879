"""The okta-sdk-python boundary: a client with its known defects contained, its errors translated to ours."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import NotFound, PermanentError, ProviderError, RateLimited, TransientError


@dataclass(frozen=True)
class BareError:
    """An error response without a body, shaped like the SDK's errors for `translate`."""

    status: int
    error_code: str | None = None
    error_summary: str = "(empty body)"


def translate(error: Any, headers: Mapping[str, str]) -> ProviderError:
    """An SDK error as ours; the message holds the status and Okta error code, never request content."""
    status = getattr(error, "status", None)
    code = getattr(error, "error_code", None)
    summary = getattr(error, "error_summary", "") or ""
    message = " ".join(part for part in ("okta HTTP", str(status), code, summary) if part)
    if status == 429 or code == "E0000047":
        return RateLimited(message, retry_after=retry_after(headers), status=status, code=code)
    if status is None or status >= 500 or status == 408:
        return TransientError(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    return PermanentError(message, status=status, code=code)


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float:
    """Seconds until the bucket resets: `Retry-After`, else `X-Rate-Limit-Reset` against the server's `Date`."""
    if value := headers.get("Retry-After"):
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = headers.get("X-Rate-Limit-Reset")
    if reset is None:
        return 1.0
    server_now = now if now is not None else server_time(headers)
    # Up to half a second of jitter so waiting runs do not all return in the same instant.
    return max(0.0, float(reset) - server_now) + random.uniform(0, 0.5)  # noqa: S311


def server_time(headers: Mapping[str, str]) -> float:
    """The server's clock by its `Date` header, else ours."""
    date = headers.get("Date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


def headers_of(thing: Any) -> Mapping[str, str]:
    """The headers of an SDK response or error, or none."""
    for attribute in ("headers", "response_headers"):
        headers = getattr(thing, attribute, None)
        if headers:
            return headers  # type: ignore[no-any-return]
    return {}


def make_client(org_url: str, token: str) -> Any:
    """An SDK client with its own retries off (we own retries) and transport errors raised, not swallowed."""
    from okta.client import Client
    from okta.http_client import HTTPClient

    class _RaisingHTTPClient(HTTPClient):
        """The SDK turns a refused connection into a None response and then crashes on it; raise instead."""

        async def send_request(self, request: dict[str, Any]) -> tuple[Any, ...]:
            result: tuple[Any, ...] = await super().send_request(request)  # type: ignore[no-untyped-call]
            error = result[-1]
            if result[1] is None and error is not None:
                raise TransientError(f"okta unreachable: {type(error).__name__}")
            return result

    config = {
        "orgUrl": org_url,
        "token": token,
        "rateLimit": {"maxRetries": 0},
        "cache": {"enabled": False},
        "httpClient": _RaisingHTTPClient,
    }
    return Client(config)

