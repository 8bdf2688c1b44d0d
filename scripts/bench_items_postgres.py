"""How long a PostgreSQL item ingest takes per batch size (the item triggers fire per statement).

    python scripts/bench_items_postgres.py [--items 50000] [--batch-size 50000] [--database-url URL]

Writes a synthetic shop of --items items (no images) into a temporary folder, creates a fresh
catalog on a throwaway PostgreSQL server (`scripts/pg_throwaway.sh`) unless --database-url
names one where databases may be created, and times `ingest_items` three times: new items,
the same file again (every item unchanged), then the file with every title changed. Prints
seconds, the report's counts and the catalog's items generation (how many times the triggers
bumped it).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click
import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recsys.catalog import changes, connect, migrate
from recsys.ingest import IngestOptions, ingest_items

ROOT = Path(__file__).resolve().parent.parent


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--items", default=50_000, show_default=True)
@click.option("--batch-size", default=IngestOptions.batch_size, show_default=True)
@click.option("--database-url", help="A PostgreSQL server [default: a throwaway one].")
def main(items: int, batch_size: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-items-") as tmp:
        shop = Path(tmp) / "shop"
        command = [sys.executable, "-m", "recsys", "datasets", "prepare", "synthetic-shop"]
        command += ["--out", str(shop), "--items", str(items), "--users", "100"]
        command += ["--events", "200", "--no-images", "--seed", "0", "-q"]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
        server_folder = Path(tempfile.mkdtemp(prefix="bench-items-pg-"))
        script = ROOT / "scripts" / "pg_throwaway.sh"
        server = (
            database_url
            or subprocess.run(
                [script, "start", server_folder], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
        try:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = make_url(server).set(database=name).render_as_string(hide_password=False)
            engine = connect(url)
            migrate.upgrade(engine)
            options = IngestOptions(show_progress=False, batch_size=batch_size)
            retitled = shop / "items_retitled.csv"
            frame = pd.read_csv(shop / "items.csv", dtype=str, keep_default_na=False)
            frame.assign(title=frame["title"] + " (new)").to_csv(retitled, index=False)
            runs = [
                ("new items", shop / "items.csv"),
                ("the same file again", shop / "items.csv"),
                ("every title changed", retitled),
            ]
            for label, path in runs:
                started = time.perf_counter()
                report = ingest_items(engine, path, options=options)
                seconds = time.perf_counter() - started
                click.echo(
                    f"{label}: {seconds:.1f} s, batch {batch_size:,}, inserted {report.inserted:,}"
                    f", updated {report.updated:,}, unchanged {report.unchanged:,}"
                    f", generation {changes.generation(engine):,}"
                )
            engine.dispose()
        finally:
            if not database_url:
                subprocess.run([script, "stop", server_folder], check=True, capture_output=True)


if __name__ == "__main__":
    main()
