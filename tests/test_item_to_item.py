"""Next-item hit rate of item-to-item rankers (recsys.evaluation.item_to_item)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.evaluation.item_to_item import cosine_ranker, next_item_hits

ITEMS = np.array([f"i{n}" for n in range(6)])


def _events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def test_a_hit_is_the_next_item_among_the_page_items_k_most_similar():
    # u1: page i0 -> next i1; u2: page i2 -> next i3; u3 has no page (no training item)
    train = _events([("u1", "i5"), ("u1", "i0"), ("u2", "i2")])
    test = _events([("u1", "i1"), ("u2", "i3"), ("u2", "i4"), ("u3", "i4")])
    follow = {0: 1, 2: 3}  # a ranker that knows where shoppers go next from i0 and i2

    def oracle(rows, k):
        return np.array([[follow[r], *[c for c in range(6) if c not in (r, follow[r])][: k - 1]]
                         for r in rows])  # fmt: skip

    def wrong(rows, k):
        return np.array([[c for c in range(6) if c not in (r, follow[r])][:k] for r in rows])

    section = next_item_hits({"oracle": oracle, "wrong": wrong}, train, test, ITEMS, k=2)
    assert section["pairs"] == 2
    assert section["rankers"]["oracle"]["hit_rate@2"] == 1.0
    assert section["rankers"]["wrong"]["hit_rate@2"] == 0.0


def test_cosine_ranker_never_returns_the_query_and_ranks_by_angle_not_length():
    factors = np.array([[1.0, 0.0], [10.0, 1.0], [1.0, 0.01], [0.0, 1.0]])
    ranked = cosine_ranker(factors)(np.array([0, 3]), 2)
    assert ranked[0].tolist() == [2, 1]  # i2 is closest in angle though i1 is longer
    assert 3 not in ranked[1] and ranked[1][0] == 1
