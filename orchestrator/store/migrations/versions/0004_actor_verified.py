"""Whether a signed record header vouched for the exposure's `actor` (the API or the CLI set it).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("actor_verified", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("actor_verified")
