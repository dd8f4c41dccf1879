"""Fetched record batches that cannot stop the consumer: what aiokafka cannot decode becomes data, not an exception.

aiokafka decodes batches lazily inside `getmany`. A batch it cannot decode (an unknown codec, a corrupt
body, a header key that is not UTF-8) raises out of `getmany` on every call, and the records of the same
fetch decoded before it are lost. aiokafka has no hook for this, so `install()` swaps in, for aiokafka
0.14's fetcher (pinned in pyproject), a batch framer that remembers each batch's bytes and a record
iterator that, for a batch it cannot decode:
1. re-reads it leniently (header keys decoded with escapes), so every record still reaches the pipeline;
2. failing that, yields one `UndecodableBatch` naming the partition, the offset range and the reason, with
   the batch's raw bytes for the dead-letter topic, and moves past it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import codec
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.legacy_records import LegacyRecordBatch
from aiokafka.record.util import decode_varint

_LENGTH = struct.Struct(">i")
_LOG_OVERHEAD = 12  # BaseOffset (int64) + Length (int32)
_MAGIC_AT = 16
_V2_HEADER = struct.Struct(">qiibIhiqqqhii")
_CODEC_MASK = 0x07
_CONTROL_MASK = 0x20
_DECOMPRESS = {1: codec.gzip_decode, 2: codec.snappy_decode, 3: codec.lz4_decode, 4: codec.zstd_decode}


@dataclass(frozen=True)
class UndecodableBatch:
    """A batch that could not be read: records `offset`..`last_offset` of a partition, and why."""

    topic: str
    partition: int
    offset: int
    last_offset: int
    reason: str
    raw: bytes


@dataclass(frozen=True)
class _Record:
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


class FramedRecords:
    """aiokafka's `MemoryRecords`, remembering the raw bytes of the batch it handed out last."""

    def __init__(self, buffer: bytes) -> None:
        self._buffer = memoryview(buffer)
        self._pos = 0
        self.last_raw = b""

    def size_in_bytes(self) -> int:
        return len(self._buffer)

    def has_next(self) -> bool:
        return self._next_end() is not None

    def next_batch(self) -> Any:
        end = self._next_end()
        if end is None:
            return None
        view = self._buffer[self._pos:end]
        self._pos = end
        self.last_raw = bytes(view)
        magic = view[_MAGIC_AT] if len(view) > _MAGIC_AT else -1
        return DefaultRecordBatch(view) if magic >= 2 else LegacyRecordBatch(view, magic)

    def _next_end(self) -> int | None:
        if len(self._buffer) - self._pos < _LOG_OVERHEAD:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, self._pos + 8)
        end = self._pos + _LOG_OVERHEAD + max(length, 0)
        return end if end <= len(self._buffer) else None


class TolerantPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's per-partition record iterator, for read-uncommitted consumers, that never raises on a batch."""

    next_fetch_offset: int

    def _unpack_records(self) -> Iterator[Any]:
        if self._isolation_level != fetcher.READ_UNCOMMITTED or not isinstance(self._records, FramedRecords):
            yield from super()._unpack_records()
            return
        tp, records = self._tp, self._records
        while records.has_next():
            try:
                batch = records.next_batch()
                first, end = batch.base_offset, batch.next_offset
            except Exception as exc:  # noqa: BLE001 - the framing is broken: nothing after it can be trusted
                broken_at = self.next_fetch_offset
                self.next_fetch_offset += 1  # step over one offset at a time until batches can be framed again
                yield self._undecodable(broken_at, broken_at + 1, exc, records.last_raw)
                return
            try:
                if self._check_crcs and not batch.validate_crc():
                    raise ValueError("CRC mismatch")
                if batch.is_control_batch:
                    self.next_fetch_offset = end
                    continue
                decoded: list[Any] = list(batch)
            except Exception as exc:  # noqa: BLE001 - any decoding failure is reported as data
                lenient = read_leniently(records.last_raw)
                if lenient is None:
                    yield self._undecodable(max(first, self.next_fetch_offset), end, exc, records.last_raw)
                    self.next_fetch_offset = end
                    continue
                decoded = lenient
            for record in decoded:
                if record.offset < self.next_fetch_offset:
                    continue
                consumer_record = self._consumer_record(tp, record)
                self.next_fetch_offset = record.offset + 1
                yield consumer_record
            self.next_fetch_offset = max(self.next_fetch_offset, end)

    def _undecodable(self, first: int, end: int, exc: BaseException, raw: bytes) -> UndecodableBatch:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        return UndecodableBatch(self._tp.topic, self._tp.partition, first, max(first, end - 1), reason, raw)


def read_leniently(raw: bytes) -> list[_Record] | None:
    """The records of a v2 batch, header keys decoded with escapes; None when the batch cannot be read at all."""
    try:
        (_, _, _, magic, _, attributes, _, first_ts, max_ts, _, _, _, count) = _V2_HEADER.unpack_from(raw)
        if magic != 2 or attributes & _CONTROL_MASK:
            return None
        body: bytes = raw[_V2_HEADER.size:]
        compression = attributes & _CODEC_MASK
        if compression:
            body = bytes(_DECOMPRESS[compression](body))
        base_offset = struct.unpack_from(">q", raw)[0]
        timestamp_type = (attributes >> 3) & 1
        records, pos = [], 0
        for _ in range(count):
            record, pos = _read_record(bytearray(body), pos, base_offset,
                                       max_ts if timestamp_type else first_ts, timestamp_type)
            records.append(record)
        return records if pos == len(body) else None
    except Exception:  # noqa: BLE001 - unreadable is an answer, not an error
        return None


def _read_record(buffer: bytearray, pos: int, base_offset: int, base_ts: int,
                 timestamp_type: int) -> tuple[_Record, int]:
    length, pos = decode_varint(buffer, pos)
    end = pos + length
    _, pos = decode_varint(buffer, pos)  # attributes: unused in v2
    ts_delta, pos = decode_varint(buffer, pos)
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _read_bytes(buffer, pos)
    value, pos = _read_bytes(buffer, pos)
    header_count, pos = decode_varint(buffer, pos)
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(header_count):
        raw_key, pos = _read_bytes(buffer, pos)
        header_value, pos = _read_bytes(buffer, pos)
        headers.append(((raw_key or b"").decode("utf-8", "backslashreplace"), header_value))
    if pos != end:
        raise ValueError("record length does not match its fields")
    timestamp = base_ts if timestamp_type else base_ts + ts_delta
    return _Record(base_offset + offset_delta, timestamp, timestamp_type, key, value, headers), pos


def _read_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise ValueError("field runs past the end of the record")
    return bytes(buffer[pos:pos + size]), pos + size


def install() -> None:
    """Make aiokafka's fetcher frame batches with `FramedRecords` and read them with `TolerantPartitionRecords`."""
    fetcher.MemoryRecords = FramedRecords
    fetcher.PartitionRecords = TolerantPartitionRecords
