"""Every id column as long as validation allows (``shared.amazon.MAX_ID``, 128 characters).

``parent_asin`` and ``asin`` were ``VARCHAR(64)`` while validation accepted 128 characters: on
PostgreSQL a 100-character id passed validation and then failed its whole batch on insert.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The limit at the time of this revision: a migration must not change when the constant does.
ID_LENGTH = 128
WIDENED = {
    "reviews": ("parent_asin", "asin"),
    "items": ("parent_asin",),
    "explanations": ("parent_asin",),
}


def _alter(length: int) -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.String(length=length), existing_nullable=column == "asin")


def upgrade() -> None:
    _alter(ID_LENGTH)


def downgrade() -> None:
    _alter(64)
