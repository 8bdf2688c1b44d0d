"""Catalog state: a generation counter of the items table, bumped by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE catalog_state SET items_generation = items_generation + 1 WHERE id = 1"
SQLITE_EVENTS = ("insert", "update", "delete")


def upgrade() -> None:
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("items_generation", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_state")),
    )
    op.execute("INSERT INTO catalog_state (id, items_generation) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION recsys_bump_items_generation() RETURNS trigger AS $$ "
            f"BEGIN {BUMP}; RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER items_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            "ON items FOR EACH STATEMENT EXECUTE FUNCTION recsys_bump_items_generation()"
        )
        return
    for event in SQLITE_EVENTS:  # SQLite triggers are per row
        op.execute(
            f"CREATE TRIGGER items_generation_{event} AFTER {event.upper()} ON items "
            f"BEGIN {BUMP}; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER items_generation ON items")
        op.execute("DROP FUNCTION recsys_bump_items_generation()")
    else:
        for event in SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER items_generation_{event}")
    op.drop_table("catalog_state")
