"""Two-person approvals, the mass-action brake's state, and how to undo each step.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("undo", sa.Text, nullable=True))
    op.create_table(
        "approvals",
        sa.Column("row_id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("exposure_id", sa.String(200), nullable=False),
        sa.Column("exposure_row", _RowId, sa.ForeignKey("exposures.row_id", ondelete="CASCADE"), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("requester", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("decision", sa.String(20), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("why", sa.Text, nullable=True),
    )
    op.create_index("ix_approvals_pending", "approvals", ["decision", "kind"])
    op.create_table(
        "brake_state",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("held", sa.Boolean, nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("why", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("brake_state")
    op.drop_table("approvals")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("undo")
