"""The feed's exact token term: served feeds rank by the same score the evaluation uses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.model.bundle import load_recommender
from recsys.model.cf import CFConfig
from recsys.model.config import TrainConfig, WeightGrid
from recsys.model.data import CatalogData
from recsys.model.fusion import TOKEN_PROFILES, TOKENS, FusionConfig
from recsys.model.protocol import build_task, rank, score
from recsys.model.ranking import top_k
from recsys.model.recommender import token_candidates
from recsys.model.split import temporal_split
from recsys.model.training import fit_in_memory, train
from tests.shop_fixture import populate, train_config


def _with_token_weight(recommender, weight: float):
    fused = recommender.fused
    weights = {**fused.weights_, TOKENS: weight}
    fused.set_weights(weights, fused.cold_scale_, fused.surface_weights_)
    return recommender


@pytest.mark.parametrize("profile", TOKEN_PROFILES)
def test_served_feeds_rank_by_the_index_score_plus_the_token_term(engine, tmp_path, profile):
    populate(engine)
    config = replace(train_config(), fusion=FusionConfig(token_profile=profile))
    recommender = _with_token_weight(load_recommender(train(engine, tmp_path, config).path), 3.0)
    fused = recommender.fused
    assert fused.has_tokens  # saved with the bundle and mapped back
    users = list(recommender.cf.user_ids_)
    full = fused.user_vectors() @ fused.item_vectors_.T + fused.token_scores(fused.user_tokens_)
    full[recommender.cf.user_items_.nonzero()] = -np.inf  # seen items are never listed
    expected = recommender.item_ids[top_k(full, 5)]
    served = recommender.recommend(users, k=5)
    assert served.ids == expected.tolist()
    # a k = 1 feed is the first of the k = 5 one (it ranked 2 and 2 items, and missed it)
    for k in (1, 2):
        assert recommender.recommend(users, k=k).ids == expected[:, :k].tolist()
    # the token term moved some feed: it is not the index's ranking alone
    plain = _with_token_weight(recommender, 0.0).recommend(users, k=5)
    assert plain.ids != served.ids
    # every listed item's reasons still add up to its score
    _with_token_weight(recommender, 3.0)
    for scores, reasons in zip(served.scores, served.because, strict=True):
        for value, parts in zip(scores, reasons, strict=True):
            assert abs(sum(r.share for r in parts) - value) < 1e-4


def test_a_feed_that_nothing_passes_is_empty_with_the_token_term(engine, tmp_path):
    """Filters no item passes, or candidates all seen or filtered out: an empty feed, for a
    stored user and for one with fresh events (it was an IndexError, a 500 in the service)."""
    populate(engine)
    recommender = _with_token_weight(
        load_recommender(train(engine, tmp_path, train_config()).path), 3.0
    )
    seen = recommender.seen_items("u1")
    asked = [
        recommender.recommend(["u1"], k=3, filters={"brand": "nobody"}),
        recommender.recommend(["u1"], k=3, candidates=seen[:2]),  # both seen
        recommender.recommend_for_history([[*seen, "a2"]], k=3, filters={"brand": "nobody"}),
    ]
    for results in asked:
        assert results.ids == [[]] and results.scores[0].size == 0
    assert recommender.recommend(["u1"], k=3).ids[0]  # the feed itself is not empty


def test_past_its_budget_a_feed_reads_its_rarest_tokens_and_still_scores_exactly(engine, tmp_path):
    populate(engine)
    recommender = _with_token_weight(
        load_recommender(train(engine, tmp_path, train_config()).path), 3.0
    )
    fused = recommender.fused
    users = list(recommender.cf.user_ids_)
    full = fused.user_vectors() @ fused.item_vectors_.T + fused.token_scores(fused.user_tokens_)
    profile = fused.user_tokens_[[0]]
    every, _ = token_candidates(fused, profile, budget=10**9)
    lengths = np.diff(fused.token_postings.indptr)[profile.indices]
    budget = int(lengths.max()) - 1  # the profile's most common token is left out
    some, _ = token_candidates(fused, profile, budget)
    assert len(some) <= budget and set(some) <= set(every) and len(some) < len(every)
    recommender.token_budget = 3
    served = recommender.recommend(users, k=5)
    for user, ids, scores in zip(users, served.ids, served.scores, strict=True):
        row = recommender.cf.user_index_.rows([user])[0]
        exact = full[row, recommender.item_index.rows(ids)]
        np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-6)
        assert list(scores) == sorted(scores, reverse=True)


def _seller_shop(seed: int = 0):
    """600 items from 60 sellers; each shopper buys from two sellers; half the items are new."""
    rng = np.random.default_rng(seed)
    seller = np.arange(600) % 60
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(600)],
            "title": None,
            "image_path": None,
            "in_stock": True,
            "seller": [f"s{s}" for s in seller],
        }
    )
    users = np.repeat(np.arange(400), 12)
    sellers = np.stack([rng.choice(60, 2, replace=False) for _ in range(400)])[users]
    picked = sellers[np.arange(len(users)), rng.integers(0, 2, len(users))]
    liked = rng.integers(0, 10, len(users)) * 60 + picked  # any item of that seller
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{k}" for k in liked],
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.tile(np.arange(12), 400), unit="D"),
        }
    ).drop_duplicates(["user_id", "item_id"])
    # items of rows 5..9 of every seller never appear before the held-out days: new items
    new = interactions["item_id"].str[1:].astype(int) // 60 >= 5
    interactions = interactions[~new | (interactions["timestamp"] >= "2024-01-11")]
    return CatalogData(items, {"seller": "categorical"}, interactions)


def test_the_weights_stage_gives_tokens_weight_when_sellers_carry_taste():
    data = _seller_shop()
    train_part, test = temporal_split(data.interactions, 0.2)
    part = CatalogData(data.items, data.kinds, train_part)
    task = build_task(train_part, test, data.items["item_id"].to_numpy(dtype=str))
    # ALS held weak (8 factors, pinned: 64 would learn the sellers' shoppers by themselves)
    config = TrainConfig(cf=CFConfig(factors=8, regularization=0.5), grid=WeightGrid(factors=()))
    fitted = fit_in_memory(part, config)
    fused, users = fitted.fused, list(fitted.cf.user_ids_)
    assert fused.weights_[TOKENS] > 0

    class Fused:
        name = "fused"

        def scores(self, ids):
            rows = [users.index(u) for u in ids]
            dense = fused.user_vectors(rows) @ fused.item_vectors_.T
            return dense + fused.token_scores(fused.user_tokens_[rows])

    metrics = score(rank(Fused(), task, 10), task, (10,), ())
    assert metrics["cold_items"]["recall@10"] > 0.2  # new items found by their seller
