"""The live catalog over HTTP: item writes (PUT, PATCH, DELETE /v1/items/<id>) show in every
answer after a worker's follow step, without retraining; a restart rebuilds the delta; a full
delta says a retrain is due."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from recsys.catalog import connect
from recsys.catalog.backup import backup
from recsys.catalog.db import catalog_key
from recsys.catalog.keys import create_key
from recsys.catalog.models import Item
from recsys.ingest.item_writes import upload_name
from recsys.ingest.items import ingest_items
from recsys.model.delta import Delta
from recsys.model.fusion import FusionConfig
from recsys.model.recommender import Recommender
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import ADMIN, ADMIN_TOKEN, build_shop, item_image, train_config

# a1's own fields (tests/toy.py, tests/shop_fixture.py): a listing almost the same as a1
TWIN = {
    "title": "Comedy story 1",
    "image": "a1.png",
    "attributes": {"year": 1991, "genres": ["Comedy"], "brand": "a-brand"},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("live-shop"))


@pytest.fixture
def shop(built, tmp_path):
    """A copy of the built shop's catalog (the bundle and images are shared, read-only)."""
    url, artifacts = built
    source = url.removeprefix("sqlite:///")
    shutil.copy(source, tmp_path / "shop.db")
    return f"sqlite:///{tmp_path / 'shop.db'}", artifacts, artifacts.parent / "images"


def make_app(shop, **settings):
    url, artifacts, images = shop
    full = Settings(
        database_url=url,
        artifacts_dir=artifacts,
        admin_token=ADMIN_TOKEN,
        images_root=images,
        write_rate_limit="10000/minute",
        **settings,
    )
    config = {"TESTING": True, "RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0}
    return create_app(full, config)


@pytest.fixture
def app(shop):
    return make_app(shop)


@pytest.fixture
def client(app):
    return app.test_client()


def follow(app) -> None:
    """One follow step of the worker (the service runs one a second)."""
    app.extensions["recsys"].holder.follow()


def similar(client, item_id: str, query: str = "k=10") -> list[str]:
    response = client.get(f"/v1/items/{item_id}/similar?{query}")
    assert response.status_code == 200, response.get_json()
    return [item["item_id"] for item in response.get_json()["items"]]


def feed(client, user_id: str, k: int = 30) -> list[str]:
    response = client.get(f"/v1/users/{user_id}/recommendations?k={k}")
    assert response.status_code == 200, response.get_json()
    return [item["item_id"] for item in response.get_json()["items"]]


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.get_json()
    return response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"in_stock": "maybe"}, "in_stock"),
        ({"title": 12}, "title"),
        ({"colour": "red"}, "colour"),
        ({"attributes": {"year": "19\x0091"}}, "attributes.year"),
        ({"attributes": {"title": "x"}}, "attributes.title"),
        ({"attributes": {"year": {"nested": 1}}}, "attributes.year"),
        ({"attributes": {"year": "not a year"}}, "attributes.year: must be a number"),
        ({"attributes": {"brand": ["a-brand", "b-brand"]}}, "attributes.brand: takes one"),
        ({"attributes": {"k": "big"}}, "attributes.k"),
        ({"title": "x" * 10_001}, "title: title is 10,001 characters long"),
        # one name once stripped or composed: the last value was stored, unsaid
        ({"attributes": {"brand": "A", " brand ": "B"}}, "attributes.brand: given twice"),
        ({"attributes": {"größe": "S", "gro\u0308ße": "M"}}, "attributes.größe: given twice"),
        ({"attributes": {"brand": "b" * 20_000}}, "attributes.brand"),
        ({"image": "missing.png"}, "image"),
        ({"image": "../shop.db"}, "image"),
        ({"image": "/etc/hostname"}, "image"),
    ],
)
def test_bad_item_writes_are_400s_naming_the_field_and_store_nothing(client, body, field):
    message = error_of(client.put("/v1/items/x-1", json=body, headers=ADMIN), 400)
    assert message.startswith(field), message
    assert client.get("/v1/items/x-1").status_code == 404


def test_an_item_id_ending_in_the_similar_items_path_is_refused(client):
    message = error_of(client.put("/v1/items/x%2Fsimilar", json=TWIN, headers=ADMIN), 400)
    assert message == (  # the field was named twice, and "/v1/items/<id>" cut to "…/<id>"
        "item_id 'x/similar' ends in '/similar', the path of an item's similar items, so the "
        "item could not be read at its own URL (it would name the similar items of 'x'): give "
        "it another id"
    )
    assert client.get("/v1/items/x/similar").status_code == 404  # no item x, and none made


