"""Per-user temporal splits and ranking metrics, shared by training and the eval script.

recall@k here is ``|top-k ∩ held-out| / min(k, |held-out|)`` per user, averaged over users
(the definition under which the reference numbers of issue 6 reproduce); training items are
never recommended.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def temporal_split(interactions: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's latest ``floor(share * n_user)`` interactions by timestamp."""
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    position = ordered.groupby("user_id").cumcount()
    size = ordered.groupby("user_id")["item_id"].transform("size")
    held = position >= size - np.floor(size * share)
    return ordered[~held], ordered[held]


def recall_at_k(top: np.ndarray, heldout: list[set[int]], k: int = 10) -> float:
    """Mean over users of |top[:k] ∩ heldout| / min(k, |heldout|); users with none skipped."""
    values = [
        len(held.intersection(row[:k].tolist())) / min(k, len(held))
        for row, held in zip(top, heldout, strict=True)
        if held
    ]
    return float(np.mean(values)) if values else float("nan")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest scores, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-scores, part, axis=1).argsort(axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def heldout_sets(test: pd.DataFrame, user_ids, item_ids) -> tuple[np.ndarray, list[set[int]]]:
    """(user rows, per user the set of held-out item rows), users/items absent are dropped."""
    users = pd.Index(np.asarray(user_ids, dtype=str))
    items = pd.Index(np.asarray(item_ids, dtype=str))
    frame = pd.DataFrame(
        {
            "u": users.get_indexer(test["user_id"].astype(str)),
            "i": items.get_indexer(test["item_id"].astype(str)),
        }
    )
    frame = frame[(frame.u >= 0) & (frame.i >= 0)]
    grouped = frame.groupby("u")["i"].apply(set)
    return grouped.index.to_numpy(), list(grouped.to_numpy())


def evaluate_scores(
    score_fn, users: np.ndarray, heldout: list[set[int]], seen: sp.csr_matrix,
    cold: np.ndarray | None = None, k: int = 10, batch: int = 1024,
) -> dict[str, float]:  # fmt: skip
    """Warm recall (all items ranked) and cold recall (cold items only, for users holding some).

    ``score_fn(user_rows) -> (U, I)`` dense scores.
    """
    warm_top, cold_top, cold_held = [], [], []
    cold_rows = np.flatnonzero(cold) if cold is not None else np.zeros(0, dtype=np.int64)
    for start in range(0, len(users), batch):
        rows = users[start : start + batch]
        scores = np.asarray(score_fn(rows), dtype=np.float32)
        scores[seen[rows].nonzero()] = -np.inf
        warm_top.append(top_k(scores, k))
        if len(cold_rows):
            cold_top.append(cold_rows[top_k(scores[:, cold_rows], k)])
    result = {f"recall@{k}": recall_at_k(np.vstack(warm_top), heldout, k)}
    if len(cold_rows):
        cold_set = set(cold_rows.tolist())
        cold_held = [h & cold_set for h in heldout]
        result[f"cold_recall@{k}"] = recall_at_k(np.vstack(cold_top), cold_held, k)
        result["cold_users"] = sum(1 for h in cold_held if h)
    return result
