"""The task a model is scored on, and scoring one model on it: offline evaluation's
contenders and training's choice of fusion weights both go through here.

Users are evaluated when they have training interactions and held-out items in the catalog
that they did not have in training. Training items are never recommended. Three rankings per
user: all catalog items (against all held-out items), warm items only and cold items only
(items with no training interaction; against the held-out items of that kind, for users
holding such items out). A contender that gives every cold item the same score (collaborative
ones: no training interaction, no signal) has no cold-item figures: its order among them is a
tie-break, not a ranking (``Rankings.cold_tied``).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from recsys.model import parallel
from recsys.model.data import positions
from recsys.model.ranking import (
    coverage,
    hit_matrix,
    mean_popularity,
    per_user_metrics,
    top_k_parts,
)

log = logging.getLogger(__name__)

# Scores of one batch are at most this many floats (128 MiB of float32).
MAX_BATCH_CELLS = 1 << 25


class Contender(Protocol):
    name: str

    def fit(self, train) -> Contender: ...

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        """(U, I) scores of every catalog item, in catalog order, for external user ids."""
        ...


@dataclass(frozen=True)
class Task:
    """Evaluated users (rows) against catalog items (columns)."""

    item_ids: np.ndarray  # (I,) catalog order
    user_ids: np.ndarray  # (U,) external ids of the evaluated users
    seen: sp.csr_matrix  # (U, I) training interactions: never recommended
    heldout: sp.csr_matrix  # (U, I) held-out items
    cold: np.ndarray  # (I,) bool: no training interaction
    popularity: np.ndarray  # (I,) training users per item
    history: np.ndarray  # (U,) training interactions per user
    # Counts stated in the report (test users without training history, ...).
    info: dict

    def sample(self, n: int, seed: int = 0) -> Task:
        """The task on a seeded sample of at most ``n`` of its users (bounds scoring costs)."""
        if len(self.user_ids) <= n:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.user_ids), n, replace=False))
        return replace(
            self,
            user_ids=self.user_ids[keep],
            seen=self.seen[keep],
            heldout=self.heldout[keep],
            history=self.history[keep],
        )


def build_task(train: pd.DataFrame, test: pd.DataFrame, item_ids: np.ndarray) -> Task:
    """The task of ranking, for each training user, the items they took after the split
    that they had not had before it. A held-out item the user already had in training (a
    view, then a purchase across the split) is left out: training items are never listed,
    so no model could find it, and counting it would only lower every recall (on the
    temporal split, 17% of the demo shop's pairs, 35% of the synthetic shop's). A user whose
    held-out items are all such repeats is not evaluated."""
    items = pd.Index(np.asarray(item_ids, dtype=str))
    train_users = np.sort(train["user_id"].astype(str).unique())
    taken = _matrix(test, pd.Index(train_users), items)  # (all training users, I)
    seen_all = _matrix(train, pd.Index(train_users), items)
    repeats = taken.multiply(seen_all).tocsr()
    held = (taken - repeats).tocsr()
    held.eliminate_zeros()
    evaluated = np.flatnonzero(held.getnnz(axis=1))
    history = train["user_id"].astype(str).value_counts().reindex(train_users).to_numpy()
    cold = seen_all.getnnz(axis=0) == 0
    info = {
        "evaluated_users": len(evaluated),
        "test_users_without_training_history": len(
            set(test["user_id"].astype(str)) - set(train_users)
        ),
        "cold_items": int(cold.sum()),
        "users_holding_cold_items": int((held[evaluated][:, cold].getnnz(axis=1) > 0).sum()),
        # the held-out pairs scored, and the repeats of training items left out
        "heldout_pairs": int(held[evaluated].nnz),
        "heldout_repeats": int(repeats.nnz),
        "users_holding_only_repeats": int(
            ((taken.getnnz(axis=1) > 0) & (held.getnnz(axis=1) == 0)).sum()
        ),
        # training users the split held nothing out of (a share of fewer than 5 is none)
        "users_holding_nothing_out": int((taken.getnnz(axis=1) == 0).sum()),
    }
    return Task(
        item_ids=items.to_numpy(),
        user_ids=train_users[evaluated],
        seen=seen_all[evaluated],
        heldout=held[evaluated],
        cold=cold,
        popularity=seen_all.getnnz(axis=0).astype(np.float64),
        history=history[evaluated],
        info=info,
    )


def binary_matrix(interactions: pd.DataFrame, item_ids: np.ndarray):
    """(sorted user ids, binary (users, items) CSR) of the interactions; items in catalog order."""
    users = np.sort(interactions["user_id"].astype(str).unique())
    items = pd.Index(np.asarray(item_ids, dtype=str))
    return users, _matrix(interactions, pd.Index(users), items)


def _matrix(frame: pd.DataFrame, users: pd.Index, items: pd.Index) -> sp.csr_matrix:
    """Binary (users, items) matrix of the frame's pairs; unknown users or items dropped."""
    u = positions(frame["user_id"], users)
    i = positions(frame["item_id"], items)
    keep = (u >= 0) & (i >= 0)
    ones = np.ones(int(keep.sum()), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (u[keep], i[keep])), shape=(len(users), len(items)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


@dataclass
class Rankings:
    """Top-k item rows per evaluated user, best first, -1 past the end of a short list."""

    all: np.ndarray  # (U, K)
    warm: np.ndarray  # (U, K) warm items only
    cold: np.ndarray  # (U, K) cold items only
    # (U, K) the scores of ``all``'s items (-inf past the end), when asked for
    scores: np.ndarray | None = None
    # every user's cold items (two or more) all had one score, or none a finite one
    cold_tied: bool = False


def rank(
    contender: Contender, task: Task, k: int, show_progress: bool = False, scores: bool = False
) -> Rankings:
    """Score users in batches; training items are pushed to -inf and never listed. With
    ``scores``, the listed items' scores come too. ``cold_tied`` is read off the same scores,
    batch by batch."""
    n_users, n_items = task.heldout.shape
    batch = max(1, MAX_BATCH_CELLS // max(n_items, 1))
    warm_cols, cold_cols = np.flatnonzero(~task.cold), np.flatnonzero(task.cold)
    parts: dict[str, list] = {"all": [], "warm": [], "cold": [], "scores": [], "tied": []}
    keep_scores = scores

    def batch_top(start: int) -> tuple:
        rows = np.arange(start, min(start + batch, n_users))
        scores = np.asarray(contender.scores(task.user_ids[rows]), dtype=np.float32)  # (b, I)
        scores[task.seen[rows].nonzero()] = -np.inf
        best = top_k_parts(scores, k, (warm_cols, cold_cols))
        tied = _all_tied(scores, cold_cols)
        if not keep_scores:
            return *best, None, tied
        listed = np.take_along_axis(scores, np.maximum(best[0], 0), axis=1)
        return *best, np.where(best[0] >= 0, listed, -np.inf).astype(np.float32), tied

    starts = range(0, n_users, batch)
    # batches side by side on the CPUs, gathered in their order
    tops = parallel.map_in_order(batch_top, starts)
    bar = tqdm(
        tops,
        desc=f"  score {contender.name}",
        unit="batch",
        total=len(starts),
        disable=not show_progress,
    )
    for best in bar:
        for name, part in zip(parts, best, strict=True):
            parts[name].append(part)
    lists = (_stack(parts[name], n_users, k) for name in ("all", "warm", "cold"))
    listed = np.vstack(parts["scores"]) if scores and parts["scores"] else None
    return Rankings(*lists, scores=listed, cold_tied=bool(parts["tied"]) and all(parts["tied"]))


def _all_tied(scores: np.ndarray, columns: np.ndarray) -> bool:
    """Whether each row of ``scores`` (b, I) gives all of ``columns`` (two or more) one score,
    or none of them a finite one: then their order in the row is a tie-break."""
    if len(columns) < 2:  # one cold item: no order to break
        return False
    values = np.take(scores, columns, axis=1)  # (b, C)
    same = values.max(axis=1) == values.min(axis=1)  # (b,) False where a NaN is
    return not np.isfinite(values[~same]).any()


def _stack(parts: list[np.ndarray], n_users: int, k: int) -> np.ndarray:
    return np.vstack(parts) if parts else np.zeros((n_users, k), dtype=np.int64)


def score(rankings: Rankings, task: Task, ks: tuple[int, ...], bins: tuple[int, ...]) -> dict:
    """Metrics of one contender: overall, per user segment, warm-only and cold-only items;
    the last without figures (``{"users", "tied": True}``) when ``rankings.cold_tied``."""
    per_user = per_user_metrics(
        hit_matrix(rankings.all, task.heldout), task.heldout.getnnz(axis=1), ks
    )
    overall = _mean(per_user, np.ones(len(task.user_ids), dtype=bool))
    for k in ks:
        overall[f"coverage@{k}"] = coverage(rankings.all, k, len(task.item_ids))
        overall[f"popularity@{k}"] = mean_popularity(rankings.all, k, task.popularity)
    segments = {
        label: _mean(per_user, mask) for label, mask in segment_masks(task.history, bins).items()
    }
    cold = _restricted(rankings.cold, task, task.cold, ks)
    if rankings.cold_tied and cold["users"]:  # figures of a tie-break: none
        cold = {"users": cold["users"], "tied": True}
    return {
        "overall": overall,
        "segments": segments,
        "warm_items": _restricted(rankings.warm, task, ~task.cold, ks),
        "cold_items": cold,
    }


def segment_masks(history: np.ndarray, bins: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Users by training history length: bins (5, 20) -> "1-5", "6-20", "21+"."""
    edges = [0, *bins]
    masks = {
        f"{low + 1}-{high}": (history > low) & (history <= high)
        for low, high in itertools.pairwise(edges)
    }
    masks[f"{edges[-1] + 1}+"] = history > edges[-1]
    return masks


def restricted_per_user(top: np.ndarray, task: Task, columns: np.ndarray, ks):
    """(users (U,) bool: those holding out some of ``columns``, their per-user metrics against
    those held-out items only); the metrics are empty when no user holds any."""
    held = sp.csr_matrix(task.heldout.multiply(columns[None, :]))  # (U, I)
    held.eliminate_zeros()
    n_held = held.getnnz(axis=1)
    users = n_held > 0
    if not users.any():
        return users, {}
    return users, per_user_metrics(hit_matrix(top[users], held[users]), n_held[users], ks)


def recall_per_user(rankings: Rankings, task: Task, k: int) -> tuple[np.ndarray, ...]:
    """The two headline figures per user, as the weights stage and the fused model's paired
    comparisons read them: (warm (U,), each user's all-items recall@k; holding (U,) bool,
    the users holding cold items out; cold (H,), their cold-item recall@k, empty when none
    does)."""
    held = task.heldout
    warm = per_user_metrics(hit_matrix(rankings.all, held), held.getnnz(axis=1), (k,))
    holding, cold = restricted_per_user(rankings.cold, task, task.cold, (k,))
    cold_recall = cold[f"recall@{k}"] if holding.any() else np.zeros(0)
    return warm[f"recall@{k}"], holding, cold_recall


def _restricted(top: np.ndarray, task: Task, columns: np.ndarray, ks) -> dict:
    """Ranking metrics against the held-out items among ``columns``, for users holding some."""
    users, per_user = restricted_per_user(top, task, columns, ks)
    if not users.any():
        return {"users": 0}
    return _mean(per_user, np.ones(int(users.sum()), dtype=bool))


def _mean(per_user: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    out: dict = {"users": int(mask.sum())}
    if mask.any():
        out.update({name: float(values[mask].mean()) for name, values in per_user.items()})
    return out