def test_a_nan_in_an_item_write_is_a_400_and_keeps_the_attribute(client):
    """Python's JSON reader takes NaN, which no JSON sender writes: it was read as no value
    and dropped the attribute. It is refused naming the attribute."""
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = '{"attributes": {"year": ' + constant + "}}"
        response = client.patch(
            "/v1/items/a1", data=body, headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert error_of(response, 400).startswith("attributes.year: "), constant
        assert "not a finite number" in error_of(response, 400)
    assert client.get("/v1/items/a1").get_json()["attributes"]["year"] is not None


def test_an_image_path_written_over_http_meets_the_uploads_limits(shop):
    """A path names a file the service's workers decode, so it is held to what an upload
    may be (format, pixels), not only to being an image."""
    client = make_app(shop, max_image_pixels=100).test_client()
    message = error_of(client.put("/v1/items/x-1", json=TWIN, headers=ADMIN), 400)
    assert message.startswith("image: 'a1.png' is ") and "send at most 0.0001 megapixels" in message
    assert client.get("/v1/items/x-1").status_code == 404


def test_ids_with_a_slash_are_reachable_at_every_path(app, client):
    """The id rules allow "/" (a SKU such as AB/123): every path that names an item or a user
    takes one, sent as %2F (the web page's encodeURIComponent, the cards' image_url)."""
    written = client.put("/v1/items/sku%2F1", json=TWIN, headers=ADMIN).get_json()
    assert (
        written["item"]["item_id"] == "sku/1" and written["item"]["image_url"] == "/images/sku%2F1"
    )
    follow(app)
    assert client.get("/v1/items/sku%2F1").get_json()["title"] == TWIN["title"]
    assert client.get(written["item"]["image_url"]).content_type == "image/png"
    assert "sku/1" in similar(client, "a1", "k=3") and "a1" in similar(client, "sku%2F1", "k=3")
    assert (
        client.patch("/v1/items/sku%2F1", json={"in_stock": False}, headers=ADMIN).status_code
        == 200
    )
    assert client.get("/v1/users/u%2F1/recommendations?k=3").status_code == 200
    assert client.delete("/v1/items/sku%2F1", headers=ADMIN).status_code == 200
    assert "sku/1" in error_of(client.get("/v1/items/sku%2F1"), 404)
    lead = client.put("/v1/items/%2Fx", json={"title": "lead"}, headers=ADMIN).get_json()
    assert lead["item"]["item_id"] == "/x" and client.get("/v1/items/%2Fx").status_code == 200


def test_a_created_item_says_where_it_is(client):
    """A 201 carried no Location: a client had to build the item's URL itself."""
    made = client.put("/v1/items/x 1/a", json={"title": "made"}, headers=ADMIN)
    assert made.status_code == 201 and made.headers["Location"] == "/v1/items/x%201%2Fa"
    assert client.get(made.headers["Location"]).get_json()["title"] == "made"
    again = client.put("/v1/items/x 1/a", json={"title": "again"}, headers=ADMIN)
    assert again.status_code == 200 and "Location" not in again.headers


def test_item_writes_need_the_catalog_write_scope(client, shop):
    assert error_of(client.put("/v1/items/x-1", json={}), 401)
    _, reader = create_key(connect(shop[0]), ["items:read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert "catalog:write" in error_of(client.delete("/v1/items/a1", headers=headers), 403)
    _, writer = create_key(connect(shop[0]), ["catalog:write"])
    headers = {"Authorization": f"Bearer {writer}"}
    assert client.put("/v1/items/x-1", json={}, headers=headers).status_code == 201  # made


def test_a_put_item_shows_in_a_near_identical_items_similar_items(app, client):
    assert "a-twin" not in similar(client, "a1")
    written = client.put("/v1/items/a-twin", json=TWIN, headers=ADMIN).get_json()
    assert written["created"] is True and written["item"]["image_url"] == "/images/a-twin"
    assert client.get("/v1/items/a-twin").get_json()["in_model"] is False  # not followed yet
    follow(app)
    assert client.get("/v1/items/a-twin").get_json()["in_model"] is True
    found = similar(client, "a1", "k=3")
    assert "a-twin" in found, found
    assert "a1" in similar(client, "a-twin", "k=3")  # and the new item has similar items
    # the same PUT again changes nothing
    again = client.put("/v1/items/a-twin", json=TWIN, headers=ADMIN).get_json()
    assert again["created"] is False and again["changed"] is False


def test_a_write_answers_the_item_as_the_catalog_shows_it_since(client):
    # the answer's card is the row the write stored, not read back: it must be the same card
    for method, body in [
        ("put", {**TWIN, "attributes": {**TWIN["attributes"], "price": 9.5, "size": None}}),
        ("patch", {"in_stock": False, "title": "  Comedy story 1, again ", "attributes": {}}),
        ("patch", {"attributes": {"year": None, "colour": "red"}}),
    ]:
        written = getattr(client, method)("/v1/items/a-card", json=body, headers=ADMIN)
        assert written.status_code == (201 if method == "put" else 200), written.get_json()
        shown = client.get("/v1/items/a-card").get_json()
        assert written.get_json()["item"] == {k: v for k, v in shown.items() if k != "in_model"}
    expected = {"genres": ["Comedy"], "brand": "a-brand", "price": 9.5, "colour": "red"}
    assert shown["attributes"] == expected
    assert shown["in_stock"] is False and shown["image_url"] == "/images/a-card"


def test_an_item_edited_since_the_bundle_stays_out_of_the_feeds_of_those_who_saw_it(app, client):
    """An edited item is listed by the live catalog, and its live part took no seen items
    out: a shopper who had viewed or bought it saw it back in their feed, first, "updated
    in the catalog"."""
    state = app.extensions["recsys"].holder.state
    seen = state.recommender.seen_items("u1")
    assert seen
    fresh = next(item for item in ("a1", "a2", "b1", "b2", "c1") if item not in seen)
    event = {"user_id": "u1", "item_id": fresh, "event": "purchase"}
    assert (
        client.post("/v1/interactions", json={"events": [event]}, headers=ADMIN).status_code == 201
    )
    for item in (*seen, fresh):  # written since the bundle: live items now
        title = {"title": f"edited {item}"}
        assert client.patch(f"/v1/items/{item}", json=title, headers=ADMIN).status_code == 200
    follow(app)
    feed = client.get("/v1/users/u1/recommendations?k=30").get_json()["items"]
    listed = {item["item_id"] for item in feed}
    assert not listed & {*seen, fresh}
    shown = client.get("/v1/users/u1/recommendations?k=30&exclude_seen=false").get_json()
    assert {item["item_id"] for item in shown["items"]} & {*seen, fresh}  # asked for: there


def test_an_item_added_since_the_bundle_stays_out_of_the_feeds_of_those_who_saw_it(app, client):
    """A shopper's events on items the bundle does not hold (added since) were neither
    folded in nor left out: the item a shopper had just bought came first in their feed,
    "new in the catalog", until the next training, and a shopper whose first event was on a
    new item kept the popularity fallback. Also for a user the bundle never saw."""
    for item in ("new-1", "new-2"):
        body = {"title": f"Comedy story {item}", "attributes": {"brand": "a-brand"}}
        assert client.put(f"/v1/items/{item}", json=body, headers=ADMIN).status_code in (200, 201)
    follow(app)
    for user in ("u1", "stranger"):
        before = client.get(f"/v1/users/{user}/recommendations?k=40").get_json()["items"]
        assert {"new-1", "new-2"} <= {item["item_id"] for item in before}
        event = {"user_id": user, "item_id": "new-1", "event": "purchase"}
        posted = client.post("/v1/interactions", json={"events": [event]}, headers=ADMIN)
        assert posted.status_code == 201
        feed = client.get(f"/v1/users/{user}/recommendations?k=40").get_json()["items"]
        listed = {item["item_id"] for item in feed}
        assert "new-1" not in listed and "new-2" in listed
        asked = f"/v1/users/{user}/recommendations?k=40&exclude_seen=false"
        assert "new-1" in {item["item_id"] for item in client.get(asked).get_json()["items"]}
    # and folded in: a shopper whose first event is on a new item is no longer "new"
    feed = client.get("/v1/users/stranger/recommendations?k=5").get_json()
    assert feed["fallback"] is False
    assert sum(item["item_id"].startswith("a") for item in feed["items"]) >= 4, feed["items"]
    for item in feed["items"]:  # the parts still sum to the score, and say where they came from
        assert sum(r["share"] for r in item["because"]) == pytest.approx(item["score"], abs=1e-4)
    labels = {r["label"] for item in feed["items"] for r in item["because"]}
    assert "new items you viewed" in labels, labels


def test_a_put_item_shows_in_similar_items_where_feeds_rank_new_items_by_tokens_alone(app, client):
    # The weights stage may give new items' content blocks no weight in feeds (a cold scale
    # of 0: tokens alone rank them best there); similar items must still meet them by it.
    fused = app.extensions["recsys"].holder.state.recommender.fused
    cold_scale = {**fused.cold_scale_, "tabular": 0.0, "image": 0.0, "cf": 0.0}
    fused.set_weights(fused.weights_, cold_scale, fused.surface_weights_)
    client.put("/v1/items/a-twin", json=TWIN, headers=ADMIN)
    follow(app)
    found = similar(client, "a1", "k=3")
    assert "a-twin" in found, found


def test_a_live_items_similar_items_meet_cold_items_as_a_bundle_items_do(tmp_path):
    # Feeds may scale new items' content up (the demo shop's weights stage chose 100 for
    # their attributes); the product page of a live item met the bundle's cold items so
    # scaled too: scores and reasons 100 times those of the bundle item it copies.
    scaled = {"cf": 1.0, "tabular": 100.0, "image": 100.0, "popularity": 0.0}
    config = replace(train_config(), validation_share=0.0, fusion=FusionConfig(cold_scale=scaled))
    url, artifacts = build_shop(tmp_path, config=config)
    app = make_app((url, artifacts, artifacts.parent / "images"))
    client = app.test_client()
    client.put("/v1/items/a-twin", json=TWIN, headers=ADMIN)
    follow(app)

    def scores(item_id: str) -> dict[str, float]:
        answer = client.get(f"/v1/items/{item_id}/similar?k=100&diversity=0").get_json()
        return {item["item_id"]: item["score"] for item in answer["items"]}

    copy, original = scores("a-twin"), scores("a1")
    both = (set(copy) & set(original)) - {"a1", "a-twin"}
    assert {"a-new", "b-new"} <= both  # cold items on both pages
    for item in both:  # the same content met the same way: the same score
        assert copy[item] == pytest.approx(original[item], abs=1e-4), item


def test_a_photo_can_come_as_a_multipart_part(app, client):
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 1)).save(buffer, format="PNG")
    fields = {key: value for key, value in TWIN.items() if key != "image"}
    data = {"item": json.dumps(fields), "image": (io.BytesIO(buffer.getvalue()), "a.png")}
    response = client.put("/v1/items/a-photo", data=data, headers=ADMIN)
    assert response.status_code == 201, response.get_json()
    assert client.get("/images/a-photo").content_type == "image/png"
    follow(app)
    assert "a-photo" in similar(client, "a1", "k=3")
    bad = {"item": "{}", "image": (io.BytesIO(b"not a photo"), "a.png")}
    assert error_of(client.put("/v1/items/a-bad", data=bad, headers=ADMIN), 400).startswith("image")


def test_an_upload_the_images_root_cannot_take_is_a_503_naming_the_setting(shop, tmp_path):
    """An images root the service cannot write (here: under a file) was a 500 with a
    traceback on the first photo upload; the item itself is not written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url, artifacts, _ = shop
    settings = Settings(database_url=url, artifacts_dir=artifacts, admin_token=ADMIN_TOKEN,
                        images_root=blocker / "images")  # fmt: skip
    config = {"TESTING": True, "RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0}
    client = create_app(settings, config).test_client()
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 1)).save(buffer, format="PNG")
    data = {"item": json.dumps({"title": "x"}), "image": (io.BytesIO(buffer.getvalue()), "a.png")}
    response = client.put("/v1/items/a-photo", data=data, headers=ADMIN)
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "uploads_unavailable"
    assert "RECSYS_IMAGES_ROOT" in response.get_json()["error"]["message"]
    assert client.get("/v1/items/a-photo").status_code == 404


def test_deleted_and_out_of_stock_items_vanish_from_every_answer(app, client):
    recommender = app.extensions["recsys"].holder.state.recommender
    assert recommender.neighbours is not None  # similar items come from the neighbour table
    before = similar(client, "a1", "k=5")
    gone, sold_out = before[0], before[1]
    users = ("u0", "u1", "stranger")
    assert {gone, sold_out} <= {item for user in users for item in feed(client, user)}
    assert client.delete(f"/v1/items/{gone}", headers=ADMIN).status_code == 200
    patched = client.patch(f"/v1/items/{sold_out}", json={"in_stock": False}, headers=ADMIN)
    assert patched.status_code == 200 and patched.get_json()["item"]["in_stock"] is False
    assert similar(client, "a1", "k=5") == before  # workers see it at their next step
    follow(app)
    after = similar(client, "a1", "k=5")
    assert gone not in after and sold_out not in after and len(after) == 5
    assert after[:3] == [i for i in before if i not in (gone, sold_out)][:3]
    for user in users:
        assert not {gone, sold_out} & set(feed(client, user))
    for item in [i for i in ("a0", "a2", "a4", "a-new") if i not in (gone, sold_out)]:
        assert not {gone, sold_out} & set(similar(client, item, "k=20"))
    assert sold_out in similar(client, "a1", "k=20&in_stock=false")  # asked for explicitly
    removed = error_of(client.get(f"/v1/items/{gone}/similar"), 404)
    assert removed == f"item {gone!r} was removed from the catalog"
    assert error_of(client.delete(f"/v1/items/{gone}", headers=ADMIN), 404)
    # back in stock: back in the answers
    client.patch(f"/v1/items/{sold_out}", json={"in_stock": True}, headers=ADMIN)
    follow(app)
    assert sold_out in similar(client, "a1", "k=5")


def test_visual_search_leaves_out_removed_items_and_finds_new_ones(app, client):
    buffer = io.BytesIO()
    Image.fromarray(item_image("b", 5)).save(buffer, format="PNG")
    photo = buffer.getvalue()

    def search() -> dict[str, float]:
        data = {"image": (io.BytesIO(photo), "q.png")}
        response = client.post("/v1/search/image?k=40", data=data, headers=ADMIN)
        assert response.status_code == 200, response.get_json()
        return {item["item_id"]: item["score"] for item in response.get_json()["items"]}

    first = next(item for item in search() if item != "b5")
    client.delete(f"/v1/items/{first}", headers=ADMIN)
    ring = {"title": "Drama story 5", "image": "b5.png", "attributes": {"brand": "b-brand"}}
    client.put("/v1/items/b-ring", json=ring, headers=ADMIN)
    follow(app)
    found = search()
    assert first not in found
    assert found["b-ring"] == pytest.approx(found["b5"], abs=1e-5)  # b5's photo, b5's score


def test_visual_search_never_finds_a_live_item_without_a_photo(app, client):
    buffer = io.BytesIO()
    Image.fromarray(item_image("b", 5)).save(buffer, format="PNG")
    fields = {key: value for key, value in TWIN.items() if key != "image"}
    client.put("/v1/items/no-photo", json=fields, headers=ADMIN)
    client.put("/v1/items/a-photo", json=TWIN, headers=ADMIN)  # followed in the same step
    follow(app)
    assert similar(client, "no-photo", "k=3")  # served: it has a live vector
    data = {"image": (io.BytesIO(buffer.getvalue()), "q.png")}
    response = client.post("/v1/search/image?k=100", data=data, headers=ADMIN)  # every item
    assert response.status_code == 200, response.get_json()
    found = [item["item_id"] for item in response.get_json()["items"]]
    assert found and "no-photo" not in found


def test_a_patch_changes_only_what_it_names(app, client):
    client.patch("/v1/items/a2", json={"attributes": {"colour": "red"}}, headers=ADMIN)
    item = client.get("/v1/items/a2").get_json()
    assert item["attributes"]["colour"] == "red" and item["attributes"]["brand"] == "a-brand"
    assert item["title"] == "Comedy story 2"
    client.patch("/v1/items/a2", json={"attributes": {"colour": None}}, headers=ADMIN)
    assert "colour" not in client.get("/v1/items/a2").get_json()["attributes"]
    assert error_of(client.patch("/v1/items/nope", json={}, headers=ADMIN), 404)


def test_ingest_files_take_the_same_live_path(app, client, shop, tmp_path):
    path = tmp_path / "new.jsonl"
    row = {"item_id": "a-file", "title": TWIN["title"], "image": "a1.png", **TWIN["attributes"]}
    path.write_text(json.dumps(row) + "\n")
    ingest_items(connect(shop[0]), path, images_root=shop[2])
    follow(app)
    assert "a-file" in similar(client, "a1", "k=3")


def test_no_door_lets_an_item_image_point_outside_the_images_root(client, shop, tmp_path):
    """An ingest file's image path that leaves its images root is a reject, as an HTTP
    write's is, and /images serves only a file that is an image, whatever path the catalog
    holds (such as one an older ingest stored)."""
    url, _, images = shop
    path = tmp_path / "items.csv"
    path.write_text("item_id,image,title\nt-1,../../../../etc/passwd,x\nt-2,/etc/hostname,y\n")
    report = ingest_items(connect(url), path, images_root=images)
    assert report.accepted == 0 and report.rejected == {"invalid_value": 2}
    assert client.get("/images/t-1").status_code == 404
    with connect(url).begin() as connection:
        connection.execute(
            update(Item).where(Item.external_id == "a1").values(image_path="/etc/hostname")
        )
    assert error_of(client.get("/images/a1"), 404) == "item 'a1' has no image"
    assert client.get("/images/a2").content_type == "image/png"


def test_a_restart_rebuilds_the_delta_from_the_catalog(app, client, shop):
    client.put("/v1/items/a-twin", json=TWIN, headers=ADMIN)
    gone = similar(client, "a1", "k=5")[0]
    client.delete(f"/v1/items/{gone}", headers=ADMIN)
    restarted = make_app(shop).test_client()  # no follow step: the load rebuilds it
    found = similar(restarted, "a1", "k=5")
    assert "a-twin" in found and gone not in found
    follow(app)
    assert similar(client, "a1", "k=5") == found


def test_a_full_delta_says_a_retrain_is_due_and_answers_go_on(shop):
    app = make_app(shop, live_max_items=1)
    client = app.test_client()
    ready = client.get("/readyz").get_json()
    assert ready["live"]["retrain_due"] is False and ready["live"]["max_items"] == 1
    for name in ("a-twin", "a-twin2"):
        client.put(f"/v1/items/{name}", json=TWIN, headers=ADMIN)
    follow(app)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    live = ready.get_json()["live"]
    assert live == {**live, "items": 1, "waiting": 1, "retrain_due": True}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "recsys_retrain_due 1.0" in metrics and "recsys_live_items 1.0" in metrics
    found = similar(client, "a1", "k=3")
    assert len(found) == 3 and len({"a-twin", "a-twin2"} & set(found)) == 1
    assert np.isfinite(
        client.get("/v1/users/u0/recommendations?k=5").get_json()["items"][0]["score"]
    )


def test_a_full_delta_keeps_its_oldest_writes_after_a_restart(shop):
    """A restart rebuilt a full delta from the items in the order the catalog returned them
    (by id), so other items than before were served and the first written waited."""
    app = make_app(shop, live_max_items=1)
    client = app.test_client()
    for name in ("z-first", "a-second"):
        client.put(f"/v1/items/{name}", json=TWIN, headers=ADMIN)
        follow(app)
    assert app.extensions["recsys"].holder.live.ids.tolist() == ["z-first"]
    restarted = make_app(shop, live_max_items=1)
    assert restarted.extensions["recsys"].holder.live.ids.tolist() == ["z-first"]


def full_live_catalog(shop):
    """(a test client of an app whose live catalog holds one item, the item waiting for
    room): two items written with room for one."""
    app = make_app(shop, live_max_items=1)
    client = app.test_client()
    for name in ("a-twin", "a-twin2"):
        client.put(f"/v1/items/{name}", json=TWIN, headers=ADMIN)
    follow(app)
    return client, next(iter(app.extensions["recsys"].holder.live.waiting))


def test_an_item_waiting_past_the_cap_is_left_out_of_candidates(shop):
    """A candidate in the catalog but waiting past RECSYS_LIVE_MAX_ITEMS made the whole feed
    request a 400 ("not in model bundle"), which is for an item the catalog never held."""
    client, waiting = full_live_catalog(shop)
    asked = {"candidates": [waiting, "a2"], "k": 5}
    answer = client.post("/v1/users/u1/recommendations", json=asked)
    assert answer.status_code == 200, answer.get_json()
    assert [i["item_id"] for i in answer.get_json()["items"]] == ["a2"]
    never = client.post("/v1/users/u1/recommendations", json={"candidates": ["never", "a2"]})
    assert "is not in model bundle" in error_of(never, 400)


def test_the_similar_items_of_an_item_waiting_past_the_cap_say_why(shop):
    """Its page said "ingest it ... or run recsys train": it was ingested."""
    client, waiting = full_live_catalog(shop)
    message = error_of(client.get(f"/v1/items/{waiting}/similar"), 404)
    assert "live catalog, which is full" in message and "RECSYS_LIVE_MAX_ITEMS" in message
    assert "recsys train` adds it" in message and "ingest it" not in message


def test_a_price_change_reuses_the_bundles_image_row_of_an_unchanged_photo(shop):
    """A nightly price update ran every repriced item's unchanged photo through the image
    encoder again. A photo at the path training read, not modified since, takes the bundle's
    image block row; a new photo is encoded."""
    app = make_app(shop)
    state = app.extensions["recsys"].holder.state
    encoder, encoded = state.catalog.items.image_encoder, []
    transform = encoder.transform
    encoder.transform = lambda paths: encoded.extend(paths) or transform(paths)
    try:
        client = app.test_client()
        assert client.patch("/v1/items/a1", json={"title": "Comedy, cheaper"}, headers=ADMIN)
        follow(app)
        live, fused = state.recommender.live, state.recommender.fused
        row = state.recommender.item_index["a1"]
        assert live.knows("a1") and encoded == []
        image = live.blocks["image"][live.positions["a1"]]
        np.testing.assert_allclose(image, fused.item_blocks_["image"][row], atol=1e-6)
        client.put("/v1/items/a-twin", json=TWIN | {"image": "a2.png"}, headers=ADMIN)
        follow(app)
        assert len(encoded) == 1  # another item's photo: not this item's row
    finally:
        encoder.transform = transform


def test_workers_make_a_written_items_blocks_once_between_them(shop):
    """Two workers of one host: the second reads the blocks the first made for a new item
    (its photo and its values encoded once) and serves the same vector."""
    first, second = make_app(shop), make_app(shop)
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 2)).save(buffer, format="PNG")
    fields = {key: value for key, value in TWIN.items() if key != "image"}
    data = {"item": json.dumps(fields), "image": (io.BytesIO(buffer.getvalue()), "a.png")}
    client = first.test_client()
    assert client.put("/v1/items/a-shared", data=data, headers=ADMIN).status_code == 201
    follow(first)
    catalog = second.extensions["recsys"].holder.state.catalog
    assert catalog.shared is not None and "image" in catalog.items.parts
    made, make = [], catalog.items.blocks
    catalog.items.blocks = lambda frame: made.append(frame["item_id"].tolist()) or make(frame)
    follow(second)
    assert made == []
    deltas = [app.extensions["recsys"].holder.live for app in (first, second)]
    rows = [list(delta.ids).index("a-shared") for delta in deltas]
    np.testing.assert_allclose(deltas[1].vectors[rows[1]], deltas[0].vectors[rows[0]], atol=1e-6)
    assert "a-shared" in similar(second.test_client(), "a1", "k=3")
    # one step that reads one item's blocks and makes another's: both as the first worker has
    assert client.put("/v1/items/a-read", json=TWIN, headers=ADMIN).status_code == 201
    follow(first)
    assert client.put("/v1/items/a-made", json=TWIN, headers=ADMIN).status_code == 201
    follow(second)
    assert made == [["a-made"]]
    follow(first)
    deltas = [app.extensions["recsys"].holder.live for app in (first, second)]
    for item in ("a-read", "a-made"):
        by_first, by_second = (delta.vectors[list(delta.ids).index(item)] for delta in deltas)
        np.testing.assert_allclose(by_second, by_first, atol=1e-6)


def test_a_publish_adds_the_rows_a_step_wrote_and_equals_a_full_restack(app, client):
    """A step of new listings stacks their rows only; after appends, edits of live items and
    removals alike, the published delta holds what stacking every live item afresh gives, and
    no earlier delta (which requests may still read) sees a row change."""
    catalog = app.extensions["recsys"].holder.state.catalog
    stacked, stack = [], catalog._stack
    catalog._stack = lambda ids: stacked.append(list(ids)) or stack(ids)
    earlier = []  # (delta, copies of its arrays when it was published)

    def publish_and_check() -> None:
        stacked.clear()
        follow(app)
        delta = app.extensions["recsys"].holder.live
        for old, arrays in earlier:
            np.testing.assert_array_equal(old.vectors, arrays[0])
            np.testing.assert_array_equal(old.surface, arrays[1])
            for name, values in old.blocks.items():
                np.testing.assert_array_equal(values, arrays[2][name])
        copies = {name: values.copy() for name, values in delta.blocks.items()}
        earlier.append((delta, (delta.vectors.copy(), delta.surface.copy(), copies)))
        full = stack(list(catalog._live.vectors))
        assert delta.ids.tolist() == full.order
        np.testing.assert_array_equal(delta.vectors, full.vectors)
        np.testing.assert_array_equal(delta.surface, full.surface)
        assert delta.blocks.keys() == full.blocks.keys()
        for name, values in full.blocks.items():
            np.testing.assert_array_equal(delta.blocks[name], values)
        assert (delta.tokens is None) == (not full.tokens)
        if full.tokens:
            assert (delta.tokens != full.tokens["tokens"]).nnz == 0
            np.testing.assert_array_equal(delta.token_scale, full.tokens["token_scale"])

    def put(item_id: str, title: str) -> None:
        body = {**TWIN, "title": title}
        assert client.put(f"/v1/items/{item_id}", json=body, headers=ADMIN).status_code in (
            200,  # replaced
            201,  # made
        )

    put("a-one", "Comedy story one")
    publish_and_check()
    put("a-two", "Comedy story two")
    publish_and_check()
    assert stacked == [["a-two"]]  # the new row only
    put("a-one", "Comedy story one, edited")
    put("a-three", "Comedy story three")
    publish_and_check()
    assert sorted(map(tuple, stacked)) == [("a-one",), ("a-three",)]
    assert client.delete("/v1/items/a-two", headers=ADMIN).status_code == 200
    publish_and_check()
    put("a-four", "Comedy story four")
    publish_and_check()
    put("a-five", "Comedy story five")
    put("a-four", "Comedy story four, edited")
    publish_and_check()
    put("a-six", "Comedy story six")
    publish_and_check()
    assert "a-four" in similar(client, "a1", "k=5") or "a-four" in similar(client, "a-one", "k=5")


def test_answers_skip_the_live_ranking_only_where_it_changes_nothing(app, client, monkeypatch):
    """An answer no live item can enter skips ranking the live items (``Delta._none_enter``):
    every product page and feed equals the one ranked in full, and some skipped it."""
    far = {"title": "Garden hose", "attributes": {"year": 1950, "brand": "z-brand"}}
    for item_id, body in (("a-twin", TWIN), ("z-far", far), ("b-twin", {**TWIN, "title": "x"})):
        assert client.put(f"/v1/items/{item_id}", json=body, headers=ADMIN).status_code == 201
    follow(app)
    pages = [f"/v1/items/{group}{k}/similar?k=4" for group in "ab" for k in range(15)]
    pages += [f"/v1/users/u{u}/recommendations?k=5" for u in range(16)] + ["/v1/items/a1/similar"]
    skipped = []
    none_enter = Delta._none_enter
    monkeypatch.setattr(
        Delta, "_none_enter", lambda *args: skipped.append(none_enter(*args)) or skipped[-1]
    )
    answers = [client.get(page).data for page in pages]
    assert any(skipped) and not all(skipped)
    monkeypatch.setattr(Delta, "_none_enter", lambda *args: False)
    assert [client.get(page).data for page in pages] == answers


def reasons_of(client, item_id: str, query: str) -> dict[str, list[dict]]:
    response = client.get(f"/v1/items/{item_id}/similar?{query}")
    assert response.status_code == 200, response.get_json()
    return {item["item_id"]: item for item in response.get_json()["items"]}


def test_an_edited_item_is_explained_and_diversified_as_before_its_edit(app, client):
    """A write to an item that has events (a price change) leaves its answers explained by
    their parts and diversified as before, and other items' rows do not call it new."""
    plain = reasons_of(client, "a1", "k=5&mode=also")
    assert any(r["label"] == "viewed together" for r in next(iter(plain.values()))["because"])
    undiversified = similar(client, "a1", "k=5&diversity=0")
    diversified = similar(client, "a1", "k=5&diversity=1")
    assert diversified != undiversified  # the check below is not vacuous
    edit = {"attributes": {"year": 1992, "genres": ["Comedy"], "brand": "a-brand"}}
    assert client.patch("/v1/items/a1", json=edit, headers=ADMIN).status_code == 200
    follow(app)
    assert similar(client, "a1", "k=5&diversity=1") != similar(client, "a1", "k=5&diversity=0")
    edited = reasons_of(client, "a1", "k=5&mode=also")
    assert any(r["label"] == "viewed together" for r in next(iter(edited.values()))["because"])
    for item in reasons_of(client, "a1", "k=5").values():
        assert sum(r["share"] for r in item["because"]) == pytest.approx(item["score"], abs=1e-4)
        assert any(r["label"].startswith("same") for r in item["because"]), item
    listing_a1 = [
        item
        for other in ("a2", "a3", "a4")
        for i, item in reasons_of(client, other, "k=10").items()
        if i == "a1"
    ]
    assert listing_a1  # a1 is still in its neighbours' rows
    for item in listing_a1:
        labels = [r["label"] for r in item["because"]]
        assert "new in the catalog" not in labels and labels[0] != "looks alike", labels
        assert sum(r["share"] for r in item["because"]) == pytest.approx(item["score"], abs=1e-4)


def test_a_new_items_pairs_were_never_viewed_together(app, client):
    """A live new item's collaborative part is predicted from its attributes: its pairs say
    "viewed with items like it", never "viewed together", on its page and on others'."""
    assert client.put("/v1/items/a-copy", json=TWIN, headers=ADMIN).status_code == 201
    follow(app)
    own = reasons_of(client, "a-copy", "k=8&mode=also")
    labels = {r["label"] for item in own.values() for r in item["because"]}
    assert "viewed with items like it" in labels and "viewed together" not in labels
    listed = reasons_of(client, "a1", "k=31&mode=also")
    assert "a-copy" in listed
    copy_labels = {r["label"] for r in listed["a-copy"]["because"]}
    assert "viewed with items like it" in copy_labels and "viewed together" not in copy_labels
    others = {r["label"] for i, item in listed.items() if i != "a-copy" for r in item["because"]}
    assert "viewed together" in others  # a1 and the bundle's items were viewed together
    for item in [*own.values(), *listed.values()]:
        assert sum(r["share"] for r in item["because"]) == pytest.approx(item["score"], abs=1e-4)


def test_a_visitor_without_history_still_sees_edited_items_and_new_candidates(app, client):
    """The popularity fallback keeps an item whose listing was edited (its events stay) at
    its score, and ranks a new item given as a candidate (at 0, "new in the catalog")."""

    def fallback(query: str = "k=5") -> dict[str, dict]:
        items = client.get(f"/v1/users/stranger/recommendations?{query}").get_json()["items"]
        return {item["item_id"]: item for item in items}

    before = fallback()
    top = next(iter(before))
    edit = client.patch(f"/v1/items/{top}", json={"title": "Renamed"}, headers=ADMIN)
    assert edit.status_code == 200
    assert client.put("/v1/items/x-new", json=TWIN, headers=ADMIN).status_code == 201
    follow(app)
    after = fallback()
    assert {i: item["score"] for i, item in after.items()} == {
        i: item["score"] for i, item in before.items()
    }
    assert after[top]["title"] == "Renamed"
    assert after[top]["because"][0]["label"] == "popular with shoppers"
    body = {"candidates": ["x-new", top], "k": 5}
    ranked = client.post("/v1/users/stranger/recommendations", json=body).get_json()["items"]
    assert [i["item_id"] for i in ranked] == [top, "x-new"]
    assert [r["label"] for r in ranked[1]["because"]] == ["new in the catalog"]
    assert ranked[1]["score"] == 0


def test_an_item_write_never_re_types_an_attribute_of_the_catalog(client, shop):
    """One item's odd value (a brand of many words, which a file of them would make a text
    attribute) is stored as it is, and the attribute keeps its kind, so the next training
    still filters on it."""
    long_brand = {"title": "x", "attributes": {"brand": "Maison de la Mode de Paris et Lyon"}}
    assert client.put("/v1/items/x-1", json=long_brand, headers=ADMIN).status_code == 201
    patch = {"attributes": {"genres": "one long free text genre of many words"}}
    assert client.patch("/v1/items/x-1", json=patch, headers=ADMIN).status_code == 200
    with connect(shop[0]).connect() as connection:
        kinds = dict(connection.exec_driver_sql("SELECT name, kind FROM item_attributes").all())
    assert kinds["brand"] == "categorical" and kinds["genres"] == "multi"
    assert kinds["year"] == "numeric"


def test_a_photo_sent_with_a_refused_write_is_not_kept(client, shop):
    """The photo was stored before the write was checked: an unknown item's PATCH (404) or a
    PUT with a bad value (400) left it in uploads/, with no item naming it, for good."""
    buffer = io.BytesIO()
    Image.fromarray(item_image("b", 7)).save(buffer, format="PNG")
    photo = buffer.getvalue()
    stored = shop[2] / "uploads" / upload_name(photo, ".png", catalog_key(shop[0]))

    def send(method: str, item_id: str, fields: str) -> int:
        data = {"item": fields, "image": (io.BytesIO(photo), "p.png")}
        return getattr(client, method)(f"/v1/items/{item_id}", data=data, headers=ADMIN)

    assert send("patch", "no-such-item", "{}").status_code == 404
    assert not stored.exists()
    assert send("put", "x-photo", '{"attributes": {"year": [1, {"a": 2}]}}').status_code == 400
    assert not stored.exists()
    assert send("put", "x-photo", "{}").status_code == 201
    assert stored.is_file()  # a write that succeeds keeps it
    assert send("patch", "no-such-item", "{}").status_code == 404
    assert stored.is_file()  # and a refused one does not take it from the item that has it


def test_an_upload_no_item_names_any_more_is_removed(client, shop):
    """A photo replaced by PUT or PATCH, or whose item was deleted, stayed in uploads/ for
    good: a shop updating its photos over HTTP filled the disk. An upload another item
    still names stays."""

    def photo(kind: str, k: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(item_image(kind, k)).save(buffer, format="PNG")
        return buffer.getvalue()

    def stored(data: bytes):
        return shop[2] / "uploads" / upload_name(data, ".png", catalog_key(shop[0]))

    def send(method: str, item_id: str, data: bytes) -> int:
        form = {"item": "{}", "image": (io.BytesIO(data), "p.png")}
        answer = getattr(client, method)(f"/v1/items/{item_id}", data=form, headers=ADMIN)
        return answer.status_code

    first, second, third, shared = (photo("a", 91), photo("b", 92), photo("c", 93), photo("a", 95))
    assert send("put", "u-1", first) == 201 and stored(first).is_file()
    assert send("put", "u-1", second) == 200  # replaced by PUT
    assert not stored(first).exists() and stored(second).is_file()
    assert send("patch", "u-1", third) == 200  # replaced by PATCH
    assert not stored(second).exists() and stored(third).is_file()
    assert client.delete("/v1/items/u-1", headers=ADMIN).status_code == 200
    assert not stored(third).exists()
    assert send("put", "u-2", shared) == 201 and send("put", "u-3", shared) == 201
    assert client.delete("/v1/items/u-2", headers=ADMIN).status_code == 200
    assert stored(shared).is_file()  # u-3 still shows it
    with connect(shop[0]).connect() as connection:  # a photo of the shop's own files
        own = connection.exec_driver_sql(
            "SELECT image_path FROM items WHERE external_id = 'a1'"
        ).scalar()
    assert client.patch("/v1/items/a1", json={"image": None}, headers=ADMIN).status_code == 200
    assert Path(own).is_file()  # not in uploads/: never removed


def test_two_catalogs_sharing_an_images_root_never_share_an_upload(client, shop, tmp_path):
    """Shops served from one checkout share its default images root (var/images): the same
    photo uploaded to both was one file, and one shop's DELETE removed the other's photo."""
    other_db = tmp_path / "other" / "shop.db"
    other_db.parent.mkdir()
    shutil.copy(shop[0].removeprefix("sqlite:///"), other_db)
    other = make_app((f"sqlite:///{other_db}", *shop[1:])).test_client()
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 97)).save(buffer, format="PNG")
    form = {"item": "{}", "image": (io.BytesIO(buffer.getvalue()), "p.png")}
    assert client.put("/v1/items/up-1", data=dict(form), headers=ADMIN).status_code == 201
    form["image"] = (io.BytesIO(buffer.getvalue()), "p.png")
    assert other.put("/v1/items/up-c", data=form, headers=ADMIN).status_code == 201
    assert len(list((shop[2] / "uploads").glob("*.png"))) >= 2
    assert other.delete("/v1/items/up-c", headers=ADMIN).status_code == 200
    answer = client.get("/images/up-1")
    assert answer.status_code == 200 and answer.data == buffer.getvalue()
    # a copy of the catalog (a staging fork) names the same files: its DELETE is not theirs
    copy_db = tmp_path / "copy" / "shop.db"
    copy_db.parent.mkdir()
    backup(shop[0], copy_db)  # with the writes still in the -wal
    copy = make_app((f"sqlite:///{copy_db}", *shop[1:])).test_client()
    assert copy.delete("/v1/items/up-1", headers=ADMIN).status_code == 200
    assert client.get("/images/up-1").status_code == 200
    # nor is another catalog's upload an item names by its path, then deletes
    theirs = io.BytesIO()
    Image.fromarray(item_image("b", 98)).save(theirs, format="PNG")
    form = {"item": "{}", "image": (io.BytesIO(theirs.getvalue()), "p.png")}
    assert other.put("/v1/items/up-o", data=form, headers=ADMIN).status_code == 201
    other_db_url = f"sqlite:///{other_db}"
    uploaded = (
        shop[2] / "uploads" / upload_name(theirs.getvalue(), ".png", catalog_key(other_db_url))
    )
    named = {"image": f"uploads/{uploaded.name}"}
    assert client.put("/v1/items/up-x", json=named, headers=ADMIN).status_code == 201
    assert client.delete("/v1/items/up-x", headers=ADMIN).status_code == 200
    assert uploaded.is_file() and other.get("/images/up-o").status_code == 200


