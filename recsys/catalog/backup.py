"""Backing a SQLite catalog up while it serves, and restoring it without undoing an erasure.

A file copy of a live catalog is not a backup: WAL mode keeps the latest commits in the
``-wal`` file (a ``cp`` of the catalog alone lacked 230 committed events), and a copy taken
during a write can be torn (4 of 150 copies were malformed in a walkthrough). A restored
file laid beside a ``-wal`` left by the old one is worse: SQLite replays that WAL into it, and
the result is corrupt while every check passes. Both go through SQLite's online backup API
here: ``backup`` copies a consistent snapshot, pages as one read transaction sees them,
while writers go on; ``restore`` prepares the restored catalog in a file beside it, then
copies its pages over the catalog in one step through SQLite's own locks and WAL, so
connections open on it (a running service's) see the restored catalog at their next
transaction, and a failure or a kill leaves the catalog as it was.

A backup is older than the erasures made since it was taken; restored as it is, it brought
erased shoppers back (their events, their personal feeds). ``restore`` keeps the erasure
record of the catalog it replaces: every erasure missing from the backup is recorded again
and the users it names are erased again (their ids are matched by their keys' hash).

PostgreSQL has its own tools for both (``pg_dump`` and ``pg_restore``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, bindparam, make_url, select, update

from recsys.catalog import migrate
from recsys.catalog.db import connect, sqlite_path
from recsys.catalog.models import (
    COMPARED_ITEMS,
    SAME_CATALOG_SHARE,
    ApiKey,
    CatalogState,
    Erasure,
    User,
    items_held,
    user_key,
)
from recsys.errors import InvalidInput, TryAgain

# Pages copied per step of the backup API (4 KiB pages: 64 MiB a step): between steps the
# source's writers go on, and a progress bar moves.
STEP_PAGES = 16_384
# Users' ids hashed and matched at a time when erasures are carried into a restored catalog.
BATCH = 10_000


@dataclass(frozen=True)
class Restored:
    """What ``restore`` did: the backup's revision, whether it was migrated to the code's,
    the erasures carried over from the catalog replaced, the users of the backup erased
    again because of them, and the API keys kept from the catalog replaced."""

    revision: str | None
    migrated: bool
    erasures: int
    erased_users: list[str]
    keys: int = 0


def sqlite_file(url) -> str:
    """The catalog file of a SQLite ``url``; ``InvalidInput`` saying what to use otherwise."""
    path = sqlite_path(url)
    if path is not None:
        return path
    if make_url(url).get_backend_name() == "sqlite":
        raise InvalidInput(
            "the catalog is an in-memory database or a file: URI; give its file's path "
            "(sqlite:///PATH) to back it up or restore it"
        )
    raise InvalidInput(
        "backup and restore read and write SQLite catalogs; back a PostgreSQL catalog up "
        "with pg_dump and restore it with pg_restore"
    )


def backup(url, target: str | Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the SQLite catalog at ``url`` into the new file ``target``, consistent while the
    catalog is written to, and check the copy (``PRAGMA quick_check``) -> its size in bytes.
    Nothing is left at ``target`` when it fails. ``progress(done, total)``: pages copied."""
    source_path, target = sqlite_file(url), Path(target)
    if not os.path.exists(source_path):
        raise InvalidInput(f"there is no catalog at {source_path}; check --database-url")
    if target.exists():
        raise InvalidInput(f"{target} exists; back up into a new file")
    if not target.parent.is_dir():
        raise InvalidInput(f"no folder {target.parent}; create it first")
    # a short name of its own: ".NAME.partial" was past the longest a name may be for a
    # target name near it ("File name too long")
    partial = target.with_name(f".backup-{uuid.uuid4().hex[:8]}.partial")
    try:
        _copy(source_path, partial, progress)
        _one_file(partial)
        _checked(partial, target)
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except sqlite3.Error as exc:
        hint = "; can this user write there?" if "unable to open" in str(exc) else ""
        raise InvalidInput(
            f"the backup failed ({exc}{hint}); nothing was written to {target}"
        ) from exc
    except OSError as exc:  # the fsync or the rename: a full disk, a read-only folder
        raise InvalidInput(
            f"the backup failed ({exc.strerror}); nothing was written to {target}"
        ) from exc
    finally:
        _remove(partial)
    return target.stat().st_size


