"""Exact cosine neighbours of item vectors with FAISS, in batched calls, and vectors smoothed
over the neighbour graph.

Vectors are L2-normalised copies (cosine = inner product); a catalog of 10^5 items is searched
in blocks of ``BLOCK`` queries, each one ``index.search``, with a progress bar per block. An
exact search costs items^2 x dimensions: about 10 s for 60k items of 128 dimensions on 2 cores.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
from scipy import sparse
from tqdm import tqdm

from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

BLOCK = 4096  # queries per FAISS call


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


def knn(
    unit: np.ndarray, k: int, show_progress: bool = False, desc: str = "neighbours"
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows), each (N, k): every item's ``k`` nearest other items, best first.

    The item itself is left out (also when an exact duplicate ties with it).
    """
    k = min(k, len(unit) - 1)
    index = flat_index(unit)
    sims = np.empty((len(unit), k), np.float32)
    rows = np.empty((len(unit), k), np.int64)
    for start in tqdm(range(0, len(unit), BLOCK), desc=desc, disable=not show_progress):
        block = unit[start : start + BLOCK]  # (b, D)
        s, i = index.search(block, k + 1)  # (b, k + 1)
        own = i == np.arange(start, start + len(block))[:, None]
        # Drop the item itself, or the last column where it was not found (a tie).
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(block)), drop] = False
        sims[start : start + len(block)] = s[keep].reshape(len(block), k)
        rows[start : start + len(block)] = i[keep].reshape(len(block), k)
    return sims, rows


def pairs_above(
    unit: np.ndarray, threshold: float, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j with cosine >= ``threshold``: rows (P,), rows (P,), similarities (P,).

    One FAISS ``range_search`` per block of queries.
    """
    index = flat_index(unit)
    left, right, sims = [], [], []
    for start in tqdm(range(0, len(unit), BLOCK), desc="range search", disable=not show_progress):
        block = unit[start : start + BLOCK]
        # range_search keeps similarities > radius; nudge down so ">= threshold" holds.
        lims, s, j = index.range_search(block, float(np.nextafter(threshold, -np.inf)))
        i = start + np.repeat(np.arange(len(block)), np.diff(lims.astype(np.int64)))
        keep = i < j
        left.append(i[keep])
        right.append(j[keep])
        sims.append(s[keep])
    return np.concatenate(left), np.concatenate(right), np.concatenate(sims)


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
    as its directions. One exact ``knn`` of the items, then sparse products; above
    ``max_items`` items that search would take too long and ``[unit]`` alone is returned."""
    out = [unit]
    if steps < 1:
        return out
    if len(unit) > max_items:
        log.warning(
            "%d items: over the %d that graph smoothing searches exhaustively; vectors "
            "used as they are",
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
