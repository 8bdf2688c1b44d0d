"""Range filters on numeric and date attributes (a merchandiser's price band): over HTTP GET
and POST, in the library and the CLI, on the bundle's items and on live items written since,
and a 400 naming the attribute for every value a range does not take."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog import connect
from recsys.catalog.models import Item, ItemAttribute, ModelBundle
from recsys.cli import cli
from recsys.errors import InvalidInput, UnknownFilter
from recsys.model.bundle import load_active
from recsys.model.recommender import ItemFilters
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import ADMIN, ADMIN_TOKEN, build_shop


def price_of(item_id: str) -> float | None:
    """a<k>: 100 + 50k, b<k>: 120 + 50k; the new items have none."""
    if item_id.endswith("new"):
        return None
    return (100 if item_id[0] == "a" else 120) + 50 * int(item_id[1:])


def released(item_id: str) -> str | None:
    """a<k>: 2025-01-(k+1), b<k>: 2024-12-(k+1); the new items have none."""
    if item_id.endswith("new"):
        return None
    k = int(item_id[1:])
    return f"2025-01-{k + 1:02d}" if item_id[0] == "a" else f"2024-12-{k + 1:02d}"


def add_prices(engine) -> None:
    """Every toy item but the new ones gets a price (numeric) and a release date (date)."""
    with Session(engine) as session, session.begin():
        session.add(ItemAttribute(name="price", kind="numeric"))
        session.add(ItemAttribute(name="released", kind="date"))
        for item in session.scalars(select(Item)):
            if price_of(item.external_id) is not None:
                item.attributes = {
                    **item.attributes,
                    "price": price_of(item.external_id),
                    "released": released(item.external_id),
                }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("priced-shop"), prepare=add_prices, photos=False)


@pytest.fixture
def shop(built, tmp_path):
    """A copy of the built shop's catalog (the bundle and images are shared, read-only)."""
    url, artifacts = built
    shutil.copy(url.removeprefix("sqlite:///"), tmp_path / "shop.db")
    return f"sqlite:///{tmp_path / 'shop.db'}", artifacts


