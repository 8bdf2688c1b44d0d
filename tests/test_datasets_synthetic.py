"""`recsys datasets prepare synthetic-shop`: a long-tail shop of any size, ingestable, seeded."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.datasets.fashion_shop import LOG_END
from recsys.datasets.synthetic_shop import SyntheticShopConfig
from recsys.errors import InvalidInput
from tests.test_datasets import needs_debian_fashion_mnist, read_text_csv, recsys

ITEMS, USERS, EVENTS = 10_000, 800, 40_000
NEW = 500  # 5% of ITEMS, the default --new-share
SIZE = ("--items", ITEMS, "--users", USERS, "--events", EVENTS)


def prepare(out, *options, expect_exit=0):
    return recsys(
        "datasets", "prepare", "synthetic-shop", "--out", out, "-q", *options,
        expect_exit=expect_exit,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(folder, items, interactions, next_week, shoppers, CLI output) of a small shop, seed 7."""
    out = tmp_path_factory.mktemp("synthetic") / "shop"
    result = prepare(out, *SIZE, "--seed", 7, "--no-images")
    names = ("items", "interactions", "next_week", "shoppers")
    return out, *(read_text_csv(out / f"{name}.csv") for name in names), result.output


def favourite_share(events: pd.DataFrame, items, shoppers, field: str) -> tuple[float, float]:
    """(share of events on one of the user's favourite `field`s, share expected by chance)."""
    value = items.set_index("item_id")[field][events["item_id"]].to_numpy()
    favourites = shoppers.assign(value=shoppers[field + "s"].str.split("|")).explode("value")
    favourites = favourites[["user_id", "value"]].drop_duplicates()
    pairs = pd.DataFrame({"user_id": events["user_id"].to_numpy(), "value": value})
    hit = pairs.merge(favourites.assign(hit=1), how="left", on=["user_id", "value"])["hit"]
    overall = pd.Series(value).value_counts(normalize=True)
    favourites["chance"] = favourites["value"].map(overall).fillna(0)
    chance = pairs["user_id"].map(favourites.groupby("user_id")["chance"].sum())
    return float(hit.fillna(0).mean()), float(chance.mean())


def test_files_columns_and_counts_are_as_documented(shop):
    out, items, interactions, next_week, shoppers, output = shop
    assert list(items.columns) == [
        "item_id", "title", "price", "brand", "seller", "category", "tags", "added", "in_stock",
    ]  # fmt: skip
    assert list(interactions.columns) == ["user_id", "item_id", "event", "weight", "timestamp"]
    assert list(next_week.columns) == list(interactions.columns)
    assert list(shoppers.columns) == [
        "user_id", "events", "sellers", "brands", "words", "categories",
    ]  # fmt: skip
    assert len(items) == ITEMS and items["item_id"].is_unique
    assert len(interactions) == EVENTS  # exactly --events
    assert len(shoppers) == USERS
    assert f"{ITEMS:,} items, {NEW} new items, 200 sellers, 50 brands" in output
    assert f"{EVENTS:,} interactions" in output
    assert not (out / "images").exists()


def test_shoppers_without_events_are_counted_out_loud(tmp_path):
    """Asked for 1,000 shoppers, the summary said 560 users and nothing of the rest."""
    out = tmp_path / "few"
    output = prepare(out, "--items", 200, "--users", 1000, "--events", 1500, "--no-images").output
    in_log = read_text_csv(out / "interactions.csv")["user_id"].nunique()
    assert in_log < 1000 and f"{in_log:,} users" in output
    assert f"note: {1000 - in_log:,} of the 1,000 shoppers drew no event" in output


def test_items_look_like_a_marketplace_catalog(shop):
    _, items, _, _, _, _ = shop
    assert (items["title"].str.split().str.len() >= 4).all()
    assert (items["title"].str.split().str[0] == items["brand"]).all()
    assert items["category"].str.fullmatch(r"(women|men|kids|sport)/[a-z]+/[a-z-]+").all()
    assert items["category"].nunique() > 100
    tags = items["tags"].str.split("|").explode()
    assert tags[tags != ""].nunique() > 20 and (items["tags"].str.contains("|", regex=False)).any()
    assert (pd.to_numeric(items["price"]) > 0).all()
    assert pd.to_datetime(items["added"]).is_monotonic_increasing
    assert 0.9 < (items["in_stock"] == "true").mean() < 1


