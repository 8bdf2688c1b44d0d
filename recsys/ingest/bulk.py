"""Set-wise reads and writes of one batch, inside the caller's transaction.

Ids are resolved with one query per batch: the batch's distinct external ids travel as one
parameter (a PostgreSQL array, or a JSON array that SQLite's ``json_each`` unpacks), never as
one bound parameter per id. On PostgreSQL a batch of interactions is first copied straight
into the table (``COPY``, inside a savepoint): a batch of new events, the usual case, is then
written as fast as the table takes rows. When one of its rows is already stored, the copy
fails at that row, rolls back to the savepoint, and the batch goes through a temporary
staging table and one ``INSERT … ON CONFLICT``. SQLite takes one ``executemany`` of
``INSERT … ON CONFLICT``.

Concurrent writers: every insert of a user, an item or an event is an upsert on its unique
key, so two writers that add the same row at once leave exactly one and neither fails. On
SQLite a write transaction takes the write lock when it begins (``BEGIN IMMEDIATE``), so its
lookups and counts see no other writer; ``write_transaction`` runs a transaction again when
it lost a race anyway (a PostgreSQL deadlock or serialization failure, a busy SQLite file).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.dml import Insert

from recsys.catalog.models import Interaction, Item, User, utcnow

# The bind parameter of ``values_table``: a list of strings (``values_of``).
VALUES = "values"
# The columns an ingest writes, in the table's order.
INTERACTION_COLUMNS = ("user_id", "item_id", "event", "weight", "timestamp", "dedup_key")
WRITTEN = (*INTERACTION_COLUMNS, "created_at")
# What makes an interaction the same one (uq_interactions_user_key).
UNIQUE_KEY = ("user_id", "dedup_key")
# SQLite page cache of an ingest connection: the item index takes inserts all over (and so
# do the user-led ones when a log is in time order), and SQLite's default 2 MB cache turns
# most of them into page reads.
SQLITE_CACHE_KIB = 512 * 1024
# Tries of a write transaction that lost a race with another writer, and the first pause
# between tries in seconds (doubled each time, with jitter).
WRITE_ATTEMPTS = 5
RETRY_PAUSE = 0.02
# Errors of a transaction that lost a race: PostgreSQL serialization failure, deadlock,
# unique violation (a row another writer added first), SQLite's busy file.
UNIQUE_VIOLATION = "23505"
# A row naming a user or item deleted since the transaction looked it up (an erasure, a
# removed item, in between): running the transaction again looks it up afresh.
FOREIGN_KEY_VIOLATION = "23503"
_RACE_SQLSTATES = {"40001", "40P01", UNIQUE_VIOLATION, FOREIGN_KEY_VIOLATION}
_RACE_MESSAGES = ("database is locked", "database is busy", "UNIQUE constraint failed")

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def prepare(connection: Connection) -> None:
    """Settings of a connection that writes a file's batches; call it first in the transaction.

    SQLite: a larger page cache, kept by the connection for the batches after this one, and
    the write lock taken now (``take_write_lock``).
    """
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    take_write_lock(connection)


def take_write_lock(connection: Connection) -> None:
    """SQLite: take the write lock when the transaction begins (``BEGIN IMMEDIATE``), so its
    reads and writes form one serial step among concurrent writers. Call it first."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# The PostgreSQL advisory lock every transaction that writes events holds shared and
# ``settled_writes`` takes alone for an instant (SQLite's write lock does both there).
EVENTS_LOCK = 0x7265_6373  # "recs"


