"""Retriever: indexes on updated_at so the catalog refresh reads only what changed.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_updated_at", "items", ["updated_at"])
    op.create_index("ix_reviews_updated_at", "reviews", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_reviews_updated_at", table_name="reviews")
    op.drop_index("ix_items_updated_at", table_name="items")
