"""The HTTP service over a tiny trained shop: endpoints, bad input, events, hot reload."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recsys.catalog import connect
from recsys.catalog.models import Interaction, Item, ModelBundle, User, catalog_id, utcnow
from recsys.cli import cli
from recsys.model.bundle import active_version
from recsys.model.training import train
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import (
    ADMIN,
    ADMIN_TOKEN,
    build_shop,
    item_image,
    service_app,
    tiny_encoder,
    train_config,
)

TOKEN = ADMIN_TOKEN


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture
def app(shop):
    return service_app(shop)


@pytest.fixture
def client(app):
    return app.test_client()


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_error(response, status: int, mentions: str = ""):
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["status"] == status and error["code"] and mentions in error["message"]


def test_a_worker_serving_a_shop_without_photos_never_imports_torch(tmp_path):
    """torch (about 250 MB of a worker's RSS, 2 s of its start) is loaded for photos only
    (search by photo, photo verification); the catalog-health page's import pulled it into
    every worker."""
    url, artifacts = build_shop(tmp_path, photos=False)
    code = (
        "import sys; from recsys.settings import Settings; from services.app import create_app; "
        f"settings = Settings(database_url={url!r}, artifacts_dir={str(artifacts)!r}); "
        "client = create_app(settings, {'TESTING': True, 'RELOAD_CHECK_SECONDS': 0, "
        "'LIVE_CATALOG_SECONDS': 0}).test_client(); "
        "assert client.get('/v1/users/u1/recommendations?k=3').status_code == 200; "
        "assert client.get('/v1/items/a1/similar?k=3').status_code == 200; "
        "assert client.get('/v1/items?limit=3').status_code == 200; "
        "print('torch' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "False"


def test_similar_items_are_ranked_cards_from_the_same_cluster(client):
    body = client.get("/v1/items/a1/similar?k=5").get_json()
    assert body["item_id"] == "a1" and body["model_version"]
    items = body["items"]
    assert len(items) == 5 and "a1" not in [i["item_id"] for i in items]
    assert all(i["item_id"].startswith("a") for i in items)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    first = items[0]
    assert first["title"].startswith("Comedy story") and first["image_url"].startswith("/images/")
    assert first["attributes"]["brand"] == "a-brand"


def test_a_cold_item_has_similar_items_and_is_recommendable(client):
    similar = client.get("/v1/items/b-new/similar?k=3").get_json()["items"]
    assert all(i["item_id"].startswith("b") for i in similar)
    feed = client.get("/v1/users/u9/recommendations?k=20").get_json()["items"]
    assert "b-new" in [i["item_id"] for i in feed]


def test_home_feed_excludes_seen_items_and_applies_filters(client, shop):
    feed = client.get("/v1/users/u0/recommendations?k=5&genres=Comedy&in_stock=true").get_json()
    assert feed["fallback"] is False and len(feed["items"]) == 5
    assert all(i["item_id"].startswith("a") and i["in_stock"] for i in feed["items"])
    seen = seen_items(connect(shop[0]), "u0")
    assert seen  # sanity: the check below is not vacuous
    unfiltered = client.get("/v1/users/u0/recommendations?k=10").get_json()["items"]
    assert not {i["item_id"] for i in unfiltered} & seen
    # the document's filters object as a deepObject client sends it: the same filter
    deep = client.get("/v1/users/u0/recommendations?k=5&filters[genres]=Comedy&in_stock=true")
    assert deep.get_json()["items"] == feed["items"]
    both = "/v1/users/u0/recommendations?k=30&{}=Comedy&{}=Drama"  # in either order
    for first, then in (("filters[genres]", "genres"), ("genres", "filters[genres]")):
        listed = client.get(both.format(first, then)).get_json()["items"]
        assert {i["item_id"][0] for i in listed} == {"a", "b"}, (first, listed)
    # filters[in_stock] is in_stock (refused, while the message named in_stock filterable)
    sold_out = client.get("/v1/users/u0/recommendations?k=30&filters[in_stock]=false")
    assert sold_out.status_code == 200
    assert {i["in_stock"] for i in sold_out.get_json()["items"]} == {False}


def test_filters_that_pass_no_item_give_an_empty_list_not_an_error(client):
    """A filter value no item has (a misspelt brand), or candidates that all fail the
    filters, is an empty answer, as for an unknown user; an empty value is a 400 naming the
    attribute (it was an empty answer, as if no item had the brand)."""
    asked = [
        client.get("/v1/items/a1/similar?k=3&brand=nobody"),
        client.get("/v1/items/a1/similar?k=3&mode=also&brand=nobody"),
        client.get("/v1/users/u1/recommendations?k=3&brand=nobody"),
        client.post("/v1/users/u1/recommendations", json={"filters": {"brand": ["nobody"]}}),
        client.post(
            "/v1/users/u1/recommendations",
            json={"candidates": ["a4", "b6"], "filters": {"brand": "nobody"}},
        ),
    ]
    for response in asked:
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["items"] == []
    many = "&".join(f"brand=b{n}" for n in range(101))
    assert_error(client.get(f"/v1/items/a1/similar?{many}"), 400, "brand")
    for empty in ("brand=", "brand=a-brand&brand=", "filters[brand]="):
        for path in ("/v1/items/a1/similar", "/v1/users/u1/recommendations"):
            assert_error(client.get(f"{path}?{empty}"), 400, "'brand']: a value is required")
    body = {"filters": {"brand": ""}}
    assert_error(client.post("/v1/users/u1/recommendations", json=body), 400, "'brand'")


def seen_items(engine, user_id: str) -> set[str]:
    """External ids of the items the user has events for, read from the catalog."""
    query = (
        select(Item.external_id)
        .join(Interaction, Interaction.item_id == Item.id)
        .join(User, Interaction.user_id == User.id)
        .where(User.external_id == user_id)
    )
    with Session(engine) as session:
        return set(session.scalars(query))


def test_unknown_user_gets_a_flagged_popularity_fallback(client):
    body = client.get("/v1/users/stranger/recommendations?k=4").get_json()
    assert body["fallback"] is True and len(body["items"]) == 4


def test_post_ranks_only_the_given_candidates(client):
    candidates = ["b2", "a4", "a5", "b6"]
    response = client.post("/v1/users/u1/recommendations", json={"k": 3, "candidates": candidates})
    ids = [i["item_id"] for i in response.get_json()["items"]]
    assert len(ids) == 3 and set(ids) <= set(candidates) and ids[0].startswith("a")


def test_candidates_read_numbers_as_events_do(client):
    """An event's item_id takes 31.0 as "31"; a candidate list refused it (a string or an
    integer only). One id rule at both doors: 2.0 is "2", 2**53 as a float is refused."""
    ranked = client.post("/v1/users/u1/recommendations", json={"k": 3, "candidates": [2.0]})
    assert_error(ranked, 400, "item '2' is not in")  # read as the id "2"
    big = client.post("/v1/users/u1/recommendations", json={"k": 3, "candidates": [2.0**53]})
    assert_error(big, 400, "write ids as text")


@pytest.mark.parametrize(
    ("path", "status", "mentions"),
    [
        ("/v1/items/nope/similar", 404, "nope"),
        ("/v1/items/nope", 404, "nope"),
        ("/v1/items/a1/similar?k=0", 400, "k"),
        ("/v1/items/a1/similar?k=101", 400, "k"),
        ("/v1/items/a1/similar?k=ten", 400, "k"),
        # a repeated parameter took its first value: in_stock=true&in_stock=false listed in-stock
        ("/v1/items/a1/similar?k=1&k=2", 400, "k: is given 2 times"),
        ("/v1/items/a1/similar?in_stock=true&in_stock=false", 400, "in_stock: is given 2 times"),
        ("/v1/users/u1/recommendations?exclude_seen=maybe", 400, "exclude_seen"),
        ("/v1/users/u1/recommendations?colour=red", 400, "colour"),
        ("/v1/nowhere", 404, ""),
        ("/images/nope", 404, "nope"),
        ("/images/%00", 400, "item_id"),  # the id rule of every path that names an item
        ("/v1/items/%00", 400, "item_id"),
        # bytes that are not UTF-8 were read as U+FFFD: a search for them answered 200
        ("/v1/items?q=%FF%FE", 400, "q: is not UTF-8"),
        ("/v1/items/a1/similar?brand=%C3", 400, "brand: is not UTF-8"),
        ("/v1/items/%FF", 400, "item_id"),
    ],
)
def test_bad_requests_get_one_error_shape(client, path, status, mentions):
    assert_error(client.get(path), status, mentions)


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"k": "many"}, "k"),
        ({"k": True}, "k"),
        ({"candidates": "a1"}, "candidates"),
        ({"candidates": ["zzz"]}, "candidates"),
        ({"filters": {"genres": {"x": 1}}}, "filters.genres"),
        ({"filters": {"genres": [f"g{n}" for n in range(101)]}}, "filters.genres: must be"),
        ({"diversity": 1.5}, "diversity"),
        ({"diversity": "0.5"}, "diversity"),
        ({"surprise": 1}, "surprise"),
        ([1, 2], "body"),
    ],
)
def test_bad_ranking_bodies_are_400s_naming_the_field(client, body, mentions):
    response = client.post("/v1/users/u1/recommendations", json=body)
    assert_error(response, 400, mentions)


def test_visual_search_finds_look_alikes_and_refuses_non_images(client, app):
    photo = png(item_image("b", 3))
    response = client.post("/v1/search/image?k=5", data={"image": (io.BytesIO(photo), "q.png")})
    items = response.get_json()["items"]
    assert len(items) == 5 and sum(i["item_id"].startswith("b") for i in items) >= 4

    def search(query: str):
        data = {"image": (io.BytesIO(photo), "q.png")}
        return client.post(f"/v1/search/image?{query}", data=data)

    # the filters of similar items and feeds, not silently ignored
    genres = search("k=5&genres=Comedy").get_json()["items"]
    assert genres and all(i["item_id"].startswith("a") for i in genres)
    stock = search("k=32&in_stock=false").get_json()["items"]
    assert stock and all(i["in_stock"] is False for i in stock)
    assert_error(search("k=5&bogus=1"), 400, "bogus")
    junk = {"image": (io.BytesIO(b"not an image at all"), "q.png")}
    assert_error(client.post("/v1/search/image", data=junk), 400, "image")
    assert_error(client.post("/v1/search/image", data={}), 400, "image")
    app.config["MAX_CONTENT_LENGTH"] = 1000
    big = {"image": (io.BytesIO(b"x" * 5000), "big.png")}
    assert_error(client.post("/v1/search/image", data=big), 413, "larger than 1,000 bytes")
    # a small form over werkzeug's part count was told its body was over the size limit
    app.config["MAX_CONTENT_LENGTH"] = 10**6
    parts = {**{f"p{n}": "x" for n in range(1001)}, "image": (io.BytesIO(photo), "q.png")}
    assert_error(client.post("/v1/search/image", data=parts), 413, "more than 1,000 parts")


def test_a_searched_photo_is_seen_as_the_same_file_in_the_catalog(client, app, tmp_path):
    """An upload was shrunk to 256 px its own way before the encoder resized it: an item's
    very photo came back at cosine 0.99, an up-scaled JPEG at 0.82 where its file scored 0.75
    (the catalog's photos, and items written with a photo, are decoded from their files)."""
    from PIL import Image

    path = tmp_path / "up.jpg"
    pixels = np.asarray(Image.open(io.BytesIO(png(item_image("b", 3)))).convert("RGB"))
    Image.fromarray(pixels).resize((300, 210), Image.Resampling.BICUBIC).save(path, quality=90)
    upload = {"image": (io.BytesIO(path.read_bytes()), "up.jpg")}
    served = client.post("/v1/search/image?k=5", data=upload).get_json()["items"]
    found = app.extensions["recsys"].holder.state.recommender.search_images(path, k=5)
    assert [i["item_id"] for i in served] == list(found.ids[0])
    np.testing.assert_allclose([i["score"] for i in served], found.scores[0], atol=1e-4)


def test_images_and_items_are_served(client):
    assert client.get("/images/a1").content_type == "image/png"
    # a page's cache-buster after it replaced a photo: a 400 had broken the <img>
    assert client.get("/images/a1?v=2").content_type == "image/png"
    assert_error(client.get("/images/a1?w=300"), 400, "w: unknown parameter")
    item = client.get("/v1/items/a-new").get_json()
    assert item["in_model"] is True and item["image_url"] == "/images/a-new"
    page = client.get("/v1/items?limit=5&q=Drama").get_json()
    assert page["total"] == 16 and page["total_exact"] and len(page["items"]) == 5
    assert_error(client.get("/v1/items?q=Dr"), 400, "at least 3 characters")
    message = client.get("/v1/items?q=Dr").get_json()["error"]["message"]
    assert message.startswith("q: 'Dr' is too short") and message.count("'Dr'") == 1
    assert_error(client.get("/v1/items?q=" + "d" * 201), 400, "at most 200")
    assert client.get("/v1/items?q=100%25").status_code == 200  # a "%" of its own is text
    every = [item["item_id"] for item in client.get("/v1/items?limit=100").get_json()["items"]]
    first = client.get("/v1/items?limit=5").get_json()
    after = client.get(f"/v1/items?limit=5&after={first['next']}").get_json()
    assert [item["item_id"] for item in after["items"]] == every[5:10]
    assert client.get("/v1/items?limit=100").get_json()["next"] is None
    for bad in ("offset=10001", "after=-1", "after=x", "after=1.5"):
        assert_error(client.get(f"/v1/items?{bad}"), 400, bad.split("=")[0])
    # both were taken together, the page starting after the key and skipping more
    both = client.get(f"/v1/items?offset=5&after={first['next']}")
    assert_error(both, 400, "after: give offset or after, not both")
    users = client.get("/v1/users?limit=3", headers=ADMIN).get_json()
    assert len(users["users"]) == 3 and all(u["interactions"] > 0 for u in users["users"])
    following = client.get(f"/v1/users?limit=3&after={users['next']}", headers=ADMIN).get_json()
    assert not {u["user_id"] for u in users["users"]} & {u["user_id"] for u in following["users"]}


def test_product_page_and_ranked_rows_read_the_same_card(client, shop):
    """A catalog edit shows on the product page and in the similar-items row at once."""
    neighbour = client.get("/v1/items/a1/similar?k=3").get_json()["items"][0]["item_id"]
    engine = connect(shop[0])
    with Session(engine) as session:
        before = session.scalar(select(Item).where(Item.external_id == neighbour))
        title, in_stock = before.title, before.in_stock
    edit_item(engine, neighbour, title="Renamed in the catalog", in_stock=False)
    try:
        page = client.get(f"/v1/items/{neighbour}").get_json()
        row = client.get("/v1/items/a1/similar?k=3").get_json()["items"]
        shown = next(item for item in row if item["item_id"] == neighbour)
        listed = client.get("/v1/items?q=Renamed").get_json()["items"]
        assert page["title"] == shown["title"] == listed[0]["title"] == "Renamed in the catalog"
        assert page["in_stock"] is shown["in_stock"] is False
    finally:
        edit_item(engine, neighbour, title=title, in_stock=in_stock)


def edit_item(engine, item_id: str, **values) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(Item).where(Item.external_id == item_id).values(**values))


