"""Outlier scores: how far each item is from its k-th nearest other item.

    scorer = OutlierScorer().fit(vectors)
    scorer.scores_    # (N,) 1 - cosine to the k-th neighbour; higher = more unusual
    scorer.flagged_   # (N,) bool, the items above threshold_

Expected false-positive rate: ``threshold_`` is the (1 - false_positive_rate) quantile of the
catalog's own scores, so ``false_positive_rate`` x N items are flagged. When a share c of the
catalog are true outliers and the score ranks them first, the share of ordinary items
flagged is (fpr - c) / (1 - c) <= fpr; it reaches fpr only when the score misses every
outlier. No labels are needed, and none are assumed.

k defaults to 2% of the catalog, at least 10 and at most 100: a wrong photo uploaded for a
whole batch of listings makes a small group of near-identical odd items, which a small k would
call ordinary (they are each other's neighbours); with k above the group's size they stand
out. The cap keeps a large catalog's search shallow (2% of 10^6 items would be 20,000
neighbours an item, 240 GB of them) and lets it use the approximate index above
``neighbours.EXACT_MAX`` distinct vectors; a batch of more than 100 identical odd listings is
a group of its own, which clusters show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator

from recsys.catalog_intel.neighbours import as_unit_vectors, kth_similarity
from recsys.errors import InvalidInput


@dataclass(frozen=True)
class OutlierConfig:
    # Neighbour rank the score reads; None = k_share x N, at least 10 and at most k_max.
    k: int | None = None
    k_share: float = 0.02
    k_max: int = 100
    # Share of the catalog flagged (see the module docstring for what it means).
    false_positive_rate: float = 0.01


class OutlierScorer(BaseEstimator):
    """Distance to the k-th neighbour [Ramaswamy et al. 2000] with a quantile threshold."""

    def __init__(self, config: OutlierConfig | None = None, show_progress: bool = False):
        self.config = config
        self.show_progress = show_progress

    def fit(self, vectors) -> OutlierScorer:
        cfg = self.config or OutlierConfig()
        if not 0 < cfg.false_positive_rate < 1:
            raise InvalidInput(
                f"false_positive_rate must be in (0, 1), got {cfg.false_positive_rate}"
            )
        unit = as_unit_vectors(vectors)
        k = cfg.k or min(max(10, round(cfg.k_share * len(unit))), cfg.k_max)
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        self.k_ = min(k, len(unit) - 1)
        kth = kth_similarity(unit, self.k_, self.show_progress, "outlier scores")
        self.scores_ = (1.0 - kth).astype(np.float32)  # (N,)
        self.threshold_ = threshold_at(self.scores_, cfg.false_positive_rate)
        self.flagged_ = self.scores_ > self.threshold_
        return self

    def top(self, n: int) -> np.ndarray:
        """Rows of the ``n`` highest scores, highest first."""
        return top_rows(self.scores_, n)


def threshold_at(scores: np.ndarray, false_positive_rate: float) -> float:
    """The score above which ``false_positive_rate`` of the items lie."""
    return float(np.quantile(scores, 1 - false_positive_rate))


def top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` highest scores, highest first (ties: lower row first), without
    sorting the whole catalog."""
    n = min(n, len(scores))
    if n == 0:
        return np.zeros(0, np.int64)
    rows = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    kept = scores[rows]
    # argpartition cuts ties at the n-th score anywhere: take the lowest rows among them
    tied = np.flatnonzero(scores == kept.min())
    rows = np.union1d(rows[kept > kept.min()], tied[: n - int((kept > kept.min()).sum())])
    return rows[np.lexsort((rows, -scores[rows]))]
