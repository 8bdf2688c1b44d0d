"""The neighbour table on Ray: item shards searched by Ray tasks against the same index.

``neighbour_table(recommender, width)`` returns what ``Recommender.compute_neighbours`` fills
in: each item's unfiltered top-``width`` similar items (rows (N, W) int32, scores (N, W)
float32). The index (``Recommender.neighbour_index``) is serialised once into Ray's object
store (with the item vectors, which its exact fallback reads); each task deserialises it,
takes a contiguous run of items, and searches them in the same batches, with the same queries
and the same self-exclusion, as the in-process loop, so the two tables are equal.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
from tqdm import tqdm

from recsys.engines.ray_cluster import connect, require_ray
from recsys.model.index import IndexConfig, VectorIndex
from recsys.model.recommender import neighbour_queries

log = logging.getLogger(__name__)


def search_shard(
    index_bytes: np.ndarray,
    vectors: np.ndarray,
    config: IndexConfig,
    queries: np.ndarray,
    start: int,
    width: int,
    batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ray task: top-``width`` rows and scores of items ``start .. start + len(queries)``."""
    index = VectorIndex(vectors, faiss.deserialize_index(index_bytes), config)
    n = len(queries)
    rows = np.full((n, width), -1, dtype=np.int32)
    scores = np.full((n, width), -np.inf, dtype=np.float32)
    for first in range(0, n, batch):
        own = np.arange(first, min(first + batch, n))  # (b,) places in this shard
        found = index.search(queries[own], width, None, (start + own)[:, None])
        rows[own], scores[own] = found
    return rows, scores


def neighbour_table(
    recommender,
    width: int,
    address: str,
    batch: int = 4096,
    tasks: int | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every item's top-``width`` similar items (mode ``similar``), by Ray tasks over runs
    of ``batch`` items on the cluster at ``address``; ``tasks`` [default: the cluster's
    CPUs]; None when ``width`` is 0."""
    ray = require_ray()
    connect(address)
    n = len(recommender.item_ids)
    width = min(width, max(n - 1, 1))
    if width <= 0:
        return None
    index, projection = recommender.neighbour_index()
    cpu_index = faiss.index_gpu_to_cpu(index.index) if index.on_gpu else index.index
    shared = (ray.put(faiss.serialize_index(cpu_index)), ray.put(index.vectors), index.config)
    remote = ray.remote(num_cpus=1)(search_shard)
    batches = -(-n // batch)
    tasks = min(tasks or int(ray.cluster_resources().get("CPU", 1)), batches)
    per_task = -(-batches // tasks) * batch  # items per task, a whole number of batches
    pending = {}
    for start in range(0, n, per_task):
        own = np.arange(start, min(start + per_task, n))
        queries = neighbour_queries(recommender.fused, own, projection)
        pending[remote.remote(*shared, queries, start, width, batch)] = start
    rows = np.full((n, width), -1, dtype=np.int32)
    scores = np.full((n, width), -np.inf, dtype=np.float32)
    bar = tqdm(total=n, desc="neighbours on Ray", unit="item", disable=not show_progress)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        start = pending.pop(done[0])
        shard_rows, shard_scores = ray.get(done[0])
        rows[start : start + len(shard_rows)], scores[start : start + len(shard_rows)] = (
            shard_rows,
            shard_scores,
        )
        bar.update(len(shard_rows))
    bar.close()
    log.info("neighbour table of %d items x %d on Ray in %d tasks", n, width, tasks)
    return rows, scores
