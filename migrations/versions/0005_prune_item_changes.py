"""Pruning the item change log: when each row was logged, and how far the log was pruned.

``item_changes.changed_at`` (naive UTC) lets ``recsys db prune-changes`` keep the rows of the
last days; rows logged before this migration are stamped with its time.
``catalog_state.changes_pruned_through`` is the highest generation whose rows may be gone: a
reader whose mark is below it cannot trust the log to hold every change since its mark and
starts afresh (``recsys.catalog.changes``).

PostgreSQL stamps ``changed_at`` by the column's default (the transaction's start, in UTC;
adding a column with a stable default rewrites no row). SQLite cannot add a column with a
non-constant default, so its per-row triggers of 0004 are replaced by the same bodies naming
``changed_at`` (the statement's time, in SQLAlchemy's text form for SQLite datetimes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE catalog_state SET items_generation = items_generation + 1 WHERE id = 1"
NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"  # 'YYYY-MM-DD HH:MM:SS.ffffff'
CONTENT = (
    "(NEW.title IS NOT OLD.title OR NEW.image_path IS NOT OLD.image_path "
    "OR NEW.attributes IS NOT OLD.attributes OR NEW.external_id <> OLD.external_id)"
)


def _sqlite_bodies(stamp: bool) -> dict[str, str]:
    """0004's trigger bodies; with ``stamp``, each log row also gets ``changed_at``."""
    columns = "generation, external_id, deleted, content" + (", changed_at" if stamp else "")
    log = f"INSERT INTO item_changes ({columns})"
    now = f", {NOW}" if stamp else ""
    row = "SELECT items_generation, {id}, {deleted}, {content}" + now + " FROM catalog_state"
    return {
        "insert": f"{BUMP}; {log} {row.format(id='NEW.external_id', deleted=0, content=1)} "
        "WHERE id = 1;",
        "update": f"{BUMP}; {log} {row.format(id='NEW.external_id', deleted=0, content=CONTENT)}"
        f" WHERE id = 1; {log} {row.format(id='OLD.external_id', deleted=1, content=0)} "
        "WHERE id = 1 AND OLD.external_id <> NEW.external_id;",
        "delete": f"{BUMP}; {log} {row.format(id='OLD.external_id', deleted=1, content=0)} "
        "WHERE id = 1;",
    }


def upgrade() -> None:
    op.add_column(
        "catalog_state",
        sa.Column("changes_pruned_through", sa.Integer(), server_default="0", nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "item_changes",
            sa.Column(
                "changed_at",
                sa.DateTime(),
                server_default=sa.text("timezone('utc', now())"),
                nullable=True,
            ),
        )
        return
    op.add_column("item_changes", sa.Column("changed_at", sa.DateTime(), nullable=True))
    op.execute(f"UPDATE item_changes SET changed_at = {NOW}")
    _sqlite_triggers(_sqlite_bodies(stamp=True))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_triggers(_sqlite_bodies(stamp=False))
    # plain DROP COLUMN (SQLite 3.35+): a batch copy of item_changes could not be renamed
    # into place while the triggers on items name it
    op.execute("ALTER TABLE item_changes DROP COLUMN changed_at")
    op.execute("ALTER TABLE catalog_state DROP COLUMN changes_pruned_through")


def _sqlite_triggers(bodies: dict[str, str]) -> None:
    """Replace the per-row triggers (the names stay) with these bodies."""
    for event, body in bodies.items():
        op.execute(f"DROP TRIGGER items_generation_{event}")
        op.execute(
            f"CREATE TRIGGER items_generation_{event} AFTER {event.upper()} ON items "
            f"BEGIN {body} END"
        )