def restore(
    engine: Engine, url, backup_file: str | Path, progress=None, other_catalog: bool = False
) -> Restored:
    """Replace the SQLite catalog at ``url`` (``engine``'s) with the backup ``backup_file``:
    checked, copied to a file beside the catalog, migrated there to the code's revision when
    older, given the erasure record and the API keys of the catalog it replaces, and only
    then copied over the catalog in one step, through SQLite's locks: a failure or a kill at
    any point leaves the catalog as it was (or wholly restored, erasures included).

    A backup of another catalog (its ``catalog_id`` differs from this one's) is refused
    unless ``other_catalog``: another shop's backup restored by mistake served that shop's
    items and bundles on this one's service. A backup from before catalog ids takes this
    catalog's."""
    path, backup_file = sqlite_file(url), Path(backup_file)
    if not backup_file.is_file():
        raise InvalidInput(f"no backup file {backup_file}")
    if os.path.exists(path) and os.path.samefile(path, backup_file):
        raise InvalidInput(f"{backup_file} is the catalog itself; give a backup of it")
    revision = _backup_revision(backup_file)
    known = migrate.revisions()
    if revision is None:
        raise InvalidInput(f"{backup_file} is no catalog backup (it names no revision)")
    if revision not in known:
        raise InvalidInput(
            f"{backup_file} is at revision {revision!r}, which this code does not know (its "
            f"revisions end at {known[-1]}): newer code wrote it; restore it with that code"
        )
    kept = _kept(engine) if os.path.exists(path) else _Kept({}, [])
    ours, its = _catalog_id(path), _catalog_id(backup_file)
    if ours and its and ours != its and not other_catalog:
        raise InvalidInput(
            f"{backup_file} is a backup of another catalog (catalog id {its}; this catalog's "
            f"is {ours}): restoring it would serve that catalog's items and bundles here. "
            "Restore it with the settings of the catalog it came from, or pass "
            "--other-catalog to replace this catalog with it; nothing was changed"
        )
    # a backup from before catalog ids is this catalog's when its items are, by id and title
    # (every backup on the day of the upgrade is one: another shop's took this one's id)
    before_ids = bool(ours) and not its
    share = _share_held(engine, backup_file) if before_ids and _holds_items(path) else 1.0
    if share < SAME_CATALOG_SHARE and not other_catalog:
        raise InvalidInput(
            f"{backup_file} has no catalog id (it was taken before migration 0013) and only "
            f"{share:.0%} of its items are this catalog's, by id and title: it is another "
            "catalog's backup, restoring it would serve that catalog's items here. Restore it "
            "with the settings of the catalog it came from, or pass --other-catalog to replace "
            "this catalog with it; nothing was changed"
        )
    staged = Path(path).with_name(f".{Path(path).name}.restoring")
    _remove(staged)  # what a killed restore left
    try:
        _copy(backup_file, staged, progress)
        prepared = connect(f"sqlite:///{staged}")
        try:
            migrated = revision != known[-1]
            if migrated:
                migrate.upgrade(prepared)
            if before_ids and share >= SAME_CATALOG_SHARE:  # this catalog's: its id
                with prepared.begin() as connection:
                    connection.execute(
                        update(CatalogState).where(CatalogState.id == 1).values(catalog_id=ours)
                    )
            carried, users = _carry_erasures(prepared, kept.erasures)
            keys = _carry_keys(prepared, kept.keys)
        finally:
            prepared.dispose()
        _copy(staged, path, None, pages=-1)  # one step: one transaction on the catalog
    except sqlite3.Error as exc:
        raise InvalidInput(f"the restore failed ({exc}); the catalog is as it was") from exc
    except TryAgain as exc:  # the catalog held by another writer
        raise TryAgain(f"{exc}; the catalog is as it was") from None
    except Exception as exc:  # the backup is no catalog this code can migrate and fill
        cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's SQL
        raise InvalidInput(
            f"{backup_file} cannot be restored ({type(cause).__name__}: {cause}); the "
            "catalog is as it was"
        ) from exc
    finally:
        _remove(staged)
    engine.dispose()  # pooled connections opened before the restore
    return Restored(revision, migrated, carried, users, keys)


