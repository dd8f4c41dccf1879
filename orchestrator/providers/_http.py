"""What the httpx-based providers share: their client, the governed request, and status → error translation.

GitHub, Slack and GCP speak plain HTTP through one `httpx.AsyncClient` each. Every request goes through
`governed`, which holds a governor slot, feeds the response's rate-limit headers back to the governor, and
turns every httpx transport failure into `TransientError` so no httpx exception leaves `providers/`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from orchestrator.actions import Priority
from orchestrator.errors import NotFound, PermanentError, ProviderError, RateLimited, TransientError
from orchestrator.governor import Governor

#: Connect fast, read patiently: revocation endpoints answer quickly; a stuck socket is a transient failure.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def make_client(base_url: str, *, concurrency: int, user_agent: str = "credential-orchestrator") -> httpx.AsyncClient:
    """One client per provider, its pool sized to the governor's concurrency (httpx slows when pools grow)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT, http2=False,
                             headers={"User-Agent": user_agent}, follow_redirects=False)


async def governed(client: httpx.AsyncClient, governor: Governor, bucket: str, priority: Priority,
                   method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send one request inside a governor slot (see `send`)."""
    async with governor.slot(bucket, priority):
        return await send(client, governor, bucket, method, url, **kwargs)


async def send(client: httpx.AsyncClient, governor: Governor, bucket: str, method: str, url: str,
               **kwargs: Any) -> httpx.Response:
    """Send one request while the caller holds the bucket's slot, and report the response's headers to the
    governor; transport failures become `TransientError`."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{governor.provider} {method} {bucket}: timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        # The message is the exception type only: httpx messages may quote the request (and its URL).
        raise TransientError(f"{governor.provider} {method} {bucket}: {type(exc).__name__}") from None
    governor.observe(bucket, response.headers, status=response.status_code)
    return response


class HttpProvider:
    """The lifecycle every httpx provider shares: one client, opened on enter and closed on exit."""

    def __init__(self, base_url: str, governor: Governor, *, concurrency: int) -> None:
        self._base_url = base_url
        self._concurrency = concurrency
        self._governor = governor
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = make_client(self._base_url, concurrency=self._concurrency)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def _open_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is not open: enter it before use")
        return self._client

    async def _request(self, bucket: str, priority: Priority, method: str, url: str,
                       **kwargs: Any) -> httpx.Response:
        """`governed` through this provider's client and governor."""
        return await governed(self._open_client, self._governor, bucket, priority, method, url, **kwargs)


def retry_after(headers: Mapping[str, str], *, default: float, now: float | None = None) -> float:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date), else `default`."""
    value = headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return default
    return max(0.0, when - (time.time() if now is None else now))


def by_status(provider: str, status: int, detail: str, headers: Mapping[str, str], *,
              code: str | None = None, rate_limit_wait: float = 60.0) -> ProviderError:
    """The error an unsuccessful HTTP status means: 429 rate limited, 5xx/408 transient, 404 not found, else
    permanent. `detail` must be built from codes and status text only, never from request content."""
    message = f"{provider} HTTP {status} {detail}".strip()
    if status == 429:
        return RateLimited(message, retry_after=retry_after(headers, default=rate_limit_wait), status=status,
                           code=code)
    if status >= 500 or status == 408:
        return TransientError(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    return PermanentError(message, status=status, code=code)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object, or `{}` when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
