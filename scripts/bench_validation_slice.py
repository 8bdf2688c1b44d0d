"""Time and memory of the weights stage's first steps on an ingested catalog.

`recsys train`'s weights stage (``recsys.model.validation.choose_weights``) starts by
holding out a validation slice (``split.validation_split``), building the evaluation task
of a seeded user sample (``protocol.build_task``) and the confidence matrix ALS is fitted on
(``cf.confidence_matrix``). These are the steps that grow with the events. This script runs
them once, as training does, after reading the catalog as training does, and prints each
step's seconds, the memory held before and after it and its peak (RSS sampled every
50 ms), and a check of what they produced, so that two codes can be compared on one
catalog by running the script under each (``PYTHONPATH=<the other code's root>``):

    .venv/bin/python scripts/bench_validation_slice.py --catalog /tmp/M/catalog.db --json new.json
    PYTHONPATH=/tmp/old .venv/bin/python scripts/bench_validation_slice.py \\
        --catalog /tmp/M/catalog.db
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import click
import numpy as np
from bench_read import status_mb  # this folder's script
from sqlalchemy import create_engine

from recsys.model.cf import confidence_matrix
from recsys.model.config import TrainConfig
from recsys.model.data import read_catalog
from recsys.model.protocol import build_task
from recsys.model.split import validation_split


def rss_mb() -> int:
    return int(status_mb("VmRSS"))


class Meter:
    """Each step's seconds, RSS before and after, and peak RSS while it ran."""

    def __init__(self) -> None:
        self.peak = 0
        self.steps: dict[str, dict] = {}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.05)

    def step(self, name: str, work):
        before = self.peak = rss_mb()
        start = time.monotonic()
        result = work()
        seconds = round(time.monotonic() - start, 1)
        after = rss_mb()
        self.steps[name] = {
            "seconds": seconds,
            "rss_before_mb": before,
            "rss_after_mb": after,
            "peak_mb": max(self.peak, after),
        }
        click.echo(f"{name}: {self.steps[name]}")
        return result


@click.command()
@click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="An ingested SQLite catalog (e.g. scripts/bench_scale.py's <workdir>/M/catalog.db).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(catalog: Path, json_path: str | None) -> None:
    """Read, validation split, task and confidence matrix, each timed with its memory."""
    config = TrainConfig()
    meter = Meter()
    data = meter.step("read", lambda: read_catalog(create_engine(f"sqlite:///{catalog}")))
    fit_part, val_part = meter.step(
        "split", lambda: validation_split(data.interactions, config.validation_share)
    )
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = meter.step(
        "task",
        lambda: build_task(fit_part, val_part, item_ids).sample(config.validation_users, seed=0),
    )
    users = np.asarray(np.sort(fit_part["user_id"].unique()), dtype=str)
    matrix = meter.step(
        "confidence", lambda: confidence_matrix(fit_part, users, item_ids, config.cf)
    )
    check = {
        "fit_rows": len(fit_part),
        "held_rows": len(val_part),
        "task_held": int(task.heldout.nnz),
        "matrix_nnz": int(matrix.nnz),
        "matrix_sum": float(matrix.data.sum(dtype=np.float64)),
        "last_fit_row": [str(v) for v in fit_part.iloc[-1].tolist()],
    }
    click.echo(f"check: {check}")
    if json_path:
        Path(json_path).write_text(json.dumps({"steps": meter.steps, "check": check}, indent=1))


if __name__ == "__main__":
    main()
