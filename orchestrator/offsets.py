"""Pure commit bookkeeping: which offset of each partition is safe to commit.

Records finish out of order (they run concurrently); an offset may be committed only when every record
before it in its partition has finished, so a crash never skips unfinished work.

A partition whose offsets go backwards (the topic was deleted and created again, say after a broker that keeps
nothing restarted) starts a new *epoch*: what was tracked before is dropped, and records of the old epoch that
finish later move nothing, so no offset of a previous incarnation of the topic is ever committed onto the new one.
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
        self._last_started: dict[P, int] = {}
        self._epochs: dict[P, int] = {}

    def started(self, partition: P, offset: int) -> int:
        """A record was handed out for processing; returns the partition's epoch, to hand back to `finished`."""
        if offset <= self._last_started.get(partition, -1):
            self.forget(partition)
        self._last_started[partition] = offset
        self._open.setdefault(partition, OrderedDict())[offset] = False
        return self._epochs.get(partition, 0)

    def finished(self, partition: P, offset: int, epoch: int | None = None) -> None:
        """A record reached its terminal audit record (ignored when it belongs to an earlier epoch)."""
        pending = self._open.get(partition)
        if pending is None or offset not in pending or epoch not in (None, self._epochs.get(partition, 0)):
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

    def last_committed(self, partition: P) -> int | None:
        """The offset this tracker last committed for the partition, in its current epoch."""
        return self._committed.get(partition)

    def forget(self, partition: P) -> None:
        """Drop what is tracked of a partition (no longer ours, or a new incarnation) and start a new epoch."""
        self._epochs[partition] = self._epochs.get(partition, 0) + 1
        self._open.pop(partition, None)
        self._safe.pop(partition, None)
        self._committed.pop(partition, None)
        self._last_started.pop(partition, None)