def test_posted_events_change_the_next_feed_without_retraining(client):
    before = client.get("/v1/users/u2/recommendations?k=5").get_json()
    assert all(i["item_id"].startswith("a") for i in before["items"])
    events = [{"user_id": "u2", "item_id": f"b{k}", "event": "purchase"} for k in range(10)]
    response = client.post("/v1/interactions", json={"events": events}, headers=ADMIN)
    assert response.status_code == 201 and response.get_json()["inserted"] == 10
    after = client.get("/v1/users/u2/recommendations?k=5").get_json()
    assert after["model_version"] == before["model_version"]
    assert sum(i["item_id"].startswith("b") for i in after["items"]) >= 3
    assert not {i["item_id"] for i in after["items"]} & {f"b{k}" for k in range(10)}
    newcomer = [
        {"user_id": "new-shopper", "item_id": "a2"},
        {"user_id": "new-shopper", "item_id": "a4"},
    ]
    client.post("/v1/interactions", json={"events": newcomer}, headers=ADMIN)
    feed = client.get("/v1/users/new-shopper/recommendations?k=5").get_json()
    assert feed["fallback"] is False and all(i["item_id"].startswith("a") for i in feed["items"])


def test_a_shopper_with_more_events_since_the_bundle_than_are_folded_in_sees_none_again(client):
    """Only the newest 200 events since the bundle were read: a shopper with 300 purchases
    since was offered the 100 oldest back, though the feed leaves out seen items."""
    from recsys.catalog.reads import FRESH_LIMIT

    def dated(item: str, minute: int) -> dict:
        at = f"2026-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z"
        return {"user_id": "heavy", "item_id": item, "event": "purchase", "timestamp": at}

    older = [dated(f"b{k}", k) for k in range(10)]
    assert client.post("/v1/interactions", json={"events": older}, headers=ADMIN).status_code == 201
    newer = [dated(f"a{k % 10}", 10 + k) for k in range(FRESH_LIMIT)]
    assert client.post("/v1/interactions", json={"events": newer}, headers=ADMIN).status_code == 201
    feed = client.get("/v1/users/heavy/recommendations?k=30&diversity=0").get_json()
    shown = {item["item_id"] for item in feed["items"]}
    seen = {f"b{k}" for k in range(10)} | {f"a{k}" for k in range(10)}
    assert shown and not shown & seen
    every = client.get("/v1/users/heavy/recommendations?k=30&exclude_seen=false").get_json()
    assert {f"b{k}" for k in range(10)} & {item["item_id"] for item in every["items"]}


