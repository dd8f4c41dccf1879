"""Public keys from a configured URL or file: fetched when first needed, cached, refreshed when a delivery
names a key not among them (at most once per `min_refresh_s`, so forged key ids cannot make us hammer the
source)."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import orjson

T = TypeVar("T")
_MAX_BYTES = 1024 * 1024


class KeysUnavailable(Exception):
    """The keys could not be fetched or read; the message names the source and why, no key material."""


class CachedKeys(Generic[T]):
    """The keys at `source` (https URL or file path), parsed by `parse` (ValueError when unusable)."""

    def __init__(self, source: str, parse: Callable[[Any], T], *, ttl_s: float, min_refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._parse = parse
        self._ttl = ttl_s
        self._min_refresh = min_refresh_s
        self._clock = clock
        self._keys: T | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self, *, refresh: bool = False) -> T:
        """The cached keys, fetched again when expired or, with `refresh`, when not fetched just now."""
        async with self._lock:
            age = self._clock() - self._fetched_at
            if self._keys is None or age > self._ttl or (refresh and age > self._min_refresh):
                self._keys = self._parse_or_raise(await self._fetch())
                self._fetched_at = self._clock()
            return self._keys

    def _parse_or_raise(self, raw: bytes) -> T:
        try:
            return self._parse(orjson.loads(raw))
        except orjson.JSONDecodeError:
            raise KeysUnavailable(f"keys at {self.source} are not JSON") from None
        except ValueError as exc:
            raise KeysUnavailable(f"keys at {self.source}: {exc}") from None

    async def _fetch(self) -> bytes:
        if self.source.startswith(("https://", "http://")):
            try:
                raw = await download(self.source, limit=_MAX_BYTES)
            except httpx.HTTPError as exc:
                raise KeysUnavailable(f"cannot fetch keys from {self.source} ({type(exc).__name__})") from None
        else:
            try:
                raw = await asyncio.to_thread(Path(self.source).read_bytes)
            except OSError as exc:
                raise KeysUnavailable(f"cannot read keys from {self.source} "
                                      f"({exc.strerror or type(exc).__name__})") from None
        if len(raw) > _MAX_BYTES:
            raise KeysUnavailable(f"keys at {self.source} are above {_MAX_BYTES} bytes")
        return raw


async def download(url: str, *, limit: int) -> bytes:
    """The content at `url`, inflated by us in bounded steps and cut just past `limit` bytes (the caller checks
    the length): a gzip-encoded answer of 64 kB inflates to 64 MB, and httpx inflates each network chunk whole.
    Raises httpx.HTTPError, or KeysUnavailable for an encoding it does not read."""
    chunks: list[bytes] = []
    size = 0
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=True) as client, \
            client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
        response.raise_for_status()
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise KeysUnavailable(f"keys at {url} come in an encoding not read here ({encoding[:20]!r})")
        # wbits | 32: a gzip or a zlib header, whichever the answer has.
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding != "identity" else None
        async for raw in response.aiter_raw(16 * 1024):
            try:
                chunk = inflate.decompress(raw, limit + 1 - size) if inflate is not None else raw
            except zlib.error:
                raise KeysUnavailable(f"keys at {url} are not valid {encoding}") from None
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    return b"".join(chunks)
