"""Drop ``processed_events``: an idempotency ledger no consumer ever used (every consumer upserts).

Also the place to note that the empty "reserved" revisions 0003 (profiler) and 0005 (explainer) were
removed: 0004 now follows 0002 and 0006 follows 0004. A database stamped at 0003 or 0005 (never a
head of a release) must be stamped at 0002 or 0004 before upgrading.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("processed_events")


def downgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("event_key", sa.String(length=256), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_key"),
    )
