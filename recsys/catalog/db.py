"""Engines for the catalog database (SQLite by default, PostgreSQL in production).

SQLite files are opened in WAL mode with ``synchronous=FULL``: a commit is on disk before it
returns, so a write the service answered survives a crash or a power cut (``NORMAL`` could lose
the last commits on a power cut). Each connection stays on the file it opened only while that
file is still the one at the configured path: a file moved away or replaced while serving is
noticed at the next checkout, and the engine never creates a new, empty catalog in its place
once it has opened one (nor beside a WAL file left behind, whose commits SQLite would otherwise
replay into the new file and then delete), and only ``recsys db upgrade`` creates a catalog
where there is none (``creating``).

A PostgreSQL connection is pinged when the pool hands it out only after it sat idle for
``PING_AFTER_IDLE_SECONDS`` (``IdlePing``), not at every checkout: a busy worker's connections
go back and out many times a second, and a ping is a round trip before each request's read.
A connection that died within that second (the server restarted) fails its next statement
instead; the pool then replaces every connection older than the failure, and the service's
reads run once more on a fresh one (``recsys.catalog.reads``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import sys
import time
import weakref
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DisconnectionError,
    NoSuchModuleError,
    OperationalError,
)

from recsys.errors import CatalogNotReady, InvalidSettings
from recsys.logs import Repeated

log = logging.getLogger(__name__)

# How long a SQLite writer waits for another's lock before "database is locked".
SQLITE_BUSY_SECONDS = 30


# ``?pgbouncer=`` of a PostgreSQL URL: the pool_mode of a PgBouncer in front of it ("": none).
POOLERS = ("", "session", "transaction")


def connect(database_url: str, timeout: float = 0.0, pool_size: int = 5) -> Engine:
    """An engine for ``database_url``; SQLite files get their folder, foreign keys and WAL.

    A server's engine keeps at most ``pool_size`` idle connections and opens as many more
    under load (SQLAlchemy's default: 5, and 10 more). ``timeout`` > 0 (the service's
    ``Settings.database_timeout``) bounds, in seconds, each statement (PostgreSQL's
    ``statement_timeout``), opening a connection and waiting for a pooled one: a hung or
    locked database is then an error the service answers as a 503, not a request held as
    long as the database is (a 75 s table lock held every feed 72 s). SQLite keeps its own
    bound, ``SQLITE_BUSY_SECONDS`` of waiting for another writer."""
    try:
        url = make_url(database_url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise InvalidSettings(f"database_url {database_url!r} is not a valid URL: {exc}") from exc
    if url.get_backend_name() != "sqlite":
        options: dict = {"pool_size": pool_size, "max_overflow": pool_size}
        postgres = url.get_backend_name() == "postgresql"
        pooler = url.query.get("pgbouncer", "") if postgres else ""
        if pooler not in POOLERS:
            raise InvalidSettings(
                f"database_url: pgbouncer={pooler!r} is not one of session, transaction (the "
                "PgBouncer pool_mode between the service and PostgreSQL)"
            )
        url = url.difference_update_query(["pgbouncer"])
        if postgres and "application_name" not in url.query:
            options["connect_args"] = {"application_name": application_name()}
        if pooler == "transaction":  # statements psycopg prepares live on one server connection
            options.setdefault("connect_args", {})["prepare_threshold"] = None
        milliseconds = round(timeout * 1000)  # the statement timeout, PostgreSQL's unit
        if timeout > 0:
            seconds = max(1, math.ceil(timeout))
            options["pool_timeout"] = timeout
            if postgres:
                options.setdefault("connect_args", {})["connect_timeout"] = max(2, seconds)
            if postgres and not pooler:  # PgBouncer refuses startup options
                options["connect_args"]["options"] = f"-c statement_timeout={milliseconds}"
        try:
            engine = create_engine(url, **options)
        except (NoSuchModuleError, ImportError) as exc:  # an unknown scheme, a missing driver
            raise InvalidSettings(
                f"database_url {url.render_as_string(hide_password=True)!r}: {exc}; use "
                "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            ) from exc
        IdlePing().watch(engine)
        if pooler == "session" and timeout > 0:  # the client's own server connection
            _set_on_connect(engine, f"SET statement_timeout = {milliseconds}")
        elif pooler == "transaction" and timeout > 0:
            log.warning(
                "behind a PgBouncer pooling transactions, statements are not bounded to %g s "
                "by the service (a session setting would stay on a shared server connection): "
                "set it on the role, ALTER ROLE ... SET statement_timeout = '%ds'",
                timeout,
                seconds,
            )
        return engine
    if url.database and url.database.startswith("~"):  # SQLite made a folder named ~ here
        url = url.set(database=os.path.expanduser(url.database))
    try:
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
    except ArgumentError as exc:  # sqlite:/path (one slash)
        raise InvalidSettings(
            f"database_url {database_url!r} is not a SQLite URL SQLAlchemy reads: {exc}; write "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        ) from exc
    event.listen(engine, "connect", _sqlite_pragmas)
    if (path := sqlite_path(url)) is not None:
        SqliteFile(path).watch(engine)
    return engine


def application_name() -> str:
    """What ``pg_stat_activity`` shows of this process's connections: the CLI command
    ("recsys ingest interactions") or "recsys service", and the pid. Every connection's was
    empty, so an operator mapped client ports to processes to count them."""
    import click

    context = click.get_current_context(silent=True)
    if context is not None:
        name = context.command_path
    elif "gunicorn" in sys.argv[0]:
        name = "recsys service"
    else:
        name = "recsys"
    return f"{name} ({os.getpid()})"[-63:]  # PostgreSQL keeps 63 bytes


def database_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away (a server down or refusing, a statement
    timed out, a SQLite file locked, full, truncated, damaged or moved away:
    ``OperationalError``, a plain ``DatabaseError``, "database disk image is malformed", or
    ``CatalogNotReady``), not that a statement is wrong (``IntegrityError``,
    ``ProgrammingError``...: a bug)."""
    return isinstance(exc, OperationalError | CatalogNotReady) or type(exc) is DatabaseError