def hold_events_lock(connection: Connection) -> None:
    """PostgreSQL: hold ``EVENTS_LOCK`` shared until the transaction ends (event writers do
    not wait for each other), so ``settled_writes`` can wait for the event writes under
    way; call it before the events are stamped (``created_at``). SQLite: the write lock,
    taken when the transaction began, does it. One more statement a write: an HTTP write
    of one event took 3.1 ms, now 3.3 ms (benchmarks/RESULTS.md, session 63)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": EVENTS_LOCK})


# How long ``settled_writes`` waits for the event writes under way (a file's batch is one
# each), and how often it looks on PostgreSQL.
SETTLE_SECONDS = 30
SETTLE_POLL = 0.05
# The transactions holding ``EVENTS_LOCK`` (held shared by event writers): pg_locks names
# an advisory lock on one bigint by its high and low 32 bits.
_EVENT_WRITERS = text(
    "SELECT pid, virtualtransaction FROM pg_locks WHERE locktype = 'advisory' AND granted "
    f"AND classid = {EVENTS_LOCK >> 32} AND objid = {EVENTS_LOCK & 0xFFFFFFFF} AND objsubid = 1"
)


def settled_writes(engine: Engine) -> datetime:
    """A time such that every event stamped before it has committed and every later one is
    stamped after it. A training reads its events up to it, and feeds fold in the events
    stored after it: with the time taken before the read instead, an ingest's batch stamped
    before it and committed after the read reached neither the bundle nor any feed until
    the next training (one batch of 50,000 events in two runs of three).

    SQLite: the time the write lock is ours (a writer stamps while holding it). PostgreSQL:
    the time the wait begins, once the transactions then holding ``EVENTS_LOCK`` have ended
    (a writer stamps after taking it); writers that start meanwhile go on. Taking the lock
    alone instead queued every HTTP event write behind the training's wait: one was a 503
    after 15 s. When the writes under way take longer than ``SETTLE_SECONDS``, that time
    anyway (their events may reach feeds only after the next training), said in the log."""
    if engine.dialect.name != "postgresql":
        try:
            with engine.begin() as connection:
                take_write_lock(connection)
                return utcnow()
        except DBAPIError as exc:
            if not lost_race(exc):
                raise
            _not_settled(str(exc.orig).strip())
            return utcnow()
    moment = utcnow()
    deadline = time.monotonic() + SETTLE_SECONDS
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        writing = set(connection.execute(_EVENT_WRITERS).all())
        while writing:
            if time.monotonic() > deadline:
                _not_settled(f"{len(writing)} still open")
                break
            time.sleep(SETTLE_POLL)
            writing &= set(connection.execute(_EVENT_WRITERS).all())
    return moment


def _not_settled(why: str) -> None:
    log.warning(
        "event writes under way did not finish within %d s (%s): events they stored may "
        "reach feeds only after the next training",
        SETTLE_SECONDS,
        why,
    )


def write_transaction(
    engine: Engine, work: Callable[[Connection], T], attempts: int = WRITE_ATTEMPTS
) -> T:
    """``work(connection)`` in one transaction that takes the write lock first, run again from
    the start (up to ``attempts`` times) when it lost a race with another writer; other errors
    propagate.

    For the small writes of a long-lived process (the service's item and event writes): the
    connection keeps SQLite's default page cache. ``prepare``'s cache would stay with the
    pooled connection after the write and grow with every page its later reads touch, up to
    ``SQLITE_CACHE_KIB`` per connection of every worker.
    """
    attempt = 1
    while True:
        try:
            with engine.begin() as connection:
                take_write_lock(connection)
                return work(connection)
        except DBAPIError as exc:
            if attempt >= attempts or not lost_race(exc):
                raise
            log.info("write lost a race (%s), try %d of %d", exc.orig, attempt + 1, attempts)
            time.sleep(RETRY_PAUSE * 2 ** (attempt - 1) * (0.5 + random.random()))
            attempt += 1


def lost_race(exc: DBAPIError) -> bool:
    """True for errors that running the transaction again can cure."""
    state = sqlstate(exc.orig)
    if state:
        return state in _RACE_SQLSTATES
    return any(message in str(exc.orig) for message in _RACE_MESSAGES)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver's error (psycopg 3 or psycopg2), None on SQLite."""
    return getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


def dialect_insert(postgres: bool, model) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``model``'s table that can take ``ON CONFLICT`` on that database."""
    return (postgresql if postgres else sqlite).insert(model)


def values_table(postgres: bool) -> FromClause:
    """A one-column table ``value`` of the list bound as ``VALUES`` when a statement built on
    it runs (``values_of``): one parameter for any number of values, so the statement itself
    is built once (``functools.cache``) and SQLAlchemy keys its compiled form only once."""
    if postgres:
        array = bindparam(VALUES, type_=postgresql.ARRAY(String))
        return func.unnest(array).table_valued("value").render_derived()
    return func.json_each(bindparam(VALUES, type_=String)).table_valued("value")


def values_of(connection: Connection, values: list[str]) -> dict[str, str | list[str]]:
    """The parameters of a statement on ``values_table``: an array, or JSON text on SQLite."""
    return {VALUES: values if is_postgresql(connection) else json.dumps(values)}


@functools.cache
def _lookup(model: type[Item] | type[User], postgres: bool) -> Select:
    """external_id, id of ``model``'s rows whose external ids are among ``VALUES``."""
    values = select(values_table(postgres))
    return select(model.external_id, model.id).where(model.external_id.in_(values))


@functools.cache
def _add_users(postgres: bool) -> Insert:
    """Add the users named in ``VALUES``, created at ``now``; the ids of those it added."""
    values = values_table(postgres)
    rows = select(values.c.value, bindparam("now", type_=DateTime())).where(true())
    return (
        dialect_insert(postgres, User)
        .from_select(["external_id", "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(User.external_id, User.id)
    )


def lookup_ids(
    connection: Connection,
    model: type[Item] | type[User],
    names: pa.Array,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """(B,) catalog ids of these external ids, -1 where the catalog has none.

    ``known`` (B,): ids read earlier (say, ahead of the write's transaction), -1 where none
    was found then; only those are looked up again.
    """
    if known is not None:
        missing = known < 0
        ids = known.copy()
        if missing.any():
            ids[missing] = lookup_ids(connection, model, names.filter(pa.array(missing)))
        return ids
    distinct = pc.unique(names).to_pylist()
    query = _lookup(model, is_postgresql(connection))
    found = connection.execute(query, values_of(connection, distinct)).all()
    known = pa.array([name for name, _ in found], pa.string())
    ids = np.array([id_ for _, id_ in found] + [-1], dtype=np.int64)  # ids[-1] == -1
    return ids[pc.index_in(names, value_set=known).fill_null(-1).to_numpy()]


def ensure_users(
    connection: Connection, names: pa.Array, now: datetime, known: np.ndarray | None = None
) -> np.ndarray:
    """(B,) ids of these users, adding the ones the catalog does not have yet.

    ``known`` (B,): ids read earlier (say, ahead of the write's transaction), -1 where none
    was found then. Users are never deleted, so the ids found hold, and the others are added
    without looking them up again: the insert returns the ids of the users it added, and only
    users another writer added meanwhile (the insert skips them) are looked up.
    """
    ids = known.copy() if known is not None else lookup_ids(connection, User, names)
    missing = pc.unique(names.filter(pa.array(ids < 0))).sort()
    if not len(missing):
        return ids
    add = _add_users(is_postgresql(connection))
    added = connection.execute(add, values_of(connection, missing.to_pylist()) | {"now": now}).all()
    keys = np.full(len(missing), -1, dtype=np.int64)
    if added:
        found = pa.array([name for name, _ in added], pa.string())
        keys[pc.index_in(found, value_set=missing).to_numpy()] = [key for _, key in added]
    if (keys < 0).any():  # added by another writer since ``known`` was read
        elsewhere = keys < 0
        keys[elsewhere] = lookup_ids(connection, User, missing.filter(pa.array(elsewhere)))
    position = pc.index_in(names, value_set=missing).fill_null(0).to_numpy()
    return np.where(ids < 0, keys[position], ids)


def upsert_interactions(connection: Connection, rows: pa.Table) -> tuple[int, int]:
    """Insert new interactions, update the weight of known ones (same user and ``dedup_key``).

    ``rows`` has the ``WRITTEN`` columns. Returns (inserted, updated).
    """
    if not rows.num_rows:
        return 0, 0
    if is_postgresql(connection):
        return _copy_upsert(connection, rows)
    return _executemany_upsert(connection, rows)


def _copy_upsert(connection: Connection, rows: pa.Table) -> tuple[int, int]:
    # In key order, so concurrent writers lock shared keys in the same order (no deadlock),
    # and one user's rows meet the user-led indexes together.
    rows = rows.sort_by([(name, "ascending") for name in UNIQUE_KEY])
    csv = csv_rows(rows)  # encoded once for both tries
    if _copy_new(connection, csv):
        return rows.num_rows, 0
    staging = _staging_table()
    staging.create(connection)
    copy_rows(connection, staging.name, csv)
    excluded = postgresql.insert(Interaction).excluded
    key = [staging.c[name] for name in UNIQUE_KEY]
    staged = select(*[staging.c[name] for name in WRITTEN]).order_by(*key)
    upsert = (
        postgresql.insert(Interaction)
        .from_select(list(WRITTEN), staged)
        .on_conflict_do_update(
            index_elements=list(UNIQUE_KEY),
            set_={"weight": excluded.weight},
            where=Interaction.weight != excluded.weight,
        )
        .returning(literal_column("(xmax = 0)", Boolean).label("inserted"))
        .cte("upserted")
    )
    written, inserted = connection.execute(
        select(func.count(), func.count().filter(upsert.c.inserted))
    ).one()
    return inserted, written - inserted


def _copy_new(connection: Connection, csv: tuple[str, memoryview]) -> bool:
    """``COPY`` the rows into the interactions table if none of them is stored yet; False,
    with nothing written, when one is (the unique key's violation ends the copy there)."""
    savepoint = connection.begin_nested()
    try:
        copy_rows(connection, Interaction.__tablename__, csv)
    except DBAPIError as exc:  # ``copy_rows`` gives the driver's error as SQLAlchemy's
        if sqlstate(exc.orig) != UNIQUE_VIOLATION:
            raise
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def _staging_table() -> Table:
    columns = Interaction.__table__.c
    return Table(
        "interactions_staging",
        MetaData(),
        *[Column(name, columns[name].type) for name in WRITTEN],
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


def csv_rows(rows: pa.Table) -> tuple[str, memoryview]:
    """``rows`` as ``COPY`` takes them: the column list, and the rows written as CSV by Arrow."""
    data = io.BytesIO()
    pa_csv.write_csv(rows, data, pa_csv.WriteOptions(include_header=False))
    return ", ".join(rows.column_names), data.getbuffer()


def copy_rows(connection: Connection, table: str, csv: tuple[str, memoryview]) -> None:
    """``COPY table FROM STDIN`` of ``csv_rows``' output. The driver's own errors come as
    SQLAlchemy's, as every other statement's do: a COPY cancelled by the statement time bound
    was a 500 with the driver's traceback where any other statement's is a 503."""
    names, data = csv
    driver = connection.connection.driver_connection
    statement = f"COPY {table} ({names}) FROM STDIN (FORMAT csv)"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(data)
    except connection.dialect.dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, connection.dialect.dbapi.Error) from exc


def _executemany_upsert(connection: Connection, rows: pa.Table) -> tuple[int, int]:
    """One ``executemany`` of the upsert, counted afterwards instead of looked up per row
    beforehand: SQLite numbers a new row one past the largest id (this transaction holds the
    write lock, so no one else adds any), and the rows it wrote beyond those are updates (an
    unchanged weight writes nothing)."""
    largest = "SELECT coalesce(max(id), 0) FROM interactions"
    before = connection.exec_driver_sql(largest).scalar()
    written = insert_rows(connection, _sqlite_upsert(), rows)
    new = "SELECT count(*) FROM interactions WHERE id > ?"
    inserted = connection.exec_driver_sql(new, (before,)).scalar()
    return inserted, written - inserted


@functools.cache
def _sqlite_upsert() -> Insert:
    """SQLite's interactions upsert: a new weight for a known key, nothing when unchanged."""
    insert = sqlite.insert(Interaction)
    return insert.on_conflict_do_update(
        index_elements=list(UNIQUE_KEY),
        set_={"weight": insert.excluded.weight},
        where=Interaction.weight != insert.excluded.weight,
    )


def insert_rows(connection: Connection, statement, rows: pa.Table) -> int:
    """SQLite: one ``executemany`` of plain tuples, no per-row work in SQLAlchemy. Returns
    the rows it inserted or changed."""
    if not rows.num_rows:
        return 0
    sql, order = _compiled(statement, connection.dialect, tuple(rows.column_names))
    rows = _sqlite_times(rows.select(list(order)))
    return connection.exec_driver_sql(sql, list(_tuples(rows))).rowcount


@functools.lru_cache(maxsize=32)
def _compiled(statement, dialect, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(SQL, the columns in parameter order) of ``statement`` for rows of ``columns``: compiled
    once per statement and columns, not for every write (a few hundred microseconds)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    return str(compiled), tuple(compiled.positiontup)


def _sqlite_times(rows: pa.Table) -> pa.Table:
    """Timestamps as SQLAlchemy stores them in SQLite: "2024-02-01 10:00:00.000000"."""
    for index, field in enumerate(rows.schema):
        if pa.types.is_timestamp(field.type):
            text = rows.column(index).cast(pa.timestamp("us")).cast(pa.string())
            rows = rows.set_column(index, field.name, text)
    return rows


def _tuples(rows: pa.Table):
    return zip(*[column.to_pylist() for column in rows.columns], strict=True)
