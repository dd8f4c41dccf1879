"""The initial schema: exposures and steps.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "exposures",
        sa.Column("row_id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("content_fingerprint", sa.String(64), nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=True, unique=True),
        sa.Column("credential_kind", sa.String(100), nullable=False),
        sa.Column("credential_owner", sa.String(500), nullable=True),
        sa.Column("target", sa.String(700), nullable=True),
        sa.Column("detector", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("severity", sa.String(20), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("playbook", sa.String(200), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("terminal_event", sa.String(40), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("source_topic", sa.String(300), nullable=True),
        sa.Column("source_partition", sa.Integer, nullable=True),
        sa.Column("source_offset", sa.BigInteger, nullable=True),
        sa.Column("id_reused", sa.Boolean, nullable=False),
    )
    op.create_index("ix_exposures_id", "exposures", ["id"])
    op.create_index("ix_exposures_received_at", "exposures", ["received_at"])
    op.create_index("ix_exposures_state_received_at", "exposures", ["state", "received_at"])
    op.create_index("ix_exposures_claimed_by", "exposures", ["claimed_by"])
    op.create_table(
        "steps",
        sa.Column("row_id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("exposure_row", _RowId, sa.ForeignKey("exposures.row_id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("exposure_row", "run_id", "step", name="uq_steps_run_step"),
    )


def downgrade() -> None:
    op.drop_table("steps")
    op.drop_table("exposures")