def _set_on_connect(engine: Engine, statement: str) -> None:
    """Run ``statement`` on every new connection of ``engine``, in autocommit."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            dbapi_connection.autocommit = autocommit


def passing(exc: BaseException) -> bool:
    """Whether the database error ``exc`` may pass by itself, so that the same command may
    work later (the CLI's exit status 75): a server away (refused, restarted, timed out) or a
    SQLite file locked by another writer; not a full disk, a read-only or damaged file, or a
    wrong statement, which need someone first (exit status 2)."""
    orig = getattr(exc, "orig", exc)
    if "database is locked" in str(orig).lower():
        return True
    server = type(orig).__module__.split(".")[0] in ("psycopg", "psycopg2")
    return server and isinstance(exc, OperationalError)


def sqlite_path(url) -> str | None:
    """The absolute path of a SQLite catalog's file (``url``: a URL or its text), ``~``
    expanded; None for a server, an in-memory database or a ``file:`` URI."""
    url = make_url(url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return os.path.abspath(os.path.expanduser(database))  # as ``connect`` opens it


def catalog_key(url) -> str:
    """One text per catalog, whatever the working folder: a SQLite catalog's absolute path, a
    server's URL without its password. What a host's services key their shared files by
    (rate-limit counters, uploaded photos), so that two shops whose URLs read alike
    (``sqlite:///shop.db`` from two folders) share none of them."""
    try:
        path = sqlite_path(url)  # through links too: one catalog under two paths is one
        if path:
            return f"sqlite:///{os.path.realpath(path)}"
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL: the connection refuses it, in its own words
        return str(url)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the ingest writer
    cursor.execute("PRAGMA synchronous=FULL")  # durable once committed (module docstring)
    cursor.close()
    # SQLite's lower() and LIKE fold ASCII letters only: a title search for "кроссовки"
    # found none of the titles "Кроссовки ..." (reads._title_search)
    dbapi_connection.create_function(FOLD, 1, fold_case, deterministic=True)


FOLD = "recsys_fold"  # the SQL name of fold_case on SQLite connections


def fold_case(text: str | None) -> str | None:
    """``text`` lower-cased, in any script ("КРОССОВКИ", "SCHÖFFEL"), or None. Character by
    character, as the title index's trigrams fold case (full case folding would make
    "STRASSE" find "Straße", which the index, the search's first filter, cannot find): a
    Greek sigma is σ wherever it stands (``str.lower`` writes ς at a word's end, so "ΟΔΟΣ"
    did not find "ΟΔΟΣΤΡΩΤΗΡΑΣ"), and the dotted capital I is i (it lowers to i and
    U+0307, so "istanbul" did not find "İstanbul")."""
    return None if text is None else text.lower().replace("ς", "σ").replace("i\u0307", "i")


# A pooled connection idle for longer than this is pinged before the pool hands it out.
PING_AFTER_IDLE_SECONDS = 1.0


class IdlePing:
    """Pings a pooled connection at checkout when it has been idle for longer than
    ``PING_AFTER_IDLE_SECONDS`` (SQLAlchemy's ``pool_pre_ping`` pings every checkout), so a
    link dropped while it waited (a server restart, an idle timeout of the server or a
    firewall) is replaced before a request uses it. See the module docstring."""

    def __init__(self, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self.dialect = None

    def watch(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        event.listen(engine, "checkin", self._checked_in)
        event.listen(engine, "checkout", self._check)

    def _checked_in(self, _dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    def _check(self, dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= self.idle_seconds:
            return
        try:
            self.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's error: the link is gone
            # the pool drops this connection and hands out a new one
            raise DisconnectionError(f"a pooled connection was dead: {exc}") from exc


# The SqliteFile of each engine of a SQLite file (``creating`` finds it).
_FILES: weakref.WeakKeyDictionary[Engine, SqliteFile] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def creating(engine: Engine):
    """Let ``engine`` create its SQLite file if there is none yet, for the block: only
    ``recsys db upgrade`` (``migrate.upgrade``) makes a new catalog. Nothing for others."""
    watched = _FILES.get(engine)
    if watched is None:
        yield
        return
    folder = Path(watched.path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)  # not for reads: a typo's
    except (FileExistsError, NotADirectoryError):
        file = next((p for p in (folder, *folder.parents) if p.is_file()), None)
        if file is None:  # a dangling link: said as the system says it
            raise
        raise InvalidSettings(
            f"{file} is a file, not a folder: no catalog can be made at {watched.path}; "
            "check --database-url (or RECSYS_DATABASE_URL)"
        ) from None
    existed = os.path.exists(watched.path)
    watched.may_create = True
    try:
        yield
    except BaseException:
        if not existed:  # SQLite made the file, then failed on its -wal: no catalog yet
            with contextlib.suppress(OSError):
                if os.path.getsize(watched.path) == 0:
                    os.remove(watched.path)
        raise
    finally:
        watched.may_create = False


class SqliteFile:
    """Ties an engine's connections to the file at one path (see the module docstring)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.opened = False  # this engine has opened the file at least once
        self.may_create = False  # within ``creating``
        what = f"catalog file {self.path} is gone; not creating an empty one in its place"
        self._gone = Repeated(log, what)

    def watch(self, engine: Engine) -> None:
        _FILES[engine] = self
        event.listen(engine, "do_connect", self._before_connect)
        event.listen(engine, "connect", self._remember)
        event.listen(engine, "checkout", self._check)

    def identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at the path now, None when there is none."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _before_connect(self, _dialect, _record, _cargs, _cparams) -> None:
        if os.path.exists(self.path):
            return
        left_behind = [s for s in ("-wal", "-journal") if os.path.exists(self.path + s)]
        if self.opened or left_behind:
            why = f"its {left_behind[0]} file is still there" if left_behind else "moved or deleted"
            self._gone.failed(CatalogNotReady(why))  # once, then a line a minute: not per try
            raise CatalogNotReady(
                "the catalog database file is gone (moved or deleted while in use); put it "
                "back, or point RECSYS_DATABASE_URL at it"
            )
        if not self.may_create:  # the message names no path: the service shows it
            raise CatalogNotReady(
                "there is no catalog database file at the configured path (--database-url "
                "or RECSYS_DATABASE_URL); to create one, run `recsys db upgrade` first",
                path=self.path,  # the command line shows it
            )

    def _remember(self, _dbapi_connection, record) -> None:
        record.info["sqlite_file"] = self.identity()
        self.opened = True
        self._gone.worked()

    def _check(self, _dbapi_connection, record, _proxy) -> None:
        if record.info.get("sqlite_file") != self.identity():
            # the pool drops this connection and opens a new one on what is at the path now
            raise DisconnectionError("the catalog file was moved or replaced")


def connect_current(database_url: str) -> Engine:
    """``connect``, then ``require_current_schema``: the engine of a catalog that is migrated
    to the code's revision (the CLI commands that read or write it start here)."""
    engine = connect(database_url)
    require_current_schema(engine)
    return engine


def require_current_schema(engine: Engine) -> None:
    """Raise ``CatalogNotReady`` unless the database is migrated to the latest revision."""
    from recsys.catalog.migrate import current_revision, head_revision, revisions

    current, head = current_revision(engine), head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        if current is not None and current not in revisions():  # `db upgrade` refuses it too
            raise CatalogNotReady(
                f"the catalog database {where} is at revision {current}, newer than this "
                f"code's {head}: newer code migrated it; run that code, or to go back to this "
                f"one, run that code's `recsys db downgrade {head}` first (README, "
                '"Upgrades and rollbacks")'
            )
        state = "is not initialised" if current is None else f"is at revision {current}"
        raise CatalogNotReady(
            f"the catalog database {where} {state}, the code expects {head}; run "
            "`recsys db upgrade` first"
        )


# SQLite's error texts -> what they mean for the catalog file at {path}, and the fix.
_SQLITE_PROBLEMS = (
    (
        "database is locked",
        "{path} is locked by another writer (waited {timeout} s); run the "
        "command again when that writer is done",
    ),
    (
        "database or disk is full",
        "the disk holding {path} is full; free some space (SQLite "
        "also writes {name}-wal and {name}-shm beside it)",
    ),
    (
        "disk i/o error",
        "reading or writing {path} failed (disk I/O error: a full disk, or "
        "{name}-wal / {name}-shm beside it that cannot be written)",
    ),
    (
        "readonly",
        "{path} or its folder is read-only; SQLite writes {name}-wal and {name}-shm "
        "beside it, so both must be writable",
    ),
    (
        "file is not a database",
        "{path} is not a SQLite database; point --database-url "
        "(or RECSYS_DATABASE_URL) at the catalog",
    ),
    ("malformed", "{path} is damaged (database disk image is malformed); restore it from a backup"),
)


def database_problem(exc: Exception, database_url: str | None) -> str:
    """One line saying what a driver's error (SQLAlchemy's ``DBAPIError``) means for the
    catalog at ``database_url``, naming a SQLite file and the fix; for a server, the driver's
    first line and where to look."""
    orig = getattr(exc, "orig", None)
    reason = (str(orig) if orig is not None else str(exc)).strip().splitlines()[0]
    path = sqlite_path(database_url) if database_url else None
    if path is not None:
        if "unable to open database file" in reason.lower():
            return _unopenable(path)
        for needle, meaning in _SQLITE_PROBLEMS:
            if needle in reason.lower():
                name = os.path.basename(path)
                return meaning.format(path=path, name=name, timeout=SQLITE_BUSY_SECONDS)
        return f"the catalog database {path} failed: {reason}"
    lowered = reason.lower()
    if "prepared statement" in lowered or "startup parameter" in lowered:  # PgBouncer's
        return (
            f"the catalog database answered: {reason}; behind PgBouncer, add "
            "?pgbouncer=transaction (or =session, its pool_mode) to the database URL"
        )
    return (
        f"the catalog database did not answer: {reason}; check --database-url (or "
        "RECSYS_DATABASE_URL) and that its server is running"
    )


def _unopenable(path: str) -> str:
    """Why SQLite could not open the file at ``path`` ("unable to open database file" says
    nothing of it): a folder at the path, links that loop, or a name too long for the -wal
    file beside it were all blamed on the folder."""
    name, folder = os.path.basename(path), os.path.dirname(path)
    if os.path.isdir(path):
        return f"cannot open {path}: it is a folder; point --database-url at a file in it"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"cannot open {path}: its links loop ({exc.strerror})"
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except OSError:
        longest = 255
    if len(os.fsencode(f"{name}-wal")) > longest:
        return (
            f"cannot open {path}: its name is too long for the -wal file SQLite writes "
            f"beside it (a name here holds at most {longest} bytes, -wal included); use a "
            "shorter name"
        )
    return f"cannot open {path}: its folder is missing or not readable and writable"


def sqlite_unwritable(engine: Engine) -> str | None:
    """What stops writes to ``engine``'s SQLite file (the file or its folder read-only:
    SQLite writes its -wal and -shm files beside it); None when nothing does or the
    catalog is on a server (which says so when asked)."""
    path = sqlite_path(engine.url)
    if path is None:
        return None
    for what, target in (("file", path), ("folder", os.path.dirname(path))):
        if os.path.exists(target) and not os.access(target, os.W_OK):
            return (
                f"the catalog's {what} {target} is read-only (SQLite writes {path}-wal and "
                "-shm beside it)"
            )
    return None
