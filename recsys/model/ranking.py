"""Top-k selection and the ranking metrics: the one home of both for serving, training's
validation and offline evaluation.

``top_k(scores, k)`` picks each row's best columns. The metrics take ``top`` (U, K) item rows
per user, best first, ``-1`` where a list is shorter, and ``heldout`` (U, I) sparse, non-zero
where user u held item i out. Per user, with ``h_j = 1`` when the item at rank j (1-based) is
held out and ``H`` the held-out count:

- recall@k = sum_{j<=k} h_j / min(k, H)
- precision@k = sum_{j<=k} h_j / k
- nDCG@k = sum_{j<=k} h_j / log2(j + 1), divided by its best value, that of min(k, H) hits
- MAP@k: AP@k = sum_{j<=k} h_j * precision@j / min(k, H)
- MRR@k = 1 / (rank of the first hit), 0 without a hit in the top k
- hit rate@k = 1 when any of the top k is held out

Users without held-out items must be left out by the caller. ``coverage`` and
``mean_popularity`` describe the lists themselves (no held-out items needed).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

RANKING_METRICS = ("recall", "precision", "ndcg", "map", "mrr", "hit_rate")


# Rows at least this wide are cut at their k-th largest score (``_top_k_wide``) instead of
# argpartitioned: argpartition writes an int64 index per cell, and on a catalog's worth of
# columns that costs more than the selection. 2^25 cells, k 200, one thread, best of 3
# (scripts/bench_top_k.py, benchmarks/RESULTS.md session 14): 10^6 columns 0.87 s -> 0.23 s,
# 10^5 0.51 s -> 0.23 s, 3 * 10^4 and 9,000 level; on narrow rows with many queries (3,000 x
# 1,500, k 10-50) argpartition is as fast or faster.
WIDE_ROW = 32_768


def along(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``values[q, columns[q, j]]`` for each row q: ``np.take_along_axis(values, columns,
    axis=1)`` for 2-d arrays, without its index grids (about 40% of its time on a
    request's few rows)."""
    return values[np.arange(len(values))[:, None], columns]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, min(k, I)) column indices of each row's k largest scores, best first. Of equal
    scores the lower columns come first, at any width: in the list, and where the cut falls
    among them (the first columns are kept). -inf ranks below every number, NaN below -inf."""
    scores = np.atleast_2d(scores)
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), dtype=np.int64)
    if scores.shape[1] >= WIDE_ROW and not np.isnan(scores.max()):  # max: NaN if any is
        return _top_k_wide(scores, k)
    return _top_k_partitioned(scores, k)


def _top_k_partitioned(scores: np.ndarray, k: int) -> np.ndarray:
    """``top_k`` by argpartition, for 0 < k <= I. Argpartition keeps any of the columns tied
    at a row's k-th largest score; the rows with more of them than it kept are cut again, so
    that the first ones stay (``_first_at_cut``)."""
    negated = -scores  # (Q, I); NaN stays NaN, which argpartition and argsort place last
    part = np.argpartition(negated, k - 1, axis=1)[:, :k]  # (Q, k), in no set order
    cut = along(negated, part[:, k - 1 :])  # (Q, 1) each row's k-th best, negated
    at_cut = _equal(negated, cut)  # (Q, I)
    kept = _equal(along(negated, part), cut)  # (Q, k)
    # int32: 3x as fast as count_nonzero
    tied = np.flatnonzero(at_cut.sum(axis=1, dtype=np.int32) > kept.sum(axis=1))
    if len(tied):
        part[tied] = _first_at_cut(part[tied], kept[tied], at_cut[tied])
    part.sort(axis=1)  # column order, which the stable sort keeps among equal scores
    order = along(negated, part).argsort(axis=1, kind="stable")
    return along(part, order)


def _equal(values: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """``values == cut`` for (Q, n) values and (Q, 1) cuts, NaN equal to NaN."""
    same = values == cut
    nan = np.isnan(cut[:, 0])
    if nan.any():  # the cut of a row with fewer than k numbers
        same[nan] = np.isnan(values[nan])
    return same


def _first_at_cut(part: np.ndarray, kept: np.ndarray, at_cut: np.ndarray) -> np.ndarray:
    """``part`` (T, k) with its columns at the cut (``kept`` (T, k)) replaced by the first
    columns at the cut (``at_cut`` (T, I)), as many as it held. Most rows hold enough of them
    in their first 4k columns (a block of equal scores, such as new items' zeros): those
    read only that many."""
    need = kept.sum(axis=1)  # (T,)
    prefix = at_cut[:, : 4 * part.shape[1]]
    enough = prefix.sum(axis=1, dtype=np.int32) >= need
    part = part.copy()
    for rows, columns in ((enough, prefix), (~enough, at_cut)):
        if rows.any():
            found = part[rows]
            found[kept[rows]] = _first_columns(columns[rows], need[rows])  # both by row
            part[rows] = found
    return part


def _first_columns(mask: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The first ``n[r]`` True columns of each row r of ``mask`` (T, I), by row, then column;
    each row holds at least ``n[r]``."""
    # flatnonzero: np.nonzero of a 2-d array takes 15x as long
    rows, columns = np.divmod(np.flatnonzero(mask), mask.shape[1])
    counts = np.bincount(rows, minlength=len(mask))  # (T,)
    place = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]  # 0 at a row's first
    return columns[place < n[rows]]