def test_a_replaced_photo_is_not_kept_by_caches_under_its_unchanged_url(client):
    """The photo's URL stays /images/<id> when the photo is replaced, so its answer makes
    clients revalidate, and the old photo's ETag no longer matches."""

    def put(kind: str, status: int) -> None:
        buffer = io.BytesIO()
        Image.fromarray(item_image(kind, 1)).save(buffer, format="PNG")
        data = {"item": "{}", "image": (io.BytesIO(buffer.getvalue()), "p.png")}
        assert client.put("/v1/items/p-1", data=data, headers=ADMIN).status_code == status

    put("a", 201)  # made
    first = client.get("/images/p-1")
    assert "no-cache" in first.headers["Cache-Control"] and first.headers["ETag"]
    again = client.get("/images/p-1", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    put("b", 200)  # replaced
    replaced = client.get("/images/p-1", headers={"If-None-Match": first.headers["ETag"]})
    assert replaced.status_code == 200 and replaced.data != first.data


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"item": "[1, 2]"}, "item: must be a JSON object"),
        ({"item": '{"title": 5}'}, "item.title: "),
        ({"item": "{}", "other": "1"}, "other: unknown field"),
    ],
)
def test_a_bad_multipart_item_write_names_the_part(client, form, says):
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 1)).save(buffer, format="PNG")
    data = {**form, "image": (io.BytesIO(buffer.getvalue()), "a.png")}
    message = error_of(client.put("/v1/items/m-1", data=data, headers=ADMIN), 400)
    assert message.startswith(says), message