def _read_only(path) -> str:
    """The URI that opens the SQLite file at ``path`` read-only. Its name is quoted: a # in
    it began the URI's fragment (``mode=ro`` with it), and a backup of ``c#1.db`` copied a
    new, empty ``c``."""
    uri = f"file:{urllib.parse.quote(os.fspath(path))}?mode=ro"
    return uri + ("&immutable=1" if _unwritable_wal(path) else "")


def _unwritable_wal(path) -> bool:
    """Whether the SQLite file at ``path`` is in WAL mode, in a folder this process cannot
    write, with no -wal file beside it: no one can write to it (a writer makes its -wal
    first), so it may be read as immutable; a plain read-only open makes its -shm beside it,
    and could not (a backup on read-only storage, from before backups were written in
    DELETE mode, was "no catalog backup this code can read")."""
    if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK) or os.path.exists(f"{path}-wal"):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(20)[18:20] == b"\x02\x02"  # the header's WAL versions
    except OSError:
        return False


def _copy(source_path, target_path, progress, pages: int = STEP_PAGES) -> None:
    # a short busy wait in each step: the waiting is ``_stepping``'s, between the steps
    source = sqlite3.connect(_read_only(source_path), uri=True, timeout=0.1)
    target = sqlite3.connect(target_path, timeout=0.1)
    try:
        source.backup(target, pages=pages, progress=_stepping(progress, target_path))
    finally:
        target.close()
        source.close()


