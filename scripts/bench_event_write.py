"""Seconds per HTTP-sized event write (``record_interactions`` of one event), median and p90.

    .venv/bin/python scripts/bench_event_write.py --database-url URL [--writes 600]

URL names an empty database (a throwaway PostgreSQL: ``scripts/pg_throwaway.sh start DIR``
prints one; create a database in it per run); the script migrates it, lists 100 items and
writes one event at a time for 50 shoppers, the first 100 writes left out as warm-up. Run it
from two checkouts in turns (ABAB) to compare them (benchmarks/RESULTS.md, session 63).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from recsys.catalog import connect, migrate
from recsys.ingest import IngestOptions, ingest_items
from recsys.ingest.interactions import record_interactions

WARM_UP = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--writes", type=int, default=600)
    args = parser.parse_args()
    engine = connect(args.database_url)
    migrate.upgrade(engine)
    with tempfile.TemporaryDirectory() as folder:
        items = Path(folder) / "items.csv"
        items.write_text("item_id\n" + "".join(f"i{n}\n" for n in range(100)))
        ingest_items(engine, items, options=IngestOptions(show_progress=False))
    seconds = []
    for n in range(args.writes):
        start = time.perf_counter()
        record_interactions(engine, [{"user_id": f"u{n % 50}", "item_id": f"i{n % 100}"}])
        seconds.append(time.perf_counter() - start)
    timed = seconds[WARM_UP:]
    median, p90 = statistics.median(timed), statistics.quantiles(timed, n=10)[-1]
    print(f"median {median * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms over {len(timed)} writes")


if __name__ == "__main__":
    main()
