"""What an interactions insert costs at size M, and which part of the table's design costs it.

    python scripts/bench_interaction_keys.py --catalog /tmp/bench-scale/M/catalog.db \\
        --variant text [--prefill 18000000] [--rows 1000000] [--batch 50000] [--no-fk] \\
        [--order file|time] [--cache-mib 512]

Copies into a scratch SQLite file (next to --out) the catalog's users, items (id, external
id, title, attributes) and its first --prefill interactions, builds the interactions table's
three indexes (unique key, item, user and time) after the copy, then times inserting the next
--rows interactions with `executemany` of the bulk ingest's `INSERT ... ON CONFLICT`, one
transaction per --batch rows, WAL, `synchronous=FULL`, the ingest's 512 MiB page cache (or
--cache-mib), and foreign keys checked unless --no-fk. Variants of the stored key:

- ``text``: today's 32-character hex BLAKE2b digest;
- ``blob``: the same 16 bytes as a BLOB;
- ``blob_user``: the catalog user id (4 bytes, big-endian) and the digest's first 12 bytes, so
  one user's events sit together in the unique index, as they do in the (user, time) index;
- ``text_user``: today's hex digest, unique with the user: the index is on (user_id,
  dedup_key), so the same keys sit together by user without changing a stored key.

Prints one line: variant, batch, foreign keys, order, cache, rows/s. The rows keep the catalog's
order (the synthetic shop's file is sorted by user, then time), or with ``--order time`` the
timed rows are inserted by timestamp, as a log exported in time order would be.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import click

INSERT = (
    "INSERT INTO interactions (user_id, item_id, event, weight, timestamp, dedup_key, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT ({key}) DO UPDATE SET "
    "weight = excluded.weight WHERE weight != excluded.weight"
)
CACHE_KIB = 512 * 1024  # recsys.ingest.bulk.SQLITE_CACHE_KIB


def stored_key(variant: str):
    def key(user_id: int, hex_digest: str):
        if variant.startswith("text"):
            return hex_digest
        digest = bytes.fromhex(hex_digest)
        if variant == "blob":
            return digest
        return user_id.to_bytes(4, "big") + digest[:12]

    return key


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--catalog", type=click.Path(exists=True, path_type=Path), required=True)
@click.option(
    "--variant", type=click.Choice(["text", "blob", "blob_user", "text_user"]), default="text"
)
@click.option("--prefill", type=int, default=18_000_000, help="interactions already stored")
@click.option("--rows", type=int, default=1_000_000, help="interactions inserted, timed")
@click.option("--batch", type=int, default=50_000, help="rows per transaction")
@click.option("--no-fk", is_flag=True, help="foreign keys off (ids resolved beforehand)")
@click.option(
    "--order",
    type=click.Choice(["file", "time"]),
    default="file",
    help="the timed rows in the catalog's order, or by timestamp",
)
@click.option(
    "--cache-mib", type=int, default=CACHE_KIB // 1024, show_default=True, help="page cache"
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("/tmp/bench-keys"))
def main(
    catalog: Path,
    variant: str,
    prefill: int,
    rows: int,
    batch: int,
    no_fk: bool,
    order: str,
    cache_mib: int,
    out,
):
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{variant}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("ATTACH ? AS source", (str(catalog),))
    db.create_function("stored_key", 2, stored_key(variant), deterministic=True)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, external_id, title, attributes)")
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, external_id)")
    db.execute("INSERT INTO items SELECT id, external_id, title, attributes FROM source.items")
    db.execute("INSERT INTO users SELECT id, external_id FROM source.users")
    key_type = "VARCHAR(32)" if variant.startswith("text") else "BLOB"
    key = "user_id, dedup_key" if variant == "text_user" else "dedup_key"
    db.execute(
        "CREATE TABLE interactions (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL "
        "REFERENCES users (id) ON DELETE CASCADE, item_id INTEGER NOT NULL REFERENCES items "
        "(id) ON DELETE CASCADE, event VARCHAR(32) NOT NULL, weight FLOAT NOT NULL, "
        f"timestamp DATETIME, dedup_key {key_type} NOT NULL, created_at DATETIME NOT NULL)"
    )
    columns = "user_id, item_id, event, weight, timestamp, stored_key(user_id, dedup_key), "
    columns += "created_at"
    db.execute(
        f"INSERT INTO interactions SELECT id, {columns} FROM source.interactions "
        "WHERE id <= ? ORDER BY id",
        (prefill,),
    )
    db.execute(f"CREATE UNIQUE INDEX uq_interactions_key ON interactions ({key})")
    db.execute("CREATE INDEX ix_interactions_item_id ON interactions (item_id)")
    db.execute("CREATE INDEX ix_interactions_user_arrival ON interactions (user_id, created_at)")
    timed = db.execute(
        f"SELECT {columns} FROM source.interactions WHERE id > ? ORDER BY id LIMIT ?",
        (prefill, rows),
    ).fetchall()
    if order == "time":
        timed.sort(key=lambda row: (row[4] or "", row[0]))
    db.execute("DETACH source")
    db.execute(f"PRAGMA cache_size = -{cache_mib * 1024}")
    db.execute(f"PRAGMA foreign_keys = {'OFF' if no_fk else 'ON'}")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    started = time.perf_counter()
    for start in range(0, len(timed), batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(INSERT.format(key=key), timed[start : start + batch])
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(
        f"{variant}: batch {batch}, foreign keys {'off' if no_fk else 'on'}, {order} order, "
        f"cache {cache_mib} MiB, "
        f"{prefill} stored: {len(timed)} rows in {seconds:.1f} s = {len(timed) / seconds:,.0f}/s"
    )


if __name__ == "__main__":
    main()
