"""ALS service: run id on model versions, the training lease, the service's durable state.

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


def upgrade() -> None:
    with op.batch_alter_table("als_models") as batch:
        batch.add_column(sa.Column("run_id", sa.String(length=64), nullable=True))
    op.create_index("ix_als_models_kind_status", "als_models", ["kind", "status"])
    op.create_table(
        "als_locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "als_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("als_state")
    op.drop_table("als_locks")
    op.drop_index("ix_als_models_kind_status", table_name="als_models")
    with op.batch_alter_table("als_models") as batch:
        batch.drop_column("run_id")
