"""Time the pruning of the item change log (issue 17) on a SQLite catalog with a large log.

Builds a scratch catalog once at migration 0004 with ``--rows`` items written one row per
generation (SQLite's triggers log one row per item written, so ``--rows`` log rows), times
the upgrade to the latest migration (0005 stamps every log row), ages all but the newest
``--recent`` rows by ten days, then on fresh copies of that file times: a dry run, the prune
with the default retention (7 days, 100,000 generations), the same prune again (nothing left
to delete but what the writes meanwhile moved past the limit: the common case), and how long
single item writes from another connection wait while the prune holds SQLite's write lock.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_prune_changes.py --dir /tmp/s9-17/bench
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, insert, select, update

from recsys.catalog import changes, connect, migrate
from recsys.catalog.models import Item, ItemChange, utcnow

BATCH = 50_000


def build(path: Path, rows: int, recent: int) -> dict[str, float]:
    """The scratch catalog: ``rows`` items, each logged once; all but ``recent`` aged."""
    engine = connect(f"sqlite:///{path}")
    migrate.upgrade(engine, "0004")
    start = time.perf_counter()
    now = utcnow()
    for first in range(0, rows, BATCH):
        values = [
            {"external_id": f"i{n}", "title": f"item {n}", "in_stock": True, "attributes": {},
             "created_at": now, "updated_at": now}
            for n in range(first, min(rows, first + BATCH))
        ]  # fmt: skip
        with engine.begin() as connection:
            connection.execute(insert(Item), values)
    built = time.perf_counter() - start
    start = time.perf_counter()
    migrate.upgrade(engine, "head")
    upgraded = time.perf_counter() - start
    with engine.begin() as connection:
        old = ItemChange.generation <= changes.generation(engine) - recent
        connection.execute(update(ItemChange).where(old).values(changed_at=now - timedelta(10)))
    engine.dispose()
    return {"build_s": built, "upgrade_0005_s": upgraded}


def one_run(base: Path, work: Path) -> dict[str, float]:
    """Dry run, prune, prune again on a fresh copy of ``base``; writes timed meanwhile."""
    for leftover in work.parent.glob(work.name + "*"):
        leftover.unlink()
    shutil.copy(base, work)
    engine = connect(f"sqlite:///{work}")
    start = time.perf_counter()
    dry = changes.prune_changes(engine, dry_run=True)
    dry_s = time.perf_counter() - start
    waits, stop = [], threading.Event()
    writer = threading.Thread(target=_write_loop, args=(work, waits, stop))
    writer.start()
    time.sleep(0.2)
    start = time.perf_counter()
    pruned = changes.prune_changes(engine)
    prune_s = time.perf_counter() - start
    time.sleep(0.2)
    stop.set()
    writer.join()
    start = time.perf_counter()
    again = changes.prune_changes(engine)
    again_s = time.perf_counter() - start
    with engine.connect() as connection:
        log_rows = connection.scalar(select(func.count(ItemChange.id)))
    engine.dispose()
    return {
        "rows_before": pruned.deleted + pruned.kept, "dry_run_deleted": dry.deleted,
        "deleted": pruned.deleted, "again_deleted": again.deleted, "kept": log_rows,
        "dry_run_s": dry_s, "prune_s": prune_s, "again_s": again_s,
        "writes": len(waits), "write_max_s": max(waits, default=0.0),
    }  # fmt: skip


def _write_loop(path: Path, waits: list[float], stop: threading.Event) -> None:
    """One item write at a time from another connection, as an ingest or the API would."""
    engine = connect(f"sqlite:///{path}")
    n = 0
    while not stop.is_set():
        start = time.perf_counter()
        with engine.begin() as connection:
            statement = update(Item).where(Item.external_id == f"i{n}")
            connection.execute(statement.values(in_stock=bool(n % 2)))
        waits.append(time.perf_counter() - start)
        n += 1
        time.sleep(0.01)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/s9-17/bench"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="log rows (items written)")
    parser.add_argument("--recent", type=int, default=50_000, help="rows logged this week")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    base = args.dir / f"log-{args.rows}-{args.recent}.db"
    if not base.exists():
        partial = args.dir / "building.db"
        for leftover in args.dir.glob("building.db*"):
            leftover.unlink()
        print(build(partial, args.rows, args.recent))
        partial.rename(base)
    runs = [one_run(base, args.dir / "work.db") for _ in range(args.repeat)]
    for run in runs:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()})
    for key in ("dry_run_s", "prune_s", "again_s", "write_max_s"):
        print(f"median {key}: {statistics.median(r[key] for r in runs):.3f}")


if __name__ == "__main__":
    main()
