"""Where one request's time goes: each main function of the request path, timed per call.

    .venv/bin/python scripts/bench_request_parts.py --workdir /tmp/bench-service [--requests 3000]

Builds the app in this process against a ``scripts/bench_service.py`` workdir (as
``scripts/bench_service_time.py`` does), wraps the functions below in timers, and calls the
app as WSGI one request after another for each endpoint. Prints each endpoint's time per
request and, per function, its milliseconds per request and calls per request (nested
functions count inside their callers too). The wrappers add about a microsecond per call.
The answers cache is off, so every request is computed.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import random
import time
from pathlib import Path

PATHS = {  # as bench_service.py asks
    "similar": ("items", "/v1/items/{}/similar", "k=10"),
    "feed": ("users", "/v1/users/{}/recommendations", "k=20"),
}


def timed(owner, name: str, totals: dict, calls: collections.Counter) -> None:
    function = getattr(owner, name)
    label = f"{getattr(owner, '__name__', owner)}.{name}"

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - started
            calls[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_service.py workdir")
    parser.add_argument("--requests", type=int, default=3000, help="counted requests per endpoint")
    parser.add_argument("--warmup", type=int, default=300, help="uncounted requests first")
    parser.add_argument("--wait", type=float, default=2.0, help="seconds for the first follow")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.update(
        RECSYS_DATABASE_URL=f"sqlite:///{args.workdir / 'catalog.db'}",
        RECSYS_ARTIFACTS_DIR=str(args.workdir / "artifacts"),
        RECSYS_DEVICE="cpu",
    )
    from werkzeug.test import EnvironBuilder

    from recsys.catalog import reads
    from recsys.model import data, delta, explain, index, recommender
    from services import contract
    from services.app import create_app

    totals: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    rec = recommender.Recommender
    for owner, name in [
        (rec, "similar_items"),
        (rec, "_similar_pool"),
        (rec, "item_rows"),
        (rec, "recommend"),
        (rec, "_feed_because"),
        (rec, "_with_tokens"),
        (rec, "_with_live"),
        (recommender.ItemFilters, "shared"),
        (explain, "block_shares"),
        (explain, "similar_reasons"),
        (index.VectorIndex, "search"),
        (delta.Delta, "merge"),
        (reads.CardCache, "cards"),
        (reads.CardSnapshot, "packed"),
        (data.IdIndex, "rows"),
        (contract, "_inputs"),
    ]:
        timed(owner, name, totals, calls)
    app = create_app(
        test_config={"RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 1, "ANSWER_CACHE_MB": 0}
    )
    time.sleep(args.wait)  # the follower's first step (item cards, the live catalog)
    ids = json.loads((args.workdir / "ids.json").read_text())
    rng = random.Random(args.seed)
    for endpoint, (key, path, query) in PATHS.items():
        environs = [
            EnvironBuilder(path=path.format(rng.choice(ids[key])), query_string=query)
            for _ in range(args.warmup + args.requests)
        ]
        environs = [builder.get_environ() for builder in environs]
        for environ in environs[: args.warmup]:
            b"".join(app(environ, lambda status, headers: None))
        totals.clear()
        calls.clear()
        started = time.perf_counter()
        for environ in environs[args.warmup :]:
            b"".join(app(environ, lambda status, headers: None))
        per_request = (time.perf_counter() - started) / args.requests
        print(f"{endpoint}: {per_request * 1e3:.3f} ms per request", flush=True)
        for label, seconds in sorted(totals.items(), key=lambda item: -item[1]):
            print(
                f"  {seconds / args.requests * 1e3:7.3f} ms  "
                f"{calls[label] / args.requests:5.1f} calls  {label}"
            )


if __name__ == "__main__":
    main()