@pytest.mark.parametrize(
    ("events", "mentions"),
    [
        ([{"user_id": "u1", "item_id": "nope"}], "events[0]"),
        ([{"user_id": "u1", "item_id": "a1"}, {"user_id": "u1"}], "events[1]"),
        ([{"user_id": "u1", "item_id": "a1", "weight": -2}], "events[0]"),
        ([{"user_id": "u1", "item_id": "a1", "weight": 2, "rating": 3}], "weight and rating"),
        ([{"user_id": "u1", "item_id": "a1", "event": "v" * 100_000}], "events[0]"),
        ([{"user_id": "u1", "item_id": "a1", "colour": "red"}], "events[0].colour"),
        ([{"user_id": {"x": 1}, "item_id": "a1"}], "events[0].user_id"),
        ([], "events"),
    ],
)
def test_bad_events_store_nothing(client, shop, events, mentions):
    engine = connect(shop[0])
    with Session(engine) as session:
        before = session.query(Interaction).count()
    response = client.post("/v1/interactions", json={"events": events}, headers=ADMIN)
    assert_error(response, 400, mentions)
    assert len(response.get_json()["error"]["message"]) < 1000  # a bad value is not echoed whole
    with Session(engine) as session:
        assert session.query(Interaction).count() == before


def test_skip_rejected_stores_the_good_events_of_a_batch_and_lists_the_others(client, shop):
    """A forwarder's batch held one event of an item removed since (or a bad weight): the
    whole batch was a 400 and every later event waited behind it."""
    engine = connect(shop[0])
    with Session(engine) as session:
        before = session.query(Interaction).count()
    events = [
        {"user_id": "fwd-1", "item_id": "a1"},
        {"user_id": "fwd-2", "item_id": "gone-since"},
        {"user_id": "fwd-1", "item_id": "a2", "weight": -2},
        {"user_id": "fwd-3", "item_id": "a3", "timestamp": "2024-01-01T00:00:00"},
        {"user_id": "fwd-3", "item_id": "a3", "timestamp": "2024-01-01T00:00:00", "weight": 5},
    ]
    response = client.post(
        "/v1/interactions?skip_rejected=true", json={"events": events}, headers=ADMIN
    )
    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert answer["inserted"] == 2 and answer["users"] == ["fwd-1", "fwd-3"]
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [
        (1, "unknown_item"),
        (2, "invalid_value"),
        (4, "duplicate"),
    ]
    assert "gone-since" in answer["rejected"][0]["message"]
    with Session(engine) as session:
        assert session.query(Interaction).count() == before + 2
    # without it: all or nothing, as before
    refused = client.post("/v1/interactions", json={"events": events[:2]}, headers=ADMIN)
    assert_error(refused, 400, "events[1]")
    assert (
        client.post("/v1/interactions", json={"events": events[:1]}, headers=ADMIN).get_json()[
            "rejected"
        ]
        == []
    )


