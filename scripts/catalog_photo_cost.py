"""What the service's duplicate check with photos costs (``recsys.catalog_intel.photos``).

The admin endpoint ``/v1/admin/catalog/duplicates`` verifies at most
``PhotoConfig.max_pairs`` candidate pairs per answer and calibrates its threshold once per
bundle on ``calibration_photos`` sampled photos. This times both on a catalog database with
photos: the calibration, and the verification of the ``--pairs`` most similar pairs by the
copy descriptor among a seeded sample of items (a stand-in for the served vectors' pairs:
the cost depends on the number of pairs and photos, not on where they come from).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/catalog_photo_cost.py \\
        --database-url sqlite:////tmp/s9-16b/shop.db --pairs 2000
"""

from __future__ import annotations

import json
import os
import time

import click
import numpy as np
import torch
from sqlalchemy import select

from recsys.catalog import connect
from recsys.catalog.models import Item
from recsys.catalog_intel.copy_descriptor import center, copy_descriptors
from recsys.catalog_intel.neighbours import as_unit_vectors, knn
from recsys.catalog_intel.photos import CatalogPhotos, PhotoConfig


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--database-url", required=True, help="A catalog with photos.")
@click.option(
    "--pairs", type=int, default=PhotoConfig().max_pairs, show_default=True, help="Pairs verified."
)
@click.option("--sample", type=int, default=4000, show_default=True, help="Items paired.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch.set_num_threads.")
def main(database_url: str, pairs: int, sample: int, threads: int) -> None:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    engine = connect(database_url)
    with engine.connect() as connection:
        ids = np.asarray(connection.scalars(select(Item.external_id)).all(), dtype=str)
    photos = CatalogPhotos(engine, ids, PhotoConfig(max_pairs=pairs))
    t0 = time.perf_counter()
    threshold = photos.calibrate()
    calibrate_s = time.perf_counter() - t0
    rows = np.sort(np.random.default_rng(0).choice(len(ids), min(sample, len(ids)), False))
    _, images = photos.decode(rows)
    vectors = as_unit_vectors(center(copy_descriptors(images)))
    sims, nn = knn(vectors, 1)
    order = np.argsort(-sims[:, 0])[:pairs]
    left, right = rows[order], rows[nn[order, 0]]
    t0 = time.perf_counter()
    checked = photos.verify(left, right, sims[order, 0], threshold)
    verify_s = time.perf_counter() - t0
    out = {
        "items": len(ids),
        "threshold": threshold,
        "calibrate_s": round(calibrate_s, 2),
        "pairs": len(left),
        "verified": checked.verified,
        "kept": len(checked.score),
        "verify_s (paths + decode + verification)": round(verify_s, 2),
        "threads": threads,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    click.echo(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
