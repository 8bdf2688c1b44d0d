"""Engines for the catalog database (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from recsys.errors import CatalogNotReady, InvalidSettings


def connect(database_url: str) -> Engine:
    """An engine for ``database_url``; SQLite files get their folder, foreign keys and WAL."""
    try:
        url = make_url(database_url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise InvalidSettings(f"database_url {database_url!r} is not a valid URL: {exc}") from exc
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the ingest writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def require_current_schema(engine: Engine) -> None:
    """Raise ``CatalogNotReady`` unless the database is migrated to the latest revision."""
    from recsys.catalog.migrate import current_revision, head_revision

    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "is not initialised" if current is None else f"is at revision {current}"
        raise CatalogNotReady(
            f"the catalog database {engine.url.render_as_string(hide_password=True)} {state}, "
            f"the code expects {head}; run `recsys db upgrade` first"
        )
