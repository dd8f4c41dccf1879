"""`exposure`: our own event schema, as one JSON object, a JSON array of them, or JSON lines."""

from __future__ import annotations

from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "exposure"


def parse(data: bytes, *, options: Options) -> Batch:
    """Each event as written (its own id kept); kinds no shipped playbook knows are counted, not dropped."""
    collector = Collector(FORMAT, {})
    for where, document in documents.documents(FORMAT, data):
        collector.add_event(where, document)
    return collector.batch()
