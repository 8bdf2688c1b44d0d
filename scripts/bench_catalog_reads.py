"""What the catalog pages cost as a catalog grows: GET /v1/items (browse, title search) and
GET /v1/users, as the service reads them (``recsys.catalog.reads``), and what ingest pays.

    .venv/bin/python scripts/bench_catalog_reads.py [--items 1000000] [--users 100000] \\
        [--events 2000000] [--workdir DIR] [--database-url URL] [--repeat 5]

Writes a synthetic shop (no photos) into ``--workdir``, ingests it into a fresh catalog
(SQLite in the workdir unless ``--database-url`` names another; ``--postgres`` starts a
throwaway PostgreSQL server, ``scripts/pg_throwaway.sh``) with ``recsys ingest``'s library
calls, and prints the items and events ingested per second. PostgreSQL then gets a ``VACUUM
ANALYZE``, the state autovacuum leaves it in, so that the reads are not timed beside it. Then
it times each read (``--repeat`` times after one unmeasured call; median and worst, in ms):

- browse: the first page, and a page half way through the catalog, by offset and by key
  (``after``);
- title search: the most common title word, a brand (a few dozen items in a shop of 10^6), a
  word of ten titles or fewer, a word no title holds (every title read when nothing narrows
  the search), and the common word repeated to 200 characters (every trigram common, the
  whole text in no title);
- users: the first page of users with their event counts, and one half way through (by
  offset and by key).

A workdir that already holds its SQLite catalog (``catalog.done``) is reused, without ingesting.
Run it with ``PYTHONPATH`` set to another checkout (and its own workdir) to time that code.
"""

from __future__ import annotations

import collections
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pandas as pd
from sqlalchemy import create_engine, text

from recsys.catalog import connect, migrate, reads
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items
from recsys.ingest.values import MAX_SEARCH

ROOT = Path(__file__).resolve().parent.parent
PAGE = 24


def build(workdir: Path, url: str, items: int, users: int, events: int) -> dict[str, float]:
    """The synthetic shop ingested into ``url``; items/s and events/s."""
    shop = workdir / "shop"
    command = [sys.executable, "-m", "recsys", "datasets", "prepare", "synthetic-shop"]
    command += ["--out", str(shop), "--items", str(items), "--users", str(users)]
    command += ["--events", str(events), "--no-images", "--seed", "0", "-q"]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    engine = connect(url)
    migrate.upgrade(engine)
    options = IngestOptions(show_progress=True)
    started = time.perf_counter()
    ingest_items(engine, shop / "items.csv", options=options)
    item_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ingest_interactions(engine, shop / "interactions.csv", options=options)
    event_seconds = time.perf_counter() - started
    engine.dispose()
    if url.startswith("postgresql"):  # as autovacuum leaves it, without racing it while timing
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
    return {"items_per_s": items / item_seconds, "events_per_s": events / event_seconds}


def search_terms(shop: Path) -> dict[str, str]:
    """The most common title word, a brand, a rare title word, a word in no title, and the
    common word repeated to ``MAX_SEARCH`` characters (the longest search), which no title
    holds."""
    frame = pd.read_csv(shop / "items.csv", usecols=["title", "brand"], dtype=str)
    words = collections.Counter(frame["title"].str.lower().str.split().explode())
    brands = frame["brand"].value_counts()
    ranked = [w for w, _ in words.most_common() if len(w) >= 3]
    return {
        "common word": ranked[0],
        "brand": brands.index[len(brands) // 2],
        "rare word": next(w for w in ranked if words[w] <= 10),
        "absent": "zqxjv",
        f"common word x {MAX_SEARCH} chars": ((ranked[0] + " ") * MAX_SEARCH)[:MAX_SEARCH].strip(),
    }


def timed(call, repeat: int) -> tuple[float, float, object]:
    """Median and worst ms of ``repeat`` calls after one unmeasured call, and its answer."""
    answer = call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times), max(times), answer


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--items", default=1_000_000, show_default=True)
@click.option("--users", default=100_000, show_default=True)
@click.option("--events", default=2_000_000, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), help="[default: a temporary one]")
@click.option("--database-url", help="The catalog [default: SQLite in the workdir].")
@click.option("--postgres", is_flag=True, help="A throwaway PostgreSQL server for the catalog.")
@click.option("--repeat", default=5, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write figures here.")
def main(items, users, events, workdir, database_url, postgres, repeat, json_out) -> None:
    # absolute: `recsys datasets prepare` runs in the checkout, not in this folder
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="bench-catalog-reads-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    server = workdir / "pg"
    script = ROOT / "scripts" / "pg_throwaway.sh"
    done = workdir / "catalog.done"
    try:
        if done.exists():
            figures = json.loads(done.read_text())
            url = database_url or figures["url"]
        else:
            if postgres:
                started = subprocess.run(
                    [script, "start", server], check=True, capture_output=True, text=True
                )
                database_url = started.stdout.strip()
            url = database_url or f"sqlite:///{workdir / 'catalog.db'}"
            figures = build(workdir, url, items, users, events)
            if not postgres:  # the throwaway server goes at the end: nothing to reuse
                done.write_text(json.dumps({"url": url, **figures}))
        rates = figures["items_per_s"], figures["events_per_s"]
        click.echo(f"ingest: {rates[0]:,.0f} items/s, {rates[1]:,.0f} events/s")
        engine = connect(url)
        migrate.upgrade(engine)  # a reused catalog meets this code's migrations
        half = items // 2
        by_key = "after" in inspect.signature(reads.list_items).parameters  # older code: none
        reads_to_time = {
            "browse, first page": lambda: reads.list_items(engine, 0, PAGE),
            f"browse, offset {half:,}": lambda: reads.list_items(engine, half, PAGE),
        }
        if by_key:
            reads_to_time[f"browse, after key {half:,}"] = lambda: reads.list_items(
                engine, 0, PAGE, after=half
            )
        for label, term in search_terms(workdir / "shop").items():
            shown = term if len(term) <= 20 else term[:16] + "..."
            reads_to_time[f"search {label} {shown!r}"] = lambda term=term: reads.list_items(
                engine, 0, PAGE, term
            )
        reads_to_time["users, first page"] = lambda: reads.list_users(engine, 0, PAGE)
        reads_to_time[f"users, offset {users // 2:,}"] = lambda: reads.list_users(
            engine, users // 2, PAGE
        )
        if by_key:
            reads_to_time[f"users, after key {users // 2:,}"] = lambda: reads.list_users(
                engine, 0, PAGE, after=users // 2
            )
        results = {}
        for label, call in reads_to_time.items():
            median, worst, answer = timed(call, repeat)
            total = getattr(answer, "total", None)
            results[label] = {"median_ms": median, "worst_ms": worst, "total": total}
            shown = "" if total is None else f"  (total {total:,})"
            click.echo(f"{label:52} {median:9.2f} ms median, {worst:9.2f} ms worst{shown}")
        if json_out:
            json_out.write_text(json.dumps({"ingest": figures, "reads": results}, indent=2))
        engine.dispose()
    finally:
        if postgres and server.exists():
            subprocess.run([script, "stop", server], check=True, capture_output=True)


if __name__ == "__main__":
    main()
