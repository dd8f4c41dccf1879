"""Pure commit bookkeeping: which offset of each partition is safe to commit.

Records finish out of order (they run concurrently); an offset may be committed only when every record
before it in its partition has finished, so a crash never skips unfinished work.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class OffsetTracker(Generic[P]):
    """Per partition: offsets started and not yet finished, and the next offset safe to commit."""

    def __init__(self) -> None:
        self._open: dict[P, OrderedDict[int, bool]] = {}
        self._safe: dict[P, int] = {}
        self._committed: dict[P, int] = {}

    def started(self, partition: P, offset: int) -> None:
        """A record was handed out for processing."""
        self._open.setdefault(partition, OrderedDict())[offset] = False

    def finished(self, partition: P, offset: int) -> None:
        """A record reached its terminal audit record."""
        pending = self._open.get(partition)
        if pending is None or offset not in pending:
            return
        pending[offset] = True
        while pending and pending[next(iter(pending))]:
            done, _ = pending.popitem(last=False)
            self._safe[partition] = done + 1

    def in_flight(self, partition: P) -> int:
        """How many records of the partition have started and not finished."""
        return sum(1 for done in self._open.get(partition, {}).values() if not done)

    def to_commit(self) -> dict[P, int]:
        """Partitions whose safe offset moved since the last `committed` call, with that offset."""
        return {p: o for p, o in self._safe.items() if self._committed.get(p) != o}

    def committed(self, offsets: dict[P, int]) -> None:
        """Record that these offsets were committed."""
        self._committed.update(offsets)

    def forget(self, partition: P) -> None:
        """Drop a partition that is no longer ours."""
        self._open.pop(partition, None)
        self._safe.pop(partition, None)
        self._committed.pop(partition, None)
