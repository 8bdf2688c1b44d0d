"""The weights stage's candidate scores: token terms scored set-wise equal the full product."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.model import validation


@pytest.mark.parametrize("threshold", [0, 10**9])  # looked up pair by pair / gathered from all
def test_candidate_token_scores_are_the_profiles_dots_either_way(threshold, monkeypatch):
    monkeypatch.setattr(validation, "PAIR_MIN_ITEMS_PER_CANDIDATE", threshold)
    item_tokens = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    fused = SimpleNamespace(item_tokens_=item_tokens, token_postings=sp.csr_matrix(item_tokens.T))
    profiles = sp.random(6, 30, density=0.3, format="csr", dtype=np.float32, random_state=1)
    items = np.random.default_rng(2).integers(0, 50, size=(6, 8))
    items[1, 5:] = -1  # padding
    got = validation._candidate_token_scores(fused, profiles, items, batch=4)
    full = (profiles @ item_tokens.T).toarray()
    expected = np.where(items >= 0, np.take_along_axis(full, np.maximum(items, 0), 1), 0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_popularity_candidates_from_one_order_equal_a_pass_over_the_catalog(monkeypatch):
    """On a catalog of WIDE_ROW items or more, the one-number popularity block's candidates
    come from one sorted order instead of a pass per query batch: the same items."""
    n_items = validation.WIDE_ROW + 300
    rng = np.random.default_rng(4)
    # Distinct values: below WIDE_ROW columns (the cold items here) a pass breaks ties at
    # the cut in no set order.
    popularity = (rng.permutation(n_items)[:, None] / n_items).astype(np.float32)
    cf = rng.standard_normal((n_items, 3)).astype(np.float32)
    fused = SimpleNamespace(
        layout_=SimpleNamespace(dims={"cf": 3, "popularity": 1}),
        item_blocks_={"cf": cf, "popularity": popularity},
    )
    queries = {
        "cf": rng.standard_normal((5, 3)).astype(np.float32),
        "popularity": np.ones((5, 1), dtype=np.float32),
    }
    cold = rng.random(n_items) < 0.3
    seen = sp.random(5, n_items, density=0.001, format="csr", random_state=5)
    seen[0, np.flatnonzero(popularity[:, 0] >= 0.99)[:40]] = 1.0  # most of the top seen
    one_order = validation.Candidates.build(fused, queries, seen, cold, n=60)
    monkeypatch.setattr(validation, "_rank_one_orders", lambda *args: {})
    every_pass = validation.Candidates.build(fused, queries, seen, cold, n=60)
    np.testing.assert_array_equal(one_order.items, every_pass.items)
    np.testing.assert_array_equal(one_order.scores, every_pass.scores)
    assert not np.isin(one_order.items[0], seen[0].indices).any()