def _one_file(path) -> None:
    """Put the SQLite file at ``path`` in DELETE journal mode: a backup is then one file
    (the catalog's WAL mode came with its pages, and a read of a backup on read-only storage
    failed for want of its -shm; a restore left -wal and -shm beside it)."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()


def _remove(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class _Kept:
    """What a restore carries from the catalog it replaces: its erasure record (user key ->
    erased at) and its API keys (each row's columns)."""

    erasures: dict[str, object]
    keys: list[dict]


# How long a copy waits for a file another writer holds, as every other writer does.
BUSY_SECONDS = 30.0
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


def _stepping(progress, target_path):
    """The backup's per-step callback: ``progress(done, total)`` where given, and a
    ``TryAgain`` once the files stayed locked for ``BUSY_SECONDS``. SQLite's backup step
    is retried in C while a file is busy, without end and deaf to signals: a restore onto a
    catalog another writer held waited 540 s, ignored SIGTERM, then replaced the catalog.
    The callback runs between the tries, so a signal's handler runs there too."""
    busy_since = None

    def step(status, remaining, total):
        nonlocal busy_since
        if status in _BUSY:
            busy_since = busy_since or time.monotonic()
            if time.monotonic() - busy_since > BUSY_SECONDS:
                raise TryAgain(
                    f"{target_path} is locked by another writer (waited {BUSY_SECONDS:g} s); "
                    "run the command again when that writer is done"
                )
        else:
            busy_since = None
        if progress is not None:
            progress(total - remaining, total)

    return step


@contextlib.contextmanager
def _reading(path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the SQLite file at ``path`` (``_read_only``), closed after."""
    connection = sqlite3.connect(_read_only(path), uri=True)
    try:
        yield connection
    finally:
        connection.close()


def _checked(path, name) -> str | None:
    """``PRAGMA quick_check`` of the SQLite file at ``path`` (``sqlite3.DatabaseError``
    naming ``name`` unless it is ok) -> its migration revision (None: it has none)."""
    with _reading(path) as connection:
        found = connection.execute("PRAGMA quick_check").fetchone()[0]
        if found != "ok":
            raise sqlite3.DatabaseError(f"the copy of {name} does not check out: {found}")
        with contextlib.suppress(sqlite3.OperationalError):  # no such table
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            return row[0] if row else None
        return None


def _share_held(engine: Engine, backup_file: Path) -> float:
    """The share of the backup's items (at most ``COMPARED_ITEMS``, spread by row id) this
    catalog holds with the same title."""
    try:
        with _reading(backup_file) as connection:
            count = connection.execute("SELECT count(*) FROM items").fetchone()[0]
            step = max(1, -(-count // COMPARED_ITEMS))
            rows = connection.execute(
                "SELECT external_id, title FROM items WHERE id % ? = 0", (step,)
            ).fetchall()
    except sqlite3.Error:
        return 1.0  # no items table to compare: the restore says what is wrong with it
    return items_held(engine, [str(i) for i, _ in rows], [t for _, t in rows])


def _first_row(path, query: str) -> tuple | None:
    """The first row ``query`` reads from the SQLite file at ``path``; None when it reads
    none or cannot be read (no file, or an older schema)."""
    if not os.path.exists(path):
        return None
    try:
        with _reading(path) as connection:
            return connection.execute(query).fetchone()
    except sqlite3.Error:
        return None


def _holds_items(path) -> bool:
    """Whether the SQLite catalog at ``path`` holds an item (a new host's fresh catalog,
    restored into, holds none: nothing to compare a backup with)."""
    return _first_row(path, "SELECT 1 FROM items LIMIT 1") is not None


def _catalog_id(path) -> str | None:
    """The ``catalog_id`` of the SQLite catalog at ``path``; None when it has none (no file,
    or a schema before migration 0013)."""
    row = _first_row(path, "SELECT catalog_id FROM catalog_state WHERE id = 1")
    return row[0] if row else None


def _backup_revision(backup_file: Path) -> str | None:
    """The backup's migration revision, after checking it is a sound SQLite catalog."""
    try:
        revision = _checked(backup_file, backup_file)
    except sqlite3.Error as exc:
        raise InvalidInput(
            f"{backup_file} is no catalog backup this code can read ({exc}); nothing was restored"
        ) from exc
    return revision


def _kept(engine: Engine) -> _Kept:
    """The erasure record (none before revision 0012) and the API keys of the catalog."""
    erasures, keys = {}, []
    # no such table (an older catalog), or a catalog gone bad: what it holds is not kept
    with contextlib.suppress(Exception), engine.connect() as connection:
        erasures = dict(connection.execute(select(Erasure.user_key, Erasure.erased_at)).all())
    with contextlib.suppress(Exception), engine.connect() as connection:
        keys = [dict(row) for row in connection.execute(select(ApiKey.__table__)).mappings()]
    return _Kept(erasures, keys)


def _carry_keys(engine: Engine, keys: list[dict]) -> int:
    """Put the replaced catalog's API keys in place of the backup's -> keys written. Keys are
    credentials, not shop data: a restored backup made keys revoked since work again, and
    dropped the keys created since (clients then got 401s)."""
    if not keys:
        return 0
    with engine.begin() as connection:
        connection.execute(ApiKey.__table__.delete())
        connection.execute(ApiKey.__table__.insert(), keys)
    return len(keys)


def _carry_erasures(engine: Engine, erasures: dict[str, object]) -> tuple[int, list[str]]:
    """Record in the restored catalog each erasure of ``erasures`` it lacks (or holds as of
    an earlier time), and erase the users they name again -> (erasures recorded, users
    erased)."""
    from recsys.ingest.users import erase_users  # the ingest's own deletion, all or none

    if not erasures:
        return 0, []
    with engine.begin() as connection:
        have = dict(connection.execute(select(Erasure.user_key, Erasure.erased_at)).all())
        missing = {k: at for k, at in erasures.items() if k not in have or have[k] < at}
        if missing:
            connection.execute(Erasure.__table__.delete().where(Erasure.user_key.in_(missing)))
            connection.execute(
                Erasure.__table__.insert(),
                [{"user_key": k, "erased_at": at} for k, at in missing.items()],
            )
    if not missing:
        return 0, []
    with engine.connect() as connection:
        names = connection.execution_options(yield_per=BATCH).execute(select(User.external_id))
        back = [name for (name,) in names if user_key(name) in missing]
    if back:
        erase_users(engine, back)
        erasures = Erasure.__table__
        when = (  # as of when they were erased, not now
            update(erasures)
            .where(erasures.c.user_key == bindparam("k"))
            .values(erased_at=bindparam("at"))
        )
        keys = [user_key(name) for name in back]
        with engine.begin() as connection:
            connection.execute(when, [{"k": k, "at": missing[k]} for k in keys])
    return len(missing), back
