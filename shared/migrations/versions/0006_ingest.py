"""Ingest: ``row_hash`` on reviews and items, so an upsert of an unchanged record emits no event.

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("reviews", "items"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("row_hash", sa.String(length=40), nullable=True))


def downgrade() -> None:
    for table in ("items", "reviews"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("row_hash")
