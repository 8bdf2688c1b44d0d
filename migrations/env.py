"""Alembic environment: the standard template with ``target_metadata = Base.metadata``."""

import contextlib
import logging
import time

from alembic import context
from sqlalchemy import engine_from_config, pool

from recsys.catalog.models import TITLE_SEARCH_TABLE, TITLE_TRIGRAM_INDEX, Base
from recsys.settings import Settings

config = context.config
log = logging.getLogger("recsys.migrations")
target_metadata = Base.metadata


# PostgreSQL checks interactions' references to users and items with statement triggers
# (migration 0008) in place of the foreign keys the models declare for both databases.
TRIGGER_CHECKED = {"fk_interactions_user_id_users", "fk_interactions_item_id_items"}


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave PostgreSQL's trigger-checked foreign keys and the title search index out of the
    model comparison."""
    dialect = context.get_context().dialect.name
    if type_ == "table" and reflected and name.startswith(TITLE_SEARCH_TABLE):
        return False
    if type_ == "index" and name == TITLE_TRIGRAM_INDEX:
        return False
    return not (
        type_ == "foreign_key_constraint" and name in TRIGGER_CHECKED and dialect == "postgresql"
    )


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings.load().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = engine_from_config(
            {"sqlalchemy.url": database_url()}, prefix="sqlalchemy.", poolclass=pool.NullPool
        )
    with engine.connect() as connection, one_migrator(connection):
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite needs batch mode to alter tables
            compare_type=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


# The PostgreSQL advisory lock all migrations of one database take (any fixed 64-bit key).
MIGRATION_LOCK = 0x7265637379730001


@contextlib.contextmanager
def one_migrator(connection):
    """On PostgreSQL, one migrating process at a time per database: several replicas that
    each run `recsys db upgrade` as they start queue here, and each reads the revision only
    when its turn comes (a later one finds the database at head and does nothing). Without
    it, two upgrades raced on alembic_version, and migration 0011's steps outside the
    transaction let the second see a half-done upgrade.

    The lock is a session lock on a connection of its own in autocommit mode, asked for
    every quarter second rather than waited on: a process blocked in pg_advisory_lock holds a
    snapshot, which the holder's CREATE INDEX CONCURRENTLY (0011) would wait for, and
    PostgreSQL ends one of the two as a deadlock. A crashed holder's lock goes with its
    connection."""
    if connection.dialect.name != "postgresql":
        yield
        return
    with connection.engine.connect() as lock:
        lock = lock.execution_options(isolation_level="AUTOCOMMIT")
        asked = f"SELECT pg_try_advisory_lock({MIGRATION_LOCK})"
        if not lock.exec_driver_sql(asked).scalar():
            log.info("another process is migrating this database; waiting for it")
            while not lock.exec_driver_sql(asked).scalar():
                time.sleep(0.25)
        try:
            yield
        finally:  # a pooled connection outlives this: the lock is given back, not left
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
