"""New listings get vectors from the active bundle's fitted parts, without retraining."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.model.bundle import load_recommender
from recsys.model.data import read_catalog
from recsys.model.live import LiveItems
from recsys.model.training import train
from tests.shop_fixture import populate, tiny_encoder, train_config


def _rows(engine, ids):
    return read_catalog(engine).items.set_index("item_id").loc[ids].reset_index()


@pytest.mark.parametrize("images", [False, True])
def test_an_item_added_live_gets_the_vector_of_an_item_trained_without_interactions(
    engine, tmp_path, images
):
    populate(engine, tmp_path / "images" if images else None)
    factory = tiny_encoder if images else None
    path = train(engine, tmp_path, train_config(), "cpu", image_encoder_factory=factory).path
    recommender = load_recommender(path)
    cold = np.flatnonzero(recommender.fused.cold_)
    assert len(cold) == 2  # a-new and b-new: in the catalog, never interacted with
    assert ("image" in recommender.fused.layout_.dims) == images
    # as if they were listed after training: their rows go through the bundle's parts alone
    live = LiveItems.load(path).vectors(_rows(engine, recommender.item_ids[cold]))
    np.testing.assert_allclose(live, recommender.fused.item_vectors_[cold], atol=1e-5)
    # and a live item is found by the bundle's index like any other (among its family's
    # nearest: the family's brand and words make its members near-twins in the tabular block)
    found, _ = recommender.index.search(live, 3)
    assert all(item in row for item, row in zip(cold.tolist(), found.tolist(), strict=True))


def test_unseen_attribute_values_and_missing_fields_still_give_a_finite_vector(engine, tmp_path):
    populate(engine)
    path = train(engine, tmp_path, train_config()).path
    rows = _rows(engine, ["a-new"])
    rows.loc[0, "title"] = "a word nobody has used before"
    for column in rows.columns.difference(["item_id", "title", "image_path", "in_stock"]):
        rows.loc[0, column] = None
    vector = LiveItems.load(path).vectors(rows)
    assert vector.shape == (1, load_recommender(path).fused.layout_.dim)
    assert np.isfinite(vector).all()
