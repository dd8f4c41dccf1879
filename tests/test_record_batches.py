"""Fetched batches are read by aiokafka's own iterator, made tolerant: bytes never raise, a bad batch is data."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.record_batches import FramedRecords, TolerantPartitionRecords, UndecodableBatch, read_leniently
from tests import raw_batches

TP = TopicPartition("exposures", 0)


def _read(buffer: bytes, fetch_offset: int = 0) -> tuple[list[Any], int]:
    """Everything the consumer would get from one fetch response holding `buffer`, and the next fetch offset."""
    records = TolerantPartitionRecords(TP, FramedRecords(buffer), [], fetch_offset, None, None, True, READ_UNCOMMITTED)
    return list(records), records.next_fetch_offset


def _batch(values: list[bytes], *, base_offset: int = 0, compression: int = 0) -> bytearray:
    raw = raw_batches.batch([(None, v, []) for v in values], compression=compression)
    raw[0:8] = base_offset.to_bytes(8, "big")
    return raw


def test_a_good_batch_reads_as_before() -> None:
    """Plain records come out as aiokafka's ConsumerRecords with offsets, values and headers."""
    out, next_offset = _read(bytes(_batch([b"a", b"b"], compression=4)))
    assert [(r.offset, r.value) for r in out] == [(0, b"a"), (1, b"b")] and next_offset == 2


def test_an_unknown_codec_is_one_undecodable_range_and_reading_goes_on() -> None:
    """Codec 6 does not exist: the batch becomes one `UndecodableBatch` for its offsets; the next batch is read."""
    broken = raw_batches.with_codec(_batch([b"x", b"y", b"z"], base_offset=0), 6)
    after = _batch([b"next"], base_offset=3)
    out, next_offset = _read(bytes(broken + after))
    assert isinstance(out[0], UndecodableBatch) and (out[0].offset, out[0].last_offset) == (0, 2)
    assert "codec" in out[0].reason.lower() and out[0].raw == bytes(broken)
    assert [(r.offset, r.value) for r in out[1:]] == [(3, b"next")] and next_offset == 4


def test_a_header_key_that_is_not_utf8_is_read_with_escapes() -> None:
    """aiokafka raised UnicodeDecodeError: the lenient reader keeps the record and escapes the key."""
    raw = raw_batches.batch([(b"k", json.dumps({"id": "e"}).encode(), [("HKEY", b"v")])])
    out, _ = _read(bytes(raw_batches.replace(raw, b"HKEY", b"H\xff\xfeY")))
    assert len(out) == 1 and out[0].value == b'{"id": "e"}' and out[0].headers == (("H\\xff\\xfeY", b"v"),)


def test_a_resumed_fetch_skips_records_already_read() -> None:
    """Fetching from the middle of a batch returns only the records from that offset on."""
    out, _ = _read(bytes(_batch([b"a", b"b", b"c"])), fetch_offset=2)
    assert [r.value for r in out] == [b"c"]


def test_the_lenient_reader_refuses_what_is_not_a_batch() -> None:
    """Garbage is `None` (then reported as undecodable), never an exception."""
    assert read_leniently(b"") is None and read_leniently(b"\x00" * 80) is None


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_fetched_bytes_never_raise(buffer: bytes) -> None:
    """Whatever bytes a broker returns, reading them yields records or undecodable ranges, and never raises."""
    out, _ = _read(buffer)
    assert all(hasattr(r, "offset") for r in out)


@settings(max_examples=300)
@given(st.data())
def test_a_valid_batch_with_any_byte_changed_never_raises(data: st.DataObject) -> None:
    """Any single corrupted byte of a real compressed batch, with its CRC made valid again so it is not simply
    refused: records, or one undecodable range, and never an exception."""
    raw = _batch([b'{"id": "a"}', b'{"id": "b"}'], compression=data.draw(st.sampled_from([0, 1, 2, 3, 4])))
    position = data.draw(st.integers(min_value=21, max_value=len(raw) - 1))
    raw[position] = data.draw(st.integers(min_value=0, max_value=255))
    out, _ = _read(bytes(raw_batches.with_valid_crc(raw)))
    assert all(hasattr(r, "offset") for r in out)