def test_health_readiness_metrics_and_openapi(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["model_version"]
    assert ready["group_by"] is None  # no RECSYS_GROUP_BY: hosts can compare theirs
    client.get("/v1/items/a1/similar")
    client.get("/v1/items/nope/similar")
    metrics = client.get("/metrics")
    text = metrics.get_data(as_text=True)
    assert 'recsys_http_requests_total{endpoint="/v1/items/<item_id>/similar"' in text
    # by the error shape's code too: one status holds several (503: the database or the model)
    assert (
        'recsys_http_error_codes_total{code="unknown_item",endpoint="/v1/items/<item_id>/similar"}'
        in text
    )
    # one charset: Flask added a second to prometheus_client's, and strict parsers refuse that
    assert metrics.headers["Content-Type"].count("charset") == 1
    assert (
        'recsys_http_errors_total{endpoint="/v1/items/<item_id>/similar",method="GET",status="404"}'
        in text
    )
    assert f'recsys_model_info{{version="{ready["model_version"]}"}} 1.0' in text
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/v1/items/{item_id}/similar" in spec["paths"]


def test_made_up_methods_share_one_metrics_series(client):
    for method in ("AAAA", "AAAB", "BREW"):
        assert client.open("/v1/items/a1/similar", method=method).status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="AAAA"' not in text and 'method="BREW"' not in text
    assert 'recsys_http_errors_total{endpoint="unmatched",method="other",status="405"} 3.0' in text


def test_a_wrong_method_on_a_routes_fixed_tail_is_a_405_not_the_id_route(client, app):
    """DELETE /v1/users/<id>/recommendations reached erase_user (its id keeps slashes) and
    erased a user "<id>/recommendations"; PUT/PATCH/DELETE on /v1/items/<id>/similar reached
    the item writes (a 400). Each is the feed's or similar items' URL: a 405 naming theirs,
    but a PUT, which would create an item of that id, keeps the 400 saying why it cannot."""
    from recsys.ingest.users import user_record

    engine = app.extensions["recsys"].engine
    wrong = client.delete("/v1/users/u1/recommendations", headers=ADMIN)
    assert_error(wrong, 405)
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    assert user_record(engine, "u1/recommendations")["erased_at"] is None
    assert user_record(engine, "u1")["erased_at"] is None
    options = client.options("/v1/users/u1/recommendations")
    assert "DELETE" not in options.headers["Allow"]
    for method in ("PATCH", "DELETE"):
        similar = client.open("/v1/items/a1/similar", method=method, headers=ADMIN, json={})
        assert_error(similar, 405)
        assert "PATCH" not in similar.headers["Allow"] and "DELETE" not in similar.headers["Allow"]
    # a PUT would create an item "a1/similar": told why it cannot
    created = client.put("/v1/items/a1/similar", headers=ADMIN, json={})
    assert_error(created, 400, "ends in '/similar'")
    # the id routes themselves still answer
    plain = client.delete("/v1/users/nobody-at-all", headers=ADMIN)
    assert plain.status_code == 200 and plain.get_json()["found"] is False
    assert client.get("/v1/items/a1").status_code == 200
    assert "DELETE" in client.options("/v1/items/a1").headers["Allow"]


def test_service_without_a_model_is_live_but_not_ready(tmp_path):
    from recsys.catalog import migrate

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    migrate.upgrade(connect(url))
    client = create_app(Settings(database_url=url), {"RELOAD_CHECK_SECONDS": 0}).test_client()
    assert client.get("/healthz").status_code == 200
    assert_error(client.get("/readyz"), 503, "recsys train")
    assert_error(client.get("/v1/items/a1/similar"), 503, "recsys train")
    message = client.get("/v1/users/u1/recommendations").get_json()["error"]["message"]
    assert message.startswith("no active model bundle")  # not "ModelNotTrained: no active"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"k": 1' + "0" * 5000 + "}", "a number too long"),
        ('{"k": 3,}', "not valid JSON (Expecting property name"),
        ("null", "must be a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_says_what_is_wrong(client, body, says):
    response = client.post(
        "/v1/users/u1/recommendations", data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, says)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_400_naming_the_body(client, depth):
    nested = '{"events": ' + "[" * depth + "]" * depth + "}"
    for path, headers in (("/v1/interactions", ADMIN), ("/v1/users/u1/recommendations", {})):
        response = client.post(
            path, data=nested, headers={**headers, "Content-Type": "application/json"}
        )
        assert_error(response, 400, "body")


def test_a_corrupt_bundle_is_a_503_that_shows_no_file_path(tmp_path):
    url, artifacts = build_shop(tmp_path)
    for vectors in (artifacts / "bundles").glob("*/item_vectors.npy"):
        vectors.write_bytes(b"corrupt")
    client = create_app(Settings(database_url=url), {"RELOAD_CHECK_SECONDS": 0}).test_client()
    response = client.get("/v1/items/a1/similar")
    assert_error(response, 503, "item_vectors.npy")  # names the file, not where it is
    assert str(tmp_path) not in response.get_data(as_text=True)
    assert str(tmp_path) not in client.get("/readyz").get_data(as_text=True)


def test_a_worker_waits_for_a_missing_catalog_instead_of_failing_to_boot(tmp_path):
    url, artifacts = build_shop(tmp_path / "shop")
    later = tmp_path / "later.db"  # nothing there yet
    settings = Settings(database_url=f"sqlite:///{later}", artifacts_dir=artifacts)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "CATALOG_RETRY_MAX_SECONDS": 0.2})
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    # as /readyz says it: the driver's text (a PostgreSQL host and port) is for the log only
    waiting = client.get("/v1/items/a1/similar")
    assert_error(waiting, 503, "the catalog database is not ready (the server log says why)")
    assert waiting.get_json()["error"]["code"] == "catalog_not_ready"  # was model_not_ready
    assert "later.db" not in waiting.get_data(as_text=True)
    ready = client.get("/readyz").get_data(as_text=True)
    assert "recsys db upgrade" in ready and "recsys train" not in ready
    assert str(tmp_path) not in ready
    assert not later.exists()  # waiting creates no empty catalog in its place
    source = sqlite3.connect(url.removeprefix("sqlite:///"))
    with sqlite3.connect(later) as target:
        source.backup(target)  # the catalog file comes (back)
    source.close()
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get("/v1/items/a1/similar?k=3").status_code == 200


