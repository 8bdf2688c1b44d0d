"""`recsys datasets prepare fashion-shop`: a small demo shop, its files, its simulated shoppers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.datasets.fashion_mnist import CLASS_NAMES
from recsys.datasets.fashion_shop import BRANDS, DEPARTMENTS, ShopConfig
from recsys.errors import InvalidInput
from tests.test_datasets import needs_debian_fashion_mnist, read_text_csv, recsys

pytestmark = needs_debian_fashion_mnist

ITEMS, USERS, NEW = 300, 50, 30  # NEW = 10% of ITEMS, the default --new-share
SIZE = ("--items", ITEMS, "--users", USERS)


def prepare(out, *options):
    return recsys("datasets", "prepare", "fashion-shop", "--out", out, *SIZE, "-q", *options)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(folder, items, interactions, labels, shoppers, CLI output) of a small shop, seed 7."""
    out = tmp_path_factory.mktemp("shop") / "fashion-shop"
    result = prepare(out, "--seed", 7)
    tables = [read_text_csv(out / f"{name}.csv") for name in ("items", "interactions")]
    tables += [read_text_csv(out / f"{name}.csv") for name in ("labels", "shoppers")]
    return out, *tables, result.output


def test_files_and_columns_are_as_documented(shop):
    out, items, interactions, labels, shoppers, output = shop
    assert list(items.columns) == [
        "item_id", "image", "title", "price", "brand", "department", "colour_tone", "added",
        "in_stock",
    ]  # fmt: skip
    assert list(interactions.columns) == ["user_id", "item_id", "event", "weight", "timestamp"]
    assert list(labels.columns) == ["item_id", "label", "label_name"]
    assert list(shoppers.columns)[:3] == ["user_id", "labels", "classes"]
    assert len(items) == ITEMS and items["item_id"].is_unique
    assert items["item_id"].str.fullmatch(r"sku-\d{6}").all()
    assert all((out / image).is_file() for image in items["image"])
    assert (labels["item_id"] == items["item_id"]).all()
    assert set(labels["label_name"]) == set(CLASS_NAMES)
    assert (pd.to_numeric(items["price"]) > 0).all()
    assert set(items["brand"]) <= {name for name, _, _ in BRANDS}
    assert set(items["department"]) == set(DEPARTMENTS)
    assert set(items["colour_tone"]) == {"light", "mid", "dark"}
    assert set(items["in_stock"]) == {"true", "false"}
    assert (items["in_stock"] == "true").mean() > 0.85
    first = items.iloc[0]
    assert first["title"].startswith(first["brand"] + " ")
    assert first["title"].endswith(", " + first["colour_tone"])
    assert f"{ITEMS} items, {NEW} new items, {USERS} users" in output


def test_same_seed_same_shop_and_another_seed_another(shop, tmp_path):
    out = shop[0]
    again = tmp_path / "again"
    prepare(again, "--seed", 7)
    for name in ("items.csv", "interactions.csv", "labels.csv", "shoppers.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert (again / "images/sku-000000.png").read_bytes() == (
        out / "images/sku-000000.png"
    ).read_bytes()
    prepare(again, "--seed", 8)  # replaces the earlier shop in place
    assert (again / "interactions.csv").read_bytes() != (out / "interactions.csv").read_bytes()


def test_new_items_are_listed_last_and_nobody_has_touched_them(shop):
    _, items, interactions, _, _, _ = shop
    last_event = pd.to_datetime(interactions["timestamp"]).max().tz_localize(None)
    added = pd.to_datetime(items["added"])
    new = items.loc[added > last_event, "item_id"]
    assert len(new) == NEW
    assert added[added > last_event].min() > added[added <= last_event].max()
    assert not set(new) & set(interactions["item_id"])
    span = pd.to_datetime(interactions["timestamp"])
    assert span.max() - span.min() <= pd.Timedelta(days=90)


