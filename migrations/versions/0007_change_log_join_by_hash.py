"""PostgreSQL: the item change log's trigger joins its transition tables by hash.

An UPDATE's statement trigger (0004) pairs the statement's old and new rows by id. The planner
has no row count for a transition table, guesses one row, and joins the two by nested loop:
a statement that changed n items cost n² comparisons (20,000 changed items: 35-45 s, where
the UPDATE itself took 0.1 s). With nested loops off for the function, the join is a hash
join for any n. SQLite logs each row in its own trigger and is not touched.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "recsys_log_item_changes()"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER FUNCTION {FUNCTION} SET enable_nestloop = off")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER FUNCTION {FUNCTION} RESET enable_nestloop")
