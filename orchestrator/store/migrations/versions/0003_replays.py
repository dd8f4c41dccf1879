"""Replays and exact ends: the credential's handle, where a failed run's original record is kept, the last
replay request, and where on the audit topic a run's end may be found if its owner died while ending it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("credential_id", sa.String(500), nullable=True))
        batch.add_column(sa.Column("dead_letter", sa.String(40), nullable=True))
        batch.add_column(sa.Column("replay_request", sa.String(64), nullable=True))
        batch.add_column(sa.Column("audit_position", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("audit_position")
        batch.drop_column("replay_request")
        batch.drop_column("dead_letter")
        batch.drop_column("credential_id")