def test_a_multipart_part_given_twice_is_a_400(client):
    """Two image parts: the first was read and the other dropped in silence ([png, junk]
    stored the png, [junk, png] was a 400)."""
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 1)).save(buffer, format="PNG")
    photo = buffer.getvalue()
    parts = [(io.BytesIO(photo), "a.png"), (io.BytesIO(b"junk"), "b.png")]
    data = {"item": "{}", "image": parts}
    message = error_of(client.put("/v1/items/m-2", data=data, headers=ADMIN), 400)
    assert message.startswith("image: is given 2 times; give it once"), message
    assert client.get("/v1/items/m-2").status_code == 404


def test_a_feed_folded_in_while_the_follower_moves_on_reads_one_delta(app, client, monkeypatch):
    """The follower replaces the served delta once a second; a fold-in read it several times,
    and a history of one delta's M live items met the blocks of the next one's M + 1: the
    feed answered 400 "filters: matmul: dimension mismatch" (a soak, items written at 2/s)."""
    holder = app.extensions["recsys"].holder
    deltas = []
    for name in ("new-1", "new-2"):
        assert client.put(f"/v1/items/{name}", json=TWIN, headers=ADMIN).status_code == 201
        follow(app)
        deltas.append(holder.live)
    assert deltas[1].size == deltas[0].size + 1
    reads = iter([deltas[0]])
    moving = property(lambda self: next(reads, deltas[1]), lambda self, value: None)
    monkeypatch.setattr(Recommender, "live", moving, raising=False)  # first read: the older
    results = holder.state.recommender.recommend_for_history(
        [["a1"]], k=5, seen_elsewhere=[["new-1"]]
    )
    assert len(results.ids[0]) == 5


