"""`cloudevents`: CloudEvents 1.0 in structured JSON (one event, a batch array, or JSON lines) whose data is an
exposure event."""

from __future__ import annotations

from orchestrator import cloudevents
from orchestrator.errors import FormatError, InvalidExposure
from orchestrator.formats import documents
from orchestrator.formats.findings import Batch, Collector, Options

FORMAT = "cloudevents"


def parse(data: bytes, *, options: Options) -> Batch:
    """The exposure in each event's data, its own id kept; envelope errors name the item."""
    collector = Collector(FORMAT, {})
    for where, envelope in documents.documents(FORMAT, data):
        try:
            exposure = cloudevents.structured_data(envelope)
        except InvalidExposure as exc:
            raise FormatError(FORMAT, where, str(exc)) from None
        collector.add_event(where, exposure)
    return collector.batch()