def test_reload_needs_the_bearer_token(client):
    assert_error(client.post("/v1/admin/reload"), 401)
    wrong = {"Authorization": "Bearer not-the-token"}
    assert_error(client.post("/v1/admin/reload", headers=wrong), 401)


def test_reload_swaps_bundles_and_refuses_a_tampered_one(tmp_path):
    url, artifacts = build_shop(tmp_path)
    settings = Settings(database_url=url, artifacts_dir=artifacts, admin_token=TOKEN)
    client = create_app(settings, {"RELOAD_CHECK_SECONDS": 0}).test_client()
    engine = connect(url)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    old = client.get("/readyz").get_json()["model_version"]
    new = train(engine, artifacts, train_config(), "cpu", image_encoder_factory=tiny_encoder)
    response = client.post("/v1/admin/reload", headers=auth).get_json()
    assert response == {"previous_version": old, "model_version": new.version}
    assert client.get("/v1/items/a1/similar").get_json()["model_version"] == new.version
    # Tamper with the older bundle and activate it: refused, the new one keeps serving.
    with Session(engine) as session, session.begin():
        session.execute(update(ModelBundle).values(is_active=False))
        session.execute(
            update(ModelBundle).where(ModelBundle.version == old).values(is_active=True)
        )
    (artifacts / "bundles" / old / "item_vectors.npy").write_bytes(b"tampered")
    assert_error(client.post("/v1/admin/reload", headers=auth), 409, "checksum")
    assert client.get("/v1/items/a1/similar").get_json()["model_version"] == new.version
    assert client.get("/readyz").status_code == 200


def test_a_refused_active_bundle_is_one_warning_not_a_failed_check(tmp_path, caplog):
    """An active bundle that does not load (its folder gone since a restore) was a traceback
    of "checking for a new active bundle failed", then "failed no longer" at the next check,
    which read as a recovery while the bundle still could not be loaded."""
    url, artifacts = build_shop(tmp_path)
    engine = connect(url)
    bad = train(engine, artifacts, train_config(), "cpu", image_encoder_factory=tiny_encoder)
    app = create_app(Settings(database_url=url, artifacts_dir=artifacts), {})
    holder = app.extensions["recsys"].holder
    served = holder.state.version
    with Session(engine) as session, session.begin():  # the older one active again
        session.execute(update(ModelBundle).values(is_active=False))
        session.execute(
            update(ModelBundle).where(ModelBundle.version != bad.version).values(is_active=True)
        )
    shutil.rmtree(artifacts / "bundles" / active_version(engine))
    for _ in range(2):
        holder._checked = 0.0
        holder.maybe_reload()
    assert holder.state.version == served and holder.refused is not None
    assert "reload refused" in caplog.text
    assert "checking for a new active bundle failed" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_restarted_worker_serves_the_last_bundle_that_loads(tmp_path, monkeypatch):
    """A bad bundle activated while serving is refused by the running workers, which keep
    the last good one; a worker restarted then (a crash, an OOM kill) served 503s to its share
    of the traffic. It now serves the newest earlier bundle that loads, says so, and tries
    the active one again only once its files change."""
    from recsys import serving

    url, artifacts = build_shop(tmp_path)
    engine = connect(url)
    good = active_version(engine)
    bad = train(engine, artifacts, train_config(), "cpu", image_encoder_factory=tiny_encoder)
    vectors = artifacts / "bundles" / bad.version / "item_vectors.npy"
    intact = vectors.read_bytes()
    vectors.write_bytes(b"damaged")
    settings = Settings(database_url=url, artifacts_dir=artifacts)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 10})
    client = app.test_client()
    assert client.get("/v1/items/a1/similar?k=3").get_json()["model_version"] == good
    ready = client.get("/readyz").get_json()
    assert (ready["model_version"], ready["refused_version"]) == (good, bad.version)
    assert "recsys_active_bundle_refused 1.0" in client.get("/metrics").get_data(as_text=True)
    holder = app.extensions["recsys"].holder
    loads = []
    monkeypatch.setattr(
        holder, "loader", lambda *a, **k: loads.append(1) or serving.load_state(*a, **k)
    )
    holder._checked = 0.0
    holder.maybe_reload()
    assert loads == []  # the same refused files: not read again every check
    vectors.write_bytes(intact)  # fixed in place
    holder._checked = 0.0
    holder.maybe_reload()
    assert loads == [1]
    ready = client.get("/readyz").get_json()
    assert (ready["model_version"], ready["refused_version"]) == (bad.version, None)


