"""Remembering deliveries for a while, so a captured one sent again is refused; in memory, per process."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class ReplayGuard:
    """Keys (delivery ids, signatures, `jti`s) seen within `ttl_s`; at most `max_keys`, oldest forgotten first."""

    def __init__(self, ttl_s: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._max = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True, and remember `key`, when it was not seen within the window; False for a replay."""
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now + self._ttl
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    def release(self, key: str) -> None:
        """Forget `key`: its delivery failed after the claim, and the sender's retry must be accepted."""
        self._seen.pop(key, None)
