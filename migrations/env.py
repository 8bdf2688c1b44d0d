"""Alembic environment: the standard template with ``target_metadata = Base.metadata``."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from recsys.catalog.models import TITLE_SEARCH_TABLE, TITLE_TRIGRAM_INDEX, Base
from recsys.settings import Settings

config = context.config
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
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite needs batch mode to alter tables
            compare_type=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
