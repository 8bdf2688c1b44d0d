"""Time one weight candidate's ranking in the weights stage (``validation.Candidates.rank``).

    python scripts/bench_candidates_rank.py [--users 3000] [--width 1852] [--items 1000000]

The weight search ranks the same validation candidates hundreds of times (once per weight
candidate, per token profile form). The default shape is the one size M's training logged
(3,000 users, at most 1,852 candidates each, 10^6 items; four blocks with the token column).
Random scores; the best of 5 calls after a first one, one thread.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from recsys.model.validation import Candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--width", type=int, default=1852)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
