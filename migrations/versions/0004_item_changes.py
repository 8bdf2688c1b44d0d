"""Item change log: one row per item written or removed, stamped with the items generation.

Each worker of the service follows it (``recsys.catalog.changes``) to keep a live delta beside
its bundle: new and changed items get vectors, removed ones disappear from every answer.

The triggers of 0002 now also log what they count. SQLite runs them per row, with the write
lock held, so generations are in commit order. PostgreSQL runs one per statement and event,
with the statement's rows as transition tables; the bump of ``catalog_state`` locks its row
until the transaction commits, so there too a later generation is committed later. TRUNCATE
still only bumps the generation (it has no rows to log; a worker's restart rebuilds).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE catalog_state SET items_generation = items_generation + 1 WHERE id = 1"
LOG = "INSERT INTO item_changes (generation, external_id, deleted, content)"
GENERATION = "SELECT items_generation FROM catalog_state WHERE id = 1"
# Whether an UPDATE changed what an item's vector is made of (not only its stock).
CONTENT = (
    "{n}.title IS {ne} {o}.title OR {n}.image_path IS {ne} {o}.image_path "
    "OR {n}.attributes IS {ne} {o}.attributes OR {n}.external_id <> {o}.external_id"
)
SQLITE = {
    "insert": f"{BUMP}; {LOG} SELECT items_generation, NEW.external_id, 0, 1 FROM catalog_state "
    "WHERE id = 1;",
    "update": f"{BUMP}; {LOG} SELECT items_generation, NEW.external_id, 0, "
    f"({CONTENT.format(n='NEW', o='OLD', ne='NOT')}) FROM catalog_state WHERE id = 1; "
    f"{LOG} SELECT items_generation, OLD.external_id, 1, 0 FROM catalog_state "
    "WHERE id = 1 AND OLD.external_id <> NEW.external_id;",
    "delete": f"{BUMP}; {LOG} SELECT items_generation, OLD.external_id, 1, 0 FROM catalog_state "
    "WHERE id = 1;",
}
OLD_SQLITE = {event: f"{BUMP};" for event in SQLITE}
POSTGRES_FUNCTION = f"""
CREATE FUNCTION recsys_log_item_changes() RETURNS trigger AS $$
DECLARE g integer;
BEGIN
  {BUMP} RETURNING items_generation INTO g;
  IF TG_OP = 'INSERT' THEN
    {LOG} SELECT g, external_id, false, true FROM new_rows;
  ELSIF TG_OP = 'UPDATE' THEN
    {LOG} SELECT g, n.external_id, false, ({CONTENT.format(n="n", o="o", ne="DISTINCT FROM")})
      FROM new_rows n JOIN old_rows o ON o.id = n.id;
    {LOG} SELECT g, o.external_id, true, false
      FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE o.external_id <> n.external_id;
  ELSE
    {LOG} SELECT g, external_id, true, false FROM old_rows;
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""
POSTGRES_TRIGGERS = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
}


def upgrade() -> None:
    op.create_table(
        "item_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_changes")),
    )
    op.create_index(
        op.f("ix_item_changes_generation"), "item_changes", ["generation"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER items_generation ON items")
        op.execute(
            "CREATE TRIGGER items_generation AFTER TRUNCATE ON items "
            "FOR EACH STATEMENT EXECUTE FUNCTION recsys_bump_items_generation()"
        )
        op.execute(POSTGRES_FUNCTION)
        for event, referencing in POSTGRES_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER item_changes_{event} AFTER {event.upper()} ON items "
                f"{referencing} FOR EACH STATEMENT EXECUTE FUNCTION recsys_log_item_changes()"
            )
        return
    _sqlite_triggers(SQLITE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for event in POSTGRES_TRIGGERS:
            op.execute(f"DROP TRIGGER item_changes_{event} ON items")
        op.execute("DROP FUNCTION recsys_log_item_changes()")
        op.execute("DROP TRIGGER items_generation ON items")
        op.execute(
            "CREATE TRIGGER items_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            "ON items FOR EACH STATEMENT EXECUTE FUNCTION recsys_bump_items_generation()"
        )
    else:
        _sqlite_triggers(OLD_SQLITE)
    op.drop_index(op.f("ix_item_changes_generation"), table_name="item_changes")
    op.drop_table("item_changes")


def _sqlite_triggers(bodies: dict[str, str]) -> None:
    """Replace 0002's per-row triggers (the names stay) with these bodies."""
    for event, body in bodies.items():
        op.execute(f"DROP TRIGGER items_generation_{event}")
        op.execute(
            f"CREATE TRIGGER items_generation_{event} AFTER {event.upper()} ON items "
            f"BEGIN {body} END"
        )
