"""Erasures: the users erased, by the SHA-256 of their id, and when.

An erased user's row and events are deleted (``recsys users erase``, ``DELETE
/v1/users/<id>``); before this table nothing remembered them, so re-ingesting an old events
file brought them back whole, and a single new event of theirs made a feed fold their erased
history in again from the bundle. The table holds no id, only its SHA-256 (``users.user_key``),
and the time of the latest erasure. Erasures made before this revision are not in it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("user_key", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_key", name=op.f("pk_erasures")),
    )


def downgrade() -> None:
    op.drop_table("erasures")