def _top_k_wide(scores: np.ndarray, k: int) -> np.ndarray:
    """``top_k`` from each row's k-th largest score: the columns above it and, in column
    order, as many of those equal to it as the k places leave."""
    n = scores.shape[1]
    cut = np.partition(scores, n - k, axis=1)[:, n - k]  # (Q,)
    out = np.empty((len(scores), k), dtype=np.int64)
    for row, (values, at) in enumerate(zip(scores, cut, strict=True)):  # Q <= cells / I
        above = np.flatnonzero(values > at)
        level = np.flatnonzero(values == at)[: k - len(above)]
        picked = np.concatenate([above, level])
        out[row] = picked[np.argsort(-values[picked], kind="stable")]
    return out


def top_k_inner(
    queries: np.ndarray, items: np.ndarray, k: int, skip: np.ndarray | None = None
) -> np.ndarray:
    """(Q, min(k, I)) rows of ``items`` (I, D) with the largest inner products with each of
    ``queries`` (Q, D), best first: ``top_k(queries @ items.T, k)`` without the (Q, I)
    scores. FAISS's exact search reads the items in blocks on every core and keeps each
    query's best k, so a catalog of 10^6 items costs (Q, k) of memory, not (Q, 10^6), and no
    selection pass over every score. ``skip``: (Q,) one row each query leaves out (say, the
    query's own item). Unlike ``top_k``, which of several equal scores at the cut are kept
    is FAISS's choice (the same on every run); the list is ordered by score, then row. The
    scores are float32 sums in FAISS's order, so items whose scores differ only in their
    last bits may trade places with ``top_k``'s."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    k = min(k, len(items) - (skip is not None))
    if k <= 0 or not len(queries):
        return np.zeros((len(queries), max(k, 0)), dtype=np.int64)
    import faiss  # the search only; the rest of this module is numpy

    reach = k + (skip is not None)  # one more, in case a query's skipped row is among them
    scores, found = faiss.knn(queries, items, reach, metric=faiss.METRIC_INNER_PRODUCT)
    if skip is not None:
        scores[found == np.asarray(skip, dtype=np.int64)[:, None]] = -np.inf
    # FAISS lists equal scores in no set order: by score, then row
    order = np.lexsort((found, -scores), axis=1)[:, :k]
    return along(found, order)


def top_k_finite(scores: np.ndarray, k: int, columns: np.ndarray | None = None) -> np.ndarray:
    """(Q, k) best of ``columns`` (all when None) as column numbers, -1 past the end and for
    excluded (-inf or NaN) places; equal scores as in ``top_k``, lower columns first."""
    out = np.full((len(scores), k), -1, dtype=np.int64)
    if (columns is not None and not len(columns)) or not scores.shape[1] or k <= 0:
        return out
    # np.take, not scores[:, columns]: the latter is column-major and rows cost 5x as much
    sub = scores if columns is None else np.take(scores, columns, axis=1)  # (Q, C)
    best = top_k(sub, k)
    finite = np.isfinite(along(sub, best))
    out[:, : best.shape[1]] = np.where(finite, best if columns is None else columns[best], -1)
    return out


def top_k_parts(
    scores: np.ndarray, k: int, parts: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """``top_k_finite`` of the whole rows, then of each column set of ``parts`` (sorted,
    disjoint, together every column). On rows of ``WIDE_ROW`` columns or more the whole
    rows' lists are merged from the parts' (value, then column: the same lists), which
    saves a pass over the catalog."""
    if scores.shape[1] < WIDE_ROW or np.isnan(scores.max()):
        return top_k_finite(scores, k), *(top_k_finite(scores, k, c) for c in parts)
    best = [top_k_finite(scores, k, columns) for columns in parts]  # (Q, k)
    columns = np.hstack(best)  # (Q, P * k), -1 where a part ran short
    values = along(scores, np.maximum(columns, 0))
    values[columns < 0] = -np.inf
    order = np.lexsort((columns, -values), axis=1)[:, :k]
    merged = along(columns, order)
    finite = np.isfinite(along(values, order))
    return np.where(finite, merged, -1), *best


def first_kept(
    rows: np.ndarray, scores: np.ndarray, keep: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows (Q, k) int64, scores (Q, k) float32): the first ``k`` kept entries of each
    ranked row of ``rows`` / ``scores`` (best first), in rank order; -1 and -inf where fewer
    than ``k`` are kept."""
    if k <= rows.shape[1] and keep[:, :k].all():  # nothing to skip: a plain slice
        return rows[:, :k].astype(np.int64), scores[:, :k].astype(np.float32)
    out_rows = np.full((len(rows), k), -1, dtype=np.int64)
    out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    place = np.cumsum(keep, axis=1)  # 1-based place of each kept entry in its row's answer
    q, j = np.nonzero(keep & (place <= k))
    at = place[q, j] - 1
    out_rows[q, at] = rows[q, j]
    out_scores[q, at] = scores[q, j]
    return out_rows, out_scores


