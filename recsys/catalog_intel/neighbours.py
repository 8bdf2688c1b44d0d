"""Cosine neighbours of item vectors with FAISS, in batched calls, and vectors smoothed over
the neighbour graph.

Vectors are L2-normalised copies (cosine = inner product). Identical vectors (listings with
the same attributes and no photo, re-uploads) are searched once: the search runs over the
distinct vectors, and each item's answer is its vector's, spelt out over the items that
share it. Up to ``EXACT_MAX`` distinct vectors the search is exact (``IndexFlatIP``, items^2 x
dimensions: about 24 s for 10^5 items of 128 dimensions on 2 cores, so 40 min at 10^6); above
it, an inverted-file index (``IndexIVFFlat``, ``ivf_lists`` lists, ``NPROBE`` of them read per
query) reads about ``NPROBE / ivf_lists`` of the vectors per query, and finds most, not all,
true neighbours (``scripts/bench_neighbours.py`` measures both). Queries go in blocks of
``BLOCK``, each one ``index.search``, with a progress bar per block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
from scipy import sparse
from tqdm import tqdm

from recsys.errors import InvalidInput
from recsys.model.sparse_rows import ranges

log = logging.getLogger(__name__)

BLOCK = 4096  # queries per FAISS call
# Distinct vectors up to which every search is exhaustive; above, an IVF index is searched.
EXACT_MAX = 100_000
NPROBE = 32  # inverted lists read per query (of ivf_lists(M))
IVF_SEED = 0  # the IVF's k-means: its training sample and initialisation
# Items sharing one vector from which pairs_above pairs them with the first only (a star, not
# every pair: 1,000 identical listings are 499,500 pairs, 10^5 of them 5 x 10^9).
STAR_FROM = 1_000


def ivf_lists(m: int) -> int:
    """Inverted lists for ``m`` distinct vectors: 4 sqrt(m) (FAISS's guideline 4-16 sqrt),
    so a query reads ``NPROBE`` lists of about sqrt(m) / 4 vectors each."""
    return int(4 * np.sqrt(m))


def as_unit_vectors(vectors, name: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (N, D) array with unit rows; InvalidInput when
    it is not a finite 2-d array with at least 2 rows."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or len(arr) < 2 or arr.shape[1] < 1:
        raise InvalidInput(f"{name} must be an (N, D) array with N >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} holds NaN or infinite values; re-embed the items")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.ascontiguousarray(arr / np.maximum(norms, 1e-12))


def flat_index(unit: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    return index


def search_index(unit: np.ndarray, hits: int = 1) -> faiss.Index:
    """An inner-product index of ``unit``'s rows for searches of ``hits`` results a query:
    exhaustive up to ``EXACT_MAX`` rows, else an IVF of ``ivf_lists`` lists trained on a
    seeded sample (40 vectors a list, 10 rounds). Exhaustive too where the ``NPROBE`` lists a
    query reads hold fewer than 4 x ``hits`` vectors on average: so deep a search (an outlier
    score's k in the thousands) would read most of the catalog anyway, and miss more."""
    m, d = unit.shape
    if m <= EXACT_MAX or NPROBE * m / ivf_lists(m) < 4 * hits:
        return flat_index(unit)
    lists = ivf_lists(m)
    index = faiss.index_factory(d, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = IVF_SEED, 10
    sample = np.random.default_rng(IVF_SEED).choice(m, min(m, 40 * lists), replace=False)
    index.train(unit[np.sort(sample)])
    index.add(unit)
    index.nprobe = NPROBE
    return index


def _row_hashes(words: np.ndarray, block: int = 65_536) -> np.ndarray:
    """(N,) uint64: each row's 32-bit words times seeded odd 64-bit weights, summed (mod
    2^64); rows of equal bits hash alike. In blocks: a block's uint64 copy, not the matrix's."""
    weights = np.random.default_rng(0).integers(1, 2**63, words.shape[1], dtype=np.uint64)
    weights |= np.uint64(1)
    return np.concatenate(
        [words[i : i + block].astype(np.uint64) @ weights for i in range(0, len(words), block)]
    )


def _rows_equal(words: np.ndarray, of: np.ndarray, block: int = 65_536) -> bool:
    """Whether every row's bits equal those of row ``of[row]``."""
    return all(
        np.array_equal(words[i : i + block], words[of[i : i + block]])
        for i in range(0, len(words), block)
    )


@dataclass(frozen=True)
class Distinct:
    """The distinct rows of an (N, D) matrix, numbered by their first row: ``rows`` (M,) the
    first row of each, ascending; ``group`` (N,) each row's number; ``members`` (N,) the rows
    by number, in row order within one; ``start`` (M + 1,) each number's offset in
    ``members``."""

    rows: np.ndarray
    group: np.ndarray
    members: np.ndarray
    start: np.ndarray

    @classmethod
    def of(cls, unit: np.ndarray) -> Distinct:
        words = np.ascontiguousarray(unit).view(np.uint32)  # each row's bits
        _, first, group = np.unique(_row_hashes(words), return_index=True, return_inverse=True)
        group = group.ravel()
        if not _rows_equal(words, first[group]):  # two vectors of one hash: 1 in ~10^10
            keys = words.view(np.dtype((np.void, words[0].nbytes))).ravel()
            _, first, group = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first)  # number the vectors by their first row
        number = np.empty_like(order)
        number[order] = np.arange(len(order))
        group = number[group.ravel()]
        start = np.r_[0, np.cumsum(np.bincount(group, minlength=len(order)))]
        return cls(first[order], group, np.argsort(group, kind="stable"), start)

    @classmethod
    def split(cls, unit: np.ndarray) -> tuple[Distinct, np.ndarray]:
        """(``Distinct.of(unit)``, its distinct vectors: ``unit`` itself when none repeats)."""
        distinct = cls.of(unit)
        return distinct, unit[distinct.rows] if distinct.merged else unit

    @property
    def merged(self) -> bool:
        """True when some rows share a vector."""
        return len(self.rows) < len(self.group)

    def spelt_out(self, sims: np.ndarray, found: np.ndarray, width: int):
        """(sims, rows), each (Q, width): each query's ``found`` distinct vectors (Q, h),
        best first, replaced by the rows that hold them until ``width`` rows."""
        sizes = np.diff(self.start)[found]  # (Q, h)
        before = np.cumsum(sizes, axis=1) - sizes
        take = np.clip(width - before, 0, sizes).ravel()
        rows = self.members[ranges(self.start[found.ravel()], take)]
        return np.repeat(sims.ravel(), take).reshape(-1, width), rows.reshape(-1, width)

    def pairs(self, left: np.ndarray, right: np.ndarray, sims: np.ndarray):
        """Pairs of distinct vectors (``left`` <= ``right``; equal: the vector with itself)
        as the pairs of rows i < j that hold them, each once. A vector held by more than
        ``STAR_FROM`` rows pairs its rows with its first row only, and only that row with
        the rows of other vectors: the same sets (connected rows), without the square of
        its rows."""
        sizes = np.diff(self.start)
        large = sizes > STAR_FROM
        if large.any():
            log.warning(
                "%d vectors are each held by more than %d items (at most %d): their items "
                "are paired with the first of them only",
                large.sum(),
                STAR_FROM,
                sizes.max(),
            )
        sizes = np.where(large, 1, sizes)  # a large vector: its first row stands for it
        ls, rs = sizes[left], sizes[right]
        count = ls * rs
        pair = np.repeat(np.arange(len(left)), count)
        offset = ranges(0, count)  # each pair's place among its vectors' count pairs of rows
        i = self.members[self.start[left][pair] + offset // rs[pair]]
        j = self.members[self.start[right][pair] + offset % rs[pair]]
        keep = i != j  # a vector with itself: its rows' ordered pairs, each pair twice
        keep &= (left[pair] != right[pair]) | (i < j)
        i, j, s = [i[keep]], [j[keep]], [sims[pair][keep]]
        own = large[left] & (left == right)  # a large vector with itself
        for vector, sim in zip(left[own], sims[own], strict=True):
            rows = self.members[self.start[vector] : self.start[vector + 1]]  # > STAR_FROM
            i.append(np.full(len(rows) - 1, rows[0]))
            j.append(rows[1:])
            s.append(np.full(len(rows) - 1, sim, sims.dtype))
        i, j, s = np.concatenate(i), np.concatenate(j), np.concatenate(s)
        return np.minimum(i, j), np.maximum(i, j), s


def _search(index: faiss.Index, queries: np.ndarray, k: int, everything: np.ndarray):
    """``index.search`` of ``queries`` for ``k`` hits; rows the index did not fill (an IVF
    whose probed lists hold fewer than ``k`` vectors) searched again in ``everything``."""
    sims, found = index.search(queries, k)
    short = (found < 0).any(axis=1)
    if short.any():
        sims[short], found[short] = faiss.knn(
            queries[short], everything, k, metric=faiss.METRIC_INNER_PRODUCT
        )
    return sims, found


def knn(
    unit: np.ndarray, k: int, show_progress: bool = False, desc: str = "neighbours"
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows), each (N, k): every item's ``k`` nearest other items, best first
    (exact up to ``EXACT_MAX`` distinct vectors, approximate above).

    The item itself is left out (also when an exact duplicate ties with it); items that
    share its vector come first.
    """
    k = min(k, len(unit) - 1)
    sims = np.empty((len(unit), k), np.float32)
    rows = np.empty((len(unit), k), np.int64)
    for items, s, i in _neighbour_blocks(unit, k, show_progress, desc):
        sims[items], rows[items] = s, i
    return sims, rows


def kth_similarity(
    unit: np.ndarray, k: int, show_progress: bool = False, desc: str = "neighbours"
) -> np.ndarray:
    """(N,) each item's similarity to its ``k``-th nearest other item: ``knn``'s last column,
    without holding every item's ``k`` neighbours (10^6 items at k = 100: 1.2 GB)."""
    k = min(k, len(unit) - 1)
    kth = np.empty(len(unit), np.float32)
    for items, s, _ in _neighbour_blocks(unit, k, show_progress, desc):
        kth[items] = s[:, -1]
    return kth


def _neighbour_blocks(unit: np.ndarray, k: int, show_progress: bool, desc: str):
    """Per block of ``BLOCK`` distinct vectors: (items (b,), similarities (b, k), rows (b, k))
    of the items that hold them, as ``knn`` answers."""
    distinct, vectors = Distinct.split(unit)
    hits = min(k + 1, len(vectors))
    index = search_index(vectors, hits)
    for start in tqdm(range(0, len(vectors), BLOCK), desc=desc, disable=not show_progress):
        stop = min(start + BLOCK, len(vectors))
        s, i = _search(index, vectors[start:stop], hits, vectors)  # (b, hits)
        items = np.arange(start, stop)
        if distinct.merged:
            s, i = distinct.spelt_out(s, i, k + 1)
            items = distinct.members[distinct.start[start] : distinct.start[stop]]
            at = distinct.group[items] - start  # each item's vector among the block's
            s, i = s[at], i[at]
        own = i == items[:, None]
        # Drop the item itself, or the last column where it was not found (a tie).
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(items)), drop] = False
        yield items, s[keep].reshape(len(items), k), i[keep].reshape(len(items), k)


# Pairs ``pairs_above`` finds per distinct vector, at most (and PAIRS_FLOOR in all): a
# threshold low enough to pair most of a catalog with most of it (a cosine of 0.5 on a shop
# of similar products) would otherwise hold N^2 pairs, minutes and gigabytes at 10^4 items.
PAIRS_PER_ITEM = 20
PAIRS_FLOOR = 100_000


def pairs_above(
    unit: np.ndarray, threshold: float, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j with cosine >= ``threshold``: rows (P,), rows (P,), similarities (P,)
    (all of them up to ``EXACT_MAX`` distinct vectors, most above). ``InvalidInput`` naming
    the threshold when the distinct vectors hold more than ``PAIRS_PER_ITEM`` pairs each.

    One FAISS ``range_search`` per block of queries, over the distinct vectors.
    """
    distinct, vectors = Distinct.split(unit)
    index = search_index(vectors)
    # range_search keeps similarities > radius; nudge down so ">= threshold" holds.
    radius = float(np.nextafter(threshold, -np.inf))
    budget = max(PAIRS_FLOOR, PAIRS_PER_ITEM * len(vectors))
    left, right, sims, held = [], [], [], 0
    bar = tqdm(range(0, len(vectors), BLOCK), desc="range search", disable=not show_progress)
    for start in bar:
        lims, s, j = index.range_search(vectors[start : start + BLOCK], radius)
        i = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = i <= j if distinct.merged else i < j  # i == j: the vector's own rows pair up
        held += int(np.count_nonzero(keep))
        if held > budget:
            raise InvalidInput(
                f"threshold {threshold:g}: more than {budget:,} pairs of {len(vectors):,} "
                "items are that similar, which is not a duplicate; raise the threshold"
            )
        left.append(i[keep])
        right.append(j[keep])
        sims.append(s[keep])
    left, right, sims = np.concatenate(left), np.concatenate(right), np.concatenate(sims)
    if distinct.merged:
        return distinct.pairs(left, right, sims)
    return left, right, sims


def knn_graph(sims: np.ndarray, rows: np.ndarray, n: int) -> sparse.csr_matrix:
    """A symmetric (n, n) sparse affinity matrix from each row's neighbours (sims clipped at 0)."""
    i = np.repeat(np.arange(n), rows.shape[1])
    w = sparse.csr_matrix((np.clip(sims.ravel(), 0, None), (i, rows.ravel())), shape=(n, n))
    return w.maximum(w.T).tocsr()


def normalised_graph(
    unit: np.ndarray, k: int, self_loops: bool, show_progress: bool = False, desc: str = "graph"
) -> sparse.csr_matrix:
    """D^-1/2 W D^-1/2, W the symmetric ``k``-nearest-neighbour affinity of ``knn_graph``
    (plus the identity with ``self_loops``), D its row sums: the operator label spreading
    and ``smoothed`` multiply by."""
    sims, rows = knn(unit, k, show_progress, desc)
    w = knn_graph(sims, rows, len(unit))
    if self_loops:
        w = w + sparse.identity(len(unit), np.float32, "csr")
    d = np.asarray(w.sum(axis=1)).ravel()
    inv = sparse.diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
    return (inv @ w @ inv).tocsr()


def smoothed(
    unit: np.ndarray, k: int, steps: int, max_items: int, show_progress: bool = False
) -> list[np.ndarray]:
    """``unit`` after 0, 1, ..., ``steps`` rounds of averaging over the neighbour graph, each
    with unit rows: X <- S X, S = D^-1/2 (W + I) D^-1/2, W the symmetric ``k``-nearest-
    neighbour affinity of ``knn_graph`` (the propagation of simplified graph convolution,
    Wu et al. 2019, without labels). An item moves towards the items around it, so a
    neighbourhood that agrees pulls its members together and a stray edge counts little:
    k-means and a linear probe on few labels then see the catalog's neighbourhoods as well
    as its directions. One ``knn`` of the items (exact up to ``EXACT_MAX`` distinct vectors),
    then sparse products; above ``max_items`` items ``[unit]`` alone is returned."""
    out = [unit]
    if steps < 1:
        return out
    if len(unit) > max_items:
        log.warning(
            "%d items: over the %d that graph smoothing searches; vectors used as they are",
            len(unit),
            max_items,
        )
        return out
    s = normalised_graph(unit, k, True, show_progress, "smoothing graph").astype(np.float32)
    spread = unit
    for _ in range(steps):
        spread = s @ spread
        out.append(as_unit_vectors(spread))
    return out
