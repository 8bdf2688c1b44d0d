"""Copying a whole catalog into another database: a shop moving from SQLite to PostgreSQL.

``recsys export`` and ``recsys ingest`` carry items and events, but not what only the catalog
holds: API keys, the erasure record, the bundle registry, the change log, each row's own
times and ids. Ingested anew, every event was stored "now", after the active bundle's data was
read, so every feed folded the user's whole history in again as fresh; old keys were unknown,
erased users were taken back, and the bundles on disk were in no registry.

``copy_catalog`` copies every table of the models, row by row as it is (ids included), into
an empty catalog migrated to the same revision, in one transaction: all or nothing. The
triggers on ``items`` count the copied rows as writes, so the change log and the catalog state
are then set to the source's: a worker following the copy sees the generations the bundles
were trained at. On PostgreSQL each table's id sequence is then moved past its largest id.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, Table, delete, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from recsys.catalog import migrate
from recsys.catalog.db import database_problem, require_current_schema, sqlite_path
from recsys.catalog.models import Base, CatalogState, ItemChange
from recsys.errors import InvalidInput

# Rows read and inserted at a time.
CHUNK = 10_000
# Tables whose rows make a catalog "in use": a copy only goes into a catalog without any.
HOLDING = ("items", "users", "interactions", "api_keys", "model_bundles", "erasures")
# Tables the copy's own item rows write to (through the triggers on items): copied last, over
# what the triggers wrote.
LAST = (ItemChange.__table__, CatalogState.__table__)


def copy_catalog(source: Engine, target: Engine, show_progress: bool = False) -> dict[str, int]:
    """Copy every row of ``source`` into ``target`` (migrated here to the code's revision, and
    refused unless it holds none of ``HOLDING``'s rows) -> rows copied per table."""
    require_current_schema(source)
    if target.url == source.url:
        raise InvalidInput("--to names the catalog being copied; give a new, empty database")
    url = target.url.render_as_string(hide_password=False)
    try:  # a target that does not answer is named as the target, not as the catalog
        if sqlite_path(url) is None:
            with target.connect():
                pass
        migrate.upgrade(target)  # a new SQLite file is made here
    except DBAPIError as exc:
        if sqlite_path(url) is not None:  # names the file and what is wrong with it
            raise InvalidInput(f"--to: {database_problem(exc, url)}") from None
        reason = str(exc.orig).strip().splitlines()[0]
        raise InvalidInput(
            f"--to: the target database did not answer: {reason}; check the URL and that its "
            "server is running"
        ) from None
    tables = list(Base.metadata.sorted_tables)  # referenced tables first
    with target.connect() as connection:
        held = [name for name in HOLDING if _count(connection, Base.metadata.tables[name])]
    if held:
        raise InvalidInput(
            f"the target catalog already holds {', '.join(held)}; copy into a new, empty "
            "database (`recsys db copy` migrates it itself)"
        )
    with source.connect() as reading:
        sizes = {table.name: _count(reading, table) for table in tables}
    copied: dict[str, int] = {}
    bar = tqdm(total=sum(sizes.values()), unit="row", desc="copy", disable=not show_progress)
    with bar, source.connect() as reading, target.begin() as writing:
        for table in tables:
            if table in LAST:
                continue
            copied[table.name] = _copy(reading, writing, table, bar)
        # the triggers logged each copied item as a write and bumped the generation: the
        # source's own log and state are what bundles and workers measure against
        for table in LAST:
            writing.execute(delete(table))
            copied[table.name] = _copy(reading, writing, table, bar)
        if writing.dialect.name == "postgresql":
            for table in tables:
                _move_sequence(writing, table)
    return copied


def _copy(reading, writing, table: Table, bar) -> int:
    copied = 0
    for rows in _chunks(reading, table):
        writing.execute(insert(table), rows)
        copied += len(rows)
        bar.update(len(rows))
    return copied


def _count(connection, table: Table) -> int:
    return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _chunks(connection, table: Table) -> Iterator[list[dict]]:
    """The table's rows in primary-key order, ``CHUNK`` at a time, as dicts of its columns."""
    query = select(table).order_by(*table.primary_key.columns)
    result = connection.execution_options(yield_per=CHUNK).execute(query)
    for part in result.partitions():
        yield [dict(row._mapping) for row in part]


def _move_sequence(connection, table: Table) -> None:
    """Past the largest copied id, the next row a PostgreSQL table numbers itself."""
    keys = list(table.primary_key.columns)
    if len(keys) != 1 or not keys[0].autoincrement or keys[0].type.python_type is not int:
        return
    column = keys[0].name
    connection.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
            f"coalesce((SELECT max({column}) FROM {table.name}), 0) + 1, false)"
        )
    )