def test_a_load_that_fails_for_another_reason_than_the_bundle_is_tried_again(shop):
    """A database error while a bundle's live catalog is read is no fault of the bundle:
    the next check tries it again (only a refused bundle waits for its files to change)."""
    from recsys.serving import ModelHolder, load_state

    calls = []

    def flaky(engine, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return load_state(engine, **kwargs)

    holder = ModelHolder(connect(shop[0]), loader=flaky, check_interval=10)
    with pytest.raises(RuntimeError):
        holder.reload(fallback=True)
    assert holder.refused is None and not holder.ready
    holder._checked = 0.0
    holder.maybe_reload()
    assert len(calls) == 2 and holder.ready


def test_a_worker_hands_the_heap_back_once_after_a_swap(shop, monkeypatch):
    """glibc keeps what a swapped-out bundle freed: a worker kept 100 MB more per rollback
    in a soak. The follower trims the heap once, a few seconds after each swap."""
    from recsys import serving

    trims = []
    monkeypatch.setattr(serving, "trim_c_heap", lambda: trims.append(1))
    holder = serving.ModelHolder(connect(shop[0]))
    holder.reload()
    assert not holder.trim_after_swap()  # requests may still hold the bundle before
    assert holder.trim_after_swap(delay=0) and trims == [1]
    assert not holder.trim_after_swap(delay=0) and trims == [1]  # once per swap


def test_requests_in_flight_during_reloads_all_succeed(app, shop):
    """Hammer the app from threads while the bundle is swapped repeatedly: no failures."""
    holder = app.extensions["recsys"].holder
    failures, stop = [], threading.Event()

    def hammer():
        client = app.test_client()
        while not stop.is_set():
            for path in ("/v1/items/a2/similar?k=5", "/v1/users/u3/recommendations?k=5"):
                response = client.get(path)
                if response.status_code != 200 or len(response.get_json()["items"]) != 5:
                    failures.append((path, response.status_code))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            holder.reload()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []


def test_similar_items_on_each_surface(client):
    similar = client.get("/v1/items/a1/similar?k=5").get_json()
    also = client.get("/v1/items/a1/similar?k=5&mode=also").get_json()
    assert len(similar["items"]) == len(also["items"]) == 5
    assert all(item["item_id"] != "a1" for item in also["items"])
    bad = client.get("/v1/items/a1/similar?mode=sideways")
    assert bad.status_code == 400 and "mode" in bad.get_json()["error"]["message"]


def test_ids_in_urls_follow_the_one_id_rule(client):
    """A NUL or other control character is a 400 naming the parameter, never an answer
    about the look-alike id without it."""
    for url, name in (
        ("/v1/users/u1%00/recommendations", "user_id"),
        ("/v1/items/a1%00/similar", "item_id"),
        ("/v1/items/a1%07", "item_id"),
    ):
        response = client.get(url)
        assert_error(response, 400)
        assert response.get_json()["error"]["message"].startswith(name)
    assert client.get("/v1/users/u1/recommendations").status_code == 200


def test_bundle_watchers_pause_unevenly_so_workers_do_not_reload_together(monkeypatch):
    from services import app as app_module

    pauses = []

    class Holder:
        check_interval = 10.0

        def maybe_reload(self):
            if len(pauses) >= 50:
                raise StopIteration

    monkeypatch.setattr(app_module.time, "sleep", pauses.append)
    with pytest.raises(StopIteration):
        app_module._watch(Holder())
    assert all(5.0 <= pause <= 15.0 for pause in pauses)
    assert len(set(pauses)) > 40  # drawn, not a fixed period shared by every worker


def test_answers_are_not_sniffed_or_framed_and_pages_load_only_their_own_code(client):
    for path in ("/", "/catalog", "/images/a1", "/v1/items/a1", "/v1/items/nope"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
    policy = client.get("/catalog").headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "Content-Security-Policy" not in client.get("/v1/items/a1").headers


def _serving_the_newer_of_two(tmp_path):
    """A shop with two bundles, an app serving the newer -> (artifacts folder, the older
    version, the newer bundle, the app's client, its model holder)."""
    url, artifacts = build_shop(tmp_path)
    engine = connect(url)
    good = active_version(engine)
    new = train(engine, artifacts, train_config(), "cpu", image_encoder_factory=tiny_encoder)
    settings = Settings(database_url=url, artifacts_dir=artifacts, admin_token=TOKEN)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 10})
    return artifacts, good, new, app.test_client(), app.extensions["recsys"].holder