def test_interactions_refer_to_listed_items_and_follow_the_funnel(shop):
    _, items, interactions, _, _, _ = shop
    assert set(interactions["item_id"]) <= set(items["item_id"])
    counts = interactions["event"].value_counts()
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"] > 0
    assert interactions["user_id"].nunique() == USERS
    listed = pd.to_datetime(items.set_index("item_id")["added"])
    seen = pd.to_datetime(interactions["timestamp"]).dt.tz_localize(None)
    assert (seen.to_numpy() >= listed[interactions["item_id"]].to_numpy()).all()
    carts = interactions[interactions["event"] == "cart"].set_index(["user_id", "item_id"])
    for row in interactions[interactions["event"] == "purchase"].itertuples():
        assert (carts.loc[[(row.user_id, row.item_id)], "timestamp"] <= row.timestamp).any()


def test_shoppers_mostly_interact_with_their_preferred_classes(shop):
    _, _, interactions, labels, shoppers, _ = shop
    label = labels.set_index("item_id")["label"]
    tastes = shoppers.set_index("user_id")["labels"].str.split("|")
    in_taste = [
        label[item] in tastes[user]
        for user, item in zip(interactions["user_id"], interactions["item_id"], strict=True)
    ]
    per_user = pd.Series(in_taste).groupby(interactions["user_id"].to_numpy()).mean()
    assert np.mean(in_taste) > 0.7
    assert (per_user > 0.5).mean() > 0.8


def test_the_shop_ingests_with_no_rejects_and_trains(shop, run_cli, tmp_path):
    out = shop[0]
    run_cli("db", "upgrade")
    items = run_cli("ingest", "items", out / "items.csv", "-q", "--json")
    assert json.loads(items.output)["rejected"] == 0
    interactions = run_cli("ingest", "interactions", out / "interactions.csv", "-q", "--json")
    assert json.loads(interactions.output)["rejected"] == 0
    stats = json.loads(run_cli("stats", "--json").output)
    assert (stats["items"], stats["users"]) == (ITEMS, USERS)
    assert stats["attributes"] == {
        "added": "date", "brand": "categorical", "colour_tone": "categorical",
        "department": "categorical", "price": "numeric",
    }  # fmt: skip
    artifacts = ("--artifacts-dir", tmp_path / "artifacts")
    run_cli(*artifacts, "train", "--quiet", "--image-epochs", 1, "--image-method", "byol")
    similar = json.loads(run_cli(*artifacts, "similar", "--item", "sku-000299", "--json").output)
    assert len(similar[0]["ids"]) == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--new-share", 1), "--new-share"),
        (("--items", 1), "--items"),
        (("--users", 0), "--users"),
        (("--limit", 5), "--limit applies to fashion-mnist only"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, message):
    result = recsys(
        "datasets", "prepare", "fashion-shop", "--out", tmp_path / "s", *options, expect_exit=2
    )
    assert message in result.output
    assert not (tmp_path / "s").exists()


def test_shop_options_are_refused_for_other_data_sets(tmp_path):
    result = recsys(
        "datasets", "prepare", "movielens", "--out", tmp_path, "--items", 5, expect_exit=2
    )
    assert "--items applies to fashion-shop and synthetic-shop only" in result.output


def test_config_errors_name_the_fix():
    with pytest.raises(InvalidInput, match="leaves no item to interact with"):
        ShopConfig(items=2, new_share=0.9)
    with pytest.raises(InvalidInput, match="from 2 to 70,000"):
        ShopConfig(items=70_001)


def test_a_folder_with_other_files_is_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = recsys("datasets", "prepare", "fashion-shop", "--out", tmp_path, *SIZE, expect_exit=2)
    assert "holds other files (notes.txt)" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_help_lists_the_files_and_says_the_shoppers_are_simulated():
    text = recsys("datasets", "prepare", "--help").output
    for written in ["images/sku-000000.png", "shoppers.csv", "colour_tone", "SIMULATED"]:
        assert written in text
    text = recsys("train", "--help").output
    assert "--image-epochs" in text and "--image-time-budget" in text


def test_train_offers_every_image_method():
    from recsys.commands.model_options import IMAGE_METHODS
    from recsys.vision.methods import METHODS

    assert IMAGE_METHODS == METHODS
