"""In-process latency of `Recommender.similar_items` for one item on a synthetic catalog.

    .venv/bin/python scripts/bench_similar.py [--items 100000] [--dim 133] [--index auto]

Item vectors are random (clustered) with the MovieLens bundle's width (133 = 32 cf + 100
tabular + 1 popularity); what is timed is the whole call: id lookup, query vector, FAISS
search with the query excluded, ids out. Reports the median and p99 over --queries calls.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from recsys.model.fusion import FusedModel
from recsys.model.index import IndexConfig, VectorIndex
from recsys.model.recommender import ItemFilters, Recommender


def synthetic_recommender(n: int, dim: int, kind: str) -> Recommender:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(256, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, 256, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    fused = FusedModel().fit(None, {"tabular": vectors}, n)
    start = time.perf_counter()
    index = VectorIndex.build(fused.item_vectors_, IndexConfig(kind=kind))
    print(f"built {index.kind} index over {n} x {dim} in {time.perf_counter() - start:.1f}s")
    filters = ItemFilters(np.ones(n, dtype=bool), {})
    return Recommender(fused, None, np.arange(n).astype(str), filters, index, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=133)
    parser.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="FAISS/BLAS threads")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        recommender = synthetic_recommender(args.items, args.dim, args.index)
        rng = np.random.default_rng(1)
        ids = rng.integers(0, args.items, args.queries).astype(str)
        exact = VectorIndex.build(recommender.fused.item_vectors_, IndexConfig(kind="flat"))
        timings, overlap = [], []
        for item in ids:
            start = time.perf_counter()
            found = recommender.similar_items([item], k=10).ids[0]
            timings.append(time.perf_counter() - start)
            if len(overlap) < 200:
                row = int(item)
                truth, _ = exact.search(recommender.fused.item_queries([row]), 10, None, [[row]])
                overlap.append(len(set(found) & set(truth[0].astype(str))) / 10)
    ms = np.asarray(timings) * 1e3
    print(
        f"similar_items(k=10), {args.index}: median {np.median(ms):.3f} ms, "
        f"p99 {np.percentile(ms, 99):.3f} ms, recall@10 vs exact {np.mean(overlap):.3f}"
    )


if __name__ == "__main__":
    main()
