"""Following live progress: `trigger --wait` reads the audit topic from its end, never its whole history."""

from __future__ import annotations

import asyncio
import uuid

from orchestrator.audit_stream import follow
from tests.support import publish


async def test_following_from_the_end_yields_only_what_is_written_after_it_is_positioned(bootstrap: str) -> None:
    """Records of the id written before are not read again; the one written after `positioned` is."""
    topic, exposure_id = f"test.{uuid.uuid4().hex[:8]}.audit", "exp-live"
    for n in range(3):  # one batch each: Tansu's end offset is then exact
        await publish(bootstrap, topic, [{"id": exposure_id, "exposure_id": exposure_id, "n": n}])
    positioned = asyncio.Event()
    stream = follow(bootstrap, topic, exposure_ids=[exposure_id], from_beginning=False, positioned=positioned)
    first = asyncio.ensure_future(anext(stream))
    async with asyncio.timeout(20):
        await positioned.wait()
        await publish(bootstrap, topic, [{"id": exposure_id, "exposure_id": exposure_id, "n": "new"}])
        record = await first
    await stream.aclose()
    assert record["n"] == "new"
