"""Diversity: maximal marginal relevance (MMR) re-ranking over the items' content vectors,
and the intra-list measures the evaluation reports.

MMR [Carbonell & Goldstein 1998] fills a list of k from a candidate pool (the index's best
``pool_size(k, diversity)`` items) one item at a time, each time taking

    argmax_i (1 - λ) rel_i - λ max_{j already listed} sim(i, j)

where ``rel`` is the fused score min-max scaled to [0, 1] within the pool (so that λ means the
same on every catalog, whatever the scale of its scores) and ``sim`` the content similarity:
the mean over the content blocks (tabular, image) of the block cosines. λ = 0 keeps the
ranking as it is; the listed items keep their fused scores (and explanations).

``DEFAULT_DIVERSITY`` is the λ a request gets unless it asks for another: the largest of
``SWEEP`` costing at most 2% relative recall@10 on MovieLens while raising intra-list
diversity by 20% or more (``choose_diversity``; measured in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.errors import InvalidInput
from recsys.model.ranking import along

# λ of a request that does not give one (see the module docstring and benchmarks/RESULTS.md).
DEFAULT_DIVERSITY = 0.0
# The λ values `recsys evaluate` reports, and the rule choosing the default among them.
SWEEP = (0.0, 0.1, 0.3, 0.5)
MAX_RECALL_LOSS = 0.02  # relative recall@10 a default may cost
MIN_DIVERSITY_GAIN = 0.20  # relative intra-list diversity it must add
# Candidates re-ranked per list: this many times k (the neighbour table's 50 covers k = 10).
POOL_FACTOR = 3
CONTENT_BLOCKS = ("tabular", "image")


def check_diversity(diversity: float, name: str = "diversity") -> float:
    """``diversity`` as a float in [0, 1], or ``InvalidInput`` naming the field."""
    value = float(diversity)
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name} must be between 0 and 1 (0: plain ranking), got {diversity}")
    return value


def pool_size(k: int, diversity: float, n_items: int) -> int:
    """How many of the index's best items MMR chooses k from (k itself when λ is 0)."""
    return min(k if diversity <= 0 else POOL_FACTOR * k, max(n_items, 0))