def reserved_places(listed: np.ndarray, new: np.ndarray, offered: np.ndarray, n: int) -> np.ndarray:
    """(Q, K) positions into ``[list | offer]`` (each row's K listed entries, then its K'
    offered ones), -1 past the end: each list with at least ``n`` new items where it can
    have them. ``listed`` (Q, K) bool: the entry is there (not padding); ``new`` (Q, K)
    bool: it is a new item; ``offered`` (Q, K') bool: the row's new items not listed, best
    first, that may take a place. A list showing fewer than ``n`` new items takes the best
    offered ones, up to ``n`` in all: first into its empty places, then into those of its
    lowest-placed other entries; the offered come after what stays, in their order.
    Everything else keeps its place and order."""
    k = listed.shape[1]
    new = new & listed
    need = np.clip(min(n, k) - new.sum(axis=1), 0, None)  # (Q,)
    take = offered & (np.cumsum(offered, axis=1) <= need[:, None])
    others = listed & ~new
    drop = np.clip(listed.sum(axis=1) + take.sum(axis=1) - k, 0, None)  # (Q,)
    from_end = np.cumsum(others[:, ::-1], axis=1)[:, ::-1]  # 1 at the lowest other
    kept = listed & ~(others & (from_end <= drop[:, None]))
    both = np.hstack([kept, take])
    positions = np.broadcast_to(np.arange(both.shape[1]), both.shape)
    order = np.argsort(~both, axis=1, kind="stable")[:, :k]
    return np.where(
        np.take_along_axis(both, order, axis=1), np.take_along_axis(positions, order, axis=1), -1
    )


def hit_matrix(top: np.ndarray, heldout: sp.spmatrix) -> np.ndarray:
    """(U, K) bool: whether ``top[u, j]`` is one of user u's held-out items."""
    n_items = heldout.shape[1]
    coo = sp.coo_matrix(heldout)
    held_keys = coo.row.astype(np.int64) * n_items + coo.col.astype(np.int64)  # (nnz,)
    keys = np.arange(len(top), dtype=np.int64)[:, None] * n_items + top  # (U, K)
    return np.isin(keys, held_keys) & (top >= 0)


def per_user_metrics(
    hits: np.ndarray, n_heldout: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """``"<metric>@<k>" -> (U,)`` values for every ranking metric and k; needs n_heldout >= 1."""
    hits = _pad(hits.astype(np.float64), max(ks))  # (U, K)
    n_heldout = np.asarray(n_heldout, dtype=np.int64)
    ranks = np.arange(1, hits.shape[1] + 1)  # (K,)
    discount = 1.0 / np.log2(ranks + 1)  # (K,)
    ideal = np.cumsum(discount)  # (K,) best DCG with 1..K hits
    found = np.cumsum(hits, axis=1)  # (U, K) hits within the first j
    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, :k]  # (U, k)
        best = np.minimum(k, n_heldout)  # (U,)
        out[f"recall@{k}"] = found[:, k - 1] / best
        out[f"precision@{k}"] = found[:, k - 1] / k
        out[f"ndcg@{k}"] = (top @ discount[:k]) / ideal[best - 1]
        out[f"map@{k}"] = (top * found[:, :k] / ranks[:k]).sum(axis=1) / best
        first = np.where(top.any(axis=1), top.argmax(axis=1) + 1, np.inf)
        out[f"mrr@{k}"] = 1.0 / first
        out[f"hit_rate@{k}"] = top.any(axis=1).astype(np.float64)
    return out


def coverage(top: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalog's items that appear in at least one user's top k."""
    shown = top[:, :k]
    return float(len(np.unique(shown[shown >= 0])) / n_items) if n_items else float("nan")


def mean_popularity(top: np.ndarray, k: int, popularity: np.ndarray) -> float:
    """Mean over users of the mean training popularity of their top-k items (ARP)."""
    shown = top[:, :k]  # (U, k)
    valid = shown >= 0
    values = np.where(valid, popularity[np.maximum(shown, 0)], 0.0)
    per_user = values.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    users = valid.any(axis=1)
    return float(per_user[users].mean()) if users.any() else float("nan")


def _pad(hits: np.ndarray, width: int) -> np.ndarray:
    """Lists shorter than the largest k (few candidates) count as misses beyond their end."""
    if hits.shape[1] >= width:
        return hits[:, :width]
    return np.hstack([hits, np.zeros((len(hits), width - hits.shape[1]))])
