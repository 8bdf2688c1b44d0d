"""Interactions are unique by (user_id, dedup_key), not by dedup_key alone.

The key is a digest of (user, item, event, timestamp), so the two constraints accept the same
rows. But an index on the digest alone sits in random order, and every new event of a large
catalog lands on a page of its own: at 18M stored events a SQLite insert was held at about
20k rows/s by that index (benchmarks/RESULTS.md, sessions 16 and 18). Led by the user, one
user's new events share pages, as they already do in the (user, time) index.

SQLite cannot drop a constraint written into its table, so the table is copied once there
(6.5 minutes for 20M events on a 2-core machine, RESULTS session 18); PostgreSQL alters it in
place and builds one index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _clear_killed_copy() -> None:
    """SQLite creates batch mode's copy of the table before the transaction that fills it
    begins: an upgrade killed mid-copy leaves that copy, empty, beside the intact table, and
    the next try must not trip on it."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS _alembic_tmp_interactions")


def upgrade() -> None:
    _clear_killed_copy()
    with op.batch_alter_table("interactions") as batch:
        batch.drop_constraint("uq_interactions_dedup_key", type_="unique")
        batch.create_unique_constraint("uq_interactions_user_key", ["user_id", "dedup_key"])


def downgrade() -> None:
    _clear_killed_copy()
    with op.batch_alter_table("interactions") as batch:
        batch.drop_constraint("uq_interactions_user_key", type_="unique")
        batch.create_unique_constraint(op.f("uq_interactions_dedup_key"), ["dedup_key"])
