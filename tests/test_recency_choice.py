"""The weights stage's choice of recency for the users' ALS factors (issue 13): per catalog,
on the validation users' latest items, kept only when it measurably helps, and used by the
catalog's own fit."""

from __future__ import annotations

from copy import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.model import validation
from recsys.model.cf import CFConfig
from recsys.model.config import TrainConfig, WeightGrid
from recsys.model.data import CatalogData
from recsys.model.index import VectorIndex
from recsys.model.recommender import ItemFilters, Recommender
from recsys.model.training import fit_in_memory
from tests.toy import toy_catalog

CONFIG = TrainConfig(cf=CFConfig(factors=8, regularization=0.5), grid=WeightGrid(min_users=2))


def changing_tastes(users: int = 200, clusters: int = 4, size: int = 30, seed: int = 0):
    """Shoppers who browse a dozen items of one cluster, then a dozen of another: what they
    take next is in the second, which a model of their whole history only half follows."""
    rng = np.random.default_rng(seed)
    items = [f"c{c}-{k}" for c in range(clusters) for k in range(size)]
    rows = []
    for user in range(users):
        first, then = rng.choice(clusters, 2, replace=False)
        for step, cluster in enumerate([first] * 12 + [then] * 12):
            item = f"c{cluster}-{rng.integers(size)}"
            rows.append(
                (
                    f"u{user}",
                    item,
                    "click",
                    1.0,
                    pd.Timestamp("2024-01-01") + pd.Timedelta(hours=step),
                )
            )
    interactions = pd.DataFrame(
        rows, columns=["user_id", "item_id", "event", "weight", "timestamp"]
    )
    frame = pd.DataFrame({"item_id": items, "title": items, "image_path": None, "in_stock": True})
    return CatalogData(items=frame, kinds={}, interactions=interactions)


def test_where_the_latest_items_tell_what_comes_next_recency_is_chosen():
    result = fit_in_memory(changing_tastes(), CONFIG)
    recalls = result.metrics["validation_als_recall@10_recency"]
    assert set(recalls) == {"none", "5", "10", "20"}
    chosen = result.metrics["recency"]
    assert chosen in (5.0, 10.0, 20.0)
    assert recalls[f"{chosen:g}"] > recalls["none"] + 0.05
    assert result.cf.recency_ == chosen  # the whole catalog's model is solved with it
    assert CONFIG.grid.recency == (5.0, 10.0, 20.0)  # the config is left as it was


def test_a_gain_within_noise_keeps_the_fitted_factors(monkeypatch):
    def level(cf, user_factors, task):  # every candidate ranks alike
        per_user = np.full(len(task.user_ids), 0.2)
        return validation.Scored(per_user, {"recall@10": 0.2})

    monkeypatch.setattr(validation, "_users_recall", level)
    result = fit_in_memory(changing_tastes(), CONFIG)
    assert result.metrics["recency"] is None
    assert result.cf.recency_ is None


@pytest.mark.parametrize(
    "catalog, config",
    [
        (lambda: _without_times(toy_catalog()), CONFIG),
        (toy_catalog, replace(CONFIG, cf=CFConfig(model="bpr", factors=8, iterations=20))),
        (toy_catalog, replace(CONFIG, grid=replace(CONFIG.grid, recency=()))),
    ],
    ids=["no timestamps", "bpr", "no candidates"],
)
def test_without_times_als_or_candidates_no_recency_is_tried(catalog, config):
    result = fit_in_memory(catalog(), config)
    assert "recency" not in result.metrics
    assert result.cf.recency_ is None


def _without_times(catalog: CatalogData) -> CatalogData:
    interactions = catalog.interactions.assign(timestamp=pd.NaT)
    return CatalogData(items=catalog.items, kinds=catalog.kinds, interactions=interactions)


