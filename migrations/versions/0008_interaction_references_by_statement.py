"""PostgreSQL: interactions' references to users and items checked once per statement.

A foreign key checks each new row on its own: one trigger call and one locking lookup of
the parent row per event. On a 2-core machine that halves what ``COPY`` writes into the
interactions table (2M events in batches of 50,000, sorted as the bulk ingest sorts them:
67k rows/s with the foreign keys, 111k with the triggers below, 149k with no check at all;
benchmarks/RESULTS.md, session 27), and no path through the table could reach issue 12's
100k events/s. The two foreign keys become statement triggers that keep their meaning:

- after every INSERT or UPDATE, the statement's distinct user and item keys are looked up
  and locked ``FOR KEY SHARE`` in one query each, as the foreign key's per-row lookups
  locked them: an unknown key fails the statement with SQLSTATE 23503
  (``foreign_key_violation``), and a user or item deleted by a concurrent transaction waits
  for the writer to commit, then takes its rows along;
- deleting users or items deletes their interactions (``ON DELETE CASCADE``), once per
  statement from its transition table; truncating either truncates the interactions.

SQLite keeps its foreign keys: there they cost less than a trigger per row would (181k
against 122k rows/s in the same session's comparison). The models still declare the foreign
keys for both, and ``migrations/env.py`` leaves PostgreSQL's out of the model comparison.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARENTS = {"user_id": "users", "item_id": "items"}
FOREIGN_KEYS = {column: f"fk_interactions_{column}_{table}" for column, table in PARENTS.items()}

_LOOKUP = """
  SELECT count(*) FROM (SELECT DISTINCT {column} FROM new_rows) AS d INTO wanted;
  SELECT count(*) FROM (SELECT 1 FROM {table} WHERE id IN (SELECT {column} FROM new_rows)
    ORDER BY id FOR KEY SHARE) AS l INTO found;
  IF found < wanted THEN
    RAISE EXCEPTION 'insert or update on table "interactions" violates its reference to "{table}"'
      USING ERRCODE = 'foreign_key_violation',
            DETAIL = format('%s of the statement''s %s {column} values are not in {table}',
                            wanted - found, wanted);
  END IF;"""
CHECK_FUNCTION = f"""
CREATE FUNCTION recsys_check_interaction_references() RETURNS trigger AS $$
DECLARE wanted bigint; found bigint;
BEGIN{"".join(_LOOKUP.format(column=c, table=t) for c, t in PARENTS.items())}
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""
CASCADE_FUNCTION = """
CREATE FUNCTION recsys_delete_interactions_of() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE interactions;
  ELSE
    EXECUTE format('DELETE FROM interactions WHERE %I IN (SELECT id FROM old_rows)', TG_ARGV[0]);
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in FOREIGN_KEYS.values():
        op.drop_constraint(name, "interactions", type_="foreignkey")
    op.execute(CHECK_FUNCTION)
    op.execute(CASCADE_FUNCTION)
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER interactions_references_{event.lower()} AFTER {event} ON interactions"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
            " EXECUTE FUNCTION recsys_check_interaction_references()"
        )
    for column, table in PARENTS.items():
        op.execute(
            f"CREATE TRIGGER {table}_delete_interactions AFTER DELETE ON {table}"
            " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
            f" EXECUTE FUNCTION recsys_delete_interactions_of('{column}')"
        )
        op.execute(
            f"CREATE TRIGGER {table}_truncate_interactions AFTER TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION recsys_delete_interactions_of()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in PARENTS.values():
        op.execute(f"DROP TRIGGER {table}_truncate_interactions ON {table}")
        op.execute(f"DROP TRIGGER {table}_delete_interactions ON {table}")
    for event in ("insert", "update"):
        op.execute(f"DROP TRIGGER interactions_references_{event} ON interactions")
    op.execute("DROP FUNCTION recsys_delete_interactions_of()")
    op.execute("DROP FUNCTION recsys_check_interaction_references()")
    for column, table in PARENTS.items():
        op.create_foreign_key(
            FOREIGN_KEYS[column], "interactions", table, [column], ["id"], ondelete="CASCADE"
        )
