"""`recsys db backup|restore`: a consistent copy of a live SQLite catalog, and a restore that
never brings an erased shopper back."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading

import pytest
from sqlalchemy import func, insert, select, text

from recsys.catalog import backup as backups
from recsys.catalog.backup import backup, restore
from recsys.catalog.keys import create_key, find_key, revoke_key
from recsys.catalog.models import Erasure, Interaction, Item, User, catalog_id, user_key
from recsys.errors import InvalidInput, TryAgain
from recsys.ingest.users import erase_users
from recsys.model.training import train
from tests.shop_fixture import populate, train_config


def _count(engine, model) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(model))


def _sqlite_only(db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's backup API; PostgreSQL is refused (test below)")


def test_a_backup_taken_while_events_are_written_is_a_sound_catalog(engine, db_url, tmp_path):
    _sqlite_only(db_url)
    populate(engine)
    stop, written, failed = threading.Event(), [], []
    with engine.connect() as connection:
        user = connection.scalar(select(User.id).limit(1))
        item = connection.scalar(select(Item.id).limit(1))

    def write() -> None:  # a writer committing events all along, as a serving catalog has
        try:
            while not stop.is_set():
                n = len(written)
                rows = [
                    {"user_id": user, "item_id": item, "event": "view", "dedup_key": f"w{n}.{k}"}
                    for k in range(5)
                ]
                with engine.begin() as connection:
                    connection.execute(insert(Interaction), rows)
                written.append(n)
        except Exception as exc:  # the test fails on it below
            failed.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(written) < 3 and not failed:
            stop.wait(0.01)
        size = backup(db_url, tmp_path / "copy.db")
    finally:
        stop.set()
        writer.join()
    assert not failed and len(written) >= 3
    assert size > 0
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    copied = copy.execute("SELECT count(*) FROM interactions").fetchone()[0]
    assert 0 < copied <= _count(engine, Interaction)
    assert not list(tmp_path.glob(".backup-*.partial*"))
    with pytest.raises(InvalidInput, match="exists; back up into a new file"):
        backup(db_url, tmp_path / "copy.db")


def test_a_restore_keeps_the_erasures_made_since_the_backup(engine, db_url, tmp_path, run_cli):
    _sqlite_only(db_url)
    populate(engine)
    run_cli("db", "backup", tmp_path / "monday.db")
    with engine.connect() as connection:
        shopper = connection.scalar(select(User.external_id).order_by(User.id))
        items = connection.scalar(select(func.count()).select_from(Item))
    before = _count(engine, Interaction)
    erased = erase_users(engine, [shopper, "never-seen"])
    assert erased.events > 0
    with engine.connect() as connection:
        erased_at = connection.scalar(
            select(Erasure.erased_at).where(Erasure.user_key == user_key(shopper))
        )
        connection.execute(text("DELETE FROM items WHERE id = (SELECT max(id) FROM items)"))
        connection.commit()
    # no terminal to ask on: it asked on stdout and stopped with "Aborted!", exit 1
    unasked = run_cli("db", "restore", tmp_path / "monday.db", expect_exit=2).output
    assert "db restore replaces the whole catalog; pass --yes" in unasked
    done = run_cli("db", "restore", tmp_path / "monday.db", "--yes").output
    assert "kept 2 erasure(s) recorded since the backup; erased 1 of its users again" in done
    assert _count(engine, Item) == items  # Monday's catalog
    assert _count(engine, Interaction) == before - erased.events  # but not the erased one's
    with engine.connect() as connection:
        assert connection.scalar(select(User.id).where(User.external_id == shopper)) is None
        kept = dict(connection.execute(select(Erasure.user_key, Erasure.erased_at)).all())
    assert kept == {user_key(shopper): erased_at, user_key("never-seen"): erased_at}
    assert "registry lacks" not in done  # no bundle was trained since


def test_a_restore_names_the_bundles_trained_since_the_backup(engine, db_url, tmp_path, run_cli):
    """It said "a bundle trained since the backup is in no registry now" after every
    restore, whether one was or not."""
    _sqlite_only(db_url)
    populate(engine)
    run_cli("db", "backup", tmp_path / "monday.db")
    artifacts = tmp_path / "artifacts"
    since = train(engine, artifacts, train_config())
    done = run_cli("--artifacts-dir", artifacts, "db", "restore", tmp_path / "monday.db", "--yes")
    assert (
        f"the restored registry lacks 1 bundle folder(s) in {artifacts / 'bundles'}" in done.output
    )
    assert f"({since.version}): `recsys bundles register FOLDER` adds one" in done.output


def test_a_restore_whose_active_bundle_was_removed_since_says_so(engine, db_url, tmp_path, run_cli):
    """The backup's active bundle removed since (`bundles gc`): the restore said nothing, and
    the service then refused it."""
    _sqlite_only(db_url)
    populate(engine)
    artifacts = tmp_path / "artifacts"
    active = train(engine, artifacts, train_config())
    run_cli("db", "backup", tmp_path / "monday.db")
    shutil.rmtree(active.path)
    done = run_cli("--artifacts-dir", artifacts, "db", "restore", tmp_path / "monday.db", "--yes")
    assert f"the restored active bundle {active.version} has no folder" in done.output


def test_a_restore_refuses_what_is_no_backup_and_changes_nothing(engine, db_url, tmp_path):
    _sqlite_only(db_url)
    populate(engine)
    items = _count(engine, Item)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    with pytest.raises(InvalidInput, match="no catalog backup this code can read"):
        restore(engine, db_url, junk)
    newer = tmp_path / "newer.db"
    backup(db_url, newer)
    with sqlite3.connect(newer) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(InvalidInput, match="revision '9999', which this code does not know"):
        restore(engine, db_url, newer)
    assert _count(engine, Item) == items


def test_postgresql_is_sent_to_its_own_tools(db_url, tmp_path):
    if db_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL refusal")
    with pytest.raises(InvalidInput, match="pg_dump"):
        backup(db_url, tmp_path / "copy.db")


def test_a_restore_keeps_the_catalogs_api_keys(engine, db_url, tmp_path):
    """Keys are credentials, not shop data: a restored backup made a key revoked since work
    again, and dropped the keys created since (their clients got 401s)."""
    _sqlite_only(db_url)
    populate(engine)
    leaked, leaked_key = create_key(engine, ["users:read"], "leaked")
    backup(db_url, tmp_path / "monday.db")
    revoke_key(engine, leaked.key_id)
    _, new_key = create_key(engine, ["events:write"], "created since")
    done = restore(engine, db_url, tmp_path / "monday.db")
    assert done.keys == 2
    assert find_key(engine, leaked_key) is None  # still revoked
    assert find_key(engine, new_key) is not None  # still there


def test_a_failed_restore_leaves_the_catalog_and_its_erasures_as_they_were(
    engine, db_url, tmp_path, monkeypatch
):
    """The restore was copied over the catalog before the erasures were carried: a kill in
    between lost the erasure record for good, and a file holding only a revision table
    replaced the catalog before failing. It is now prepared beside the catalog first."""
    _sqlite_only(db_url)
    populate(engine)
    backup(db_url, tmp_path / "monday.db")
    with engine.connect() as connection:
        shopper = connection.scalar(select(User.external_id).order_by(User.id))
    erase_users(engine, [shopper])
    events, items = _count(engine, Interaction), _count(engine, Item)

    def killed(*_args):
        raise KeyboardInterrupt  # as a kill between the copy and the carry would

    monkeypatch.setattr(backups, "_carry_keys", killed)
    with pytest.raises(KeyboardInterrupt):
        restore(engine, db_url, tmp_path / "monday.db")
    monkeypatch.undo()
    bare = tmp_path / "bare.db"
    with sqlite3.connect(bare) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.execute("INSERT INTO alembic_version VALUES ('0012')")
    with pytest.raises(InvalidInput, match=r"cannot be restored .*the catalog is as it was"):
        restore(engine, db_url, bare)
    assert (_count(engine, Interaction), _count(engine, Item)) == (events, items)
    with engine.connect() as connection:
        assert connection.scalar(select(User.id).where(User.external_id == shopper)) is None
        assert connection.scalar(select(func.count()).select_from(Erasure)) == 1
    assert not list(tmp_path.glob(".catalog.db.restoring*"))


def test_a_backup_of_another_catalog_is_refused_unless_asked_for(engine, db_url, tmp_path):
    """Another shop's backup restored with this shop's settings served that shop's items
    and bundles here, without a word. A backup from before catalog ids takes this one's."""
    _sqlite_only(db_url)
    populate(engine)
    ours = catalog_id(engine)
    assert ours and len(ours) == 32
    other = tmp_path / "other.db"
    backup(db_url, other)
    with sqlite3.connect(other) as connection:
        connection.execute("UPDATE catalog_state SET catalog_id = 'another' WHERE id = 1")
        connection.execute("DELETE FROM interactions")
    events = _count(engine, Interaction)
    with pytest.raises(InvalidInput, match=r"a backup of another catalog \(catalog id another"):
        restore(engine, db_url, other)
    assert _count(engine, Interaction) == events and catalog_id(engine) == ours
    restore(engine, db_url, other, other_catalog=True)
    assert _count(engine, Interaction) == 0 and catalog_id(engine) == "another"
    older = tmp_path / "older.db"  # as a catalog before migration 0013 was
    backup(db_url, older)
    with sqlite3.connect(older) as connection:
        connection.execute("ALTER TABLE catalog_state DROP COLUMN catalog_id")
        connection.execute("UPDATE alembic_version SET version_num = '0012'")
    done = restore(engine, db_url, older)
    assert done.migrated and catalog_id(engine) == "another"  # this catalog's, kept
    # one from before ids whose items are another shop's (same ids, other titles): refused
    with sqlite3.connect(older) as connection:
        connection.execute("UPDATE items SET title = 'Other ' || coalesce(title, '')")
    with pytest.raises(InvalidInput, match=r"no catalog id .* only 0% of its items"):
        restore(engine, db_url, older)
    assert catalog_id(engine) == "another"
    restore(engine, db_url, older, other_catalog=True)  # asked for: it keeps an id of its own
    assert catalog_id(engine) not in (None, "another")


