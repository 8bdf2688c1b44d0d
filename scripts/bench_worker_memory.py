"""What a worker holds after writes and a crawl of the catalog pages, in-process.

    .venv/bin/python scripts/bench_worker_memory.py --workdir /tmp/bench-service [--writes 40]

Copies the catalog of a ``scripts/bench_service.py`` workdir to a scratch folder (the source
is never written) and builds the app a gunicorn worker runs. Then, through Flask's test
client: ``--writes`` item writes (PUT of a copy of an existing listing with a random 64x64
PNG) and as many event writes (POST /v1/interactions), then a crawl of every page of
``GET /v1/items`` and ``GET /v1/users`` by key, as a search engine's crawler or a scraper
walks a shop. Prints the worker's resident memory (VmRSS, MB) at the start, after the writes
and after the crawl. Run it with ``PYTHONPATH`` set to another checkout to measure that code
on the same catalog.

What a crawl adds and keeps is the page cache of the database connections it used. A
connection that once took a file ingest's cache size kept it (up to 512 MiB) and kept every
page the crawl read (benchmarks/RESULTS.md, session 43).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from bench_item_write import TOKEN, photo
from bench_live_catalog import scratch_app
from bench_read import status_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_service.py workdir")
    parser.add_argument("--writes", type=int, default=40, help="item writes, and event writes")
    parser.add_argument("--page", type=int, default=100, help="items or users per page")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        app = scratch_app(args.workdir, work, TOKEN)
        items = json.loads((work / "ids.json").read_text())["items"]
        result = measure(app, items, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def measure(app, items: list[str], args) -> dict:
    ctx = app.extensions["recsys"]
    ctx.holder.follow()
    ctx.cards.follow()
    ctx.cards.wait_for_snapshot(60)
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    rng = np.random.default_rng(0)
    result = {"rss_start_mb": status_mb("VmRSS")}
    for n in range(args.writes):
        twin = str(rng.choice(items))
        card = client.get(f"/v1/items/{twin}").get_json()
        item = json.dumps({"title": card["title"], "attributes": card["attributes"]})
        body = {"item": item, "image": (io.BytesIO(photo(rng)), "p.png")}
        answers = [
            client.put(f"/v1/items/bench-memory-{n}", data=body, headers=auth),
            client.post(
                "/v1/interactions",
                json={"events": [{"user_id": "bench-memory", "item_id": twin}]},
                headers=auth,
            ),
        ]
        for answer in answers:
            if answer.status_code not in (200, 201):
                raise SystemExit(f"a write answered {answer.status_code}: {answer.get_data()!r}")
    result["rss_after_writes_mb"] = status_mb("VmRSS")
    for kind in ("items", "users"):
        after, pages = "", 0
        while True:
            page = client.get(f"/v1/{kind}?limit={args.page}{after}", headers=auth).get_json()
            pages += 1
            if page.get("next") is None:
                break
            after = f"&after={page['next']}"
        result[f"{kind}_pages"] = pages
    result["rss_after_crawl_mb"] = status_mb("VmRSS")
    return {key: round(value, 1) for key, value in result.items()}


if __name__ == "__main__":
    main()
