"""How long the service itself works on one item write (PUT with a photo), without HTTP.

    .venv/bin/python scripts/bench_item_write_time.py --workdir /tmp/bench-service [--writes 400]

Copies a ``scripts/bench_service.py`` workdir's catalog into a temporary folder (the workdir
is left as it is), builds the app in this process (the ``create_app`` gunicorn workers run)
against it, and sends it the writes ``scripts/bench_live_catalog.py`` sends: a new listing
PUT as multipart, a catalog item's title and attributes with a 64 px PNG, one after another.
It prints the percentiles of the PUT's service time. A worker holds Python's lock for most
of that time, so under writes it is time its reads wait (issue 17's read tail).

``--id-width`` pads the new items' ids (``live-<n>`` by default, as long as the benchmark's)
to that many characters, to time ids longer than every id of the bundle.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_service_time import app_for
from PIL import Image

TOKEN = "bench-item-writes-" + "t" * 16


def photo(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_service.py workdir")
    parser.add_argument("--writes", type=int, default=400, help="counted writes")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted writes first")
    parser.add_argument("--id-width", type=int, default=0, help="pad new ids to this length")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.workdir / "catalog.db").is_file():
        raise SystemExit(f"{args.workdir} has no catalog.db: run scripts/bench_service.py first")
    items = json.loads((args.workdir / "ids.json").read_text())["items"]
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-item-writes-") as scratch:
        scratch = Path(scratch)
        shutil.copy(args.workdir / "catalog.db", scratch / "catalog.db")
        (scratch / "images").mkdir()
        os.environ.update(
            RECSYS_ADMIN_TOKEN=TOKEN,
            RECSYS_IMAGES_ROOT=str(scratch / "images"),
            RECSYS_WRITE_RATE_LIMIT="1000000/minute",
        )
        app = app_for(f"sqlite:///{scratch / 'catalog.db'}", args.workdir / "artifacts", 0.0, 2.0)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        took = []
        for n in range(args.warmup + args.writes):
            twin = client.get(f"/v1/items/{items[int(rng.integers(len(items)))]}").get_json()
            fields = {"title": twin["title"], "attributes": twin["attributes"]}
            form = {"item": json.dumps(fields), "image": (io.BytesIO(photo(rng)), "p.png")}
            item_id = f"live-{n}".ljust(args.id_width, "x")
            started = time.perf_counter()
            answer = client.put(f"/v1/items/{item_id}", data=form, headers=headers)
            took.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise SystemExit(f"PUT {item_id}: {answer.status_code} {answer.get_data()[:200]}")
    ms = np.array(took[args.warmup :]) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(
        f"put: {len(ms)} writes, mean {ms.mean():.2f} ms, p50 {p50:.2f}, p90 {p90:.2f}, "
        f"p99 {p99:.2f}, max {ms.max():.2f} ms"
    )


if __name__ == "__main__":
    main()
