"""Top-k of catalog-wide score rows: argpartition against the k-th-score cut that
``recsys.model.ranking.top_k`` takes on rows of ``WIDE_ROW`` columns or more.

    .venv/bin/python scripts/bench_top_k.py [--k 200] [--repeats 3]

Rows of 2^25 cells in all (the batches the weights stage and the evaluation score), random
normal float32 scores, one seventh of them -inf (seen items); each width prints the best of
``--repeats`` timings of both paths and whether they picked the same columns. Then the
weights stage's popularity candidates (``validation.Candidates.build``, 330 users, 10^6
items, 30% cold): from one sorted order against a pass over the catalog per batch. Then
``protocol.rank``'s three lists (all, warm, cold) of one batch at 10^6 items, 60% cold:
three passes reading the parts' columns as ``scores[:, columns]`` (column-major), three
passes through ``np.take`` (row-major), and ``ranking.top_k_parts`` (the whole list merged
from the parts'), on normal scores, on zero cold scores and on popularity-like ties.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from recsys.model import ranking, validation
from recsys.model.protocol import MAX_BATCH_CELLS
from recsys.model.ranking import _top_k_partitioned, _top_k_wide, top_k


def best_of(repeats: int, work) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=200, help="columns kept per row (200)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per path (3)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| columns | rows | argpartition s | k-th-score cut s | same columns |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for width in (9_000, 30_000, 100_000, 1_000_000):
        rows = max(1, MAX_BATCH_CELLS // width)
        scores = rng.standard_normal((rows, width)).astype(np.float32)
        scores[:, ::7] = -np.inf
        old, a = best_of(args.repeats, lambda s=scores: _top_k_partitioned(s, args.k))
        new, b = best_of(args.repeats, lambda s=scores: _top_k_wide(s, args.k))
        same = bool(np.array_equal(np.sort(a, axis=1), np.sort(b, axis=1)))
        print(f"| {width:,} | {rows:,} | {old:.3f} | {new:.3f} | {same} |")
    assert top_k(scores, args.k).shape == (rows, args.k)
    popularity_candidates(args.k)
    rank_lists(args.repeats)


def popularity_candidates(n: int, n_items: int = 1_000_000, users: int = 330) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((n_items, 1)).astype(np.float32)
    fused = SimpleNamespace(
        layout_=SimpleNamespace(dims={"popularity": 1}), item_blocks_={"popularity": values}
    )
    queries = {"popularity": np.ones((users, 1), dtype=np.float32)}
    cold = rng.random(n_items) < 0.3
    seen = sp.random(users, n_items, density=2e-5, format="csr", random_state=1)
    build = validation.Candidates.build
    start = time.perf_counter()
    one_order = build(fused, queries, seen, cold, n)
    ordered = time.perf_counter() - start
    orders, validation._rank_one_orders = validation._rank_one_orders, lambda *args: {}
    try:
        start = time.perf_counter()
        every_pass = build(fused, queries, seen, cold, n)
        passes = time.perf_counter() - start
    finally:
        validation._rank_one_orders = orders
    same = bool(np.array_equal(one_order.items, every_pass.items))
    print(f"\npopularity candidates, {users} users x {n_items:,} items, top {n}:")
    print(f"pass per batch {passes:.2f} s, one order {ordered:.2f} s, same items: {same}")


def rank_lists(repeats: int, n: int = 1_000_000, k: int = 50) -> None:
    rng = np.random.default_rng(0)
    rows = MAX_BATCH_CELLS // n
    cold = rng.random(n) < 0.6
    parts = (np.flatnonzero(~cold), np.flatnonzero(cold))

    def fancy(scores, columns):  # the gather rank used before session 17
        sub = scores[:, columns]
        best = top_k(sub, k)
        finite = np.isfinite(np.take_along_axis(sub, best, axis=1))
        return np.where(finite, columns[best], -1)

    print(f"\nrank's three lists, {rows} users x {n:,} items, 60% cold, k {k}:")
    print("| scores | scores[:, columns] s | np.take s | merged from parts s | same lists |")
    print("| --- | ---: | ---: | ---: | --- |")
    for kind in ("normal", "cold scores 0", "popularity ties"):
        if kind == "popularity ties":
            popularity = np.floor(rng.pareto(1.2, n)).astype(np.float32)
            popularity[cold] = 0.0
            scores = np.tile(popularity, (rows, 1))
        else:
            scores = rng.standard_normal((rows, n)).astype(np.float32)
            if kind == "cold scores 0":
                scores[:, cold] = 0.0
        scores[:, ::50] = -np.inf  # seen items
        old, a = best_of(
            repeats,
            lambda s=scores: [ranking.top_k_finite(s, k), *(fancy(s, c) for c in parts)],
        )
        take, b = best_of(
            repeats,
            lambda s=scores: [ranking.top_k_finite(s, k, c) for c in (None, *parts)],
        )
        merged, c = best_of(repeats, lambda s=scores: ranking.top_k_parts(s, k, parts))
        same = all(
            np.array_equal(x, y) and np.array_equal(x, z) for x, y, z in zip(a, b, c, strict=True)
        )
        print(f"| {kind} | {old:.3f} | {take:.3f} | {merged:.3f} | {same} |")


if __name__ == "__main__":
    main()