def test_a_restore_onto_a_catalog_another_writer_holds_gives_up_and_keeps_it(
    engine, db_url, tmp_path, monkeypatch
):
    """SQLite's backup step is retried in C while the file is busy, without end and deaf to
    signals: a restore waited 540 s on a held catalog, ignored SIGTERM, then replaced it."""
    _sqlite_only(db_url)
    populate(engine)
    backup(db_url, tmp_path / "monday.db")
    items = _count(engine, Item)
    monkeypatch.setattr(backups, "BUSY_SECONDS", 0.5)
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TryAgain, match=r"is locked by another writer \(waited 0.5 s\)"):
            restore(engine, db_url, tmp_path / "monday.db")
    finally:
        holder.rollback()
        holder.close()
    assert _count(engine, Item) == items


def test_a_backup_is_one_file_read_where_nothing_may_be_written(
    engine, db_url, tmp_path, monkeypatch
):
    """A backup kept the catalog's WAL mode: a restore read it only where it could write its
    -shm beside it ("no catalog backup this code can read" on read-only storage), and left
    -wal and -shm beside it elsewhere. Backups are written in DELETE mode now; an older one,
    in WAL mode, is read as immutable where its folder cannot be written."""
    _sqlite_only(db_url)
    populate(engine)
    items = _count(engine, Item)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    backup(db_url, shelf / "monday.db")
    with sqlite3.connect(shelf / "monday.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    restore(engine, db_url, shelf / "monday.db")
    assert [p.name for p in shelf.iterdir()] == ["monday.db"]
    older = sqlite3.connect(shelf / "monday.db")  # as backups were: in WAL mode
    older.execute("PRAGMA journal_mode=WAL")
    older.close()
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM items WHERE id = (SELECT max(id) FROM items)"))
    shelf.chmod(0o555)
    access = os.access  # root may write there all the same: as read-only storage
    monkeypatch.setattr(backups.os, "access", lambda p, m: access(p, m) and p != str(shelf))
    try:
        restore(engine, db_url, shelf / "monday.db")
    finally:
        shelf.chmod(0o755)
    assert [p.name for p in shelf.iterdir()] == ["monday.db"]
    assert _count(engine, Item) == items
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_a_catalog_whose_name_holds_a_hash_is_the_one_backed_up(tmp_path):
    """The read-only URI of ``c#1.db`` was cut at the #: the backup copied a new, empty
    ``c`` (and made it), and reported success."""
    from recsys.catalog import connect, migrate

    url = f"sqlite:///{tmp_path / 'shop #1.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine)
    backup(url, tmp_path / "copy #1.db")
    with sqlite3.connect(tmp_path / "copy #1.db") as copy:
        assert copy.execute("SELECT count(*) FROM items").fetchone()[0] == _count(engine, Item)
    assert not (tmp_path / "shop ").exists()
    engine.dispose()


def test_a_backup_with_the_longest_name_a_file_may_have(engine, db_url, tmp_path, monkeypatch):
    """Its temporary name was the target's with a dot and ".partial" more: past the longest
    name ("File name too long", a traceback); a disk full at the end is one line too."""
    _sqlite_only(db_url)
    target = tmp_path / ("c" * 252 + ".db")
    assert backup(db_url, target) > 0

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(backups.os, "fsync", full)
    with pytest.raises(InvalidInput, match="No space left on device"):
        backup(db_url, tmp_path / "d.db")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".", "d"))] == []
