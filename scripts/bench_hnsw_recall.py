"""Recall and speed of the HNSW index at several efSearch values, on a trained bundle.

Queries are the item vectors of random catalog items (as for similar items), each item
itself excluded; recall@10 is against exact inner-product search over the vectors each index
stands for: the serving index's, and for the neighbour table those the similar surface meets
(`FusedModel.surface_item_vectors`: the same unless cold items' content is scaled).
One thread, one query at a time, as a service worker searches. Three searches are measured:
the serving index (filtered similar items search it), the index the neighbour table is built
in (`Recommender.neighbour_index`: built here, its build time printed) and, when the bundle
has one, the neighbour table it holds (what unfiltered similar items return). With
--in-stock, also what `similar_items` answers with an in-stock filter, against exact search
over the in-stock items.

    .venv/bin/python scripts/bench_hnsw_recall.py \\
        --database sqlite:///var/bench-service/catalog.db --ef 128,96,64,48
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from recsys.catalog import connect
from recsys.model.bundle import load_active
from recsys.model.recommender import neighbour_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="catalog URL; its active bundle")
    parser.add_argument("--ef", default="128,96,64,48", help="efSearch values, comma-separated")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-threads", type=int, default=2, help="threads of the build")
    parser.add_argument(
        "--in-stock", action="store_true", help="also similar items filtered to in-stock items"
    )
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rec = load_active(connect(args.database))
    if rec.index.kind != "hnsw":
        raise SystemExit(f"the active bundle's index is {rec.index.kind}, not hnsw")
    vectors = rec.index.vectors  # (N, D)
    rows = np.random.default_rng(args.seed).choice(len(vectors), args.queries, replace=False)
    queries = np.ascontiguousarray(rec.fused.item_queries(rows), dtype=np.float32)  # (Q, D)
    truths = {}
    fused = rec.fused
    surface = fused.surface_item_vectors(fused.item_blocks_, fused.cold_)
    for name, data in (("serving index", vectors), ("table", surface)):
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(np.ascontiguousarray(data, dtype=np.float32))
        truths[name] = exact.search(queries, args.k + 1)[1]

    def top(found: np.ndarray, row: int) -> set[int]:
        return set(found[found != row][: args.k].tolist())

    def recall(found, truth) -> float:
        pairs = zip(found, truth, rows, strict=True)
        return float(np.mean([len(top(f, r) & top(t, r)) / args.k for f, t, r in pairs]))

    print(f"{len(vectors)} items x {vectors.shape[1]} dims, {args.queries} queries, k={args.k}")
    started = time.perf_counter()
    faiss.omp_set_num_threads(args.build_threads)
    table_index, projection = rec.neighbour_index()
    faiss.omp_set_num_threads(1)
    built = time.perf_counter() - started
    table_queries = neighbour_queries(rec.fused, rows, projection)
    print(
        f"neighbour-table index: {table_index.kind}, {table_index.dim} dims, built in {built:.1f} s"
    )
    searches = {  # name: (index, its queries, its truth)
        "serving index": (rec.index, queries, truths["serving index"]),
        "table index": (table_index, table_queries, truths["table"]),
    }
    for ef in map(int, args.ef.split(",")):
        params = faiss.SearchParametersHNSW(efSearch=ef)
        for name, (index, asked, truth) in searches.items():
            started = time.perf_counter()
            found = [index.index.search(q[None, :], args.k + 1, params=params)[1][0] for q in asked]
            per_query = (time.perf_counter() - started) / len(queries)
            print(
                f"efSearch {ef:4d} {name:>13}: recall@{args.k} {recall(found, truth):.4f}, "
                f"{per_query * 1e3:.3f} ms/query"
            )
    if rec.neighbours is not None and rec.neighbours[0].shape[1] >= args.k:
        stored = np.asarray(rec.neighbours[0][rows, : args.k], dtype=np.int64)
        table_recall = recall(stored, truths["table"])
        print(f"the bundle's neighbour table: recall@{args.k} {table_recall:.4f}")
    if args.in_stock:
        filtered_recall(rec, rows, queries, surface, args.k)


def filtered_recall(rec, rows: np.ndarray, queries: np.ndarray, surface, k: int) -> None:
    """Recall@k of ``similar_items(..., filters={"in_stock": True})`` against exact search
    over the in-stock items as the similar surface meets them (``surface``), and its time per
    query (one query per call, as the service)."""
    allowed = rec.filters.mask({"in_stock": True})
    kept = np.flatnonzero(allowed)
    exact = faiss.IndexFlatIP(rec.index.dim)
    exact.add(np.ascontiguousarray(surface[kept], dtype=np.float32))
    _, found = exact.search(queries, k + 1)
    truth = [set(kept[f[kept[f] != row]][:k].tolist()) for f, row in zip(found, rows, strict=True)]
    ids = rec.item_ids[rows].tolist()
    table = rec.neighbours
    for label, neighbours in (("table, then index", table), ("serving index alone", None)):
        rec.neighbours = neighbours  # None: every query searches the index (before session 19)
        started = time.perf_counter()
        answers = [rec.similar_items([i], k=k, filters={"in_stock": True}).ids[0] for i in ids]
        per_query = (time.perf_counter() - started) / len(ids)
        hits = [
            len(set(rec.item_index.rows(a).tolist()) & t) / k
            for a, t in zip(answers, truth, strict=True)
        ]
        print(
            f"similar items filtered to in-stock ({len(kept)} of {len(allowed)} items), "
            f"{label}: recall@{k} {np.mean(hits):.4f}, {per_query * 1e3:.3f} ms/query"
        )
    rec.neighbours = table


if __name__ == "__main__":
    main()
