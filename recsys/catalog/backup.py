"""Backing a SQLite catalog up while it serves, and restoring it without undoing an erasure.

A file copy of a live catalog is not a backup: WAL mode keeps the latest commits in the
``-wal`` file (a ``cp`` of the catalog alone lacked 230 committed events), and a copy taken
during a write can be torn (4 of 150 copies were malformed in a walkthrough). A restored
file laid beside a ``-wal`` left by the old one is worse: SQLite replays that WAL into it, and
the result is corrupt while every check passes. Both go through SQLite's online backup API
here: ``backup`` copies a consistent snapshot, pages as one read transaction sees them,
while writers go on; ``restore`` copies a backup's pages into the catalog through SQLite's
own locks and WAL, so connections open on it (a running service's) see the restored catalog
at their next transaction.

A backup is older than the erasures made since it was taken; restored as it is, it brought
erased shoppers back (their events, their personal feeds). ``restore`` keeps the erasure
record of the catalog it replaces: every erasure missing from the backup is recorded again
and the users it names are erased again (their ids are matched by their keys' hash).

PostgreSQL has its own tools for both (``pg_dump`` and ``pg_restore``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from recsys.catalog import migrate
from recsys.catalog.db import sqlite_path
from recsys.catalog.models import Erasure, User, user_key
from recsys.errors import InvalidInput

# Pages copied per step of the backup API (4 KiB pages: 64 MiB a step): between steps the
# source's writers go on, and a progress bar moves.
STEP_PAGES = 16_384
# Users' ids hashed and matched at a time when erasures are carried into a restored catalog.
BATCH = 10_000


@dataclass(frozen=True)
class Restored:
    """What ``restore`` did: the backup's revision, whether the catalog was then migrated to
    the code's, the erasures carried over from the catalog replaced, and the users of the
    backup erased again because of them."""

    revision: str | None
    migrated: bool
    erasures: int
    erased_users: list[str]


def _file(url) -> str:
    path = sqlite_path(url)
    if path is None:
        raise InvalidInput(
            "backup and restore read and write SQLite catalogs; back a PostgreSQL catalog up "
            "with pg_dump and restore it with pg_restore"
        )
    return path


def backup(url, target: str | Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the SQLite catalog at ``url`` into the new file ``target``, consistent while the
    catalog is written to, and check the copy (``PRAGMA quick_check``) -> its size in bytes.
    Nothing is left at ``target`` when it fails. ``progress(done, total)``: pages copied."""
    source_path, target = _file(url), Path(target)
    if not os.path.exists(source_path):
        raise InvalidInput(f"there is no catalog at {source_path}; check --database-url")
    if target.exists():
        raise InvalidInput(f"{target} exists; back up into a new file")
    if not target.parent.is_dir():
        raise InvalidInput(f"no folder {target.parent}; create it first")
    partial = target.with_name(f".{target.name}.partial")
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy, pages=STEP_PAGES, progress=_pages(progress))
            _check(copy, target)
        finally:
            copy.close()
            source.close()
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise InvalidInput(f"the backup failed ({exc}); nothing was written to {target}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size


def restore(engine: Engine, url, backup_file: str | Path, progress=None) -> Restored:
    """Replace the SQLite catalog at ``url`` (``engine``'s) with the backup ``backup_file``
    (checked first), in place and through SQLite's locks, then migrate it to the code's
    revision when it is older, and carry over the erasure record of the catalog replaced."""
    path, backup_file = _file(url), Path(backup_file)
    if not backup_file.is_file():
        raise InvalidInput(f"no backup file {backup_file}")
    if os.path.exists(path) and os.path.samefile(path, backup_file):
        raise InvalidInput(f"{backup_file} is the catalog itself; give a backup of it")
    revision = _backup_revision(backup_file)
    known = migrate.revisions()
    if revision not in known:
        raise InvalidInput(
            f"{backup_file} is at revision {revision!r}, which this code does not know (its "
            f"revisions end at {known[-1]}): newer code wrote it; restore it with that code"
        )
    erasures = _erasures(engine) if os.path.exists(path) else {}
    source = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
    target = sqlite3.connect(path, timeout=30)
    try:
        source.backup(target, pages=STEP_PAGES, progress=_pages(progress))
    except sqlite3.Error as exc:
        raise InvalidInput(f"the restore failed ({exc}); the catalog is as it was") from exc
    finally:
        target.close()
        source.close()
    engine.dispose()  # pooled connections opened before the restore
    migrated = revision != known[-1]
    if migrated:
        migrate.upgrade(engine)
    carried, users = _carry_erasures(engine, erasures)
    return Restored(revision, migrated, carried, users)


def _pages(progress):
    if progress is None:
        return None
    return lambda _status, remaining, total: progress(total - remaining, total)


def _check(connection: sqlite3.Connection, name) -> None:
    found = connection.execute("PRAGMA quick_check").fetchone()[0]
    if found != "ok":
        raise sqlite3.DatabaseError(f"the copy of {name} does not check out: {found}")


def _backup_revision(backup_file: Path) -> str | None:
    """The backup's migration revision, after checking it is a sound SQLite catalog."""
    try:
        connection = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            _check(connection, backup_file)
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise InvalidInput(
            f"{backup_file} is no catalog backup this code can read ({exc}); nothing was restored"
        ) from exc
    return row[0] if row else None


def _erasures(engine: Engine) -> dict[str, object]:
    """The catalog's erasure record (user key -> erased at); none before revision 0012."""
    try:
        with engine.connect() as connection:
            return dict(connection.execute(select(Erasure.user_key, Erasure.erased_at)).all())
    except Exception:  # no such table (an older catalog), or no catalog to read
        return {}


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
        with engine.begin() as connection:  # as of when they were erased, not now
            for name in back:
                connection.execute(
                    Erasure.__table__.update()
                    .where(Erasure.user_key == user_key(name))
                    .values(erased_at=missing[user_key(name)])
                )
    return len(missing), back
