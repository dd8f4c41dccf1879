"""Publishing exposures to the exposures topic from a command (`publish`, `scan-har --publish`): one producer,
each record keyed by its exposure id, every one acknowledged by the broker before returning."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.errors import KafkaError

from orchestrator import kafka, triggers
from orchestrator.errors import ConfigurationError
from orchestrator.events import Exposure


async def publish_exposures(bootstrap: str, topic: str, exposures: Sequence[Exposure]) -> None:
    """Publish exposures keyed by id through one producer, waiting until the broker has every one."""
    if not exposures:
        return
    producer = kafka.make_producer(bootstrap)
    try:
        await kafka.start(producer, bootstrap)
        pending = [await producer.send(topic, triggers.encode(e), key=e.id.encode()) for e in exposures]
        for stored in pending:
            await stored
    except KafkaError as exc:
        raise ConfigurationError(f"could not publish to {topic} on {bootstrap}: {type(exc).__name__}") from None
    finally:
        await producer.stop()
