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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_service_time as service_time  # its in-process app and requests


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
    app = service_time.in_process_app(args.workdir, wait=args.wait)  # answers cache off
    from recsys.catalog import reads
    from recsys.model import data, delta, explain, fusion, index, recommender
    from services import api, contract

    totals: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    rec = recommender.Recommender
    for owner, name in [
        (rec, "similar_items"),
        (rec, "_similar_pool"),
        (rec, "item_rows"),
        (rec, "recommend"),
        (rec, "_stored_feed"),
        (rec, "_feed_because"),
        (rec, "_with_tokens"),
        (recommender, "token_candidates"),
        (fusion.FusedModel, "row_token_scores"),
        (explain, "history_parts"),
        (explain, "feed_reasons"),
        (api, "fresh_history"),
        (api, "home_feed"),
        (rec, "_with_live"),
        (recommender.ItemFilters, "shared"),
        (explain, "block_shares"),
        (explain, "similar_reasons"),
        (index.VectorIndex, "search"),
        (delta.Delta, "merge"),
        (api, "ranked"),
        (reads.CardCache, "cards"),
        (reads.CardSnapshot, "packed"),
        (data.IdIndex, "rows"),
        (contract, "_inputs"),
    ]:
        timed(owner, name, totals, calls)
    requests = service_time.endpoint_environs(args.workdir, args.warmup + args.requests, args.seed)
    for endpoint, environs in requests.items():
        for environ in environs[: args.warmup]:
            service_time.call(app, environ)
        totals.clear()
        calls.clear()
        started = time.perf_counter()
        for environ in environs[args.warmup :]:
            service_time.call(app, environ)
        per_request = (time.perf_counter() - started) / args.requests
        print(f"{endpoint}: {per_request * 1e3:.3f} ms per request", flush=True)
        for label, seconds in sorted(totals.items(), key=lambda item: -item[1]):
            print(
                f"  {seconds / args.requests * 1e3:7.3f} ms  "
                f"{calls[label] / args.requests:5.1f} calls  {label}"
            )


if __name__ == "__main__":
    main()
