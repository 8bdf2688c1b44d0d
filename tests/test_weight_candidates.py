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


def _token_catalog(n_items: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    item_tokens = sp.random(
        n_items, 3000, density=0.002, format="csr", dtype=np.float32, random_state=seed
    )
    cf = rng.standard_normal((n_items, 3)).astype(np.float32)
    fused = SimpleNamespace(
        layout_=SimpleNamespace(dims={"cf": 3}),
        item_blocks_={"cf": cf},
        item_tokens_=item_tokens,
        token_postings=sp.csr_matrix(item_tokens.T),
    )
    histories = sp.csr_matrix(
        (np.ones(24, dtype=np.float32), (np.repeat(np.arange(6), 4), rng.choice(n_items, 24))),
        shape=(6, n_items),
    )
    queries = {
        "cf": rng.standard_normal((6, 3)).astype(np.float32),
        "tokens": histories @ item_tokens,
    }
    return fused, queries, rng


def test_wide_catalogs_find_token_candidates_as_a_feed_does(monkeypatch):
    """On a catalog of WIDE_ROW items or more, token candidates come from each profile's
    tokens' postings (the feed's budgeted lookup) instead of a pass over the catalog: the
    same items while the budget covers the profile, only items reached by its rarest tokens
    past it, and never a seen one."""
    n_items = validation.WIDE_ROW + 300
    fused, queries, rng = _token_catalog(n_items)
    cold = rng.random(n_items) < 0.3
    seen = sp.random(6, n_items, density=0.001, format="csr", random_state=8)
    reached = queries["tokens"] @ fused.token_postings  # (6, I) what each profile reaches
    best = reached[0].indices[np.argsort(-reached[0].data)[:10]]
    seen[0, best] = 1.0  # the profile's best items are seen
    seen = sp.csr_matrix(seen)

    by_postings = validation.Candidates.build(fused, queries, seen, cold, n=20)
    monkeypatch.setattr(validation, "WIDE_ROW", 10**9)
    every_pass = validation.Candidates.build(fused, queries, seen, cold, n=20)
    np.testing.assert_array_equal(by_postings.items, every_pass.items)
    np.testing.assert_allclose(by_postings.scores, every_pass.scores, rtol=1e-6)
    assert not np.isin(by_postings.items[0], seen[0].indices).any()

    monkeypatch.setattr(validation, "WIDE_ROW", n_items)
    monkeypatch.setattr(validation, "TOKEN_BUDGET", 120)  # a posting holds about 66 items
    budgeted = validation.Candidates.build(fused, {"tokens": queries["tokens"]}, seen, cold, n=20)
    lengths = []
    for q in range(6):
        found = budgeted.items[q][budgeted.items[q] >= 0]
        assert set(found) <= set(reached[q].indices) - set(seen[q].indices)
        lengths.append(len(found))
    assert min(lengths) > 0 and max(lengths) <= 120 < reached.getnnz(axis=1).min()


def test_a_weighting_ranks_candidates_by_their_weighted_scores_cold_items_scaled():
    """The weight search's ranking of candidates: the weighted sum of block scores, cold
    items' blocks times their multipliers; warm and cold lists hold only their own items."""
    rng = np.random.default_rng(9)
    items = np.sort(rng.permutation(400)[:200].reshape(5, 40), axis=1)
    items[2, 30:] = -1  # a short list
    scores = rng.random((5, 40, 3), dtype=np.float32)
    cold = rng.random(400) < 0.3
    candidates = validation.Candidates(items, scores, ("cf", "tabular", "tokens"), cold)
    weights, cold_scale = {"cf": 2.0, "tabular": 0.0, "tokens": 0.5}, {"cf": 0.25, "tokens": 1.0}
    got = candidates.rank(weights, cold_scale, 5)
    is_cold = cold[np.maximum(items, 0)]
    total = 2.0 * np.where(is_cold, 0.25, 1.0) * scores[:, :, 0] + 0.5 * scores[:, :, 2]
    total[items < 0] = -np.inf
    for kind, keep in (("all", np.ones_like(is_cold)), ("warm", ~is_cold), ("cold", is_cold)):
        masked = np.where(keep, total, -np.inf)
        order = np.argsort(-masked, axis=1, kind="stable")[:, :5]
        expected = np.where(
            np.isfinite(np.take_along_axis(masked, order, 1)),
            np.take_along_axis(items, order, 1),
            -1,
        )
        np.testing.assert_array_equal(getattr(got, kind), expected)


def test_candidates_are_the_same_on_any_number_of_cpus(monkeypatch):
    """Query batches run side by side on the CPUs and are gathered in their order."""
    from recsys.model import parallel

    fused, queries, rng = _token_catalog(2000)
    cold = rng.random(2000) < 0.3
    seen = sp.csr_matrix(sp.random(6, 2000, density=0.01, random_state=3))
    monkeypatch.setattr(validation, "MAX_BATCH_CELLS", 4000)  # two queries a batch
    built = {}
    for count in (1, 3):
        monkeypatch.setattr(parallel, "cpus", lambda count=count: count)
        built[count] = validation.Candidates.build(fused, queries, seen, cold, n=20)
    np.testing.assert_array_equal(built[1].items, built[3].items)
    np.testing.assert_array_equal(built[1].scores, built[3].scores)


def test_cpus_keep_to_omp_num_threads(monkeypatch):
    from recsys.model import parallel

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.cpus() == 1
    assert list(parallel.map_in_order(lambda x: x * x, range(5))) == [0, 1, 4, 9, 16]
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert parallel.cpus() >= 1
    assert list(parallel.map_in_order(lambda x: -x, range(40))) == [-x for x in range(40)]
