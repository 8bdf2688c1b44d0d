"""The weights stage's cold search: cold items' own block weights, chosen on a cold-only
objective, move only when the validation's cold items say so significantly."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.model.cf import CFConfig
from recsys.model.config import TrainConfig, WeightGrid
from recsys.model.data import CatalogData
from recsys.model.fusion import TOKENS, FusionConfig
from recsys.model.protocol import build_task, rank, score
from recsys.model.split import temporal_split
from recsys.model.training import fit_in_memory
from recsys.model.validation import Scored, _cold_search


def _launch_shop(users: int, informative: bool, seed: int = 0) -> CatalogData:
    """2,400 items from 400 sellers, launched over 30 days. Each shopper follows two sellers
    and one of 12 hidden groups of items and, on 20 days, views an item launched by then:
    one of the sellers' or, as often, one of the group's, so every slice of the timeline holds
    items nobody had seen before, and only their seller says who will view them.
    ``informative`` False: the seller an item lists is drawn at random (it says nothing)."""
    rng = np.random.default_rng(seed)
    n_items, n_sellers, n_groups, days = 2400, 400, 12, 30
    seller = np.arange(n_items) % n_sellers
    group = rng.integers(0, n_groups, n_items)
    launch = rng.integers(0, days, n_items)
    listed = seller if informative else rng.permutation(seller)
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n_items)],
            "title": None,
            "image_path": None,
            "in_stock": True,
            "seller": [f"s{s}" for s in listed],
        }
    )
    rows = []
    for u in range(users):
        follows, likes = rng.choice(n_sellers, 2, replace=False), rng.integers(n_groups)
        for day in np.sort(rng.choice(days, 20, replace=False)):
            taste = np.isin(seller, follows) if rng.random() < 0.5 else group == likes
            pool = np.flatnonzero(taste & (launch <= day))
            if len(pool):
                rows.append((f"u{u}", f"i{rng.choice(pool)}", day))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "day"])
    frame = frame.drop_duplicates(["user_id", "item_id"])
    interactions = frame.assign(
        event="view",
        weight=1.0,
        timestamp=pd.Timestamp("2024-01-01") + pd.to_timedelta(frame.pop("day"), unit="D"),
    )
    return CatalogData(items, {"seller": "categorical"}, interactions)


def _fit(data: CatalogData, search_cold: bool = True):
    """(fitted on each user's first 80%, cold-item recall@10 on their last 20%)."""
    train, test = temporal_split(data.interactions, 0.2)
    part = CatalogData(data.items, data.kinds, train)
    config = TrainConfig(cf=CFConfig(factors=8, regularization=0.5))
    config = replace(config, grid=replace(config.grid, search_cold=search_cold))
    fitted = fit_in_memory(part, config)
    task = build_task(train, test, data.items["item_id"].to_numpy(dtype=str))
    fused, users = fitted.fused, list(fitted.cf.user_ids_)

    class Scores:
        name = "fused"

        def scores(self, ids):
            rows = [users.index(u) for u in ids]
            dense = fused.user_vectors(rows) @ fused.item_vectors_.T
            tokens = fused.token_scores(fused.user_tokens_[rows])
            return dense if tokens is None else dense + tokens

    return fitted, score(rank(Scores(), task, 10), task, (10,), ())["cold_items"]["recall@10"]


def _rule_case(gain: float, alone: bool = False, block: str = TOKENS):
    """The cold search on scored candidates of 400 validation users, 200 of them holding cold
    items out: half of those find their new items by ``block`` (the tokens by default; cold
    recall + ``gain`` x the block's share of cold items' weights), every candidate with its
    own per-user noise. ``alone``: only the block alone finds them (any cf prediction
    blended in reorders the new items away from the block's order, as on the demo shop).
    The feed gives the block no weight."""
    rng = np.random.default_rng(0)
    warm = rng.random(400) * 0.2
    base, by_tokens = rng.random(200) * 0.3, rng.random(200) < 0.5

    def evaluate(weights, cold_scale, k=10):
        cold = {b: weights.get(b, 0.0) * cold_scale.get(b, 1.0) for b in ("cf", block)}
        share = cold[block] / max(cold["cf"] + cold[block], 1e-9)
        share = float(share == 1.0) if alone else share
        seed = zlib.crc32(repr(sorted(cold.items())).encode())
        noise = np.random.default_rng(seed).normal(0.0, 0.05, 200)
        recall = np.clip(base + gain * share * by_tokens + noise, 0.0, 1.0)
        return Scored(warm, {}, warm, recall)

    weights, scale = {"cf": 1.0, block: 0.0}, {"cf": 1.0, block: 1.0}
    found = _cold_search(evaluate, weights, scale, evaluate(weights, scale), WeightGrid())
    return weights, scale, found


def test_the_cold_search_raises_the_token_weight_of_cold_items_when_it_finds_them():
    _, scale, (feed, cold_scale, found) = _rule_case(gain=0.3)
    assert feed[TOKENS] > 0 and cold_scale != scale
    cold = {b: feed[b] * cold_scale[b] for b in ("cf", TOKENS)}
    assert cold[TOKENS] > 0.5 * cold["cf"]  # new items now lean on their tokens
    assert found.cold.mean() > 0.3  # from 0.15 at the defaults


def test_the_cold_search_can_rank_new_items_by_their_tokens_alone():
    # no single block's step from the feed's blend gains anything, so an ascent from it alone
    # stays there; the search also starts from the token term alone, the content contender
    _, _, (feed, cold_scale, found) = _rule_case(gain=0.3, alone=True)
    cold = {b: feed[b] * cold_scale[b] for b in ("cf", TOKENS)}
    assert cold["cf"] == 0 and cold[TOKENS] > 0
    assert found.cold.mean() > 0.25  # from 0.15 at the defaults


@pytest.mark.parametrize("block", ["tabular", "image"])
def test_a_block_the_feed_gives_no_weight_can_still_rank_new_items(block):
    # the collaborative block ranks warm items better, so the feed gives the block 0; new
    # items have no collaborative signal of their own, and the block finds them
    _, _, (feed, cold_scale, found) = _rule_case(gain=0.3, alone=True, block=block)
    cold = {b: feed[b] * cold_scale[b] for b in ("cf", block)}
    assert cold[block] > 0 and cold["cf"] == 0
    assert 0 < feed[block] <= 0.01 * feed["cf"]  # warm items ranked as the feed's weights do
    assert found.cold.mean() > 0.25  # from 0.15 at the defaults


def test_the_cold_search_keeps_the_defaults_when_nothing_is_significant():
    weights, scale, (feed, cold_scale, _) = _rule_case(gain=0.0)
    assert feed == weights and cold_scale == scale


def _kept_defaults(data: CatalogData) -> tuple[bool, int]:
    """(whether the cold search left the feed weights and cold multipliers as they are without
    it, the validation users holding cold items out)."""
    searched, _ = _fit(data)
    plain, _ = _fit(data, search_cold=False)
    kept = searched.fused.weights_ == plain.fused.weights_
    kept &= searched.fused.cold_scale_ == plain.fused.cold_scale_
    defaults = FusionConfig().cold_scale
    kept &= all(s == defaults.get(b, 1.0) for b, s in searched.fused.cold_scale_.items())
    return kept, searched.metrics.get("validation_cold_users", 0)


def test_cold_weights_stay_at_the_defaults_when_content_says_nothing():
    kept, cold_users = _kept_defaults(_launch_shop(users=600, informative=False))
    assert cold_users >= 50  # the search did run
    assert kept


def test_a_small_cold_validation_set_keeps_the_defaults():
    kept, cold_users = _kept_defaults(_launch_shop(users=40, informative=True))
    assert cold_users < 50
    assert kept
