"""The store's tables, in SQLAlchemy Core: one schema for SQLite and PostgreSQL (Alembic migrates it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
_RowId = BigInteger().with_variant(Integer(), "sqlite")

exposures = Table(
    "exposures", metadata,
    Column("row_id", _RowId, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False),
    #: sha256 over the credential's fingerprint, kind, handle and requested playbook: the exposure's identity.
    Column("content_fingerprint", String(64), nullable=False),
    #: `id:content_fingerprint` while the row deduplicates; NULL once it is older than the dedup window.
    Column("dedup_key", String(300), nullable=True, unique=True),
    Column("credential_kind", String(100), nullable=False),
    Column("credential_owner", String(500), nullable=True),
    Column("target", String(700), nullable=True),
    Column("detector", String(200), nullable=True),
    Column("actor", String(200), nullable=True),
    #: True when a signed record header vouched for `actor` (set by the API or the CLI); NULL before 0004.
    Column("actor_verified", Boolean, nullable=True),
    Column("severity", String(20), nullable=True),
    Column("received_at", DateTime(), nullable=False),
    Column("started_at", DateTime(), nullable=True),
    Column("finished_at", DateTime(), nullable=True),
    Column("state", String(20), nullable=False),
    Column("playbook", String(200), nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("terminal_event", String(40), nullable=True),
    Column("error", Text, nullable=True),
    Column("claimed_by", String(200), nullable=True),
    Column("lease_expires_at", DateTime(), nullable=True),
    Column("source_topic", String(300), nullable=True),
    Column("source_partition", Integer, nullable=True),
    Column("source_offset", BigInteger, nullable=True),
    Column("id_reused", Boolean, nullable=False, default=False),
    #: The credential's non-secret handle (`credential.id`): a replay rebuilds the exposure from the row.
    Column("credential_id", String(500), nullable=True),
    #: `PARTITION:OFFSET` on the dead-letter topic of the original record, encrypted, kept when a run that
    #: carried a secret failed with an encryption key configured: what a replay takes the secret from.
    Column("dead_letter", String(40), nullable=True),
    #: The id of the last replay request that claimed the row: a redelivered request does nothing twice.
    Column("replay_request", String(64), nullable=True),
    #: Set with `terminal_event` while the row is still live, just before its terminal record is written:
    #: `PARTITION:OFFSET` of its last acknowledged audit record. If the owner dies now, whoever takes the row
    #: over looks there for the terminal record before running anything (exactly one terminal record).
    Column("audit_position", String(40), nullable=True),
    Index("ix_exposures_id", "id"),
    Index("ix_exposures_received_at", "received_at"),
    Index("ix_exposures_state_received_at", "state", "received_at"),
    Index("ix_exposures_claimed_by", "claimed_by"),
)

steps = Table(
    "steps", metadata,
    Column("row_id", _RowId, primary_key=True, autoincrement=True),
    Column("exposure_row", _RowId, ForeignKey("exposures.row_id", ondelete="CASCADE"), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("step", String(200), nullable=False),
    Column("action", String(200), nullable=True),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime(), nullable=True),
    Column("finished_at", DateTime(), nullable=True),
    #: JSON `{"action": ..., "params": {...}}`: how `orchestrator undo` reverses this step (non-secret ids).
    Column("undo", Text, nullable=True),
    UniqueConstraint("exposure_row", "run_id", "step", name="uq_steps_run_step"),
)

#: Runs waiting for a person: two-person approvals and runs held by the mass-action brake. One row per run.
approvals = Table(
    "approvals", metadata,
    Column("row_id", _RowId, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("exposure_id", String(200), nullable=False),
    Column("exposure_row", _RowId, ForeignKey("exposures.row_id", ondelete="CASCADE"), nullable=True),
    Column("kind", String(20), nullable=False),  # approval | brake
    Column("requester", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("plan", Text, nullable=False),  # JSON list of planned steps
    Column("created_at", DateTime(), nullable=False),
    Column("expires_at", DateTime(), nullable=False),
    Column("decision", String(20), nullable=True),  # approved | denied | expired | released | dropped
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", DateTime(), nullable=True),
    Column("why", Text, nullable=True),
    Index("ix_approvals_pending", "decision", "kind"),
)

#: The mass-action brake's shared state: one row, `name` = "brake".
brake_state = Table(
    "brake_state", metadata,
    Column("name", String(50), primary_key=True),
    Column("held", Boolean, nullable=False, default=False),
    Column("released_at", DateTime(), nullable=True),
    Column("updated_by", String(200), nullable=True),
    Column("updated_at", DateTime(), nullable=True),
    Column("why", Text, nullable=True),
)