def make_app(url, artifacts):
    settings = Settings(
        database_url=url,
        artifacts_dir=artifacts,
        admin_token=ADMIN_TOKEN,
        write_rate_limit="10000/minute",
    )
    config = {"TESTING": True, "RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0}
    return create_app(settings, config)


@pytest.fixture
def app(shop):
    return make_app(*shop)


@pytest.fixture
def client(app):
    return app.test_client()


def listed(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["item_id"] for item in response.get_json()["items"]]


def in_stock_priced(low: float, high: float) -> set[str]:
    """The toy's in-stock items (all but a3, b3) priced low..high, bounds inclusive."""
    ids = [f"{g}{k}" for g in "ab" for k in range(15) if k != 3]
    return {i for i in ids if low <= price_of(i) <= high}


def assert_error(response, mentions: list[str]):
    assert response.status_code == 400, response.get_json()
    message = response.get_json()["error"]["message"]
    assert all(word in message for word in mentions), message


def test_a_price_band_lists_only_items_in_it_over_get_post_and_the_library(client, built):
    band = in_stock_priced(200, 400)
    assert {"a2", "a6"} <= band  # priced 200 and 400: the bounds are inclusive
    similar = listed(client.get("/v1/items/a1/similar?k=30&price=200..400"))
    assert set(similar) == band
    deep = listed(client.get("/v1/items/a1/similar?k=30&filters[price]=200..400"))
    assert deep == similar
    feed = listed(client.get("/v1/users/u1/recommendations?k=30&exclude_seen=false&price=200..400"))
    assert set(feed) == band
    for range_ in ({"min": 200, "max": 400}, "200..400", [{"min": 200, "max": 400}]):
        body = {"k": 30, "exclude_seen": False, "filters": {"price": range_}}
        assert listed(client.post("/v1/users/u1/recommendations", json=body)) == feed
    # a short list comes from the precomputed neighbour table, masked as a search is
    assert load_active(connect(built[0])).neighbours is not None
    few = listed(client.get("/v1/items/a1/similar?k=3&price=200..400"))
    assert len(few) == 3 and set(few) <= band
    # one side open, one value exactly, and several ranges for any of them
    assert set(listed(client.get("/v1/items/a1/similar?k=30&price=..200"))) == in_stock_priced(
        0, 200
    ) - {"a1"}
    assert listed(client.get("/v1/items/a1/similar?k=30&price=670")) == ["b11"]
    body = {"k": 30, "exclude_seen": False, "filters": {"price": 670}}
    assert listed(client.post("/v1/users/u1/recommendations", json=body)) == ["b11"]
    ends = listed(client.get("/v1/items/a1/similar?k=30&price=..120&price=800.."))
    assert set(ends) == {"a0", "b0", "a14", "b14"}
    # with the other filters, and the library gives the same answer
    both = listed(client.get("/v1/items/a1/similar?k=30&price=200..400&brand=b-brand"))
    assert set(both) == {i for i in band if i.startswith("b")}
    recommender = load_active(connect(built[0]))
    # the library filters on stock only when asked (the service's default is in stock)
    priced = {"in_stock": True, "price": {"min": 200, "max": 400}}
    assert recommender.similar_items(["a1"], k=30, filters=priced).ids[0] == similar
    priced = {"in_stock": True, "price": "200..400"}
    feeds = recommender.recommend(["u1"], k=30, exclude_seen=False, filters=priced)
    assert set(feeds.ids[0]) == band
    everything = recommender.similar_items(["a1"], k=30, filters={"price": ["200..400"]})
    assert set(everything.ids[0]) == band | {"a3", "b3"}


def test_items_without_a_value_never_pass_a_range(client):
    everything = listed(client.get("/v1/items/a1/similar?k=40&price=..100000"))
    assert "a-new" not in everything and "b-new" not in everything
    assert "a-new" in listed(client.get("/v1/items/a1/similar?k=40"))


def test_date_ranges_take_iso_dates_and_a_date_alone_is_its_day(client):
    january = listed(client.get("/v1/items/a1/similar?k=30&released=2025-01-03..2025-01-06"))
    assert set(january) == {"a2", "a4", "a5"}  # 01-03 .. 01-06 inclusive, a3 out of stock
    assert listed(client.get("/v1/items/a1/similar?k=30&released=2025-01-05")) == ["a4"]
    since = listed(client.get("/v1/items/b1/similar?k=40&released=2025-01-01.."))
    assert since and all(i.startswith("a") for i in since)
    body = {"k": 30, "exclude_seen": False, "filters": {"released": {"max": "2024-12-02"}}}
    assert set(listed(client.post("/v1/users/u1/recommendations", json=body))) == {"b0", "b1"}


@pytest.mark.parametrize(
    ("query", "mentions"),
    [
        ("price=abc", ["'price'", "100..500", "got 'abc'"]),  # its closing quote too
        ("price=１００..", ["'price'"]),  # full-width digits, as a full-width k=５
        ("price=5..1", ["'price'", "min is above its max"]),
        ("price=..", ["'price'", "100..500"]),
        ("price=nan", ["'price'"]),
        ("price=inf..", ["'price'"]),
        ("released=2025-13-45", ["'released'", "2025-01-01"]),
        ("released=100..", ["'released'", "date"]),
        ("brand=1..5", ["'brand'", "not a numeric or date attribute"]),
        ("brand=", ["brand", "a value is required"]),
        ("price=", ["price", "a value is required"]),
    ],
)
def test_a_bad_range_is_a_400_naming_the_attribute(client, query, mentions):
    assert_error(client.get(f"/v1/items/a1/similar?{query}"), mentions)
    assert_error(client.get(f"/v1/users/u1/recommendations?{query}"), mentions)


@pytest.mark.parametrize(
    ("value", "mentions"),
    [
        ({"min": "cheap"}, ["'price'", "100..500"]),
        ({"min": 500, "max": 100}, ["'price'", "min is above its max"]),
        ({}, ["'price'"]),
        ({"from": 1}, ["filters.price"]),
        ({"min": True}, ["filters.price"]),
        ("abc", ["'price'"]),
    ],
)
def test_a_bad_range_in_a_body_is_a_400_naming_the_attribute(client, value, mentions):
    body = {"filters": {"price": value}}
    assert_error(client.post("/v1/users/u1/recommendations", json=body), mentions)
    brand = {"filters": {"brand": {"min": 1}}}
    assert_error(client.post("/v1/users/u1/recommendations", json=brand), ["'brand'"])


def test_the_library_refuses_bad_ranges_naming_the_attribute(built):
    recommender = load_active(connect(built[0]))
    for filters in ({"price": "5..1"}, {"price": float("nan")}, {"brand": {"max": 3}}):
        with pytest.raises(InvalidInput, match=repr(next(iter(filters)))):
            recommender.similar_items(["a1"], k=5, filters=filters)


def test_a_live_item_written_since_training_honours_the_range(app, client):
    cheap = {
        "title": "Comedy story cheap",
        "attributes": {"year": 1991, "genres": ["Comedy"], "brand": "a-brand", "price": 260},
    }
    assert client.put("/v1/items/a-cheap", json=cheap, headers=ADMIN).status_code == 201
    bare = {**cheap, "attributes": {"year": 1991, "genres": ["Comedy"], "brand": "a-brand"}}
    assert client.put("/v1/items/a-bare", json=bare, headers=ADMIN).status_code == 201
    patched = client.patch("/v1/items/a4", json={"attributes": {"price": 900}}, headers=ADMIN)
    assert patched.status_code == 200, patched.get_json()
    app.extensions["recsys"].holder.follow()
    assert "a-cheap" in listed(client.get("/v1/items/a1/similar?k=30"))  # followed
    assert listed(client.get("/v1/items/a1/similar?k=30&price=255..265")) == ["a-cheap"]
    body = {"k": 30, "exclude_seen": False, "filters": {"price": {"min": 255, "max": 265}}}
    assert listed(client.post("/v1/users/u1/recommendations", json=body)) == ["a-cheap"]
    band = set(listed(client.get("/v1/items/a1/similar?k=40&price=200..400")))
    assert band == in_stock_priced(200, 400) - {"a4"} | {"a-cheap"}  # a4 is 900 now
    assert "a4" in listed(client.get("/v1/items/a1/similar?k=30&price=900"))
    assert "a-bare" not in listed(client.get("/v1/items/a1/similar?k=40&price=..100000"))
    # a live item as the query: its similar items pass the range too
    around = listed(client.get("/v1/items/a-cheap/similar?k=30&price=200..400"))
    assert around and all(200 <= price_of(i) <= 400 for i in around)


def older_bundle(shop, tmp_path):
    """The shop's catalog and a copy of its bundle as saved before range filters (no
    ``ranges.json`` nor range arrays), registered in its place -> (bundle, artifacts)."""
    url, artifacts = shop
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    engine = connect(url)
    with Session(engine) as session, session.begin():
        for registered in session.scalars(select(ModelBundle)):
            registered.path = str(copy / Path(registered.path).relative_to(artifacts))
            bundle = Path(registered.path)
    engine.dispose()
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in [n for n in manifest["files"] if n == "ranges.json" or n.startswith("range_")]:
        (bundle / name).unlink()
        del manifest["files"][name]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle, copy


def test_a_bundle_saved_before_range_filters_answers_400_saying_retrain(shop, tmp_path):
    bundle, artifacts = older_bundle(shop, tmp_path)
    filters = ItemFilters.load(bundle)
    assert filters.numbers is None
    with pytest.raises(UnknownFilter, match="retrain"):
        filters.mask(filters.resolve({"price": "1..5"}))
    client = make_app(shop[0], artifacts).test_client()
    assert_error(client.get("/v1/items/a1/similar?price=100..500"), ["'price'", "retrain"])
    body = {"filters": {"price": {"min": 100}}}
    assert_error(client.post("/v1/users/u1/recommendations", json=body), ["'price'", "retrain"])
    assert listed(client.get("/v1/items/a1/similar?k=3&brand=a-brand"))  # the rest works


def test_the_cli_takes_filter_options(shop, tmp_path):
    url, _artifacts = shop
    runner = CliRunner()
    env = {"RECSYS_DATABASE_URL": url}

    def run(*args: str):
        return runner.invoke(cli, list(args), env=env)

    band = {i for i in in_stock_priced(200, 400) if i.startswith("b")}
    asked = ("-k", "30", "--filter", "price=200..400", "--filter", "brand=b-brand", "--json")
    similar = run("similar", "--item", "a1", *asked)
    assert similar.exit_code == 0, similar.output
    assert set(json.loads(similar.output)[0]["ids"]) == band
    feed = run("recommend", "--user", "u1", *asked)
    assert feed.exit_code == 0, feed.output
    assert set(json.loads(feed.output)[0]["ids"]) <= band
    out = tmp_path / "similar"
    exported = run("export", "similar", "--out", str(out), "--filter", "price=..150", "-q")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["options"]["filters"] == {"price": "..150"}
    rows = pq.read_table(out).to_pydict()["similar_item_id"]
    assert rows and set(rows) <= {"a0", "a1", "b0"}
    out = tmp_path / "feeds"
    exported = run("export", "feeds", "--out", str(out), "--filter", "released=2025-01-05", "-q")
    assert exported.exit_code == 0, exported.output
    assert set(pq.read_table(out).to_pydict()["item_id"]) == {"a4"}
    for bad, says in (
        (["similar", "--item", "a1", "--filter", "price=5..1"], "price"),
        (["recommend", "--user", "u1", "--filter", "price"], "NAME=VALUE"),
        (["export", "feeds", "--out", str(tmp_path / "x"), "--filter", "brand=1..5"], "brand"),
        (["export", "similar", "--out", str(tmp_path / "y"), "--filter", "colour=red"], "colour"),
    ):
        refused = run(*bad)
        assert refused.exit_code == 2, refused.output
        assert "--filter" in refused.output and says in refused.output, refused.output
