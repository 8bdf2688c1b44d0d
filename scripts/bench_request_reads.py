"""What the service's per-request catalog reads cost, as served and as they were served before.

    .venv/bin/python scripts/bench_request_reads.py --database-url URL [--reads 3000]

On a catalog with items, users and events (any ingested shop), times the reads a request
makes, one after another from this process: a feed's fresh events (``reads.fresh_items``
for a user with none since the bundle, as for most feeds), the cards of 20 items
(``reads.item_cards``) and the readiness ping (``reads.ping``), rounds alternated, three ways:

- in a transaction the driver begins, each checkout pinged (the reads before session 52): on
  PostgreSQL a BEGIN and a ROLLBACK around the read, and SQLAlchemy's ``pool_pre_ping``
  round trip before it;
- in autocommit, each checkout pinged (session 52);
- as served now: in autocommit, a connection pinged only after a second idle in the pool
  (``recsys.catalog.db.IdlePing``).

SQLite reads begin no transaction and are never pinged: there the columns measure the same
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
from sqlalchemy import create_engine, func, select

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


# Each way: (pinged at every checkout, how the reads get their connection: a plain one is a
# transaction on PostgreSQL).
WAYS = {
    "transaction, pinged": (True, lambda engine: engine.connect()),
    "autocommit, pinged": (True, reads._reading),
    "as served": (False, reads._reading),
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
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the three ways alternated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engine = connect(args.database_url)
    with engine.connect() as connection:
        users = connection.scalars(select(User.external_id).order_by(func.random()).limit(1000))
        users = list(users)
        items = list(connection.scalars(select(Item.external_id).limit(5000)))
    if not users or len(items) < 20:
        raise SystemExit("the catalog needs users and at least 20 items (ingest a shop first)")
    pinged = engine  # SQLite: nothing to ping
    if engine.dialect.name != "sqlite":
        pinged = create_engine(engine.url, pool_pre_ping=True)
    means: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    rng = random.Random(args.seed)
    served = reads._reading
    try:
        for round_ in range(args.rounds + 1):  # the first warms the pool and the server's caches
            for name, (ping_each, connection) in WAYS.items():
                reads._reading = connection
                for read_name, read in the_reads(pinged if ping_each else engine).items():
                    ms = timed(read, users, items, args.reads if round_ else 200, rng)
                    if round_:
                        means.setdefault((read_name, name), []).append(float(ms.mean()))
                        p99s.setdefault((read_name, name), []).append(float(np.percentile(ms, 99)))
    finally:
        reads._reading = served
    print(f"{engine.dialect.name}, {args.rounds} rounds of {args.reads} calls (mean, p99 in ms)")
    print(f"{'read':14s}" + "".join(f"{name:>24s}" for name in WAYS))
    for read_name in the_reads(engine):
        cells = []
        for name in WAYS:
            mean = statistics.median(means[(read_name, name)])
            p99 = statistics.median(p99s[(read_name, name)])
            cells.append(f"{mean:.3f}, {p99:.3f}")
        print(f"{read_name:14s}" + "".join(f"{cell:>24s}" for cell in cells))


if __name__ == "__main__":
    main()