def test_a_served_bundle_damaged_in_place_is_left_for_an_earlier_one_and_taken_back(tmp_path):
    """A bundle's files copied over in place under a running worker gave 500s from what it
    mapped; the admin reload refused the files but kept serving them, and once they were
    restored /readyz named the served bundle refused for good (false alerts)."""
    artifacts, good, new, client, holder = _serving_the_newer_of_two(tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/readyz").get_json()["model_version"] == new.version
    vectors = artifacts / "bundles" / new.version / "item_vectors.npy"
    intact = vectors.read_bytes()
    vectors.write_bytes(b"damaged")
    moved = client.post("/v1/admin/reload", headers=auth).get_json()
    assert moved == {"previous_version": new.version, "model_version": good}
    ready = client.get("/readyz").get_json()
    assert (ready["model_version"], ready["refused_version"]) == (good, new.version)
    assert client.get("/v1/items/a1/similar?k=3").status_code == 200
    vectors.write_bytes(intact)  # restored in place
    holder._checked = 0.0
    holder.maybe_reload()
    ready = client.get("/readyz").get_json()
    assert (ready["model_version"], ready["refused_version"]) == (new.version, None)


def test_a_served_bundle_deleted_or_truncated_is_noticed_by_the_periodic_check(tmp_path):
    """The registry unchanged, a worker's check compared versions only: one whose bundle
    folder was deleted kept answering from its mappings and said it was ready, one whose
    file was truncated died of SIGBUS while its siblings served on. The check now also
    compares the served files with those loaded, and falls back as a starting worker does."""
    artifacts, good, new, client, holder = _serving_the_newer_of_two(tmp_path)
    holder._checked = 0.0
    holder.maybe_reload()  # nothing changed: nothing reloaded
    assert client.get("/readyz").get_json()["model_version"] == new.version
    folder = artifacts / "bundles" / new.version
    folder.rename(tmp_path / "away")
    holder._checked = 0.0
    holder.maybe_reload()
    ready = client.get("/readyz").get_json()
    assert (ready["model_version"], ready["refused_version"]) == (good, new.version)
    assert client.get("/v1/items/a1/similar?k=3").status_code == 200
    (tmp_path / "away").rename(folder)  # put back
    holder._checked = 0.0
    holder.maybe_reload()
    ready = client.get("/readyz").get_json()
    assert (ready["model_version"], ready["refused_version"]) == (new.version, None)


def test_a_chunked_body_past_the_size_limit_is_a_413_not_invalid_json(client):
    """Without a Content-Length the body was cut at the limit and read as broken JSON."""
    big = b'{"events": [' + b" " * (6 * 1024 * 1024) + b"]}"
    response = client.post(
        "/v1/interactions",
        input_stream=io.BytesIO(big),
        headers={**ADMIN, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert "larger than 5,242,880 bytes" in response.get_json()["error"]["message"]


def test_each_answer_names_its_request_and_a_failure_leads_to_its_traceback(
    client, monkeypatch, caplog
):
    """X-Request-ID: the request's own when it is a plausible id, else a new one; a 500
    gives it to the client, and the server's traceback line carries the same id."""
    assert (
        client.get("/healthz", headers={"X-Request-ID": "lb-1f2e"}).headers["X-Request-ID"]
        == "lb-1f2e"
    )
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(2)}
    assert len(made) == 2  # one of its own for each
    hostile = client.get("/healthz", headers={"X-Request-ID": "x <script>" + "a" * 200})
    assert len(hostile.headers["X-Request-ID"]) == 32

    def fails(*args, **kwargs):
        raise RuntimeError("out of memory in the ranker")

    monkeypatch.setattr("services.api.home_feed", fails)
    with caplog.at_level("ERROR", logger="services.errors"):
        failed = client.get("/v1/users/u1/recommendations", headers={"X-Request-ID": "t-42"})
    assert failed.status_code == 500 and failed.headers["X-Request-ID"] == "t-42"
    assert failed.get_json()["error"]["message"].endswith("(request t-42)")
    logged = [record for record in caplog.records if record.exc_info]
    assert "GET /v1/users/u1/recommendations (request t-42)" in logged[0].getMessage()
    assert "out of memory in the ranker" in caplog.text


def test_an_erased_user_is_forgotten_by_the_next_feed_on_every_path(tmp_path):
    """A shopper's request to have their data removed: the user and their events leave the
    catalog, and the served bundle's factors and history of theirs are not used again, kept
    answers included; the next training leaves them out."""
    url, artifacts = build_shop(tmp_path)
    app = service_app((url, artifacts))
    client = app.test_client()
    state = app.extensions["recsys"].holder.state
    assert state.recommender.manifest["events_from"] == "catalog" and state.users_from_catalog
    before = client.get("/v1/users/u1/recommendations?k=5").get_json()  # kept by the worker
    assert before["fallback"] is False
    assert client.delete("/v1/users/u1").status_code == 401  # a key with users:write
    erased = client.delete("/v1/users/u1", headers=ADMIN)
    assert erased.status_code == 200 and erased.get_json()["user_id"] == "u1"
    assert erased.get_json()["events"] > 0
    after = client.get("/v1/users/u1/recommendations?k=5").get_json()
    popular = client.get("/v1/users/never-seen/recommendations?k=5").get_json()
    assert after["fallback"] is True and after["items"] == popular["items"]
    ranked = client.post("/v1/users/u1/recommendations", json={"k": 5}).get_json()
    assert ranked["fallback"] is True
    listed = client.get("/v1/users?limit=100", headers=ADMIN).get_json()["users"]
    assert "u1" not in {user["user_id"] for user in listed}
    again = client.delete("/v1/users/u1", headers=ADMIN)  # idempotent: a retry is no error
    assert again.status_code == 200 and again.get_json() == {
        "user_id": "u1",
        "events": 0,
        "found": False,
    }
    said = CliRunner().invoke(
        cli, ["--database-url", url, "users", "erase", "u2", "nobody", "--json"]
    )
    assert said.exit_code == 0 and json.loads(said.stdout)["unknown"] == ["nobody"]
    assert client.get("/v1/users/u2/recommendations?k=5").get_json()["fallback"] is True
    # a bundle trained on an event folder (its users need not be in the catalog) forgets
    # them too: the erasure is recorded, not inferred from the missing user
    state.users_from_catalog = False
    assert client.get("/v1/users/u2/recommendations?k=5").get_json()["fallback"] is True
    assert client.get("/v1/users/u3/recommendations?k=5").get_json()["fallback"] is False


def test_an_erased_user_stays_erased_when_they_come_back_or_an_old_file_is_ingested(tmp_path):
    """One new event of an erased shopper folded their erased history back into the feed
    from the bundle; an old events file ingested again brought them back whole. Their new
    events start a new history; their old ones are refused, naming the erasure."""
    url, artifacts = build_shop(tmp_path)
    app = service_app((url, artifacts))
    client = app.test_client()
    history = _listed(client, "u1")
    assert {r["item_id"] for r in _reasons(client, "u1")} - {None}, "reasons name the history"
    assert client.delete("/v1/users/u1", headers=ADMIN).status_code == 200
    came_back = {"user_id": "u1", "item_id": "b5", "event": "view"}  # stamped now: after
    assert (
        client.post("/v1/interactions", json={"events": [came_back]}, headers=ADMIN).status_code
        == 201
    )
    feed = client.get("/v1/users/u1/recommendations?k=5").get_json()
    assert feed["fallback"] is False and _listed(client, "u1") != history
    assert {r["item_id"] for r in _reasons(client, "u1")} <= {"b5", None}
    old = {**came_back, "item_id": "a1", "timestamp": "2024-01-02T00:00:00"}
    refused = client.post("/v1/interactions", json={"events": [old]}, headers=ADMIN)
    assert_error(refused, 400, "its user was erased at")
    # dated ahead of the clock, as a producer's fast clock dated it before the erasure
    ahead = {**old, "timestamp": (utcnow() + timedelta(hours=6)).isoformat()}
    refused = client.post("/v1/interactions", json={"events": [ahead]}, headers=ADMIN)
    assert_error(refused, 400, "a clock up to a day fast")
    events = tmp_path / "old.csv"
    later = (utcnow() + timedelta(minutes=5)).isoformat()
    events.write_text(
        "user_id,item_id,event,timestamp\nu1,a1,click,2024-01-02\nu1,a2,click,\n"
        f"u1,a3,click,{later}\nu4,a2,click,2024-01-02\n"
    )
    said = CliRunner().invoke(
        cli, ["--database-url", url, "ingest", "interactions", str(events), "-q"]
    )
    assert said.exit_code == 1, said.output
    assert "1 accepted" in said.output and "erased_user: 3" in said.output
    rejects = (tmp_path / "old.csv.rejects.csv").read_text()
    assert "erased_user" in rejects and "u1" not in rejects  # not written down again


def test_an_erasure_file_as_spreadsheets_write_it_erases_the_ids_in_it(tmp_path):
    """A byte order mark refused the whole file; a header line was recorded as an erased id,
    and a quoted id was not erased."""
    url, _ = build_shop(tmp_path)
    ids = tmp_path / "ids.csv"
    ids.write_text('\ufeffuser_id\n"u1"\nu2\n\n', encoding="utf-8")
    said = CliRunner().invoke(
        cli, ["--database-url", url, "users", "erase", "--file", str(ids), "--json"]
    )
    assert said.exit_code == 0, said.output
    assert json.loads(said.stdout) == {"erased": ["u1", "u2"], "events": 12, "unknown": []}


def _listed(client, user: str) -> set[str]:
    feed = client.get(f"/v1/users/{user}/recommendations?k=5").get_json()
    return {item["item_id"] for item in feed["items"]}


def _reasons(client, user: str) -> list[dict]:
    feed = client.get(f"/v1/users/{user}/recommendations?k=5").get_json()
    return [reason for item in feed["items"] for reason in item["because"]]


def test_a_worker_waiting_for_its_catalog_writes_nothing_and_says_why(tmp_path):
    """A worker of older code on a catalog newer code migrated recorded events and wrote
    items into a schema it does not know (201s); every read and write of the catalog is now
    a 503 catalog_not_ready, /readyz included, while /healthz answers."""
    url, artifacts = build_shop(tmp_path)
    with connect(url).begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    settings = Settings(database_url=url, artifacts_dir=artifacts, admin_token=TOKEN)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "CATALOG_RETRY_MAX_SECONDS": 60})
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    event = {"user_id": "u1", "item_id": "a1", "event": "view"}
    asked = [
        client.post("/v1/interactions", json={"events": [event]}, headers=ADMIN),
        client.put("/v1/items/new-1", json={"title": "New"}, headers=ADMIN),
        client.get("/v1/items?limit=2"),
        client.get("/v1/users?limit=2", headers=ADMIN),
        client.get("/readyz"),
    ]
    for answer in asked:
        assert_error(answer, 503, "newer code migrated it")
        assert answer.get_json()["error"]["code"] == "catalog_not_ready"


