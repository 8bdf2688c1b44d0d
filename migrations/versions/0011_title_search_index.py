"""A trigram index of item titles, so that a title search reads the items it finds.

``GET /v1/items?q=`` lists the items whose title contains the text (any case). Without an
index every search reads every title: 60-70 ms per request at 10^5 items, ten times that at
10^6, for any client that types a word. Trigrams (every three consecutive characters) answer
"contains" without reading the titles that cannot hold the text; a search therefore needs at
least three characters (``recsys.catalog.reads.MIN_SEARCH``).

- SQLite: an FTS5 table of the titles with the trigram tokenizer (SQLite >= 3.34), holding
  no copy of them (``content='items'``) nor their sizes (``columnsize=0``: nothing is ranked,
  and a new title costs 9% less), kept by triggers on ``items``: a new item is
  indexed, a removed one dropped, and an update reindexes the item only when its title
  changed (not for stock or price). Existing titles are indexed here once. A later
  migration that rebuilds ``items`` in batch mode (copy, drop, rename) drops these triggers
  with the old table, as it would 0004's: it must create them again.
- PostgreSQL: a GIN index of ``title`` with ``pg_trgm``'s operator class, which serves the
  ``title ILIKE '%...%'`` the search already is. ``pg_trgm`` ships with
  PostgreSQL (contrib) and is a trusted extension since PostgreSQL 13: a database owner may
  create it. Where it cannot be created, the migration says so and goes on without the
  index; searches then read every title, as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# The SQLite FTS5 table and the PostgreSQL index, as this revision made them (the code's names
# are models.TITLE_SEARCH_TABLE and TITLE_TRIGRAM_INDEX; a migration keeps its own).
SEARCH_TABLE = "item_search"
TRIGRAM_INDEX = "ix_items_title_trigrams"
FORGET = (
    f"INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}, rowid, title) "
    "VALUES ('delete', OLD.id, OLD.title);"
)
LEARN = f"INSERT INTO {SEARCH_TABLE} (rowid, title) VALUES (NEW.id, NEW.title);"
SQLITE_TRIGGERS = {
    "insert": ("AFTER INSERT ON items", LEARN),
    "delete": ("AFTER DELETE ON items", FORGET),
    "update": ("AFTER UPDATE OF title ON items WHEN OLD.title IS NOT NEW.title", FORGET + LEARN),
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres_index()
        return
    op.execute(
        f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5("
        "title, content='items', content_rowid='id', columnsize=0, "
        "tokenize='trigram case_sensitive 0')"
    )
    for event, (when, body) in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {SEARCH_TABLE}_{event} {when} BEGIN {body} END")
    op.execute(f"INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")
        return  # pg_trgm stays: other objects may use it
    for event in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {SEARCH_TABLE}_{event}")
    op.execute(f"DROP TABLE {SEARCH_TABLE}")


def _postgres_index() -> None:
    """The extension, then the index, each outside the migration's transaction: a refused
    extension ends nothing, and the index is built ``CONCURRENTLY``, so that item writes go
    on while a large catalog's titles are indexed (minutes at 10^7 items)."""
    bind = op.get_bind()
    with op.get_context().autocommit_block():
        try:
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DBAPIError as exc:
            log.warning(
                "pg_trgm could not be created (%s): title searches will read every title. "
                "A superuser can run, in this database: CREATE EXTENSION pg_trgm; CREATE INDEX "
                "CONCURRENTLY ix_items_title_trigrams ON items USING gin (title gin_trgm_ops); "
                "(a downgrade to rebuild it would drop later revisions' data: the erasures).",
                str(exc.orig).strip().splitlines()[0],
            )
            return
        # an index a failed build left INVALID is dropped first: IF NOT EXISTS would keep it
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {TRIGRAM_INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {TRIGRAM_INDEX} ON items USING gin (title gin_trgm_ops)"
        )