def test_a_feed_with_fresh_events_weighs_them_as_training_would():
    catalog = changing_tastes(users=60)
    fitted = fit_in_memory(catalog, CONFIG)
    cf = fitted.cf
    assert cf.recency_ is not None
    filters = ItemFilters.from_items(catalog.items, catalog.kinds)
    index = VectorIndex.build(fitted.fused.item_vectors_)
    recommender = Recommender(fitted.fused, cf, catalog.items["item_id"], filters, index, {})
    # no fresh events: the stored confidences, and the fold-in gives the stored factors back
    history, weights = recommender.history_with("u3", [])
    assert history == recommender.seen_items("u3")
    row = recommender.user_index.get("u3")
    np.testing.assert_allclose(
        cf.fold_in(history, weights), cf.user_factors_[row], rtol=1e-3, atol=1e-4
    )
    # two fresh events: the newest weighs 1, the one before 0.5 ** (1 / half-life), and every
    # stored entry is halved once more per half-life of fresh events
    seen = recommender.seen_items("u3")
    new = [item for item in catalog.items["item_id"] if item not in seen][:2]
    history, weights = recommender.history_with("u3", new)
    assert history == [*seen, *new]
    half = cf.recency_
    _, stored = recommender.history_with("u3", [])
    np.testing.assert_allclose(weights[: len(seen)], np.multiply(stored, 0.5 ** (2 / half)))
    np.testing.assert_allclose(weights[len(seen) :], [1.0, 0.5 ** (1 / half)])
    # the reasons split the fold-in the feed made, at those weights: nothing is left over as
    # "your overall taste" (they split one at weight 1 each: -5 of a score of 1 on MovieLens)
    stored_feed = recommender.recommend(["u3"], k=5)
    fresh_feed = recommender.recommend_for_history([history], k=5, weights=[weights])
    for feed in (stored_feed, fresh_feed):
        for reasons, score in zip(feed.because[0], feed.scores[0], strict=True):
            shares = {r.label: r.share for r in reasons}
            assert abs(shares.get("your overall taste", 0.0)) < 1e-3 * max(abs(score), 1.0)
            assert sum(r.share for r in reasons) == pytest.approx(score, abs=1e-4)
            assert all(round(r.share, 6) != 0 for r in reasons)  # none shown as "-0.0"
    # a model without recency: every item once, as before
    plain = Recommender(
        fitted.fused, _without_recency(cf), catalog.items["item_id"], filters, index, {}
    )
    assert plain.history_with("u3", new) == ([*seen, *new], None)


def test_fresh_events_dated_before_the_users_history_do_not_outweigh_it():
    """Three events dated 2005 that arrived after training had outweighed a history of 1,703
    events (arrival order made them the newest): events dated at or before the user's latest
    training event come after every training entry, as a retrain would place them, and the
    newer ones are ordered by their time, not their arrival."""
    catalog = changing_tastes(users=60)
    fitted = fit_in_memory(catalog, CONFIG)
    cf = fitted.cf
    filters = ItemFilters.from_items(catalog.items, catalog.kinds)
    index = VectorIndex.build(fitted.fused.item_vectors_)
    recommender = Recommender(fitted.fused, cf, catalog.items["item_id"], filters, index, {})
    seen = recommender.seen_items("u3")
    late, newer, newest = [item for item in catalog.items["item_id"] if item not in seen][:3]
    latest = catalog.interactions.query("user_id == 'u3'")["timestamp"].max()
    times = [latest + pd.Timedelta(hours=1), latest - pd.Timedelta(days=3650), None]
    arrived = [newer, late, newest]  # newest arrived last but carries no time: it goes last
    history, weights = recommender.history_with(
        "u3", arrived, [t and t.to_pydatetime() for t in times]
    )
    half = cf.recency_
    _, stored = recommender.history_with("u3", [])
    weight = dict(zip(history, weights, strict=True))
    # one newer event: the stored entries halved by one event's worth, the newer one at 1
    np.testing.assert_allclose(weights[: len(seen)], np.multiply(stored, 0.5 ** (1 / half)))
    assert weight[newer] == pytest.approx(1.0)
    # the late and the undated ones after every stored entry, in that order
    assert weight[late] == pytest.approx(0.5 ** ((1 + len(seen)) / half))
    assert weight[newest] == pytest.approx(0.5 ** ((2 + len(seen)) / half))
    assert weight[late] < np.median(stored)  # less than a typical item of the history
    # without times: arrival order, as before
    _, by_arrival = recommender.history_with("u3", arrived)
    assert dict(zip(history, by_arrival, strict=True))[late] == pytest.approx(0.5 ** (1 / half))
    # a bundle without the users' latest times (saved before them): arrival order too
    older = copy(cf)
    older.user_latest_ = None
    old = Recommender(fitted.fused, older, catalog.items["item_id"], filters, index, {})
    assert old.history_with("u3", arrived, times)[1] == by_arrival


def _without_recency(cf):
    other = copy(cf)
    other.recency_ = other.user_recent_ = None
    return other
