"""The product page's rows, scored offline: next-item hit rate@k of each item-to-item ranker.

Each pair is an evaluated shopper's last item in the training part (the page they were on)
and their first held-out item other than it (where they went next), as the weights stage's
surface search pairs them on its validation slice (``validation.next_item_pairs``), here on
the evaluation's split: a seeded sample of at most ``PAIRS``. A ranker hits when the next
item is among the page item's ``k`` most similar items, the item itself excluded. Label-free,
like the objective the surfaces' weights are chosen on.

Rankers: the fused model's two surfaces as served (``also``, "shoppers who viewed this also
viewed", and ``similar``, "more like this") beside pure ALS item-item, the cosine of the
ALS contender's item factors (implicit's ``similar_items``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys.model.fusion import normalize_rows
from recsys.model.ranking import top_k_inner
from recsys.model.validation import next_item_pairs

PAIRS = 5_000  # pairs scored at most (a seeded sample), so the cost stays flat with users

# (query rows, k) -> (Q, k) item rows; called once with every pair's page item, so a ranker
# over a large catalog searches (``top_k_inner``) rather than scoring every item at once
Ranker = Callable[[np.ndarray, int], np.ndarray]


def cosine_ranker(factors: np.ndarray) -> Ranker:
    """Items ranked by the cosine of their ``factors`` (I, F) to the query item's."""
    unit = normalize_rows(np.asarray(factors, dtype=np.float32))

    def rank(rows: np.ndarray, k: int) -> np.ndarray:
        return top_k_inner(unit[rows], unit, k, skip=rows)

    return rank


def next_item_hits(
    rankers: dict[str, Ranker],
    train: pd.DataFrame,
    test: pd.DataFrame,
    item_ids: np.ndarray,
    k: int,
    limit: int = PAIRS,
) -> dict:
    """Per ranker, next-item hit rate@``k`` and its standard error over the split's pairs."""
    pairs = next_item_pairs(train, test, item_ids, limit)
    section = {"k": k, "pairs": len(pairs), "rankers": {}}
    if not len(pairs):
        return section
    for name, rank in rankers.items():
        hits = (rank(pairs[:, 0], k) == pairs[:, 1:]).any(axis=1)
        section["rankers"][name] = {
            f"hit_rate@{k}": float(hits.mean()),
            "stderr": float(hits.std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0,
        }
    return section
