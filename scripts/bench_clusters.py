"""Where `recsys catalog clusters` (and the catalog page's clusters) spend their time, by part.

    .venv/bin/python scripts/bench_clusters.py --bundle ARTIFACTS/bundles/VERSION
    .venv/bin/python scripts/bench_clusters.py --random 1000000 [--dims 128]

Times the parts of ``Clusterer().fit`` at its defaults, one after the other: the neighbour
smoothing (``neighbours.smoothed``; skipped above ``smoothing_max_items``), the choice of k
(``Clusterer._score_ks``: every candidate k fitted and scored) and the chosen k's fit on all
items. ``--bundle`` clusters a bundle's fused item vectors, as the admin endpoint does;
``--random N`` clusters N seeded vectors drawn around 20 centres (for sizes no catalog here
has). Prints each part's seconds and the silhouette by k.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from recsys.catalog_intel.clusters import ClusterConfig, Clusterer, _kmeans
from recsys.catalog_intel.neighbours import as_unit_vectors, smoothed


def vectors(args) -> np.ndarray:
    if args.bundle:
        from recsys.model.fusion import FusedModel

        return FusedModel.load(args.bundle).item_vectors_
    rng = np.random.default_rng(args.seed)
    centres = rng.normal(size=(20, args.dims)).astype(np.float32)
    noise = rng.normal(size=(args.random, args.dims)).astype(np.float32)
    return centres[rng.integers(0, 20, args.random)] + 2.0 * noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="a model bundle's folder: its fused item vectors")
    source.add_argument("--random", type=int, help="this many seeded random vectors")
    parser.add_argument("--dims", type=int, default=128, help="with --random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = ClusterConfig()
    unit = as_unit_vectors(vectors(args))
    print(f"{len(unit):,} items of {unit.shape[1]} dimensions", flush=True)
    started = time.perf_counter()
    views = smoothed(unit, config.smoothing_k, config.smoothing, config.smoothing_max_items)
    print(f"smoothing ({len(views) - 1} rounds): {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    scores = Clusterer(config)._score_ks(views[-1], config)
    print(f"choosing k: {time.perf_counter() - started:.1f} s", flush=True)
    print("silhouette by k:", {k: round(s, 4) for k, s in scores.items()})
    k = max(scores, key=scores.get)
    started = time.perf_counter()
    _kmeans(views[-1], k, config)
    print(f"k = {k} on all items: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
