"""What the service's per-request catalog reads cost, each in a transaction and without one.

    .venv/bin/python scripts/bench_request_reads.py --database-url URL [--reads 3000]

On a catalog with items, users and events (any ingested shop), times the reads a request
makes, one after another from this process: a feed's fresh events (``reads.fresh_items``
for a user with none since the bundle, as for most feeds), the cards of 20 items
(``reads.item_cards``) and the readiness ping (``reads.ping``). Each read is timed as
``recsys.catalog.reads`` makes it, and again on a plain ``engine.connect()`` connection,
inside the transaction the driver begins (what the reads did before session 52), rounds
alternated. On PostgreSQL the transaction costs a BEGIN and a ROLLBACK, two round trips;
SQLite reads begin none, and the two columns measure the same thing.
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


def in_transaction(engine) -> dict[str, Callable]:
    """The reads of ``reads`` on a plain connection (a transaction on PostgreSQL)."""

    def fresh_items(user_id: str, _items) -> list:
        with engine.connect() as connection:
            query = connection.execute(
                reads._FRESH_ITEMS, {"user_id": user_id, "since": NOTHING_FRESH}
            )
            return list(query.scalars())

    def item_cards(_user, item_ids) -> dict:
        with engine.connect() as connection:
            rows = connection.execute(reads._CARDS, {"ids": item_ids})
            return {row[0]: reads._card(row) for row in rows}

    def ping(_user, _items) -> None:
        with engine.connect() as connection:
            connection.execute(select(1))

    return {"fresh events": fresh_items, "20 cards": item_cards, "ping": ping}


def as_served(engine) -> dict[str, Callable]:
    return {
        "fresh events": lambda user, _: reads.fresh_items(engine, user, NOTHING_FRESH),
        "20 cards": lambda _, items: reads.item_cards(engine, items),
        "ping": lambda *_: reads.ping(engine),
    }


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
    ways = {"in a transaction": in_transaction(engine), "as served": as_served(engine)}
    means: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    rng = random.Random(args.seed)
    for way in ways.values():  # warm the pool and the server's caches
        for read in way.values():
            timed(read, users, items, 200, rng)
    for _ in range(args.rounds):
        for name, way in ways.items():
            for read_name, read in way.items():
                ms = timed(read, users, items, args.reads, rng)
                means.setdefault((read_name, name), []).append(float(ms.mean()))
                p99s.setdefault((read_name, name), []).append(float(np.percentile(ms, 99)))
    print(f"{engine.dialect.name}, {args.rounds} rounds of {args.reads} calls (mean, p99 in ms)")
    print(f"{'read':14s} {'in a transaction':>24s} {'as served':>24s}")
    for read_name in ways["as served"]:
        cells = []
        for name in ways:
            mean = statistics.median(means[(read_name, name)])
            p99 = statistics.median(p99s[(read_name, name)])
            cells.append(f"{mean:.3f}, {p99:.3f}")
        print(f"{read_name:14s} {cells[0]:>24s} {cells[1]:>24s}")


if __name__ == "__main__":
    main()
