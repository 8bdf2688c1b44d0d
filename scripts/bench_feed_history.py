"""How a home feed's cost grows with its user's history: the heaviest shoppers against typical ones.

    .venv/bin/python scripts/bench_feed_history.py --database-url sqlite:///CATALOG.db \\
        --artifacts-dir ARTIFACTS [--users 50] [--rounds 3] [--json OUT.json]

Builds the service's app in this process against a catalog with an active bundle (answers
cache off, so every request is computed), then asks for the feeds (``GET
/v1/users/<id>/recommendations?k=20``) of three groups of users: the ``--users`` with the most
events, those around the 99th percentile of events per user, and those around the median.
Each group's feeds run ``--rounds`` times (the first round is not counted). Prints, per
group, its users' events (min to max), milliseconds per feed, and three of its parts on their
own: the feed's one catalog read (``recsys.catalog.reads.fresh_items``: the user's events
stored since the bundle), its index search (the pool skipping the user's seen items) at the
served breadth and, side by side, at the breadth it had before session 29 (room for every
seen item: ``recsys.model.index.SKIP_REACH`` lifted), each with its recall of the exact pool
(the share of an exact search's best unseen items it found), and its reasons
(``Recommender._feed_because``). A part that costs the same for every group does not grow
with the user's history.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_service_time as service_time  # its in-process app and WSGI call

FEED = "/v1/users/{}/recommendations"

_EVENTS_PER_USER = text(
    "SELECT u.external_id, count(*) FROM interactions i JOIN users u ON u.id = i.user_id "
    "GROUP BY u.external_id ORDER BY count(*), u.external_id"
)


def groups(database_url: str, size: int) -> dict[str, list[tuple[str, int]]]:
    """Group name -> [(user id, events)]: the heaviest, around p99, around the median."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        counted = [(user, int(events)) for user, events in connection.execute(_EVENTS_PER_USER)]
    engine.dispose()
    if len(counted) < 3 * size:
        raise SystemExit(f"the catalog has {len(counted)} users with events; need {3 * size}")

    def around(quantile: float) -> list[tuple[str, int]]:
        middle = min(int(quantile * len(counted)), len(counted) - size // 2 - 1)
        start = max(middle - size // 2, 0)
        return counted[start : start + size]

    return {"heaviest": counted[-size:], "p99": around(0.99), "median": around(0.5)}


def feed_parts(recommender, users: list[str], rounds: int) -> dict[str, float]:
    """Milliseconds per feed (``<part>_ms``) of its index search as served ("search"), with
    room for every seen item ("search_every_seen") and of its reasons ("reasons"), the first
    of ``rounds`` not counted; and each search's recall of the exact pool (``<part>_recall``)."""
    from recsys.model import index as index_module
    from recsys.model.explain import history_of

    # code from before session 29 has no cap: its searches make room for every seen item
    served = getattr(index_module, "SKIP_REACH", len(recommender.item_ids))
    rows = recommender.user_index.rows(users)
    if (rows < 0).any():
        raise SystemExit("some users' events came after the bundle: train again, then measure")
    seen = [history_of(recommender.cf.user_items_, row).rows for row in rows]
    allowed = recommender._allowed(None, None)
    reach = recommender._reach(20)
    took = {"search": [], "search_every_seen": [], "reasons": []}
    exact = [
        exact_pool(recommender, row, skipped, allowed, reach)
        for row, skipped in zip(rows, seen, strict=True)
    ]
    recall = {}
    for round_ in range(rounds):
        for part, skip_reach in (
            ("search", served),
            ("search_every_seen", len(recommender.item_ids)),
        ):
            index_module.SKIP_REACH = skip_reach
            found = []
            started = time.perf_counter()
            for row, skipped in zip(rows, seen, strict=True):
                query = recommender.fused.user_vectors(row)
                found.append(recommender.index.search(query, reach, allowed, [skipped])[0][0])
            if round_:
                took[part].append((time.perf_counter() - started) / len(rows))
            hits = [len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact, strict=True)]
            recall[f"{part}_recall"] = float(np.mean(hits))
        index_module.SKIP_REACH = served
        pools = [recommender._stored_feed(row, 20, allowed, True) for row in rows]
        started = time.perf_counter()
        for row, (pool_rows, pool_scores, _) in zip(rows, pools, strict=True):
            recommender._feed_because(pool_rows, pool_scores, row, None)
        if round_:
            took["reasons"].append((time.perf_counter() - started) / len(rows))
    return {**{f"{part}_ms": float(np.mean(t)) * 1e3 for part, t in took.items()}, **recall}


def exact_pool(recommender, row: int, seen: np.ndarray, allowed, reach: int) -> np.ndarray:
    """The ``reach`` rows an exact search gives the user's feed pool (seen items skipped)."""
    scores = recommender.fused.item_vectors_ @ recommender.fused.user_vectors(row)
    scores = np.asarray(scores, dtype=np.float64)
    if allowed is not None:
        scores[~allowed] = -np.inf
    scores[seen] = -np.inf
    return np.argsort(-scores, kind="stable")[:reach]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--artifacts-dir", type=Path, required=True)
    parser.add_argument("--users", type=int, default=50, help="users per group")
    parser.add_argument("--rounds", type=int, default=3, help="passes over each group")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first is not counted)")
    chosen = groups(args.database_url, args.users)
    app = service_time.app_for(args.database_url, args.artifacts_dir, 0.0, wait=2.0)
    from werkzeug.test import EnvironBuilder

    from recsys.catalog import reads
    from services.context import context

    with app.app_context():
        recommender = context().holder.state.recommender
    engine = create_engine(args.database_url)
    # naive UTC, as the catalog stores times; nothing is fresher, so the read finds no row, as
    # for most feeds
    since = datetime.now(UTC).replace(tzinfo=None)
    figures = {}
    for name, users in chosen.items():
        environs = [
            EnvironBuilder(path=FEED.format(user), query_string="k=20").get_environ()
            for user, _ in users
        ]
        feed_ms, read_ms = [], []
        for round_ in range(args.rounds):
            for environ, (user, _) in zip(environs, users, strict=True):
                started = time.perf_counter()
                status = service_time.call(app, environ)
                took = time.perf_counter() - started
                if not status.startswith("200"):
                    raise SystemExit(f"feed of {user!r} answered {status}")
                started = time.perf_counter()
                reads.fresh_items(engine, user, since)
                if round_:
                    feed_ms.append(took * 1e3)
                    read_ms.append((time.perf_counter() - started) * 1e3)
        events = [count for _, count in users]
        parts = feed_parts(recommender, [user for user, _ in users], args.rounds)
        figures[name] = {
            "events_min": min(events),
            "events_max": max(events),
            "feed_ms_mean": round(float(np.mean(feed_ms)), 3),
            "fresh_read_ms_mean": round(float(np.mean(read_ms)), 3),
            **{part: round(value, 4) for part, value in parts.items()},
        }
        shown = figures[name]
        print(
            f"{name:>8}: {shown['events_min']}-{shown['events_max']} events, feed "
            f"{shown['feed_ms_mean']:.2f} ms; its fresh read {shown['fresh_read_ms_mean']:.3f}, "
            f"search {shown['search_ms']:.3f} (recall {shown['search_recall']:.4f}; room for "
            f"every seen item: {shown['search_every_seen_ms']:.3f}, recall "
            f"{shown['search_every_seen_recall']:.4f}), reasons {shown['reasons_ms']:.3f} ms",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
