"""What one step of the live catalog costs a worker: following N item writes, in-process.

    .venv/bin/python scripts/bench_follow_step.py --workdir /tmp/bench-service [--writes 24]

Copies the catalog of a ``scripts/bench_service.py`` workdir to a scratch folder (the source
is never written), builds the app a gunicorn worker runs with its follower thread off, then
repeats: ``--writes`` item writes through Flask's test client in ``scripts/bench_live_catalog.py``'s
mix (PUT of a copy of an existing listing with a random 64x64 PNG, PUT, ``in_stock=false``,
DELETE), then one follow step (the bundle's delta and the item cards), timed. That step is what
each worker does once a second under writes, holding the interpreter while requests wait; it
sets the service's read tail under writes (issue 17). Prints the mean, median and largest step
after the first two; ``--profile`` adds cProfile's top functions over the counted steps.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_item_write import TOKEN, photo
from bench_live_catalog import scratch_app

MIX = ("put", "put", "stock", "delete")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench_service.py workdir")
    parser.add_argument("--writes", type=int, default=24, help="item writes per step")
    parser.add_argument("--steps", type=int, default=12, help="steps (the first two uncounted)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-follow-"))
    try:
        app = scratch_app(args.workdir, work, TOKEN)
        steps = follow_steps(app, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counted = np.asarray(steps["follow_ms"][2:])
    result = {
        "writes_per_step": args.writes,
        "steps": len(counted),
        "follow_ms_mean": round(float(counted.mean()), 2),
        "follow_ms_p50": round(float(np.median(counted)), 2),
        "follow_ms_max": round(float(counted.max()), 2),
        "write_ms_mean": round(float(np.mean(steps["write_ms"])), 2),
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def follow_steps(app, work: Path, args) -> dict[str, list[float]]:
    ctx = app.extensions["recsys"]
    holder, cards = ctx.holder, ctx.cards
    holder.follow()
    cards.follow()
    cards.wait_for_snapshot(60)
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    rng = np.random.default_rng(0)
    items = json.loads((work / "ids.json").read_text())["items"]
    gone: set[str] = set()
    profile = cProfile.Profile()
    out: dict[str, list[float]] = {"follow_ms": [], "write_ms": []}
    n = 0
    for step in range(args.steps):
        t0 = time.perf_counter()
        for _ in range(args.writes):
            write(client, auth, MIX[n % len(MIX)], f"live-{n}", items, gone, rng)
            n += 1
        out["write_ms"].append((time.perf_counter() - t0) * 1e3 / max(args.writes, 1))
        counted = args.profile and step >= 2
        t0 = time.perf_counter()
        if counted:
            profile.enable()
        holder.follow()
        cards.follow()
        if counted:
            profile.disable()
        out["follow_ms"].append((time.perf_counter() - t0) * 1e3)
    if args.profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats("recsys", 30)
    return out


def write(client, auth, op: str, new_id: str, items, gone: set[str], rng) -> None:
    """One write of the mix; a stock change or a DELETE picks an item a similar-items answer
    shows (so it is in the index), never the same one twice."""
    if op == "put":
        twin = str(rng.choice(items))
        card = client.get(f"/v1/items/{twin}").get_json()
        item = json.dumps({"title": card["title"], "attributes": card["attributes"]})
        body = {"item": item, "image": (io.BytesIO(photo(rng)), "p.png")}
        answer = client.put(f"/v1/items/{new_id}", data=body, headers=auth)
    else:
        probe = str(rng.choice(items))
        shown = client.get(f"/v1/items/{probe}/similar?k=10").get_json() or {}
        targets = [
            x["item_id"]
            for x in shown.get("items", [])
            if x["item_id"] not in gone and not x["item_id"].startswith("live-")
        ]
        if not targets:
            return
        gone.add(targets[0])
        if op == "stock":
            answer = client.patch(f"/v1/items/{targets[0]}", json={"in_stock": False}, headers=auth)
        else:
            answer = client.delete(f"/v1/items/{targets[0]}", headers=auth)
    if answer.status_code != 200:
        raise SystemExit(f"{op} answered {answer.status_code}: {answer.get_data()[:200]!r}")


if __name__ == "__main__":
    main()
