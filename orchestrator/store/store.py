"""The run store: claims, state transitions and step outcomes of every exposure, and queries over them.

Sync SQLAlchemy Core, run in worker threads, rather than the async engine: one code path for SQLite and
PostgreSQL, no greenlet bridging on every statement (SQLAlchemy's async layer adds ~30 % per statement),
and aiosqlite would be a thread per connection anyway. Writes after a claim (a run starting, a step
succeeding, a run ending) are queued and group-committed: one transaction for everything queued while the
previous one committed, so the audit hot path pays one commit per batch, not per record.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    TextClause,
    TextualSelect,
    and_,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import OrchestratorError
from orchestrator.settings import StoreSettings
from orchestrator.store.content import Content
from orchestrator.store.engine import database_url, open_engine, upgrade
from orchestrator.store.schema import exposures, steps
from orchestrator.store.states import InvalidTransition, State, can_move, move, reopen

log = structlog.get_logger("orchestrator.store")
T = TypeVar("T")
#: How often ended exposures older than the retention are deleted.
PRUNE_INTERVAL_S = 3600.0


def utcnow() -> datetime:
    """Naive UTC: what the columns hold (SQLite has no time zones; both backends compare alike)."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_naive_utc(moment: datetime) -> datetime:
    """`moment` as the naive UTC the columns hold."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class ClaimOutcome(StrEnum):
    """What a claim found."""

    NEW = "new"  # first time this content is seen (in the dedup window): run it
    RESUMED = "resumed"  # its owner's lease expired before it ended: run it, skipping succeeded steps
    DUPLICATE = "duplicate"  # this content already ended
    BUSY = "busy"  # another live owner is running it
    # Replays only:
    NOT_FAILED = "not-failed"  # the exposure is not (or no longer) failed: nothing to replay
    DONE = "done"  # this very replay request already ran (a redelivered request)
    UNKNOWN = "unknown"  # no such row (pruned, or another store)


@dataclass(frozen=True)
class Claim:
    """The answer to `claim`."""

    outcome: ClaimOutcome
    row_id: int
    id_reused: bool = False
    succeeded_steps: frozenset[str] = frozenset()
    state: State = State.RECEIVED
    terminal_event: str | None = None
    #: Where the claimed row's record was read from: equal to the caller's on a redelivery.
    source: tuple[str | None, int | None, int | None] = (None, None, None)
    #: The run a resumed claim continues (a run waiting for approval keeps its id across restarts).
    run_id: str | None = None
    #: RESUMED only: its owner was writing this terminal event when it died; and where on the audit topic to
    #: look for that record (`PARTITION:OFFSET`, a lower bound), before running anything again.
    ending: str | None = None
    audit_position: str | None = None


@dataclass(frozen=True)
class StepRow:
    """One step's outcome in one run."""

    step: str
    action: str | None
    state: str  # started | succeeded | failed | skipped | planned (a dry run) | undone
    attempts: int = 0
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: JSON `{"action", "params"}` reversing the step, for `orchestrator undo`.
    undo: str | None = None


@dataclass(frozen=True)
class _Batchable:
    """A write as one statement and its parameters, so writes alike run as one `executemany` (PostgreSQL)."""

    key: tuple[Any, ...]
    statement: Any
    params: dict[str, Any]
    #: For a transition: the state it moves to (checked after the batch, as `executemany` gives no per-row count).
    target: State | None = None


