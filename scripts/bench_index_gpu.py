"""The item index on a GPU against the CPU index: build time, queries/s and recall at size M.

Builds the product's ``VectorIndex`` (``recsys.model.index``) over the same vectors on the CPU
and, with ``use_gpu=True``, on the GPU (faiss-gpu; flat and IVF move there, HNSW stays on the
CPU), then times batched searches (the neighbour-table build and feeds of many users) and
one-query searches (a service request), and scores recall@k of each index against exact
inner-product search on the CPU.

The vectors are either a saved ``.npy`` (a bundle's item vectors) or a synthetic catalog shaped
like fused vectors: a mixture of ``--clusters`` Gaussian clusters of unequal sizes and norms,
not normalised (the fused inner product is not a cosine), so IVF has real structure to find.

    python3 scripts/bench_index_gpu.py --items 1000000 --dims 128 --json var/bench/index_gpu.json
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import click
import faiss
import numpy as np

from recsys.model.index import IndexConfig, VectorIndex


def synthetic_vectors(n: int, dims: int, clusters: int, seed: int) -> np.ndarray:
    """(n, dims) float32: clustered, unequal cluster sizes (Zipf-like) and norms."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dims)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    scale = rng.lognormal(0.0, 0.3, size=(n, 1)).astype(np.float32)
    out = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, 200_000):  # bounded temporaries
        part = slice(start, min(start + 200_000, n))
        noise = rng.normal(scale=0.6, size=(part.stop - part.start, dims)).astype(np.float32)
        out[part] = (centres[labels[part]] + noise) * scale[part]
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k found in its returned top-k."""
    k = truth.shape[1]
    hits = sum(
        len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)
    )
    return hits / (len(truth) * k)


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, k: int, single: int):
    """Batched queries/s, one-query latency percentiles and recall@k of ``index``."""
    index.search(queries[:64], k)  # warm-up (GPU kernels, HNSW caches)
    t0 = time.perf_counter()
    rows, _ = index.search(queries, k)
    batch_s = time.perf_counter() - t0
    lat = []
    for q in queries[:single]:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.asarray(lat) * 1000
    return {
        "batch_queries_per_s": round(len(queries) / batch_s, 1),
        "single_p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "single_p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
        f"recall_at_{k}": round(recall(rows, truth), 4),
    }


@click.command()
@click.option("--vectors", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A saved (N, D) float32 .npy; default: a synthetic catalog.")  # fmt: skip
@click.option("--items", default=1_000_000, show_default=True)
@click.option("--dims", default=128, show_default=True)
@click.option("--clusters", default=2_000, show_default=True)
@click.option("--queries", default=10_000, show_default=True)
@click.option("--single", default=1_000, show_default=True, help="One-at-a-time queries timed.")
@click.option("--k", default=10, show_default=True)
@click.option("--kinds", default="flat,ivf", show_default=True, help="Index kinds to build.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(**opts) -> None:
    """Build and search the item index on the CPU and on the GPU; print a comparison."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    click.echo(f"faiss {faiss.__version__}, GPUs seen by faiss: {gpus}, threads {os.cpu_count()}")
    t0 = time.perf_counter()
    if opts["vectors"]:
        vectors = np.load(opts["vectors"], allow_pickle=False).astype(np.float32)
    else:
        vectors = synthetic_vectors(opts["items"], opts["dims"], opts["clusters"], opts["seed"])
    rng = np.random.default_rng(opts["seed"] + 1)
    queries = vectors[rng.choice(len(vectors), opts["queries"], replace=False)]
    click.echo(f"{len(vectors)} x {vectors.shape[1]} vectors in {time.perf_counter() - t0:.1f} s")
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    t0 = time.perf_counter()
    _, truth = exact.search(queries, opts["k"])
    truth_s = time.perf_counter() - t0
    rows = [{"index": "exact truth (CPU flat, batched)", "search_s": round(truth_s, 2)}]
    for kind in opts["kinds"].split(","):
        for use_gpu in (False, True):
            t0 = time.perf_counter()
            index = VectorIndex.build(vectors, IndexConfig(kind=kind), use_gpu=use_gpu)
            row = {"index": kind, "device": "gpu" if index.on_gpu else "cpu",
                   "asked_gpu": use_gpu, "build_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
            row.update(measure(index, queries, truth, opts["k"], opts["single"]))
            rows.append(row)
            click.echo(json.dumps(row))
            del index
    if opts["json_path"]:
        path = Path(opts["json_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        env = {"faiss": faiss.__version__, "gpus": gpus, "items": len(vectors)}
        path.write_text(json.dumps({"options": opts, "env": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
