"""Ingest throughput and peak memory on a synthetic interactions file.

    python scripts/bench_ingest.py --rows 500000 [--database-url URL] [--batch-size 5000]

Writes N interactions over 10,000 items and 50,000 users to a temporary CSV, ingests it into
a fresh catalog (a temporary SQLite file unless --database-url is given; that database must be
empty) and prints rows/s and the process's peak resident memory. Peak memory that stays flat as
--rows grows is what "never holds the file in memory" means.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import click

from recsys.catalog import connect, migrate
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    items = folder / "items.csv"
    items.write_text("item_id,price\n" + "".join(f"i{n},{n % 97}\n" for n in range(10_000)))
    interactions = folder / "interactions.csv"
    with open(interactions, "w") as file:
        file.write("user_id,item_id,event,timestamp\n")
        for n in range(rows):
            event = ("view", "click", "cart", "purchase")[n % 4]
            file.write(
                f"u{(n * 7919) % 50_000},i{(n * 104_729) % 10_000},{event},{1.6e9 + n:.0f}\n"
            )
    return items, interactions


@click.command()
@click.option("--rows", default=500_000, show_default=True)
@click.option("--batch-size", default=5000, show_default=True)
@click.option("--database-url", help="An empty database [default: a temporary SQLite file].")
def main(rows: int, batch_size: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        items, interactions = write_files(Path(folder), rows)
        engine = connect(database_url or f"sqlite:///{folder}/bench.db")
        migrate.upgrade(engine)
        options = IngestOptions(batch_size=batch_size, show_progress=False)
        ingest_items(engine, items, options=options)
        started = time.perf_counter()
        report = ingest_interactions(engine, interactions, options)
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "backend": engine.url.get_backend_name(),
        "rows": rows,
        "inserted": report.inserted,
        "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(peak_mb),
    }
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