@dataclass
class _Write:
    """A queued write and the future its caller may await."""

    apply: Callable[[Connection], Any]
    batchable: _Batchable | None = None
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def default_owner() -> str:
    """This process's name in `claimed_by`: host, pid and a random part (a restarted pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunStore:
    """The orchestrator's working memory; one per process."""

    def __init__(self, engine: Engine, *, owner: str | None = None, lease_s: float = 60.0,
                 dedup_window_days: float = 30.0, retention_days: float = 90.0) -> None:
        self.engine = engine
        self.owner = owner or default_owner()
        self.lease = timedelta(seconds=lease_s)
        self.dedup_window = timedelta(days=dedup_window_days)
        self.retention = timedelta(days=retention_days)
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._sql = _Statements(self.is_sqlite)
        # SQLite has one writer at a time: more threads would only queue on its lock.
        self._threads = ThreadPoolExecutor(1 if self.is_sqlite else 8, thread_name_prefix="store")
        self._active: set[int] = set()  # rows this process is running now; their leases are renewed
        self._queue: list[_Write] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, settings: StoreSettings, *, owner: str | None = None, migrate: bool = True) -> RunStore:
        """Open (and by default migrate) the configured database."""
        engine = open_engine(database_url(settings))
        if migrate:
            try:
                upgrade(engine)
            except SQLAlchemyError as exc:  # its text may hold the URL: only the type and the backend
                engine.dispose()
                where = "PostgreSQL (ORCHESTRATOR_DATABASE_URL)" if settings.database_url else \
                    f"SQLite under {settings.data_dir}"
                raise StoreUnavailable(f"cannot open the run store in {where}: {type(exc).__name__}") from None
        return cls(engine, owner=owner, lease_s=settings.claim_lease_s,
                   dedup_window_days=settings.dedup_window_days, retention_days=settings.retention_days)

    @classmethod
    def in_memory(cls, **options: Any) -> RunStore:
        """A private SQLite store in memory (embedded uses and tests that do not care about durability)."""
        engine = open_engine("sqlite://")
        upgrade(engine)
        return cls(engine, **options)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the group-commit writer and the lease renewer."""
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        self._renewer = asyncio.create_task(self._renew_loop(), name="store-lease-renewer")
        self._pruner = asyncio.create_task(self._prune_loop(), name="store-pruner")

    async def close(self) -> None:
        """Write what is queued, stop the background tasks, close the connections."""
        for task in (self._renewer, self._pruner):
            if task is not None:
                task.cancel()
        if self._writer is not None:
            await self._drain()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await asyncio.gather(*(t for t in (self._renewer, self._pruner) if t is not None), return_exceptions=True)
        self._threads.shutdown(wait=True)
        self.engine.dispose()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    # -- claims ---------------------------------------------------------------------------------------------

    async def claim(self, content: Content, *, source: tuple[str | None, int | None, int | None] = (None, None, None),
                    now: datetime | None = None) -> Claim:
        """Claim the exposure for this process, atomically; see `ClaimOutcome` for the answers."""
        when = now or utcnow()
        if self.is_sqlite:
            # One writer at a time anyway: claims join the group commit (one transaction, one commit, for every
            # claim and transition queued meanwhile). PostgreSQL claims stay one short transaction each, so
            # two instances' batches never hold each other's row locks.
            claim: Claim = await self._enqueue(lambda conn: self._claim_in(conn, content, source, when))
        else:
            claim = await self._run(self._claim, content, source, when)
        return claim

    def _claim(self, content: Content, source: tuple[str | None, int | None, int | None], now: datetime) -> Claim:
        with self.engine.begin() as conn:
            return self._claim_in(conn, content, source, now)

    def _claim_in(self, conn: Connection, content: Content, source: tuple[str | None, int | None, int | None],
                  now: datetime) -> Claim:
        sql = self._sql
        values = {
            "id": content.id, "content_fingerprint": content.fingerprint, "dedup_key": content.dedup_key,
            "credential_kind": content.kind, "credential_owner": content.owner, "target": content.target,
            "credential_id": content.credential_id, "dead_letter": None, "replay_request": None,
            "audit_position": None,
            "detector": content.detector, "actor": content.actor, "severity": content.severity,
            "actor_verified": content.actor_verified,
            "received_at": now, "state": State.RECEIVED.value, "playbook": content.playbook,
            "claimed_by": self.owner, "lease_expires_at": now + self.lease, "id_reused": False,
            "source_topic": source[0], "source_partition": source[1], "source_offset": source[2],
            "started_at": None, "finished_at": None, "run_id": None, "terminal_event": None, "error": None,
        }
        values["b_since"] = now - self.dedup_window
        # The common case first: new content is one INSERT.
        new = conn.execute(sql.insert_claim, values).one_or_none()
        inserted, reused = (new.row_id, bool(new.id_reused)) if new is not None else (None, False)
        row = None
        if inserted is None:
            row = conn.execute(sql.by_key, {"b_key": content.dedup_key}).one_or_none()
            if row is not None and State(row.state).terminal and row.received_at < now - self.dedup_window:
                # Outside the window the old row is history only: the content may run again.
                conn.execute(sql.update_row, {"b_row": row.row_id, "dedup_key": None})
                new = conn.execute(sql.insert_claim, values).one_or_none()
                inserted, reused = (new.row_id, bool(new.id_reused)) if new is not None else (None, False)
                row = None
            if inserted is None and row is None:  # lost a race on PostgreSQL: read the winner
                row = conn.execute(sql.by_key, {"b_key": content.dedup_key}).one()
        if inserted is not None:
            self._active.add(inserted)  # here, not after the commit: a later claim in this batch sees it
            return Claim(ClaimOutcome.NEW, inserted, id_reused=reused)
        assert row is not None
        state = State(row.state)
        row_source = (row.source_topic, row.source_partition, row.source_offset)
        if state.terminal:
            return Claim(ClaimOutcome.DUPLICATE, row.row_id, id_reused=row.id_reused, state=state,
                         terminal_event=row.terminal_event, source=row_source)
        lease_live = row.lease_expires_at is not None and row.lease_expires_at > now
        if (row.claimed_by != self.owner and lease_live) or row.row_id in self._active:
            return Claim(ClaimOutcome.BUSY, row.row_id, id_reused=row.id_reused, state=state, source=row_source)
        conn.execute(sql.update_row, {"b_row": row.row_id, "claimed_by": self.owner,
                                      "lease_expires_at": now + self.lease, "source_topic": source[0],
                                      "source_partition": source[1], "source_offset": source[2]})
        succeeded = conn.execute(sql.succeeded, {"b_row": row.row_id}).scalars()
        self._active.add(row.row_id)
        return Claim(ClaimOutcome.RESUMED, row.row_id, id_reused=row.id_reused,
                     succeeded_steps=frozenset(succeeded), state=state, source=row_source, run_id=row.run_id,
                     ending=row.terminal_event, audit_position=row.audit_position)

    async def claim_replay(self, row_id: int, exposure_id: str, request_id: str, *,
                           now: datetime | None = None) -> Claim:
        """Claim a failed exposure's row for replay request `request_id`, atomically: `NEW` (re-opened, with the
        steps every earlier run succeeded in), `RESUMED` (this request's replay lost its owner), `BUSY` (a
        run of the exposure is live), `DONE` (this request already ran), `NOT_FAILED` or `UNKNOWN`."""
        return await self._run(self._claim_replay, row_id, exposure_id, request_id, now or utcnow())

    def _claim_replay(self, row_id: int, exposure_id: str, request_id: str, now: datetime) -> Claim:
        sql = self._sql
        with self.engine.begin() as conn:
            row = conn.execute(sql.by_row, {"b_row": row_id}).one_or_none()
            if row is None or row.id != exposure_id:
                return Claim(ClaimOutcome.UNKNOWN, row_id)
            state = State(row.state)
            source = (row.source_topic, row.source_partition, row.source_offset)
            mine = row.replay_request == request_id
            if state.terminal and (mine or state is not State.FAILED):
                outcome = ClaimOutcome.DONE if mine else ClaimOutcome.NOT_FAILED
                return Claim(outcome, row_id, id_reused=row.id_reused, state=state,
                             terminal_event=row.terminal_event, source=source)
            if not state.terminal:
                lease_live = row.lease_expires_at is not None and row.lease_expires_at > now
                if not mine or lease_live or row_id in self._active:
                    return Claim(ClaimOutcome.BUSY, row_id, id_reused=row.id_reused, state=state, source=source)
                outcome, values, now_state = ClaimOutcome.RESUMED, {}, state
            else:
                outcome, now_state = ClaimOutcome.NEW, reopen(state)
                values = {"state": now_state.value, "replay_request": request_id, "terminal_event": None,
                          "audit_position": None,
                          "error": None, "finished_at": None}
            conn.execute(sql.update_row, {"b_row": row_id, "claimed_by": self.owner,
                                          "lease_expires_at": now + self.lease, **values})
            succeeded = conn.execute(sql.succeeded, {"b_row": row_id}).scalars()
            self._active.add(row_id)
            resumed = outcome is ClaimOutcome.RESUMED
            return Claim(outcome, row_id, id_reused=row.id_reused, succeeded_steps=frozenset(succeeded),
                         state=now_state, source=source, ending=row.terminal_event if resumed else None,
                         audit_position=row.audit_position if resumed else None)

    async def row(self, row_id: int) -> dict[str, Any] | None:
        """One exposure row, with its steps (as `lookup` gives them)."""
        return await self._run(self.row_sync, row_id)

    def row_sync(self, row_id: int) -> dict[str, Any] | None:
        """`row`, blocking."""
        with self.engine.connect().execution_options(read_only=True) as conn:
            row = conn.execute(select(exposures).where(exposures.c.row_id == row_id)).one_or_none()
            return None if row is None else self._with_steps(conn, dict(row._mapping))

    async def release(self, row_id: int) -> None:
        """Stop working on a claimed row without ending it (shutdown): its lease expires now, so the next
        delivery, here or in another process, resumes it at once."""
        self._active.discard(row_id)
        await self._run(self._release, row_id, utcnow())

    def _release(self, row_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._sql.lease, {"b_rows": [row_id], "b_owner": self.owner, "lease_expires_at": now})

    async def _renew_loop(self) -> None:
        interval = max(0.05, self.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            if self._active:
                try:
                    await self._run(self._renew, list(self._active), utcnow())
                except Exception as exc:  # noqa: BLE001 - retried at the next tick; a lost lease is survivable
                    log.warning("store.lease_renewal_failed", error=type(exc).__name__)

    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("store.pruned", exposures=pruned, retention_days=self.retention.days)
            except Exception as exc:  # noqa: BLE001 - tried again in an hour
                log.warning("store.prune_failed", error=type(exc).__name__)
            await asyncio.sleep(PRUNE_INTERVAL_S)

    def _renew(self, rows: list[int], now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._sql.lease, {"b_rows": rows, "b_owner": self.owner, "lease_expires_at": now + self.lease})

    # -- transitions (group-committed) ----------------------------------------------------------------------

    def started(self, row_id: int, *, run_id: str, playbook: str, at: datetime | None = None) -> None:
        """Queue `running` (not awaited: the queue keeps order, and the terminal write is awaited)."""
        when = at or utcnow()
        self._enqueue_transition(row_id, State.RUNNING, {"started_at": when, "run_id": run_id, "playbook": playbook})

    def move(self, row_id: int, state: State) -> asyncio.Future[Any]:
        """Queue a move between live states (awaiting approval and back to running); the future resolves once
        committed, or fails naming a move the state machine refuses."""
        return self._enqueue_transition(row_id, state, {})

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store work (`fn(*args)`) on the store's threads."""
        return await self._run(fn, *args)

    def step(self, row_id: int, run_id: str, outcome: StepRow) -> asyncio.Future[Any]:
        """Queue one step's outcome (replacing that step's earlier row in the same run); the future resolves
        once committed."""
        params = {"exposure_row": row_id, "run_id": run_id, "step": outcome.step, "action": outcome.action,
                  "state": outcome.state, "attempts": outcome.attempts, "error": outcome.error,
                  "started_at": outcome.started_at, "finished_at": outcome.finished_at, "undo": outcome.undo}
        return self._enqueue(lambda conn: conn.execute(self._sql.upsert_step, params),
                             _Batchable(("step",), self._sql.upsert_step, params))

    async def ending(self, row_id: int, terminal_event: str, audit_position: str | None) -> None:
        """Say, before writing it, which terminal record the live row is about to get and after which of its
        acknowledged audit records; returns once committed (see `Claim.ending`)."""
        params = {"b_row": row_id, "terminal_event": terminal_event, "audit_position": audit_position}
        await self._enqueue(lambda conn: conn.execute(self._sql.update_row, params),
                            _Batchable(("ending",), self._sql.update_row, params))

    async def finish(self, row_id: int, state: State, *, terminal_event: str, error: str | None = None,
                     run_id: str | None = None, playbook: str | None = None, dead_letter: str | None = None,
                     at: datetime | None = None) -> None:
        """Record the terminal state; returns once committed. Clears the claim. `dead_letter` is where the
        original record was kept (encrypted) for a replay."""
        self._active.discard(row_id)
        when = at or utcnow()
        values: dict[str, Any] = {"finished_at": when, "terminal_event": terminal_event, "error": error,
                                  "claimed_by": None, "lease_expires_at": None}
        if run_id is not None:
            values["run_id"] = run_id
        if playbook is not None:
            values["playbook"] = playbook
        if dead_letter is not None:
            values["dead_letter"] = dead_letter
        await self._enqueue_transition(row_id, state, values)

    def _enqueue_transition(self, row_id: int, target: State, values: dict[str, Any]) -> asyncio.Future[Any]:
        params = {"b_row": row_id, "state": target.value, **values}
        statement = self._sql.transitions[target]
        return self._enqueue(lambda conn: self._transition(conn, row_id, target, **values),
                             _Batchable(("transition", target, *sorted(params)), statement, params, target))

    def _enqueue(self, apply: Callable[[Connection], Any], batchable: _Batchable | None = None) -> asyncio.Future[Any]:
        write = _Write(apply, batchable)
        self._queue.append(write)
        if self._wake is None:  # not started: a one-off caller (CLI, tests) writes at once
            self._wake = asyncio.Event()
            self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        self._wake.set()
        return write.done

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                outcomes = await self._run(self._apply_batch, batch)
            except Exception as exc:  # noqa: BLE001 - told to every waiter; the store stays usable
                log.error("store.write_failed", error=type(exc).__name__, writes=len(batch))
                outcomes = [(None, exc)] * len(batch)
            for write, (result, error) in zip(batch, outcomes, strict=True):
                if write.done.done():
                    continue
                if error is None:
                    write.done.set_result(result)
                else:
                    write.done.set_exception(error)
                    write.done.exception()  # fire-and-forget writes are not awaited: mark it retrieved

    def _apply_batch(self, batch: Sequence[_Write]) -> list[tuple[Any, Exception | None]]:
        # No savepoint per write (two more statements each): an invalid transition is refused before it writes,
        # and any other error fails the whole batch, whose waiters retry or report it.
        # Claims (SQLite's, the only writes that are not batchable) first, one by one: a row's claim and its later
        # writes never share a batch (the claim is awaited first), and a claim that finds a row another write of
        # the batch would end only waits (busy) and finds it ended next time.
        outcomes: dict[int, tuple[Any, Exception | None]] = {}
        with self.engine.begin() as conn:
            for n, write in enumerate(batch):
                if write.batchable is None:
                    try:
                        outcomes[n] = (write.apply(conn), None)
                    except InvalidTransition as exc:
                        log.warning("store.invalid_transition", error=str(exc))
                        outcomes[n] = (None, exc)
            many = [n for n, write in enumerate(batch) if write.batchable is not None]
            if many:
                outcomes.update(zip(many, self._apply_many(conn, [batch[n].batchable for n in many]), strict=True))
        return [outcomes[n] for n in range(len(batch))]

    def _apply_many(self, conn: Connection, writes: Sequence[_Batchable | None]) -> list[tuple[Any, Exception | None]]:
        """The batch as one `executemany` per kind of write: PostgreSQL then pipelines each kind's statements
        instead of a round trip per statement, SQLite loops in C instead of Python. Kinds run in the order they
        first appear. That may run one row's writes out of order only for writes its caller did not wait for in
        between, and those (running, a step, the end announced) touch different columns or tables; an end is
        queued only after the announcement was committed, so never in its batch."""
        groups: dict[tuple[Any, ...], list[_Batchable]] = {}
        for write in writes:
            assert write is not None
            groups.setdefault(write.key, []).append(write)
        for group in groups.values():
            conn.execute(group[0].statement, [w.params for w in group])
        moved = [w for w in writes if w is not None and w.target is not None]
        found: dict[int, Any] = {}
        if moved:
            rows = [w.params["b_row"] for w in moved]
            found = {r.row_id: r for r in conn.execute(
                select(exposures.c.row_id, exposures.c.state, exposures.c.started_at, exposures.c.finished_at)
                .where(exposures.c.row_id.in_(rows)))}
        outcomes: list[tuple[Any, Exception | None]] = []
        for write in writes:
            error: Exception | None = None
            if write is not None and write.target is not None:
                row = found.get(write.params["b_row"])
                # Applied when the row is in the target state with this write's own time, if it sets one (a move
                # back to running after an approval does not): there is no per-row count.
                stamp = "started_at" if write.target is State.RUNNING else "finished_at"
                if row is None:
                    error = LookupError(f"no exposure row {write.params['b_row']}")
                elif row.state != write.target.value or (
                        stamp in write.params and getattr(row, stamp) != write.params[stamp]):
                    try:  # refused by the WHERE clause: the state machine names the move
                        move(State(row.state), write.target)
                        error = InvalidTransition(f"{row.state} → {write.target.value} was not applied")
                    except InvalidTransition as exc:
                        error = exc
                    log.warning("store.invalid_transition", error=str(error))
            outcomes.append((None, error))
        return outcomes

    async def flush(self) -> None:
        """Wait until every write queued so far is committed (or failed)."""
        await self._drain()

    async def _drain(self) -> None:
        if self._queue and self._wake is not None:
            self._wake.set()
        pending = [w.done for w in self._queue]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _transition(self, conn: Connection, row_id: int, target: State, **values: Any) -> None:
        # One statement: the state machine's predecessors of `target` are the WHERE clause.
        changed = conn.execute(self._sql.transitions[target], {"b_row": row_id, "state": target.value,
                                                               **values}).rowcount
        if changed == 0:
            current = conn.execute(self._sql.state_of, {"b_row": row_id}).scalar_one_or_none()
            if current is None:
                raise LookupError(f"no exposure row {row_id}")
            move(State(current), target)  # raises InvalidTransition, naming the move

    def _write_step(self, conn: Connection, row_id: int, run_id: str, outcome: StepRow) -> None:
        conn.execute(self._sql.upsert_step, {
            "exposure_row": row_id, "run_id": run_id, "step": outcome.step, "action": outcome.action,
            "state": outcome.state, "attempts": outcome.attempts, "error": outcome.error,
            "started_at": outcome.started_at, "finished_at": outcome.finished_at, "undo": outcome.undo})

    # -- reading --------------------------------------------------------------------------------------------

    async def lookup(self, id_or_prefix: str) -> list[dict[str, Any]]:
        """Rows of the exposure with this id, newest first; else of the one exposure whose id starts with it.
        Raises `AmbiguousPrefix` when several ids do."""
        return await self._run(self.lookup_sync, id_or_prefix)

    def lookup_sync(self, id_or_prefix: str) -> list[dict[str, Any]]:
        """`lookup`, blocking (for the CLI)."""
        newest = (exposures.c.received_at.desc(), exposures.c.row_id.desc())
        with self.engine.connect().execution_options(read_only=True) as conn:
            rows = conn.execute(select(exposures).where(exposures.c.id == id_or_prefix).order_by(*newest)).all()
            if not rows:
                escaped = id_or_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                # The range lets SQLite (whose LIKE ignores case, so skips the index) and PostgreSQL use the id
                # index; LIKE keeps the answer exact whatever the collation orders.
                ids = conn.execute(select(exposures.c.id).where(
                    exposures.c.id >= id_or_prefix, exposures.c.id < id_or_prefix + "\U0010ffff",
                    exposures.c.id.like(escaped + "%", escape="\\")).distinct().limit(11)).scalars().all()
                if len(ids) > 1:
                    raise AmbiguousPrefix(id_or_prefix, sorted(ids))
                if ids:
                    rows = conn.execute(select(exposures).where(exposures.c.id == ids[0]).order_by(*newest)).all()
            return [self._with_steps(conn, dict(r._mapping)) for r in rows]

    @staticmethod
    def _with_steps(conn: Connection, entry: dict[str, Any]) -> dict[str, Any]:
        entry["steps"] = [dict(s._mapping) for s in conn.execute(
            select(steps.c.run_id, steps.c.step, steps.c.action, steps.c.state, steps.c.attempts,
                   steps.c.error, steps.c.started_at, steps.c.finished_at)
            .where(steps.c.exposure_row == entry["row_id"]).order_by(steps.c.row_id))]
        return entry

    async def recent(self, **filters: Any) -> tuple[list[dict[str, Any]], str | None]:
        """See `recent_sync`."""
        return await self._run(lambda: self.recent_sync(**filters))

    def recent_sync(self, *, state: str | None = None, kind: str | None = None, owner: str | None = None,
                  detector: str | None = None, since: datetime | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Exposures newest first, filtered; and the cursor of the next page (None on the last)."""
        query = select(exposures)
        conditions = []
        if state:
            conditions.append(exposures.c.state == state)
        if kind:
            conditions.append(exposures.c.credential_kind == kind)
        if owner:
            conditions.append(exposures.c.credential_owner == owner)
        if detector:
            conditions.append(exposures.c.detector == detector)
        if since:
            conditions.append(exposures.c.received_at >= as_naive_utc(since))
        if cursor:
            at, row_id = decode_cursor(cursor)
            conditions.append(or_(exposures.c.received_at < at,
                                  and_(exposures.c.received_at == at, exposures.c.row_id < row_id)))
        query = query.where(*conditions).order_by(exposures.c.received_at.desc(), exposures.c.row_id.desc())
        with self.engine.connect().execution_options(read_only=True) as conn:
            rows = [dict(r._mapping) for r in conn.execute(query.limit(limit + 1))]
        following = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return rows[:limit], following

    def count(self) -> int:
        """How many exposure rows the store holds."""
        with self.engine.connect().execution_options(read_only=True) as conn:
            return int(conn.execute(select(func.count()).select_from(exposures)).scalar_one())

    def import_rows(self, rows: Iterable[Any]) -> int:
        """Insert rebuilt rows (see `rebuild.fold`) the store does not know yet; return how many."""
        added = 0
        with self.engine.begin() as conn:
            for row in rows:
                insert = (postgresql.insert if not self.is_sqlite else sqlite.insert)(exposures)
                row_id = conn.execute(insert.values(**row.values).on_conflict_do_nothing(index_elements=["dedup_key"])
                                      .returning(exposures.c.row_id)).scalar_one_or_none()
                if row_id is None:
                    continue
                added += 1
                for (run_id, _), step in row.steps.items():
                    self._write_step(conn, row_id, run_id, step)
        return added

    # -- upkeep ---------------------------------------------------------------------------------------------

    async def prune(self, now: datetime | None = None) -> int:
        """Delete ended exposures older than the retention; return how many."""
        return await self._run(self._prune, now or utcnow())

    def _prune(self, now: datetime) -> int:
        cutoff = now - self.retention
        ended = [s.value for s in State if s.terminal]
        with self.engine.begin() as conn:
            old = select(exposures.c.row_id).where(exposures.c.received_at < cutoff, exposures.c.state.in_(ended))
            conn.execute(delete(steps).where(steps.c.exposure_row.in_(old)))
            return int(conn.execute(delete(exposures).where(exposures.c.row_id.in_(old))).rowcount)


class _Statements:
    """The hot path's statements, built once: building a Core statement per call costs more than running it."""

    def __init__(self, is_sqlite: bool) -> None:
        # SQLAlchemy cannot cache its dialect `insert … on_conflict` constructs (it compiles them on every
        # call); these two are plain text, with the same syntax in SQLite ≥ 3.35 and PostgreSQL.
        # `id_reused` is worked out inside the INSERT: one round trip for new content, on PostgreSQL too.
        self.insert_claim = _insert_text(exposures, "ON CONFLICT (dedup_key) DO NOTHING RETURNING row_id, id_reused",
                                         id_reused="(SELECT EXISTS (SELECT 1 FROM exposures WHERE id = :id AND "
                                                   "content_fingerprint != :content_fingerprint AND "
                                                   "received_at >= :b_since))")
        kept = ("state", "attempts", "error", "finished_at", "undo")
        self.upsert_step = _insert_text(steps, "ON CONFLICT (exposure_row, run_id, step) DO UPDATE SET "
                                        + ", ".join(f"{c} = excluded.{c}" for c in kept))
        by_key = select(exposures).where(exposures.c.dedup_key == bindparam("b_key"))
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock; PostgreSQL: lock the row.
        self.by_key = by_key if is_sqlite else by_key.with_for_update()
        # Executed with the columns to set as parameters beside `b_row`.
        self.update_row = update(exposures).where(exposures.c.row_id == bindparam("b_row"))
        # One per target state, its allowed predecessors written in the SQL (executemany cannot expand a list;
        # they are the enum's own constant names).
        self.transitions = {
            target: update(exposures).where(exposures.c.row_id == bindparam("b_row"), _one_of(
                [state.value for state in State if can_move(state, target)]))
            for target in State}
        by_row = select(exposures).where(exposures.c.row_id == bindparam("b_row"))
        self.by_row = by_row if is_sqlite else by_row.with_for_update()
        self.state_of = select(exposures.c.state).where(exposures.c.row_id == bindparam("b_row"))
        self.succeeded = select(steps.c.step).where(steps.c.exposure_row == bindparam("b_row"),
                                                    steps.c.state == "succeeded")
        self.lease = update(exposures).where(exposures.c.row_id.in_(bindparam("b_rows", expanding=True)),
                                             exposures.c.claimed_by == bindparam("b_owner"))


def _one_of(states: list[str]) -> ColumnElement[bool]:
    """`state IN ('a', 'b')` with the names inline; false for none."""
    if not states:
        return false()
    return exposures.c.state.in_([literal_column(f"'{name}'") for name in states])


def _insert_text(table: Table, tail: str, **expressions: str) -> TextClause | TextualSelect:
    """`INSERT INTO table (every column but row_id) VALUES (:column …) tail`; `expressions` replace some values."""
    columns = [c for c in table.c if c.name != "row_id"]
    values = ", ".join(expressions.get(c.name, ":" + c.name) for c in columns)
    sql = f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)}) VALUES ({values}) {tail}"  # noqa: S608
    typed = [bindparam(c.name, type_=c.type) for c in columns if c.name not in expressions]
    if expressions:
        typed.append(bindparam("b_since", type_=exposures.c.received_at.type))
    statement = text(sql).bindparams(*typed)
    # RETURNING's columns typed, so SQLite's 0/1 comes back a bool.
    return statement.columns(exposures.c.row_id, exposures.c.id_reused) if "RETURNING" in tail else statement


class StoreUnavailable(OrchestratorError):
    """The database cannot be reached or migrated."""


class AmbiguousPrefix(LookupError):
    """Several exposure ids start with the prefix asked for."""

    def __init__(self, prefix: str, ids: Iterable[str]) -> None:
        self.ids = list(ids)
        super().__init__(f"{prefix!r} matches several exposures: {', '.join(self.ids[:10])}")


def encode_cursor(row: dict[str, Any]) -> str:
    """An opaque page cursor: the last row's time and row id."""
    return base64.urlsafe_b64encode(f"{row['received_at'].isoformat()}|{row['row_id']}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The time and row id in a cursor; ValueError when it is not one."""
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(at), int(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
