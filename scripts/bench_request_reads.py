"""What the service's per-request catalog reads cost, each in a transaction and without one.

    .venv/bin/python scripts/bench_request_reads.py --database-url URL [--reads 3000]

On a catalog with items, users and events (any ingested shop), times the reads a request
makes, one after another from this process: a feed's fresh events (``reads.fresh_items``
for a user with none since the bundle, as for most feeds), the cards of 20 items
(``reads.item_cards``) and the readiness ping (``reads.ping``). Each read is timed as
``recsys.catalog.reads`` makes it, and again with its connection a plain
``engine.connect()``, inside the transaction the driver begins (what the reads did before
session 52), rounds alternated. On PostgreSQL that transaction costs a BEGIN and a
ROLLBACK, two round trips; SQLite reads begin none, and the two columns measure the same
thing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import numpy as np
from sqlalchemy import func, select

from recsys.catalog import connect, reads
from recsys.catalog.models import Item, User

NOTHING_FRESH = datetime(2100, 1, 1)  # no event is stored after this


def the_reads(engine) -> dict[str, Callable]:
    """The reads a request makes, as ``recsys.catalog.reads`` makes them."""
    return {
        "fresh events": lambda user, _: reads.fresh_items(engine, user, NOTHING_FRESH),
        "20 cards": lambda _, items: reads.item_cards(engine, items),
        "ping": lambda *_: reads.ping(engine),
    }


# How the reads get their connection: a plain one (a transaction on PostgreSQL, what they did
# before session 52), or as they do now.
CONNECTIONS = {"in a transaction": lambda engine: engine.connect(), "as served": reads._reading}


def timed(read: Callable, users: list[str], items: list[str], count: int, rng) -> np.ndarray:
    """``count`` calls of ``read`` on random users and lists of 20 items -> ms each."""
    took = []
    for _ in range(count):
        user, listed = rng.choice(users), rng.sample(items, 20)
        started = time.perf_counter()
        read(user, listed)
        took.append(time.perf_counter() - started)
    return np.array(took) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an ingested catalog")
    parser.add_argument("--reads", type=int, default=3000, help="timed calls per read, per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the two ways alternated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engine = connect(args.database_url)
    with engine.connect() as connection:
        users = connection.scalars(select(User.external_id).order_by(func.random()).limit(1000))
        users = list(users)
        items = list(connection.scalars(select(Item.external_id).limit(5000)))
    if not users or len(items) < 20:
        raise SystemExit("the catalog needs users and at least 20 items (ingest a shop first)")
    means: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    rng = random.Random(args.seed)
    served = reads._reading
    try:
        for round_ in range(args.rounds + 1):  # the first warms the pool and the server's caches
            for name, connection in CONNECTIONS.items():
                reads._reading = connection
                for read_name, read in the_reads(engine).items():
                    ms = timed(read, users, items, args.reads if round_ else 200, rng)
                    if round_:
                        means.setdefault((read_name, name), []).append(float(ms.mean()))
                        p99s.setdefault((read_name, name), []).append(float(np.percentile(ms, 99)))
    finally:
        reads._reading = served
    print(f"{engine.dialect.name}, {args.rounds} rounds of {args.reads} calls (mean, p99 in ms)")
    print(f"{'read':14s} {'in a transaction':>24s} {'as served':>24s}")
    for read_name in the_reads(engine):
        cells = []
        for name in CONNECTIONS:
            mean = statistics.median(means[(read_name, name)])
            p99 = statistics.median(p99s[(read_name, name)])
            cells.append(f"{mean:.3f}, {p99:.3f}")
        print(f"{read_name:14s} {cells[0]:>24s} {cells[1]:>24s}")


if __name__ == "__main__":
    main()
