"""Time the cold-item ridge (``recsys.model.fusion.sparse_ridge``) on a bundle's own data.

    python scripts/bench_sparse_ridge.py BUNDLE_DIR [--threads 1,2]

It is fitted as training fits it: the bundle's warm items' tokens to their [cf | popularity]
blocks. Each thread count is timed once (``sparse_ridge`` runs on the process's CPUs; here
that count is set for it), and the coefficients are compared with the first count's: the
same to the bit, since the parts are summed in one order whatever the count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.model import fusion


def _load(directory: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    def array(name: str) -> np.ndarray:
        return np.load(directory / name, allow_pickle=False)

    shape = tuple(array("item_tokens_shape.npy").tolist())
    parts = (array(f"item_tokens_{p}.npy") for p in ("data", "indices", "indptr"))
    tokens = sp.csr_matrix(tuple(parts), shape=shape)
    warm = ~array("cold_items.npy")
    targets = np.hstack([array("item_block_cf.npy"), array("item_block_popularity.npy")])
    return tokens[warm], targets[warm]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args()
    features, targets = _load(args.bundle)
    print(f"warm items {features.shape[0]:,}, tokens {features.shape[1]:,}, nnz {features.nnz:,}")
    alpha = fusion.FusionConfig().content_alpha
    first = None
    for threads in (int(t) for t in args.threads.split(",")):
        fusion.parallel.cpus = lambda threads=threads: threads
        start = time.perf_counter()
        coef, _ = fusion.sparse_ridge(features, targets, alpha)
        seconds = time.perf_counter() - start
        first = coef if first is None else first
        diff = float(np.abs(coef - first).max() / max(np.abs(first).max(), 1e-30))
        print(f"threads {threads}: {seconds:.1f} s, max relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
