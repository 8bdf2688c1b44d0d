"""Top-k of catalog-wide score rows: argpartition against the k-th-score cut that
``recsys.model.ranking.top_k`` takes on rows of ``WIDE_ROW`` columns or more.

    .venv/bin/python scripts/bench_top_k.py [--k 200] [--repeats 3]

Rows of 2^25 cells in all (the batches the weights stage and the evaluation score), random
normal float32 scores, one seventh of them -inf (seen items); each width prints the best of
``--repeats`` timings of both paths and whether they picked the same columns.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

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


if __name__ == "__main__":
    main()
