"""What one item write costs the service itself: PUT /v1/items/<id> with a photo, in-process.

    .venv/bin/python scripts/bench_item_write.py --workdir /tmp/bench-service [--writes 200]

Copies the catalog of a ``scripts/bench_service.py`` workdir to a scratch folder (the source
is never written), builds the app the gunicorn workers run, and PUTs new listings one after
another through Flask's test client: each a copy of an existing item's title and attributes
with a random 64x64 PNG, as ``scripts/bench_live_catalog.py``'s writers send them. Prints
the percentiles of the time per write (validation, photo, one transaction, no HTTP socket).
The first ``--warmup`` writes are not counted.

``--events N`` then also times N ``POST /v1/interactions`` of one event each (a view of a
catalog item by a benchmark user), the service's other write.

The new items are named ``bench-write-<n>``, longer than the benchmark catalog's ids (and an
id longer than every id of the bundle once cost a copy of its id index per look-up);
``--id-width W`` names them ``live-<n>`` padded with x to W characters (0: unpadded), to time
ids no longer than the bundle's, or longer.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_live_catalog import scratch_app
from PIL import Image

TOKEN = "bench-item-write-" + "x" * 24


def photo(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_service.py workdir")
    parser.add_argument("--writes", type=int, default=200, help="counted writes")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted writes first")
    parser.add_argument(
        "--id-width",
        type=int,
        help="new ids live-<n> padded to this length (default: bench-write-<n>)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=0,
        help="then also time this many POST /v1/interactions of one event each (after --warmup)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-item-write-"))
    try:
        run(args, scratch_app(args.workdir, scratch, TOKEN, follow_seconds=1))
    finally:
        # the app's follower thread runs on until the process ends: quiet, it would log the
        # scratch catalog removed under it as an error
        logging.getLogger("recsys").setLevel(logging.CRITICAL)
        shutil.rmtree(scratch, ignore_errors=True)


def run(args, app) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rng = np.random.default_rng(args.seed)
    items = json.loads((args.workdir / "ids.json").read_text())["items"]
    took = []
    for n in range(args.warmup + args.writes):
        card = client.get(f"/v1/items/{items[n % len(items)]}").get_json()
        fields = {"title": card["title"], "attributes": card["attributes"]}
        body = {"item": json.dumps(fields), "image": (io.BytesIO(photo(rng)), "p.png")}
        started = time.perf_counter()
        item_id = (
            f"bench-write-{n}" if args.id_width is None else f"live-{n}".ljust(args.id_width, "x")
        )
        response = client.put(f"/v1/items/{item_id}", data=body, headers=headers)
        took.append(time.perf_counter() - started)
        if response.status_code not in (200, 201):  # replaced, made
            raise SystemExit(f"PUT answered {response.status_code}: {response.get_data()[:300]}")
    report("PUT with a photo", took[args.warmup :])
    if args.events:
        report("POST /v1/interactions, one event", events(client, headers, args, items))


def events(client, headers: dict, args, items: list[str]) -> list[float]:
    """Seconds of each of ``--warmup`` + ``--events`` event writes: a view by a benchmark
    user of a catalog item, each a new event; the first ``--warmup`` left out."""
    users = json.loads((args.workdir / "ids.json").read_text())["users"]
    took = []
    for n in range(args.warmup + args.events):
        event = {"user_id": users[n % len(users)], "item_id": items[n % len(items)]}
        event |= {"event": "view", "timestamp": f"2025-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}"}
        started = time.perf_counter()
        response = client.post("/v1/interactions", json={"events": [event]}, headers=headers)
        took.append(time.perf_counter() - started)
        if response.status_code not in (200, 201):
            raise SystemExit(f"POST answered {response.status_code}: {response.get_data()[:300]}")
    return took[args.warmup :]


def report(what: str, took: list[float]) -> None:
    ms = np.array(took) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(
        f"{what}: {len(ms)} writes, mean {ms.mean():.1f} ms, p50 {p50:.1f}, "
        f"p90 {p90:.1f}, p99 {p99:.1f}, max {ms.max():.1f} ms"
    )


if __name__ == "__main__":
    main()
