"""PostgreSQL: interactions' references checked without locking their users and items.

Migration 0008's statement trigger looked up a statement's distinct users and items
``FOR KEY SHARE``, as a foreign key's per-row lookups lock them, so that a user or item
removed meanwhile waits for the writer and then takes its events along. But a row lock is a
write: it stamps the row and logs it. A batch of 50,000 events of a long-tail catalog names
tens of thousands of distinct items, so every batch dirtied and logged most of the items
table: at 10^6 items and 2M events, ``COPY`` took 69-74k events/s with the locks and 87-90k
without them (benchmarks/RESULTS.md, session 37).

The guarantee moves to the rare side. The check looks its keys up without locking them, and
the trigger that deletes the events of removed users or items first locks the interactions
table ``SHARE ROW EXCLUSIVE``, which waits for every transaction that is writing events and
holds off new ones until the removal commits. So a writer that found an item before its
removal has committed by the time the removal deletes the item's events (and they go too),
and a writer that starts after it finds the item gone (SQLSTATE 23503). Removals that delete
nothing take no lock. Both hold under READ COMMITTED, which the catalog's connections use.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARENTS = {"user_id": "users", "item_id": "items"}

_LOOKUP = """
  SELECT count(*) FROM (SELECT DISTINCT {column} FROM new_rows) AS d INTO wanted;
  SELECT count(*) FROM (SELECT 1 FROM {table} WHERE id IN (SELECT {column} FROM new_rows){lock})
    AS l INTO found;
  IF found < wanted THEN
    RAISE EXCEPTION 'insert or update on table "interactions" violates its reference to "{table}"'
      USING ERRCODE = 'foreign_key_violation',
            DETAIL = format('%s of the statement''s %s {column} values are not in {table}',
                            wanted - found, wanted);
  END IF;"""


def check_function(lock: str) -> str:
    lookups = "".join(_LOOKUP.format(column=c, table=t, lock=lock) for c, t in PARENTS.items())
    return f"""
CREATE OR REPLACE FUNCTION recsys_check_interaction_references() RETURNS trigger AS $$
DECLARE wanted bigint; found bigint;
BEGIN{lookups}
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def cascade_function(lock: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION recsys_delete_interactions_of() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE interactions;
  ELSE{lock}
    EXECUTE format('DELETE FROM interactions WHERE %I IN (SELECT id FROM old_rows)', TG_ARGV[0]);
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""


TABLE_LOCK = """
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
      RETURN NULL;
    END IF;
    LOCK TABLE interactions IN SHARE ROW EXCLUSIVE MODE;"""
# 0008's row locks, restored by the downgrade.
ROW_LOCK = " ORDER BY id FOR KEY SHARE"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(check_function(lock=""))
    op.execute(cascade_function(lock=TABLE_LOCK))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(check_function(lock=ROW_LOCK))
    op.execute(cascade_function(lock=""))
