"""What one follow step's publish costs a worker as its live catalog fills.

Loads a served catalog's active bundle and live catalog (as a service worker does; the catalog
must hold items written since its bundle, e.g. the --workdir of a scripts/bench_live_catalog.py
run), grows its live items to each size in --sizes by copies of one of them, and times
``LiveCatalog._publish``: the step that turns the follower's per-item state into the immutable
``Delta`` the requests read. It runs on every follow step that changed something, once a
second per worker under writes, holding the GIL for most of its time. Two kinds of step:
--batch new items listed (their rows appended to the last publish's arrays), and a step that
removed a live item (every row restacked).

    .venv/bin/python scripts/bench_delta_publish.py \\
        --database sqlite:///var/bench-live/catalog.db --sizes 1000,5000,10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from recsys.catalog import connect
from recsys.serving import load_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="the served catalog's URL")
    parser.add_argument("--sizes", default="1000,5000,10000", help="live items to time at")
    parser.add_argument("--repeat", type=int, default=7, help="publishes timed per size")
    parser.add_argument("--batch", type=int, default=20, help="new items in an appending step")
    args = parser.parse_args()
    catalog = load_state(connect(args.database)).catalog
    live = catalog._live
    if not live.vectors:
        raise SystemExit("no live items in this catalog: write some first (bench_live_catalog.py)")
    source = next(iter(live.vectors))
    parts = [p for p in vars(live).values() if isinstance(p, dict)]
    made = 0

    def copy(count: int) -> None:
        nonlocal made
        for _ in range(count):
            item = f"copy-{made}"
            made += 1
            for part in parts:
                if source in part:
                    part[item] = part[source]
            catalog._written.add(item)

    for size in [int(s) for s in args.sizes.split(",")]:
        copy(max(size - len(live.vectors), 0))
        catalog._publish()  # warm
        times = {"append": [], "restack": []}
        for _ in range(args.repeat):
            copy(args.batch)
            catalog._restack = True  # as after a removal
            started = time.perf_counter()
            catalog._publish()
            times["restack"].append(time.perf_counter() - started)
        for _ in range(args.repeat):  # steps in a row, as while shops list items
            copy(args.batch)
            started = time.perf_counter()
            catalog._publish()
            times["append"].append(time.perf_counter() - started)
        row = {"live_items": len(live.vectors), "batch": args.batch}
        row |= {f"{k}_ms_median": round(statistics.median(v) * 1000, 2) for k, v in times.items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