def test_a_feed_keeps_places_for_new_items_when_asked(app, client):
    """New items (none of the bundle's events: listed since, or never taken) scored far below
    items with events, so a feed never showed one before the next training. ``new_items``
    keeps the feed's lowest places for the user's best new items; the rest keeps its order."""
    client.put("/v1/items/a-fresh", json=TWIN, headers=ADMIN)
    follow(app)
    new = {"a-new", "b-new", "a-fresh"}
    plain = [
        i["item_id"] for i in client.get("/v1/users/u1/recommendations?k=4").get_json()["items"]
    ]
    asked = client.get("/v1/users/u1/recommendations?k=4&new_items=2").get_json()["items"]
    kept = [i["item_id"] for i in asked]
    assert len(kept) == 4 and len(new & set(kept)) >= 2, (plain, kept)
    assert "a-fresh" in kept  # the comedy fan's best new item is the new comedy
    others = [i for i in plain if i not in new]
    assert [i for i in kept if i not in new] == others[: 4 - len(new & set(kept))]
    assert [i["score"] for i in asked] == sorted((i["score"] for i in asked), reverse=True)
    body = {"k": 4, "new_items": 2}
    ranked = client.post("/v1/users/u1/recommendations", json=body).get_json()["items"]
    assert [i["item_id"] for i in ranked] == kept
    # a visitor without history: the popularity feed with its lowest places for new items
    stranger = "/v1/users/stranger/recommendations?k=4"
    popular = [i["item_id"] for i in client.get(stranger).get_json()["items"]]
    offered = client.get(stranger + "&new_items=2").get_json()
    kept = [i["item_id"] for i in offered["items"]]
    assert offered["fallback"] is True and len(kept) == 4
    assert len(new & set(kept)) == 2 and kept[:2] == [i for i in popular if i not in new][:2]


