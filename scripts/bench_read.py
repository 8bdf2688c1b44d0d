"""What training's read stage costs: time and memory of reading a catalog's items and its
interactions into the frames ``recsys train`` works on (``recsys.model.data``).

    .venv/bin/python scripts/bench_read.py --database-url sqlite:////tmp/bench-scale/M/catalog.db \\
        [--part items --part interactions] [--repeat 1] [--json OUT]

Each part runs in a fresh Python process, so its memory is its own: ``seconds`` is the read's
wall time, ``baseline_mb`` the process's resident memory after its imports, ``peak_mb`` the
most it held above that at any moment (the kernel's high-water mark, ``VmHWM``), ``held_mb``
what it still holds above the baseline with the frame alive, and ``frame_mb`` the frame's own
size (``memory_usage(deep=True)``). Run it with ``PYTHONPATH`` set to another checkout to
measure that code on the same catalog.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

PARTS = ("items", "interactions")


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start the high-water mark from the current resident size (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _read_items(engine):
    from recsys.model import data

    if hasattr(data, "read_items"):
        return data.read_items(engine)[0]
    # code from before ``read_items``: the rows as read_catalog fetched them then
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from recsys.catalog.models import Item, ItemAttribute

    with Session(engine) as session:
        rows = session.execute(
            select(Item.external_id, Item.title, Item.image_path, Item.in_stock, Item.attributes)
        ).all()
        names = [name for (name,) in session.execute(select(ItemAttribute.name)).all()]
    return data.items_frame(rows, names)


def child(database_url: str, part: str) -> dict:
    import gc

    from recsys.catalog import connect
    from recsys.model.data import read_interactions

    engine = connect(database_url)
    gc.collect()
    baseline = status_mb("VmRSS")
    reset_peak()
    started = time.perf_counter()
    frame = _read_items(engine) if part == "items" else read_interactions(engine)
    seconds = time.perf_counter() - started
    peak = status_mb("VmHWM")
    gc.collect()
    held = status_mb("VmRSS")
    return {
        "part": part,
        "rows": len(frame),
        "seconds": round(seconds, 2),
        "baseline_mb": round(baseline),
        "peak_mb": round(peak - baseline),
        "held_mb": round(held - baseline),
        "frame_mb": round(frame.memory_usage(deep=True).sum() / 2**20),
    }


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--database-url", required=True, help="the catalog to read (SQLite or PostgreSQL)")
@click.option("--part", "parts", type=click.Choice(PARTS), multiple=True, help="default: both")
@click.option("--repeat", type=int, default=1, show_default=True, help="runs of each part")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="write results here")
@click.option("--child-part", type=click.Choice(PARTS), hidden=True)
def main(database_url, parts, repeat, json_out, child_part) -> None:
    if child_part:
        print(json.dumps(child(database_url, child_part)))
        return
    results = []
    for _ in range(repeat):
        for part in parts or PARTS:
            command = [sys.executable, __file__, "--database-url", database_url]
            out = subprocess.run(
                [*command, "--child-part", part], check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{part:>12}: {result['rows']:,} rows in {result['seconds']:.1f} s; "
                f"peak +{result['peak_mb']:,} MB, held +{result['held_mb']:,} MB, "
                f"frame {result['frame_mb']:,} MB (baseline {result['baseline_mb']:,} MB)",
                flush=True,
            )
    if json_out:
        json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