def test_same_seed_same_files_and_another_seed_others(shop, tmp_path):
    out = shop[0]
    again = tmp_path / "again"
    prepare(again, *SIZE, "--seed", 7, "--no-images")
    for name in ("items.csv", "interactions.csv", "next_week.csv", "shoppers.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    prepare(again, *SIZE, "--seed", 8, "--no-images")  # replaces the earlier shop in place
    assert (again / "interactions.csv").read_bytes() != (out / "interactions.csv").read_bytes()


def test_popularity_has_a_long_tail(shop):
    _, items, interactions, _, _, _ = shop
    per_item = interactions["item_id"].value_counts().reindex(items["item_id"], fill_value=0)
    top = per_item.sort_values(ascending=False)
    assert top.iloc[: ITEMS // 100].sum() > 0.25 * EVENTS  # the top 1% of items
    assert (per_item <= per_item.mean() / 3).mean() > 0.5  # most items get few events
    per_user = interactions["user_id"].value_counts()
    assert per_user.max() > 10 * per_user.median()  # heavy-tailed activity


def test_events_come_in_sessions_and_follow_the_funnel(shop):
    _, _, interactions, _, _, _ = shop
    counts = interactions["event"].value_counts()
    assert counts["view"] > 5 * counts["cart"] > 5 * counts["purchase"] > 0
    assert not interactions.duplicated(["user_id", "item_id", "event", "timestamp"]).any()
    seen = pd.to_datetime(interactions["timestamp"]).dt.tz_localize(None)
    assert seen.max() < LOG_END and seen.min() >= LOG_END - np.timedelta64(90, "D")
    gaps = seen.groupby(interactions["user_id"]).diff().dropna()
    assert (gaps < pd.Timedelta(minutes=5)).mean() > 0.5  # most next events: same session
    carts = interactions[interactions["event"] == "cart"].set_index(["user_id", "item_id"])
    for row in interactions[interactions["event"] == "purchase"].head(200).itertuples():
        assert (carts.loc[[(row.user_id, row.item_id)], "timestamp"] < row.timestamp).any()


@pytest.mark.parametrize("field", ["seller", "brand"])
def test_shoppers_keep_to_their_favourite_sellers_and_brands(shop, field):
    _, items, interactions, _, shoppers, _ = shop
    share, chance = favourite_share(interactions, items, shoppers, field)
    assert share > 0.2 and share > 4 * chance  # chance: about 0.03 (sellers), 0.05 (brands)


def test_new_items_have_no_events_but_fans_find_them_the_week_after(shop):
    _, items, interactions, next_week, shoppers, _ = shop
    new = items.loc[pd.to_datetime(items["added"]) >= LOG_END, "item_id"]
    assert len(new) == NEW and (new == items["item_id"].iloc[-NEW:]).all()
    assert not set(new) & set(interactions["item_id"])
    launched = next_week[next_week["item_id"].isin(new)]
    assert len(launched) > 0.05 * len(next_week) and launched["item_id"].nunique() > NEW / 10
    share, chance = favourite_share(launched, items, shoppers, "seller")
    assert share > 0.2 and share > 4 * chance
    assert pd.to_datetime(next_week["timestamp"]).dt.tz_localize(None).min() >= LOG_END


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_shop_ingests_with_no_rejects(shop, run_cli):
    out = shop[0]
    run_cli("db", "upgrade")
    items = run_cli("ingest", "items", out / "items.csv", "-q", "--json")
    assert json.loads(items.output)["rejected"] == 0
    interactions = run_cli("ingest", "interactions", out / "interactions.csv", "-q", "--json")
    assert json.loads(interactions.output)["rejected"] == 0
    stats = json.loads(run_cli("stats", "--json").output)
    assert stats["items"] == ITEMS
    assert stats["attributes"] == {
        "added": "date", "brand": "categorical", "category": "categorical", "price": "numeric",
        "seller": "categorical", "tags": "multi",
    }  # fmt: skip


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_parquet_files_ingest_with_no_rejects(run_cli, tmp_path):
    out = tmp_path / "pq"
    size = ("--items", 500, "--users", 50, "--events", 2_000)
    prepare(out, *size, "--no-images", "--format", "parquet")
    run_cli("db", "upgrade")
    for kind, name in [("items", "items"), ("interactions", "interactions")]:
        report = run_cli("ingest", kind, out / f"{name}.parquet", "-q", "--json")
        assert json.loads(report.output)["rejected"] == 0
    stats = json.loads(run_cli("stats", "--json").output)
    assert stats["attributes"]["added"] == "date" and stats["attributes"]["tags"] == "multi"


def test_parquet_holds_the_same_rows(shop, tmp_path):
    _, items, interactions, _, _, _ = shop
    prepare(tmp_path / "pq", *SIZE, "--seed", 7, "--no-images", "--format", "parquet")
    events = pq.read_table(tmp_path / "pq" / "interactions.parquet").to_pandas()
    assert len(events) == EVENTS
    assert (events["item_id"] == interactions["item_id"]).all()
    stamps = pd.to_datetime(interactions["timestamp"])
    assert (events["timestamp"] == stamps).all()
    parquet_items = pq.read_table(tmp_path / "pq" / "items.parquet").to_pandas()
    assert (parquet_items["title"] == items["title"]).all()


def test_high_cardinality_fields_grow_with_the_catalog(tmp_path):
    out = tmp_path / "big"
    result = prepare(out, "--items", 100_000, "--users", 10, "--events", 10, "--no-images")
    assert "2,000 sellers, 500 brands" in result.output
    items = pd.read_csv(out / "items.csv", usecols=["seller", "brand", "title"])
    assert items["seller"].nunique() > 1_800 and items["brand"].nunique() > 450
    words = items["title"].str.split().explode()
    assert words.nunique() > 2_000


@needs_debian_fashion_mnist
def test_items_share_a_bounded_number_of_real_photos(tmp_path):
    out = tmp_path / "photos"
    prepare(out, "--items", 2_000, "--users", 20, "--events", 200, "--seed", 3)
    items = read_text_csv(out / "items.csv")
    assert list(items.columns)[:2] == ["item_id", "image"]
    pngs = sorted(p.name for p in (out / "images").iterdir())
    assert len(pngs) == items["image"].nunique() < len(items)
    assert {f"images/{name}" for name in pngs} == set(items["image"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--events", 0), "--events"),
        (("--format", "xml"), "--format"),
        (("--items", 10, "--new-share", 0.99), "leave an item to interact with"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, message):
    result = prepare(tmp_path / "s", *options, "--no-images", expect_exit=2)
    assert message in result.output
    assert not (tmp_path / "s").exists()


def test_synthetic_options_are_refused_for_other_data_sets(tmp_path):
    result = recsys(
        "datasets", "prepare", "movielens", "--out", tmp_path, "--events", 5, expect_exit=2
    )
    assert "--events applies to synthetic-shop only" in result.output


def test_a_folder_with_other_files_is_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = prepare(tmp_path, "--items", 50, "--no-images", expect_exit=2)
    assert "holds other files (notes.txt)" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_config_errors_name_the_fix():
    with pytest.raises(InvalidInput, match="taste_shares"):
        SyntheticShopConfig(taste_shares=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(InvalidInput, match="format"):
        SyntheticShopConfig(format="xlsx")


def test_help_says_it_is_synthetic_and_lists_the_files():
    text = recsys("datasets", "prepare", "--help").output
    for written in ["synthetic-shop", "SYNTHETIC", "next_week.csv", "seller", "--no-images"]:
        assert written in text


SMALL = ("--items", 50, "--users", 20, "--events", 200, "--no-images")


def test_a_link_to_a_folder_is_written_through(tmp_path):
    """--out LINK replaced the link with a folder: the data landed beside the target, which
    stayed empty, and a stray .LINK.*.old link was left; a dangling link was a traceback."""
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    done = prepare(tmp_path / "link", *SMALL)
    assert f"synthetic-shop written to {target}\n" in done.output
    assert (tmp_path / "link").is_symlink() and (target / "items.csv").is_file()
    (tmp_path / "dangling").symlink_to(tmp_path / "made")
    prepare(tmp_path / "dangling", *SMALL)
    assert (tmp_path / "made" / "items.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "made", "target"]


def test_an_earlier_output_that_cannot_be_replaced_is_kept(tmp_path, monkeypatch):
    """Over a read-only earlier output the rename failed: a traceback, and its staging
    folder (.shop.XXXX.tmp) was left."""
    out = tmp_path / "shop"
    prepare(out, *SMALL)
    before = (out / "items.csv").read_bytes()
    replace = os.replace

    def refused(source, target):
        if os.fspath(source) == str(out):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), source, None, target)
        replace(source, target)

    monkeypatch.setattr(os, "replace", refused)
    result = prepare(out, *SMALL, "--seed", 3, expect_exit=2)
    assert f"error: Operation not permitted: {out} -> {tmp_path}/.shop." in result.output
    assert (out / "items.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["shop"]


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """A full disk was an OSError traceback (exit 1) and left an empty --out folder."""
    from recsys.datasets import synthetic_shop

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file")  # as pyarrow's: no file

    monkeypatch.setattr(synthetic_shop, "write_events", full)
    result = prepare(tmp_path / "shop", *SMALL, expect_exit=2)
    assert result.output.strip().endswith(f"error: No space left on device: {tmp_path / 'shop'}")
    assert list(tmp_path.iterdir()) == []
