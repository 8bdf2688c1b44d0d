"""What encoding a few items costs as the catalog's vocabulary grows: the live catalog's step.

    .venv/bin/python scripts/bench_tabular_transform.py [--items 10000 100000 300000] [--rows 24]

Each worker of the service encodes the items written in the last second with the bundle's
fitted ``TabularEncoder`` (``TabularEncoder.transform_sparse``, then the projection): a follow
step of the live catalog. For each catalog size this builds a long-tail items frame (titles of
six words from a vocabulary as large as the catalog, a seller field with one value per two
items, a price), fits the encoder as ``recsys train`` does, and times ``transform_sparse`` of
``--rows`` items (the median of ``--repeat`` calls after one uncounted call). A step that
grows with the number of words and values the encoder knows, rather than with the rows it
encodes, shows as a time that grows down the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.model.tabular import TabularConfig, TabularEncoder


def long_tail_items(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(n)])
    # Zipf-like word use: a few common words, most of them rare (as product titles are)
    word = np.minimum(rng.zipf(1.3, (n, 6)) - 1, n - 1)
    return pd.DataFrame(
        {
            "title": [" ".join(row) for row in words[word]],
            "seller": [f"seller-{v}" for v in rng.integers(0, max(n // 2, 1), n)],
            "price": np.round(np.exp(rng.normal(3.5, 0.6, n)), 2),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--rows", type=int, default=24, help="items encoded per call")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    kinds = {"title": "text", "seller": "categorical", "price": "numeric"}
    results = []
    print(f"{'items':>9} {'features':>9} {'fit s':>7} {f'{args.rows} rows, ms':>13}")
    for n in args.items:
        items = long_tail_items(n, args.seed)
        started = time.perf_counter()
        encoder = TabularEncoder(kinds, TabularConfig()).fit(items)
        fit_s = time.perf_counter() - started
        few = items.sample(args.rows, random_state=args.seed).reset_index(drop=True)
        encoder.transform_sparse(few)
        took = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            encoder.transform_sparse(few)
            took.append(time.perf_counter() - started)
        ms = float(np.median(took)) * 1e3
        results.append({"items": n, "features": encoder.features_, "fit_s": fit_s, "ms": ms})
        print(f"{n:>9,} {encoder.features_:>9,} {fit_s:>7.1f} {ms:>13.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "results": results}, indent=1))


if __name__ == "__main__":
    main()
