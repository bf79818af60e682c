"""``item_neighbours``: per-item co-review and transition lists of a model version (Spark training job).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_neighbours",
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("parent_asin", sa.String(length=128), nullable=False),
        sa.Column("neighbours", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["model_version"], ["als_models.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_version", "kind", "parent_asin"),
    )


def downgrade() -> None:
    op.drop_table("item_neighbours")
