"""ALS top-N stored compactly: one row per (version, user) instead of one per (version, user, rank).

A full All_Beauty run wrote 31.6M rows (632k users x 50) and the write dominated the pipeline; now a
user's list is two small binary columns (item ordinals, scores) and each version keeps its item index.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "als_item_index",
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("item_ids", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["model_version"], ["als_models.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_version"),
    )
    op.create_table(
        "als_topn",
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("items", sa.LargeBinary(), nullable=False),
        sa.Column("scores", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["model_version"], ["als_models.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_version", "user_id"),
    )
    op.drop_table("als_recommendations")


def downgrade() -> None:
    op.create_table(
        "als_recommendations",
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("parent_asin", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_version"], ["als_models.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_version", "user_id", "rank"),
    )
    op.drop_table("als_topn")
    op.drop_table("als_item_index")
