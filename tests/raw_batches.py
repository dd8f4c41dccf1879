"""Hand-built record batches, sent as a hostile or unusual client would: bytes no well-behaved producer makes.

aiokafka's producer refuses to write a header key that is not UTF-8 or a batch with a broken body, so these
batches are built with aiokafka's pure-Python batch builder, patched byte-wise (CRC recomputed, as the broker
checks it), and sent in a ProduceRequest through the producer's own connection.
"""

from __future__ import annotations

import struct
import time

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.util import calc_crc32c

_CRC_AT = 17  # BaseOffset int64, Length int32, PartitionLeaderEpoch int32, Magic int8
_ATTRIBUTES_AT = 21
_HEADER_SIZE = 61


def batch(records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]], *,
          compression: int = 0) -> bytearray:
    """A v2 batch of (key, value, headers) records, compressed with aiokafka's codec `compression` (0-4)."""
    builder = _DefaultRecordBatchBuilderPy(magic=2, compression_type=compression, is_transactional=False,
                                           producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                           batch_size=64 * 1024 * 1024)
    now = int(time.time() * 1000)
    for offset, (key, value, headers) in enumerate(records):
        builder.append(offset, timestamp=now, key=key, value=value, headers=headers)
    return builder.build()


def replace(raw: bytearray, old: bytes, new: bytes) -> bytearray:
    """`raw` with the one occurrence of `old` replaced by `new` (same length), its CRC made valid again."""
    assert len(old) == len(new) and raw.count(old) == 1
    patched = bytearray(raw.replace(old, new))
    return with_valid_crc(patched)


def with_codec(raw: bytearray, codec: int) -> bytearray:
    """`raw` claiming compression codec `codec` (its body unchanged), CRC made valid again."""
    patched = bytearray(raw)
    attributes = struct.unpack_from(">h", patched, _ATTRIBUTES_AT)[0]
    struct.pack_into(">h", patched, _ATTRIBUTES_AT, (attributes & ~0x07) | codec)
    return with_valid_crc(patched)


def with_valid_crc(raw: bytearray) -> bytearray:
    struct.pack_into(">I", raw, _CRC_AT, calc_crc32c(bytes(raw[_ATTRIBUTES_AT:])))
    return raw


async def produce(bootstrap: str, topic: str, partition: int, raw: bytes) -> None:
    """Send one ready-made batch to `topic`/`partition` and check the broker stored it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        leader = producer.client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(required_acks=-1, timeout=30_000, topics=[(topic, [(partition, bytes(raw))])],
                                 transactional_id=None)
        response = await producer.client.send(leader, request)
        errors = [error for _, partitions in response.topics for _, error, *_ in partitions]
        assert errors == [0], f"broker refused the batch: error codes {errors}"
    finally:
        await producer.stop()
