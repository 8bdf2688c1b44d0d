"""What ranking the live items into each answer costs, and what skipping it saves.

Loads a served catalog's active bundle and live catalog as a service worker does (the catalog
must hold items written since its bundle, e.g. the --workdir of a scripts/bench_live_catalog.py
run, which also holds the ids.json it drew its requests from), then times the model's part of
a product page (``Recommender.similar_items``) and of a feed (``Recommender.recommend``) for the
first --items items and --users users of ids.json, two ways, side by side in one run:

- ``full``: every answer ranks the live items in (as before ``Delta._none_enter``);
- ``skip``: an answer no live item can enter skips that ranking (the code as it is).

It also times what keeping a feed across follow steps costs (``Recommender.feed_unchanged``:
the feed's candidates found again and compared) against computing the feed.

    .venv/bin/python scripts/bench_live_merge.py --workdir var/bench-live
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from recsys.catalog import connect
from recsys.model.delta import Delta
from recsys.serving import load_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_live_catalog run's")
    parser.add_argument("--items", type=int, default=2000, help="product pages timed per round")
    parser.add_argument("--users", type=int, default=1000, help="feeds timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way, alternating")
    args = parser.parse_args()
    ids = json.loads((args.workdir / "ids.json").read_text())
    state = load_state(connect(f"sqlite:///{args.workdir / 'catalog.db'}"))
    recommender = state.recommender
    live = recommender.live
    if live is None or not live.size:
        raise SystemExit("no live items in this catalog: write some first (bench_live_catalog.py)")
    known = [i for i in ids["items"] if not live.removed[recommender.item_index.rows([i])[0]]]
    items, users = known[: args.items], ids["users"][: args.users]
    ways = {"full": lambda *args: False, "skip": Delta._none_enter}
    times: dict[str, dict[str, list[float]]] = {way: {"similar": [], "feed": []} for way in ways}
    for _ in range(args.rounds):
        for way, rule in ways.items():
            Delta._none_enter = rule
            started = time.perf_counter()
            for item in items:
                recommender.similar_items([item], k=10)
            times[way]["similar"].append((time.perf_counter() - started) / len(items) * 1e3)
            started = time.perf_counter()
            for user in users:
                recommender.recommend([user], k=20)
            times[way]["feed"].append((time.perf_counter() - started) / len(users) * 1e3)
    Delta._none_enter = ways["skip"]
    kept = []
    for user in users:
        found = recommender.recommend([user], k=20)
        if found.considered and found.considered[0]:
            floor = float(found.scores[0].min()) if len(found.ids[0]) >= 20 else float("-inf")
            kept.append((user, found.ids[0], floor, found.considered[0]))
    checks = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        held = sum(recommender.feed_unchanged(live, live.generation, *one, k=20) for one in kept)
        checks.append((time.perf_counter() - started) / max(len(kept), 1) * 1e3)
    result = {
        "live_items": live.size,
        "items": len(items),
        "users": len(users),
        "ms_per_answer_median": {
            way: {name: round(statistics.median(v), 4) for name, v in parts.items()}
            for way, parts in times.items()
        },
        "feed_unchanged_ms_median": round(statistics.median(checks), 4),
        "feeds_checked": len(kept),
        "feeds_unchanged": int(held),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