def test_a_catalog_copied_to_another_database_serves_the_same_answers(tmp_path, db_url):
    """Moving a shop by export and ingest lost its keys, erasures and bundle registry, and
    stored every event "now": every feed folded the whole history in as fresh. `recsys db
    copy` carries every row as it is."""
    url, artifacts = build_shop(tmp_path)
    run = CliRunner()
    key = run.invoke(cli, ["--database-url", url, "keys", "create", "--scope", "events:write"])
    secret = key.stdout.split()[0]
    assert run.invoke(cli, ["--database-url", url, "users", "erase", "u3"]).exit_code == 0
    before = service_app((url, artifacts)).test_client()
    asked = ["/v1/users/u1/recommendations?k=5", "/v1/items/a1/similar?k=5", "/v1/items?limit=5"]
    answers = [before.get(path).get_json() for path in asked]
    copied = run.invoke(cli, ["--database-url", url, "db", "copy", "--to", db_url, "-q"])
    assert copied.exit_code == 0, copied.output
    assert "interactions" in copied.stdout and "model_bundles 1" in copied.stdout
    after = service_app((db_url, artifacts)).test_client()
    assert [after.get(path).get_json() for path in asked] == answers
    assert catalog_id(connect(db_url)) == catalog_id(connect(url))  # the same catalog's
    old = {"user_id": "u3", "item_id": "a1", "event": "view", "timestamp": "2024-01-02"}
    posted = after.post("/v1/interactions", json={"events": [old]},
                        headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert_error(posted, 400, "its user was erased at")  # the old key works; u3 stays erased
    assert after.put("/v1/items/brand-new", json={"title": "New"}, headers=ADMIN).status_code == 201
    again = run.invoke(cli, ["--database-url", url, "db", "copy", "--to", db_url, "-q"])
    assert again.exit_code == 2 and "already holds items" in again.output
    itself = run.invoke(cli, ["--database-url", url, "db", "copy", "--to", url, "-q"])
    assert itself.exit_code == 2 and "--to names the catalog being copied" in itself.output


@pytest.mark.parametrize(
    "path",
    [
        "/v1/items?limti=5",
        "/v1/users?limti=5",
        "/v1/admin/catalog/outliers?topp=5",
        "/v1/admin/catalog/clusters?kk=3",
        "/v1/admin/catalog/duplicates?treshold=0.9",
    ],
)
def test_a_misspelt_query_parameter_is_a_400_naming_it(client, path):
    """They were ignored: ?limti=5 answered the default 24 items as if that were asked."""
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 400, response.get_json()
    name = path.split("?")[1].split("=")[0]
    assert response.get_json()["error"]["message"].startswith(f"{name}: unknown parameter")


def test_query_parameters_outside_the_endpoints_are_refused_but_cache_busters_pass(client):
    """?dry_run=true on a DELETE was ignored and the user erased; a jQuery cache-buster or a
    campaign tag on a page is no mistake of the client's."""
    answer = client.delete("/v1/users/u1?dry_run=true", headers=ADMIN)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["message"].startswith("dry_run: unknown parameter")
    assert client.get("/v1/users?limit=3", headers=ADMIN).get_json()["users"]  # still there
    for query in ("_=1700000000", "utm_source=news"):
        assert client.get(f"/v1/items?limit=5&{query}").status_code == 200
        assert client.get(f"/v1/items/a1/similar?k=3&{query}").status_code == 200
    assert client.get("/v1/items/a1?limti=5").status_code == 400


def test_json_answers_carry_an_etag_and_a_client_that_has_it_gets_a_304(client):
    """A shop's pages refetched every answer whole: no validator, no Cache-Control."""
    first = client.get("/v1/items/a1/similar?k=3")
    assert first.headers["Cache-Control"] == "no-cache" and first.headers["ETag"]
    again = client.get("/v1/items/a1/similar?k=3", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and not again.data
    weak = client.get(
        "/v1/items/a1/similar?k=3", headers={"If-None-Match": f"W/{first.headers['ETag']}"}
    )
    assert weak.status_code == 304  # as a compressing proxy passes the tag on
    other = client.get("/v1/items/a1/similar?k=4", headers={"If-None-Match": first.headers["ETag"]})
    assert other.status_code == 200 and other.get_json()["items"]
    feed = client.get("/v1/users/u1/recommendations?k=3")
    assert feed.headers["Cache-Control"] == "private, no-cache"  # one shopper's: never shared
    assert "ETag" not in client.get("/v1/items/nope/similar").headers  # errors carry none