def content_vectors(item_blocks: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(..., D) content vectors of item ``rows`` (any shape; -1 gives a zero vector): the
    L2-normalised content blocks side by side, each divided by sqrt(#blocks), so that an inner
    product is the mean of the block cosines. Without content blocks, the collaborative block
    (row-normalised) stands in."""
    names = [b for b in CONTENT_BLOCKS if b in item_blocks] or ["cf"]
    names = [b for b in names if b in item_blocks]
    flat = np.asarray(rows).reshape(-1)
    safe = np.maximum(flat, 0)
    parts = []
    for name in names:
        block = np.asarray(item_blocks[name][safe], dtype=np.float32)  # (R, d)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        parts.append(block / np.maximum(norms, 1e-12))
    vectors = np.hstack(parts) / np.sqrt(len(parts)) if parts else np.zeros((len(flat), 1))
    vectors[flat < 0] = 0.0
    return vectors.reshape(*np.shape(rows), -1).astype(np.float32)


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """(Q, k) pool columns in MMR order, -1 past the valid candidates.

    ``relevance`` (Q, C): scores of each query's pool, -inf for no candidate; ``vectors``
    (Q, C, D) their content vectors. λ = 0 gives the pool ordered by relevance (first
    column first among equal scores)."""
    n_queries, width = relevance.shape
    valid = np.isfinite(relevance)  # (Q, C)
    low = np.where(valid, relevance, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, relevance, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(valid, (relevance - low) / span, 0.0)  # (Q, C) in [0, 1]
    similarity = vectors @ np.swapaxes(vectors, 1, 2)  # (Q, C, C)
    chosen = np.full((n_queries, k), -1, dtype=np.int64)
    taken = ~valid
    penalty = np.zeros((n_queries, width))  # max similarity to the listed items
    queries = np.arange(n_queries)
    for step in range(min(k, width)):
        gain = np.where(taken, -np.inf, (1.0 - diversity) * scaled - diversity * penalty)
        pick = gain.argmax(axis=1)  # (Q,)
        ok = np.isfinite(gain[queries, pick])
        chosen[:, step] = np.where(ok, pick, -1)
        taken[queries, pick] = True
        near = similarity[queries, :, pick]  # (Q, C)
        penalty = near if step == 0 else np.maximum(penalty, near)
    return chosen


def diversify(
    rows: np.ndarray,
    scores: np.ndarray,
    item_blocks: dict[str, np.ndarray],
    k: int,
    diversity: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each pool (rows (Q, C), -1 padded; their scores) by MMR -> (rows (Q, k),
    scores (Q, k)), each item keeping its score; λ = 0 returns the first k as they are."""
    if diversity <= 0:
        return _pad(rows[:, :k], scores[:, :k], k)
    relevance = np.where(rows >= 0, scores, -np.inf)
    order = mmr(relevance, content_vectors(item_blocks, rows), k, diversity)  # (Q, k)
    safe = np.maximum(order, 0)
    picked = np.where(order >= 0, along(rows, safe), -1)
    kept = np.where(order >= 0, along(scores, safe), -np.inf)
    return picked, kept.astype(np.float32)


def _pad(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if rows.shape[1] >= k:
        return rows, scores
    extra = k - rows.shape[1]
    rows = np.hstack([rows, np.full((len(rows), extra), -1, dtype=rows.dtype)])
    scores = np.hstack([scores, np.full((len(scores), extra), -np.inf, dtype=scores.dtype)])
    return rows, scores


# -- what the evaluation reports ----------------------------------------------------------------


def intra_list_diversity(top: np.ndarray, item_blocks: dict[str, np.ndarray]) -> np.ndarray:
    """(U,) mean pairwise content distance (1 - sim) within each list (rows (U, K), -1 for
    none); NaN for lists of fewer than two items."""
    vectors = content_vectors(item_blocks, top)  # (U, K, D)
    similarity = vectors @ np.swapaxes(vectors, 1, 2)  # (U, K, K)
    valid = top >= 0
    pairs = valid[:, :, None] & valid[:, None, :] & ~np.eye(top.shape[1], dtype=bool)
    count = pairs.sum(axis=(1, 2))
    total = np.where(pairs, 1.0 - similarity, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def distinct_values(top: np.ndarray, labels) -> np.ndarray:
    """(U,) number of distinct attribute values among each list's items; ``labels`` is an
    (I, V) sparse 0/1 matrix of the values each item has (several for multi-valued ones)."""
    n_users, width = top.shape
    valid = top >= 0
    users = np.repeat(np.arange(n_users), width)[valid.ravel()]
    chosen = sp.csr_matrix(
        (np.ones(len(users)), (users, top[valid])), shape=(n_users, labels.shape[0])
    )
    return np.asarray((chosen @ labels > 0).sum(axis=1)).ravel()


def choose_diversity(sweep: dict[float, dict[str, float]], k: int = 10) -> float:
    """The default-λ rule: the largest λ whose recall@k is at most ``MAX_RECALL_LOSS`` below
    λ = 0's (relative) and whose intra-list diversity is ``MIN_DIVERSITY_GAIN`` or more above
    it; 0 when none is. ``sweep``: λ -> {"recall@k": ..., "diversity@k": ...}."""
    base = sweep[0.0]
    chosen = 0.0
    for lam, row in sorted(sweep.items()):
        recall_ok = row[f"recall@{k}"] >= (1 - MAX_RECALL_LOSS) * base[f"recall@{k}"]
        diverse = row[f"diversity@{k}"] >= (1 + MIN_DIVERSITY_GAIN) * base[f"diversity@{k}"]
        if lam > 0 and recall_ok and diverse:
            chosen = lam
    return chosen
