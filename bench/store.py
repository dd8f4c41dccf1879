"""Run-store benchmark: claim → running → finished throughput, and `status` lookups in a large store.

For each backend (SQLite in a temp dir; PostgreSQL started with initdb/pg_ctl as in the tests, or
ORCHESTRATOR_TEST_DATABASE_URL), on an empty store: CLAIMS exposures claimed, marked running, their end
announced and finished with MAX_IN_FLIGHT at a time, as the pipeline does. Then the store is filled to ROWS
exposures (bulk insert) and `lookup` (what `orchestrator status` runs) is timed by exact id and by prefix.

    .venv/bin/python bench/store.py --claims 5000 --rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.settings import StoreSettings
from orchestrator.store import Content, RunStore, State
from orchestrator.store.schema import exposures
from orchestrator.store.store import utcnow


def _content(n: int) -> Content:
    exposure_id = f"bench-{uuid.uuid4().hex[:16]}"
    return Content(id=exposure_id, fingerprint=uuid.uuid4().hex, kind="okta.session",
                   target=f"okta.session:user{n}@example.com", owner=f"user{n}@example.com", detector="bench",
                   actor=None, severity="high", playbook=None)


async def claims_per_second(store: RunStore, count: int, in_flight: int) -> float:
    await store.start()
    slots = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        async with slots:
            claim = await store.claim(_content(n))
            store.started(claim.row_id, run_id=uuid.uuid4().hex, playbook="okta-session")
            await store.ending(claim.row_id, "run.completed", "0:1")  # announced before the terminal record
            await store.finish(claim.row_id, State.COMPLETED, terminal_event="run.completed")

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - started)


def fill(store: RunStore, rows: int) -> list[str]:
    """Bulk-insert ended exposures up to `rows`; return a sample of their ids."""
    have = store.count()
    sample: list[str] = []
    now = utcnow()
    chunk = 20_000
    for start in range(have, rows, chunk):
        batch = []
        for n in range(start, min(rows, start + chunk)):
            content = _content(n)
            batch.append({"id": content.id, "content_fingerprint": content.fingerprint,
                          "dedup_key": content.dedup_key, "credential_kind": content.kind,
                          "credential_owner": content.owner, "target": content.target, "detector": "bench",
                          "actor": None, "severity": "high", "received_at": now, "started_at": now,
                          "finished_at": now, "state": "completed", "playbook": "okta-session",
                          "run_id": uuid.uuid4().hex, "terminal_event": "run.completed", "error": None,
                          "claimed_by": None, "lease_expires_at": None, "id_reused": False})
        with store.engine.begin() as conn:
            conn.execute(insert(exposures), batch)
        sample += random.sample([b["id"] for b in batch], min(20, len(batch)))
    if not sample:
        with store.engine.connect() as conn:
            sample = list(conn.execute(select(exposures.c.id).limit(200)).scalars())
    return sample


def lookup_ms(store: RunStore, ids: list[str], prefix: bool) -> tuple[float, float]:
    timings = []
    for exposure_id in ids:
        started = time.perf_counter()
        rows = store.lookup_sync(exposure_id[:-4] if prefix else exposure_id)
        timings.append((time.perf_counter() - started) * 1000)
        assert rows, exposure_id
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.99) - 1]


@contextlib.contextmanager
def backend(name: str) -> Iterator[StoreSettings]:
    if name == "sqlite":
        yield StoreSettings(data_dir=Path(tempfile.mkdtemp(prefix="bench-store-")))
        return
    from tests import postgres

    with postgres.server() as url:
        yield StoreSettings(database_url=postgres.fresh_database(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for name in args.backend or ["sqlite", "postgresql"]:
        with backend(name) as settings:
            store = RunStore.open(settings, owner="bench")
            rate = asyncio.run(claims_per_second(store, args.claims, args.in_flight))
            print(f"{name}: {rate:,.0f} exposures/s claimed, started and finished "
                  f"({args.claims} exposures, {args.in_flight} in flight)", flush=True)
            started = time.perf_counter()
            sample = fill(store, args.rows)
            print(f"{name}: filled to {store.count():,} exposures in {time.perf_counter() - started:.0f} s",
                  flush=True)
            if settings.database_url is None:
                size = sum(f.stat().st_size for f in settings.data_dir.glob("orchestrator.db*"))
                print(f"{name}: {size / store.count():.0f} bytes per exposure on disk (no steps)")
            exact = lookup_ms(store, sample[:200], prefix=False)
            prefix = lookup_ms(store, sample[:100], prefix=True)
            print(f"{name}: status lookup p50/p99 {exact[0]:.2f}/{exact[1]:.2f} ms by id, "
                  f"{prefix[0]:.2f}/{prefix[1]:.2f} ms by prefix", flush=True)
            store.engine.dispose()


if __name__ == "__main__":
    main()
