"""The weights stage's choice of the feed's token profile form (issue 13): per catalog, on
the validation users' cold items, the default ("confidence") kept unless another form is
significantly better, returned with the fit and saved with the bundle, never in the config."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.model.cf import CFConfig
from recsys.model.config import TrainConfig, WeightGrid
from recsys.model.data import CatalogData
from recsys.model.fusion import AUTO, FusedModel, FusionConfig, normalize_rows
from recsys.model.training import fit_in_memory
from recsys.model.validation import Scored, _choose_form
from tests.test_token_term import _seller_shop

CONFIG = TrainConfig(cf=CFConfig(factors=8, regularization=0.5))


def _shop_with_a_habit(seed: int = 0) -> CatalogData:
    """The seller shop (each shopper buys from two sellers, half the items new late on),
    plus one item of a third seller each shopper viewed 8 times early on: weighted by
    confidence, that seller outweighs the two the shopper's new items come from."""
    data = _seller_shop(seed)
    rng = np.random.default_rng(seed + 1)
    users = data.interactions["user_id"].unique()
    taste = data.interactions.assign(s=data.interactions["item_id"].str[1:].astype(int) % 60)
    tasted = taste.groupby("user_id")["s"].agg(set)
    habits = []
    for user in users:  # 400 shoppers: building the fixture, not the code under test
        seller = rng.choice([s for s in range(60) if s not in tasted[user]])
        habits.append(f"i{rng.integers(0, 5) * 60 + seller}")
    habit = pd.DataFrame(
        {
            "user_id": np.repeat(users, 8),
            "item_id": np.repeat(habits, 8),
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.tile(np.arange(8) * 6, len(users)), unit="h"),
        }
    )
    interactions = pd.concat([data.interactions, habit], ignore_index=True)
    return CatalogData(data.items, data.kinds, interactions)


def test_profiles_counting_each_item_once_are_chosen_where_they_find_new_items():
    # cold objective at 10: 300 new items, of which a shopper's two sellers hold 10 (at 50
    # every form finds nearly all of them on so small a shop). The tabular block is left out
    # of the search: its profiles count each item once whatever the token form, and would
    # find the new items under any form (recsys.model.fusion.ONCE)
    config = replace(CONFIG, grid=WeightGrid(cold_k=10, tabular=(0.0,)))
    result = fit_in_memory(_shop_with_a_habit(), config)
    metrics, fused = result.metrics, result.fused
    chosen = metrics["token_profile"]
    assert chosen == "binary"  # each item once: the habit counts as one item
    assert fused.token_profile_ == chosen  # the catalog's model is profiled so
    report = metrics["token_profiles"]
    assert set(report) == {"confidence", "binary", "capped"}
    cold, warm = "validation_cold_recall@10", "validation_recall@10"
    assert report[chosen][cold] > report["confidence"][cold] + 0.1
    assert report[chosen][warm] >= report["confidence"][warm]
    assert config.fusion.token_profile == AUTO  # the config is left as it was
    once = result.cf.user_items_.copy()
    once.data[:] = 1.0  # every item of a user's history counted once
    expected = normalize_rows(once @ fused.item_tokens_).toarray()
    np.testing.assert_allclose(fused.user_tokens_.toarray(), expected, atol=1e-6)


def test_one_event_per_pair_keeps_the_default_profile(tmp_path):
    result = fit_in_memory(_seller_shop(), CONFIG)
    assert result.metrics["token_profile"] == "confidence"
    assert result.fused.token_profile_ == "confidence"
    result.fused.save(tmp_path)
    assert FusedModel.load(tmp_path).token_profile_ == "confidence"


@pytest.mark.parametrize("profile", ["binary", "confidence"])
def test_a_profile_given_in_the_config_is_used_without_a_search(profile):
    config = replace(CONFIG, fusion=FusionConfig(token_profile=profile))
    result = fit_in_memory(_shop_with_a_habit(), config)
    assert result.metrics["token_profile"] == profile
    assert "token_profiles" not in result.metrics
    assert result.fused.token_profile_ == profile


def test_a_fit_refuses_a_profile_its_config_does_not_allow():
    config = FusionConfig(token_profile="confidence")
    with pytest.raises(ValueError, match="token_profile 'binary' must be one of confidence"):
        FusedModel(config).fit(n_items=3, content={"tabular": np.eye(3)}, token_profile="binary")


def _judged(warm: np.ndarray, cold: np.ndarray):
    """(Scored at K, Scored at the cold cut-off) of one form, as ``_choose_form`` reads them."""
    return (Scored(warm, {}, warm, cold), Scored(warm, {}, warm, cold))


def test_forms_level_on_validation_keep_the_one_ahead_on_new_items():
    """No form significantly better: the best cold objective is kept, unless its all-items
    recall is significantly below the default's."""
    rng = np.random.default_rng(0)
    warm = rng.random(400)
    cold = (rng.random(100) < 0.1).astype(float)
    ahead = cold.copy()
    ahead[np.flatnonzero(cold == 0)[:2]] = 1.0  # two more hits: within noise
    found = {"confidence": _judged(warm, cold), "binary": _judged(warm, ahead)}
    assert _choose_form(found, cold_min_users=30, z=2.0) == "binary"
    # The same cold gain at an all-items recall clearly below the default's: kept out.
    found["binary"] = _judged(warm - 0.2, ahead)
    assert _choose_form(found, cold_min_users=30, z=2.0) == "confidence"
    # A tie, or too few users holding new items to judge them: the default.
    found["binary"] = _judged(warm, cold)
    assert _choose_form(found, cold_min_users=30, z=2.0) == "confidence"
    found["binary"] = _judged(warm, ahead)
    assert _choose_form(found, cold_min_users=500, z=2.0) == "confidence"
