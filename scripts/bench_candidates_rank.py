"""Time the weights stage's candidates: one weight candidate's ranking, and finding them.

    python scripts/bench_candidates_rank.py [--users 3000] [--width 1852] [--items 1000000]
    python scripts/bench_candidates_rank.py --build [--users 600] [--cpus 1,2]

The weight search ranks the same validation candidates hundreds of times (once per weight
candidate, per token profile form). The default shape is the one size M's training logged
(3,000 users, at most 1,852 candidates each, 10^6 items; four blocks with the token column).
Random scores; the best of 5 calls after a first one, one thread.

``--build`` times ``Candidates.build`` instead (each query's 200 best and 200 best cold
items of two dense blocks, cf 32 and tabular 128 dimensions, among ``--items``, as the
surface search at size M) on each ``--cpus`` count, and checks the candidates are the same.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.model import parallel
from recsys.model.validation import Candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--width", type=int, default=1852)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--build", action="store_true", help="time Candidates.build")
    parser.add_argument("--cpus", default="1,2", help="--build: comma-separated CPU counts")
    args = parser.parse_args()
    if args.build:
        build(args)
        return
    rng = np.random.default_rng(0)
    items = np.sort(rng.integers(0, args.items, (args.users, args.width)), axis=1)
    items[rng.random(items.shape) < 0.2] = -1  # padding: users have fewer candidates
    blocks = ("cf", "tabular", "popularity", "tokens")
    scores = rng.random((*items.shape, len(blocks)), dtype=np.float32)
    candidates = Candidates(items, scores, blocks, rng.random(args.items) < 0.18)
    weights = {"cf": 1.0, "tabular": 0.5, "popularity": 100.0, "tokens": 3.0}
    cold_scale = {"cf": 1.0, "tabular": 1.0, "popularity": 0.0, "tokens": 1.0}
    candidates.rank(weights, cold_scale, 10)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        candidates.rank(weights, cold_scale, 10)
        times.append(time.perf_counter() - start)
    print(f"{args.users} users x {args.width} candidates: {min(times) * 1e3:.0f} ms per ranking")


def build(args) -> None:
    rng = np.random.default_rng(0)
    dims = {"cf": 32, "tabular": 128}
    item_blocks = {
        b: rng.standard_normal((args.items, d), dtype=np.float32) for b, d in dims.items()
    }
    fused = SimpleNamespace(layout_=SimpleNamespace(dims=dims), item_blocks_=item_blocks)
    queries = {b: rng.standard_normal((args.users, d), dtype=np.float32) for b, d in dims.items()}
    seen = sp.csr_matrix(
        (np.ones(args.users), (np.arange(args.users), rng.integers(0, args.items, args.users))),
        shape=(args.users, args.items),
    )
    cold = rng.random(args.items) < 0.15
    first = None
    for count in (int(c) for c in args.cpus.split(",")):
        parallel.cpus = lambda count=count: count
        with threadpool_limits(1, "blas"):  # as `recsys train` runs its stages
            start = time.perf_counter()
            found = Candidates.build(fused, queries, seen, cold, 200)
            seconds = time.perf_counter() - start
        first = found if first is None else first
        same = np.array_equal(found.items, first.items)
        shape = f"{args.users} queries x {args.items:,} items"
        print(f"{shape}, {count} CPU(s): {seconds:.1f} s, same candidates {same}")


if __name__ == "__main__":
    main()
