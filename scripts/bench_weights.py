"""The weights stage of `recsys train` alone on a catalog: seconds, peak memory, chosen
weights, metrics.

    python scripts/bench_weights.py sqlite:///var/movielens/catalog.db

Reads the catalog, builds the content blocks as `recsys train` does (default TrainConfig),
then times ``choose_weights``. To compare two versions of the code side by side, run it from
two checkouts (e.g. ``git worktree add /tmp/old HEAD~1`` and ``PYTHONPATH=/tmp/old``).
Memory (Linux): the resident set before the stage ("held_mb": the catalog and content blocks)
and the stage's peak ("peak_mb", the kernel's high-water mark, reset as the stage starts).
"""

from __future__ import annotations

import json
import time

import click
from bench_read import reset_peak, status_mb  # this folder's script

from recsys.catalog import connect
from recsys.model.config import TrainConfig
from recsys.model.content import build_content
from recsys.model.data import read_catalog
from recsys.model.validation import choose_weights


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("database_url", metavar="DATABASE_URL")
def main(database_url: str) -> None:
    data = read_catalog(connect(database_url))
    config = TrainConfig()
    content = build_content(data, config)
    held = int(status_mb("VmRSS"))
    reset_peak()  # the high-water mark restarts here
    started = time.perf_counter()
    choice = choose_weights(data, content, config)
    seconds = time.perf_counter() - started
    memory = {"held_mb": held, "peak_mb": int(status_mb("VmHWM"))}
    metrics = {k: v for k, v in choice.metrics.items() if k.startswith("validation")}
    chosen = {"weights": choice.weights, "cold": choice.cold_scale, "surfaces": choice.surfaces}
    print(json.dumps({"seconds": round(seconds, 1), **memory, **chosen, "metrics": metrics}))


if __name__ == "__main__":
    main()