@pytest.mark.parametrize("query", ["k=3&new_items=4", "new_items=-1", "new_items=1.5"])
def test_a_bad_new_items_is_a_400_naming_it(client, query):
    answer = client.get(f"/v1/users/u1/recommendations?{query}")
    assert answer.status_code == 400
    assert "new_items" in json.dumps(answer.get_json())
    posted = client.post("/v1/users/u1/recommendations", json={"k": 3, "new_items": 4})
    assert posted.status_code == 400 and "new_items" in json.dumps(posted.get_json())


def test_an_item_added_and_removed_since_the_bundle_counts_as_removed(app, client, shop):
    """A delisted new item in a candidate list made the whole request a 400 ("ingest it"),
    where a removed bundle item is left out; its page said "ingest it" too. Also after a
    worker's restart (the change log says it was removed)."""
    client.put("/v1/items/a-gone", json=TWIN, headers=ADMIN)
    follow(app)
    assert client.delete("/v1/items/a-gone", headers=ADMIN).status_code == 200
    follow(app)
    for fresh in (app, make_app(shop)):
        asked = {"candidates": ["a-gone", "a2"], "k": 5}
        answer = fresh.test_client().post("/v1/users/u1/recommendations", json=asked)
        assert answer.status_code == 200
        assert [i["item_id"] for i in answer.get_json()["items"]] == ["a2"]
        page = fresh.test_client().get("/v1/items/a-gone/similar")
        assert error_of(page, 404) == "item 'a-gone' was removed from the catalog"
    client.put("/v1/items/a-gone", json=TWIN, headers=ADMIN)  # listed again
    follow(app)
    assert client.get("/v1/items/a-gone/similar").status_code == 200


def test_the_worker_that_wrote_an_item_reads_its_write_at_once(app, client):
    """A GET right after a DELETE or PATCH answered the item as it was for about a second,
    on the worker that made the write too (its cards follow the catalog once a second)."""
    app.extensions["recsys"].cards.follow()  # as the follower has, before the writes
    assert client.get("/v1/items/a2").get_json()["title"] != "renamed"  # cached
    assert client.get("/v1/items/a3").status_code == 200
    client.patch("/v1/items/a2", json={"title": "renamed"}, headers=ADMIN)
    assert client.get("/v1/items/a2").get_json()["title"] == "renamed"
    assert client.delete("/v1/items/a3", headers=ADMIN).status_code == 200
    assert client.get("/v1/items/a3").status_code == 404
