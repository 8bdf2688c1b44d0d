"""Bulk-ingest throughput against a raw insert of the same rows, on SQLite and PostgreSQL.

    python scripts/bench_ingest.py --events 3000000 [--items 300000] [--users 150000]
        [--batch-size 50000] [--no-postgres] [--database-url postgresql+psycopg://...]
    python scripts/bench_ingest.py --shop bench-scale/M/shop --no-sqlite   # an existing shop
    python scripts/bench_ingest.py --events 1000000 --erased 10000   # with erasures on record
    python scripts/bench_ingest.py --shop M/shop --no-sqlite \
        --pg-setting shared_buffers=6GB --pg-setting max_wal_size=8GB   # a production-like server

Writes a synthetic shop with `recsys datasets prepare synthetic-shop --no-images` into a
temporary folder, then for each backend: ingests items, times `ingest_interactions` on a fresh
catalog (events/s), and times the raw reference: the same interaction rows (and their users),
already resolved to ids and hashed, inserted into the same tables of a second fresh catalog
with the fastest plain method of that backend (`executemany` per batch on SQLite, `COPY` per
batch on PostgreSQL). Reading the rows for the reference is not timed. PostgreSQL is a
throwaway server (`scripts/pg_throwaway.sh`) unless --database-url names one where databases
may be created. Prints one JSON line per backend.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recsys.catalog import connect, migrate
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items
from recsys.ingest.bulk import prepare
from recsys.ingest.users import erase_users

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = "user_id, item_id, event, weight, timestamp, dedup_key, created_at"
SHOP_COLUMNS = {
    "items": "id, external_id, title, image_path, in_stock, attributes, created_at, updated_at",
    "users": "id, external_id, created_at",
}


def write_shop(folder: Path, items: int, users: int, events: int) -> Path:
    out = folder / "shop"
    command = [sys.executable, "-m", "recsys", "datasets", "prepare", "synthetic-shop"]
    command += ["--out", str(out), "--items", str(items), "--users", str(users)]
    command += ["--events", str(events), "--no-images", "--seed", "0", "-q"]
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def shop_file(shop: Path, name: str) -> Path:
    """``shop/name.csv``, or ``shop/name.parquet`` (bench_scale.py's shops)."""
    csv = shop / f"{name}.csv"
    return csv if csv.exists() else shop / f"{name}.parquet"


def bulk(url: str, shop: Path, batch_size: int, rerun: bool = False, erased: int = 0) -> dict:
    engine = connect(url)
    migrate.upgrade(engine)
    if erased:  # shoppers erased before (not in the file): every batch checks its users
        erase_users(engine, [f"erased-{n}" for n in range(erased)])
    options = IngestOptions(batch_size=batch_size, show_progress=False)
    started = time.perf_counter()
    ingest_items(engine, shop_file(shop, "items"), options=options)
    items_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = ingest_interactions(engine, shop_file(shop, "interactions"), options)
    seconds = time.perf_counter() - started
    out = {"items_s": round(items_seconds, 1), "seconds": seconds, "inserted": report.inserted}
    if rerun:  # the same file again: every event is stored already
        started = time.perf_counter()
        again = ingest_interactions(engine, shop_file(shop, "interactions"), options)
        out["rerun_s"] = round(time.perf_counter() - started, 1)
        if again.inserted or again.updated:
            raise click.ClickException(f"a rerun wrote events: {again.as_dict()}")
    engine.dispose()
    return out


def raw_sqlite(source_url: str, target_url: str, batch_size: int) -> float:
    """Seconds to executemany the users and interactions of ``source`` into ``target``."""
    source, target = connect(source_url), connect(target_url)
    migrate.upgrade(target)
    with source.connect() as read, target.begin() as write:
        rows = read.exec_driver_sql(f"SELECT {SHOP_COLUMNS['items']} FROM items").all()
        _executemany(write, "items", SHOP_COLUMNS["items"], [tuple(row) for row in rows])
    seconds = 0.0
    for table, columns in (("users", SHOP_COLUMNS["users"]), ("interactions", COLUMNS)):
        for rows in _chunks(source, f"SELECT {columns} FROM {table} ORDER BY id", batch_size):
            started = time.perf_counter()
            with target.begin() as write:
                prepare(write)
                _executemany(write, table, columns, rows)
            seconds += time.perf_counter() - started
    return seconds


def _executemany(connection, table: str, columns: str, rows) -> None:
    marks = ", ".join("?" for _ in columns.split(","))
    connection.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _chunks(engine, query: str, size: int):
    with engine.connect() as connection:
        result = connection.exec_driver_sql(query)
        while rows := result.fetchmany(size):
            yield [tuple(row) for row in rows]


def raw_postgres(source_url: str, target_url: str, batch_size: int) -> float:
    """Seconds to COPY the users and interactions of ``source`` into ``target``."""
    source, target = connect(source_url), connect(target_url)
    migrate.upgrade(target)
    _copy(target, "items", SHOP_COLUMNS["items"], _dump(source, "items", SHOP_COLUMNS["items"]))
    seconds = 0.0
    for table, columns in (("users", SHOP_COLUMNS["users"]), ("interactions", COLUMNS)):
        last = _scalar(source, f"SELECT coalesce(max(id), 0) FROM {table}")
        for low in range(0, last, batch_size):
            where = f"id > {low} AND id <= {low + batch_size}"
            data = _dump(source, table, columns, where)
            started = time.perf_counter()
            _copy(target, table, columns, data)
            seconds += time.perf_counter() - started
    return seconds


def _dump(engine, table: str, columns: str, where: str = "true") -> bytes:
    data = io.BytesIO()
    with engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()
        query = f"COPY (SELECT {columns} FROM {table} WHERE {where} ORDER BY id) TO STDOUT"
        with cursor.copy(query) as copy:
            for chunk in copy:
                data.write(chunk)
    return data.getvalue()


def _copy(engine, table: str, columns: str, data: bytes) -> None:
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(data)


def _scalar(engine, query: str):
    with engine.connect() as connection:
        return connection.exec_driver_sql(query).scalar()


def measure(
    backend: str,
    urls: tuple[str, str],
    shop: Path,
    batch_size: int,
    rerun: bool = False,
    erased: int = 0,
) -> dict:
    result = bulk(urls[0], shop, batch_size, rerun, erased)
    raw = raw_postgres if backend == "postgresql" else raw_sqlite
    raw_seconds = raw(urls[0], urls[1], batch_size)
    events = result["inserted"]
    return {
        "backend": backend,
        "events": events,
        "batch_size": batch_size,
        "erased_users": erased,
        "items_s": result["items_s"],
        "bulk_s": round(result["seconds"], 1),
        "bulk_events_per_s": round(events / result["seconds"]),
        "raw_s": round(raw_seconds, 1),
        "raw_events_per_s": round(events / raw_seconds),
        "ratio": round(result["seconds"] / raw_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    } | ({"rerun_s": result["rerun_s"]} if rerun else {})


def postgres_databases(server_url: str) -> tuple[str, str]:
    names = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server_url)
    return tuple(url.set(database=n).render_as_string(hide_password=False) for n in names)


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--events", default=3_000_000, show_default=True)
@click.option("--items", default=300_000, show_default=True)
@click.option("--users", default=150_000, show_default=True)
@click.option("--batch-size", default=IngestOptions.batch_size, show_default=True)
@click.option("--sqlite/--no-sqlite", default=True, show_default=True, help="Time SQLite.")
@click.option("--postgres/--no-postgres", default=True, show_default=True, help="Time PostgreSQL.")
@click.option("--database-url", help="A PostgreSQL server [default: a throwaway one].")
@click.option(
    "--shop",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An existing shop folder (items and interactions, .csv or .parquet, e.g. "
    "bench_scale.py's SIZE/shop) instead of writing one; --events/--items/--users unused.",
)
@click.option(
    "--pg-setting",
    "pg_settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A setting of the throwaway PostgreSQL server, e.g. shared_buffers=6GB (repeatable; "
    "default: PostgreSQL's own, with fsync off).",
)
@click.option(
    "--rerun",
    is_flag=True,
    help="Also time a second bulk ingest of the same file (every event already stored).",
)
@click.option(
    "--erased",
    default=0,
    show_default=True,
    help="Erase this many users (none of the file's) before the timed ingest, so that every "
    "batch checks its users against the erasures (recsys.ingest.users.erased_before).",
)
def main(
    events, items, users, batch_size, sqlite, postgres, database_url, shop, pg_settings, rerun,
    erased,
):  # fmt: skip
    if pg_settings and database_url:
        raise click.UsageError("--pg-setting configures the throwaway server, not --database-url")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        shop = shop or write_shop(folder, items, users, events)
        if sqlite:
            urls = (f"sqlite:///{folder}/bulk.db", f"sqlite:///{folder}/raw.db")
            click.echo(json.dumps(measure("sqlite", urls, shop, batch_size, rerun, erased)))
            for path in folder.glob("*.db*"):
                path.unlink()
        if postgres:
            pg_folder = Path(tempfile.mkdtemp(prefix="bench-ingest-pg-"))  # the server's user
            server = database_url or _throwaway(pg_folder, "start", pg_settings)
            try:
                urls = postgres_databases(server)
                measured = measure("postgresql", urls, shop, batch_size, rerun, erased)
                click.echo(json.dumps(measured))
            finally:
                if not database_url:
                    _throwaway(pg_folder, "stop")


def _throwaway(folder: Path, action: str, settings: tuple[str, ...] = ()) -> str:
    script = ROOT / "scripts" / "pg_throwaway.sh"
    env = {**os.environ, "PG_THROWAWAY_SETTINGS": " ".join(settings)}
    done = subprocess.run(
        [script, action, folder], check=True, capture_output=True, text=True, env=env
    )
    return done.stdout.strip()


if __name__ == "__main__":
    main()
