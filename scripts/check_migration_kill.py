"""``kill -9`` during migration 0006's copy of the interactions table on SQLite.

    python scripts/check_migration_kill.py [--events 3000000] [--after 3] [--out DIR]

Builds a SQLite catalog at revision 0005 with --events interactions, starts `recsys db
upgrade` in a child process, kills it with SIGKILL --after seconds later (mid-copy at the
default sizes), prints the revision, tables and row count it left, then runs the upgrade again
and prints the same. Expected: 0005 with every row after the kill, 0006 with every row after
the second run.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click

from recsys.catalog import connect, migrate

STAMP = "2024-01-01 00:00:00.000000"


def build(path: Path, events: int) -> None:
    engine = connect(f"sqlite:///{path}")
    migrate.upgrade(engine, "0005")
    engine.dispose()
    db = sqlite3.connect(path)
    ids = [(i, f"{i}") for i in range(1, 1001)]
    db.executemany(
        "INSERT INTO users (id, external_id, created_at) VALUES (?, 'u' || ?, ?)",
        [(*row, STAMP) for row in ids],
    )
    db.executemany(
        "INSERT INTO items (id, external_id, in_stock, attributes, created_at, updated_at) "
        "VALUES (?, 'i' || ?, 1, '{}', ?, ?)",
        [(*row, STAMP, STAMP) for row in ids],
    )
    db.executemany(
        "INSERT INTO interactions (user_id, item_id, event, weight, timestamp, dedup_key, "
        "created_at) VALUES (?, ?, 'view', 1.0, ?, ?, ?)",
        ((1 + n % 1000, 1 + n * 7 % 1000, STAMP, f"{n:032x}", STAMP) for n in range(events)),
    )
    db.commit()
    db.close()


def state(path: Path) -> str:
    db = sqlite3.connect(path)
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    revision = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    rows = db.execute("SELECT count(*) FROM interactions").fetchone()[0]
    db.close()
    leftover = [name for name in tables if name.startswith("_alembic_tmp")]
    return f"revision {revision}, {rows:,} interactions, leftover tables {leftover}"


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--events", default=3_000_000, show_default=True)
@click.option("--after", default=3.0, show_default=True, help="seconds before the kill")
@click.option("--out", type=click.Path(path_type=Path), default=Path("/tmp/check-kill"))
def main(events: int, after: float, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "catalog.db"
    for stale in out.glob("catalog.db*"):
        stale.unlink()
    build(path, events)
    command = [sys.executable, "-m", "recsys", "--database-url", f"sqlite:///{path}"]
    command += ["db", "upgrade"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    killed = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.wait()
    click.echo(f"after {'the kill' if killed else 'an upgrade that ended first'}: {state(path)}")
    done = subprocess.run(command, capture_output=True, text=True)
    click.echo(f"after running it again (exit {done.returncode}): {state(path)}")


if __name__ == "__main__":
    main()
