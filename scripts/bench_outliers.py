"""Time and peak memory of the outlier scores (``OutlierScorer().fit``, as ``recsys catalog
outliers`` and the catalog page run them) on one catalog's vectors, in a process of its own.

    .venv/bin/python scripts/bench_outliers.py --random 1000000 [--dims 128]

The vectors are those of ``scripts/bench_neighbours.py`` (``--random``, ``--npy``,
``--bundle``, with ``--copies``/``--near``/``--same``, the same defaults). Prints the fit's
seconds, the process's resident memory before it and its peak (``ru_maxrss``), and the
scores' checksum, so that two code trees (``PYTHONPATH=TREE``) can be compared on the same
vectors.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_neighbours  # its vectors

from recsys.catalog_intel import OutlierScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_neighbours.vector_options(parser)
    args = parser.parse_args()
    vectors = np.ascontiguousarray(bench_neighbours.vectors(args), np.float32)
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    scorer = OutlierScorer().fit(vectors)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "items": len(vectors),
                "dims": vectors.shape[1],
                "k": scorer.k_,
                "seconds": round(seconds, 1),
                "vectors_mb": round(vectors.nbytes / 2**20),
                "rss_before_mb": round(before / 2**20),
                "peak_rss_mb": round(peak / 2**20),
                "scores_sum": float(scorer.scores_.astype(np.float64).sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
