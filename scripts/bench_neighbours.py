"""Time and recall of the catalog tools' neighbour searches (``recsys.catalog_intel.neighbours``).

    .venv/bin/python scripts/bench_neighbours.py --random 1000000 [--dims 128]
    .venv/bin/python scripts/bench_neighbours.py --bundle ARTIFACTS/bundles/VERSION [--exact-max 0]

Times, one after the other, what duplicates and outliers run on a catalog's vectors: the
distinct-vector grouping, ``knn`` (``--k`` neighbours, as outliers and smoothing) and
``pairs_above`` (``--threshold``, as duplicates). Then it checks them on a seeded sample of
``--sample`` items against an exhaustive search of every item: recall@k of ``knn`` (a
neighbour counts when its cosine reaches the exact k-th's) and the share of the sample's
exact pairs above the threshold that ``pairs_above`` found, and that it put in one duplicate
set (a vector held by more than ``STAR_FROM`` items lists fewer pairs, the same sets).

``--random N`` draws N seeded vectors around 20 centres (as ``bench_clusters.py``); ``--npy
FILE`` reads vectors saved with ``np.save`` (an image encoder's, say). Of those, ``--copies``
are made exact copies of another item (a re-listing with the same attributes) and ``--near``
near copies (cosine 0.93-0.995 to their source), and ``--same`` share one vector (items
with no attributes and no photo). ``--bundle`` reads a bundle's listing vectors as they
are, as the catalog page's duplicates and outliers do. ``--exact-max`` sets ``EXACT_MAX`` (0:
always the approximate index) to compare the two searches on one catalog.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from recsys.catalog_intel import neighbours
from recsys.catalog_intel.neighbours import Distinct, as_unit_vectors, knn, pairs_above


def vectors(args) -> np.ndarray:
    if args.bundle:
        from recsys.model.fusion import FusedModel

        return FusedModel.load(args.bundle).listing_vectors()
    rng = np.random.default_rng(args.seed)
    if args.npy:
        x = np.load(args.npy, allow_pickle=False).astype(np.float32)
    else:
        centres = rng.normal(size=(20, args.dims)).astype(np.float32)
        x = centres[rng.integers(0, 20, args.random)]
        x += 2.0 * rng.normal(size=x.shape).astype(np.float32)
    n, d = x.shape
    rows = rng.permutation(n)
    copies = rows[: int(args.copies * n)]
    near = rows[len(copies) : len(copies) + int(args.near * n)]
    x[copies] = x[rng.integers(0, n, len(copies))]
    sources = x[rng.integers(0, n, len(near))]
    noise = rng.normal(size=sources.shape).astype(np.float32)
    # noise of relative size s gives a cosine of about 1 / sqrt(1 + s^2): 0.995 to 0.93
    s = rng.uniform(0.1, 0.4, (len(near), 1)).astype(np.float32)
    x[near] = sources + s * noise * np.linalg.norm(sources, axis=1, keepdims=True) / np.sqrt(d)
    same = rows[len(copies) + len(near) : len(copies) + len(near) + args.same]
    x[same] = x[same[:1]]
    return x


def timed(label: str, call):
    started = time.perf_counter()
    out = call()
    print(f"{label}: {time.perf_counter() - started:.1f} s", flush=True)
    return out


def vector_options(parser: argparse.ArgumentParser) -> None:
    """The options ``vectors`` reads."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="a model bundle's folder: its listing vectors")
    source.add_argument("--random", type=int, help="this many seeded random vectors")
    source.add_argument("--npy", help="vectors saved with np.save, (N, D)")
    parser.add_argument("--dims", type=int, default=128, help="with --random")
    parser.add_argument("--copies", type=float, default=0.1, help="share of exact copies")
    parser.add_argument("--near", type=float, default=0.05, help="share of near copies")
    parser.add_argument(
        "--same", type=int, default=0, help="this many more items given one vector (no attributes)"
    )
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    vector_options(parser)
    parser.add_argument("--k", type=int, default=10, help="neighbours per item")
    parser.add_argument("--threshold", type=float, default=0.95, help="pairs from this cosine")
    parser.add_argument("--sample", type=int, default=2000, help="items checked exhaustively")
    parser.add_argument("--exact-max", type=int, default=None, help="override EXACT_MAX")
    args = parser.parse_args()
    if args.exact_max is not None:
        neighbours.EXACT_MAX = args.exact_max
    unit = as_unit_vectors(vectors(args))
    n = len(unit)
    distinct = timed("distinct vectors", lambda: Distinct.of(unit))
    m = len(distinct.rows)
    how = "exhaustive" if m <= neighbours.EXACT_MAX else f"IVF {neighbours.ivf_lists(m)} lists"
    print(f"{n:,} items of {unit.shape[1]} dimensions, {m:,} distinct ({how})", flush=True)
    sims, _ = timed(f"knn, k = {args.k}", lambda: knn(unit, args.k))
    left, right, _ = timed(
        f"pairs_above {args.threshold}", lambda: pairs_above(unit, args.threshold)
    )
    print(f"{len(left):,} pairs", flush=True)

    sample = np.sort(np.random.default_rng(args.seed).choice(n, min(args.sample, n), False))
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    started = time.perf_counter()
    exact, _ = index.search(unit[sample], args.k + 1)  # the item itself among them
    lims, _, j = index.range_search(unit[sample], float(np.nextafter(args.threshold, -1)))
    spent = time.perf_counter() - started
    print(f"exhaustive search of the {len(sample):,} sampled items: {spent:.1f} s", flush=True)
    kth = exact[:, args.k]  # the k-th other item's cosine (column 0 is the item)
    recall = (sims[sample] >= kth[:, None] - 1e-5).mean()
    print(f"knn recall@{args.k} on the sample: {recall:.4f}")
    i = np.repeat(sample, np.diff(lims.astype(np.int64)))
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    truth = set(zip(lo[lo != hi].tolist(), hi[lo != hi].tolist(), strict=True))
    found = set(zip(left.tolist(), right.tolist(), strict=True))
    if truth:
        share = len(truth & found) / len(truth)
        print(f"pairs with a sampled item: {len(truth):,} exact, {share:.4f} of them found")
        graph = sparse.csr_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
        sets = connected_components(graph, directed=False)[1]
        a, b = np.array(list(truth)).T
        print(f"  {(sets[a] == sets[b]).mean():.4f} of them in one duplicate set")


if __name__ == "__main__":
    main()
