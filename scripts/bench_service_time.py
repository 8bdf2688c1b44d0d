"""How long the service itself works on one request, without HTTP, sockets or other requests.

    .venv/bin/python scripts/bench_service_time.py --workdir /tmp/bench-service [--requests 3000]

Builds the app in this process (the same ``create_app`` gunicorn workers run) against a
benchmark catalog made by ``scripts/bench_service.py``, and calls it as WSGI, one request
after another, for the same kind of paths that benchmark asks for (items and users from its
``ids.json``). It prints the percentiles of each endpoint's service time. Beside
``bench_service.py``'s percentiles under load they separate the work a request needs from
the time it waits (for a core, for its worker, for the load generator): a p99 under load far
above the service time's p99 is queueing, not code.

The answers cache is off unless ``--answers-cache-mb`` says otherwise, so that every request
is computed; the first ``--warmup`` requests (new items and users touch pages for the first
time) are not counted.

``--unknown-id-length N`` also times similar items for ids of N characters the catalog does
not have (the 404s a client that guesses ids gets, each id different).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import time
from pathlib import Path

import numpy as np

PATHS = {
    "similar": ("items", "/v1/items/{}/similar", "k=10"),
    "feed": ("users", "/v1/users/{}/recommendations", "k=20"),
}


def in_process_app(workdir: Path, answers_cache_mb: float = 0.0, wait: float = 2.0):
    """The app gunicorn workers run, built in this process against a bench_service.py
    workdir, once its follower's first step (item cards, the live catalog) had ``wait`` s."""
    database_url = f"sqlite:///{workdir / 'catalog.db'}"
    return app_for(database_url, workdir / "artifacts", answers_cache_mb, wait)


def app_for(database_url: str, artifacts_dir: Path, answers_cache_mb: float, wait: float):
    """``in_process_app`` for any catalog with an active bundle."""
    os.environ.update(
        RECSYS_DATABASE_URL=database_url,
        RECSYS_ARTIFACTS_DIR=str(artifacts_dir),
        RECSYS_DEVICE="cpu",
    )
    from services.app import create_app

    app = create_app(
        test_config={
            "RELOAD_CHECK_SECONDS": 0,
            "LIVE_CATALOG_SECONDS": 1,
            "ANSWER_CACHE_MB": answers_cache_mb,
        }
    )
    time.sleep(wait)
    return as_a_worker(app)


def as_a_worker(app):
    """``app``, with every object built so far frozen out of the collector's lists, as a
    gunicorn worker freezes its own once its app is built (``post_worker_init`` in
    ``services/gunicorn.conf.py``). Without it a full collection walks the few hundred
    thousand objects of the imports and the model, 130-190 ms in which a benchmark's request
    waits, where a worker's walks a few hundred."""
    gc.collect()
    gc.freeze()
    return app


def endpoint_environs(
    workdir: Path, count: int, seed: int, unknown_length: int = 0
) -> dict[str, list[dict]]:
    """Per endpoint of ``PATHS``, ``count`` WSGI environs for ids drawn from ``ids.json``;
    with ``unknown_length``, also "unknown": similar items of ids that long, none known."""
    from werkzeug.test import EnvironBuilder

    ids = json.loads((workdir / "ids.json").read_text())
    rng = random.Random(seed)
    if unknown_length:
        ids["unknown"] = [f"unknown-{n}".ljust(unknown_length, "x") for n in range(count)]
    paths = PATHS | ({"unknown": ("unknown", *PATHS["similar"][1:])} if unknown_length else {})
    return {
        name: [
            EnvironBuilder(path=path.format(rng.choice(ids[key])), query_string=query).get_environ()
            for _ in range(count)
        ]
        for name, (key, path, query) in paths.items()
    }


def call(app, environ: dict) -> str:
    """One request through the WSGI app, its answer read whole; its status line."""
    status = []
    b"".join(app(environ, lambda code, headers: status.append(code)))
    return status[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_service.py workdir")
    parser.add_argument("--requests", type=int, default=3000, help="counted requests per endpoint")
    parser.add_argument("--warmup", type=int, default=300, help="uncounted requests first")
    parser.add_argument("--answers-cache-mb", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unknown-id-length", type=int, default=0, help="also time 404s for ids this long"
    )
    args = parser.parse_args()
    app = in_process_app(args.workdir, args.answers_cache_mb)
    count = args.warmup + args.requests
    environs_of = endpoint_environs(args.workdir, count, args.seed, args.unknown_id_length)
    for name, environs in environs_of.items():
        expected = "404 NOT FOUND" if name == "unknown" else "200 OK"
        took, statuses = [], collections.Counter()
        for environ in environs:
            started = time.perf_counter()
            statuses[call(app, environ)] += 1
            took.append(time.perf_counter() - started)
        if set(statuses) != {expected}:  # the times would be those of errors, not answers
            raise SystemExit(
                f"{name}: the app answered {dict(statuses)}, not only {expected}; check the "
                "catalog (recsys db upgrade) and its active bundle"
            )
        ms = np.array(took[args.warmup :]) * 1e3
        p50, p90, p99, p999 = np.percentile(ms, [50, 90, 99, 99.9])
        print(
            f"{name}: {len(ms)} requests, mean {ms.mean():.2f} ms, p50 {p50:.2f}, p90 {p90:.2f}, "
            f"p99 {p99:.2f}, p99.9 {p999:.2f}, max {ms.max():.2f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
