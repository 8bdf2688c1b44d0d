"""Catalog health: the admin endpoints over the served bundle's items, and the /catalog page
in headless Chromium (one shop for both)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from datetime import datetime

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from recsys.catalog.models import Interaction, Item, User
from recsys.catalog_intel import neighbours
from recsys.catalog_intel.edits import realistic_edits
from recsys.cli import cli
from services import catalog_health
from tests.shop_fixture import ADMIN, ADMIN_TOKEN, build_shop, relist, service_app, variants
from tests.test_catalog_verification import products
from tests.toy import toy_catalog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PATHS = ("duplicates", "outliers", "clusters")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("health-shop"))


@pytest.fixture(scope="module")
def app(shop):
    return service_app(shop)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def _answered(client, url: str, polls: list | None = None):
    """The answer of ``url``, asked again while it is 202 (still computing), as the page does."""
    response = client.get(url, headers=ADMIN)
    while response.status_code == 202:
        if polls is not None:
            polls.append(response)
        time.sleep(0.05)
        response = client.get(url, headers=ADMIN)
    return response


@pytest.mark.parametrize("path", PATHS)
def test_catalog_health_needs_an_admin_key(client, path):
    response = client.get(f"/v1/admin/catalog/{path}")
    assert response.status_code == 401
    assert "admin" in response.get_json()["error"]["message"]


def test_the_closest_pair_is_a_duplicate_set_at_a_threshold_just_below_it(client):
    url = "/v1/admin/catalog/duplicates?verify=false&threshold="
    everything = _answered(client, url + "-1").get_json()
    assert everything["total_sets"] == 1 and everything["sets"][0]["size"] == 32
    assert len(everything["sets"][0]["items"]) == min(32, catalog_health.MAX_MEMBERS)
    assert everything["score"] == "cosine" and everything["verified_threshold"] is None
    top = everything["sets"][0]["similarity"]
    answer = _answered(client, f"{url}{top - 1e-4}").get_json()
    assert answer["total_sets"] == 1
    (pair,) = answer["sets"]
    ids = [item["item_id"] for item in pair["items"]]
    assert len(ids) == 2 and ids[0][0] == ids[1][0]  # two comedies or two dramas
    assert all(item["image_url"] == f"/images/{item['item_id']}" for item in pair["items"])
    none = _answered(client, url + "1").get_json()
    assert none["total_sets"] == 0 and none["sets"] == []


def test_a_relisted_item_and_its_source_are_a_duplicate_set(tmp_path):
    # a seller lists a1 again (same title, attributes and photo, no events): the pair is
    # found although only a1 has shoppers' events
    shop = build_shop(tmp_path, prepare=lambda engine: relist(engine, "a1", "a1-again"))
    client = service_app(shop).test_client()
    _, sets = _duplicate_sets(client, "verify=false&threshold=0.99")
    assert ("a1", "a1-again") in sets
    # the seller removes the copy: the kept fit no longer lists it (it listed a card of nulls)
    assert client.delete("/v1/items/a1-again", headers=ADMIN).status_code == 200
    client.application.extensions["recsys"].holder.follow()
    answer, sets = _duplicate_sets(client, "verify=false&threshold=0.99")
    assert ("a1", "a1-again") not in sets
    assert answer["total_sets"] == len(answer["sets"])  # it counted the removed copy's set
    assert all(item["title"] for group in answer["sets"] for item in group["items"])


def test_without_photos_the_titles_check_the_pairs(tmp_path):
    # a1 listed again under its own title, and as another item whose title differs only
    # by its number (which the attributes' tokens leave out), in a shop without photos
    def prepare(engine):
        relist(engine, "a1", "a1-again")
        with engine.begin() as connection:
            title = connection.scalar(select(Item.title).where(Item.external_id == "a1"))
            connection.execute(update(Item).values(image_path=None))
        relist(engine, "a1", "a1-twin", title=title.rsplit(" ", 1)[0] + " 9")

    client = service_app(build_shop(tmp_path, prepare=prepare)).test_client()
    checked, checked_sets = _duplicate_sets(client, "threshold=0.99")
    unchecked, unchecked_sets = _duplicate_sets(client, "threshold=0.99&verify=false")
    assert checked["score"] == "cosine and titles" and unchecked["score"] == "cosine"
    assert ("a1", "a1-again") in checked_sets
    assert not any("a1-twin" in found for found in checked_sets)
    assert any("a1-twin" in found for found in unchecked_sets)
    # no pair above the threshold: the answer still says what would have decided
    none, _ = _duplicate_sets(client, "threshold=1")
    assert none["total_sets"] == 0 and none["score"] == "cosine and titles"


@pytest.fixture(scope="module")
def variants_shop(tmp_path_factory):
    """Items without photos, each its own ``style`` but a3-m (a3's medium size); a1-again
    and b2-again re-listings (``shop_fixture.variants``)."""
    return build_shop(tmp_path_factory.mktemp("variants"), prepare=variants, photos=False)


def test_variants_of_one_product_are_no_duplicates(variants_shop):
    relistings = {("a1", "a1-again"), ("b2", "b2-again")}
    client = service_app(variants_shop).test_client()
    plain, plain_sets = _duplicate_sets(client, "threshold=0.99")
    assert plain_sets == relistings | {("a3", "a3-m")}  # the size, indistinguishable
    assert plain["group_by"] is None and plain["grouped_pairs"] == 0
    grouped, grouped_sets = _duplicate_sets(client, "threshold=0.99&group_by=style")
    assert grouped_sets == relistings and grouped["total_sets"] == 2
    assert grouped["group_by"] == "style" and grouped["grouped_pairs"] == 1
    # the server's RECSYS_GROUP_BY, which an empty group_by turns off
    served = service_app(variants_shop, group_by="style").test_client()
    assert _duplicate_sets(served, "threshold=0.99")[1] == relistings
    assert _duplicate_sets(served, "threshold=0.99&group_by=")[1] == plain_sets
    multi = client.get("/v1/admin/catalog/duplicates?group_by=genres", headers=ADMIN)
    assert multi.status_code == 400
    message = multi.get_json()["error"]["message"]
    assert message.startswith("group_by") and "brand, style" in message


def test_offset_pages_through_every_duplicate_set_once(client):
    url = "/v1/admin/catalog/duplicates?threshold=0.9"
    whole = _answered(client, f"{url}&limit={catalog_health.MAX_SETS}").get_json()
    assert whole["total_sets"] == len(whole["sets"]) > 3 and whole["next"] is None
    paged, offset = [], 0
    while offset is not None:
        page = _answered(client, f"{url}&limit=3&offset={offset}").get_json()
        assert page["offset"] == offset and len(page["sets"]) <= 3
        assert page["total_sets"] == whole["total_sets"]
        paged += page["sets"]
        offset = page["next"]
    assert paged == whole["sets"]
    past = _answered(client, f"{url}&offset={whole['total_sets']}").get_json()
    assert past["sets"] == [] and past["next"] is None


def test_outliers_are_scored_most_unusual_first(client):
    answer = _answered(client, "/v1/admin/catalog/outliers?top=5&fpr=0.1").get_json()
    scores = [item["score"] for item in answer["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert abs(answer["flagged"] - 0.1 * 32) <= 1  # the stated share of the catalog
    assert answer["k"] == 10  # the default: 2% of the items, at least 10
    chosen = _answered(client, "/v1/admin/catalog/outliers?top=5&k=3").get_json()
    assert chosen["k"] == 3 and chosen["items"] != answer["items"]  # it was ignored
    refused = client.get("/v1/admin/catalog/outliers?k=32", headers=ADMIN)
    assert refused.status_code == 400 and "k: must be below the 32 items" in refused.text
    assert answer["k"] == 10 and scores[0] >= answer["threshold"]
    # each item says whether it is one of the flagged (the list shows a few more)
    whole = _answered(client, "/v1/admin/catalog/outliers?top=10&fpr=0.1").get_json()
    marks = [item["flagged"] for item in whole["items"]]
    assert marks == [item["score"] > whole["threshold"] for item in whole["items"]]
    assert sum(marks) == whole["flagged"] and not all(marks)


def test_an_item_removed_since_the_bundle_is_no_outlier(tmp_path):
    """A deleted item stayed the top outlier, with no title or photo (the CLI leaves such
    items out)."""
    app = service_app(build_shop(tmp_path))
    client = app.test_client()
    before = _answered(client, "/v1/admin/catalog/outliers?top=3&fpr=0.1").get_json()
    odd = before["items"][0]["item_id"]
    assert client.delete(f"/v1/items/{odd}", headers=ADMIN).status_code == 200
    app.extensions["recsys"].holder.follow()
    after = _answered(client, "/v1/admin/catalog/outliers?top=3&fpr=0.1").get_json()
    assert odd not in [item["item_id"] for item in after["items"]]
    assert after["items"][0] == before["items"][1] and after["flagged"] <= before["flagged"]


def test_an_item_removed_since_the_bundle_is_in_no_cluster_or_map(tmp_path):
    """Clusters listed a deleted item, even as a cluster's medoid, and put it on the map with
    no title or photo."""
    app = service_app(build_shop(tmp_path))
    client = app.test_client()
    before = _answered(client, "/v1/admin/catalog/clusters?k=2&members=48").get_json()
    gone = before["clusters"][0]["medoid"]["item_id"]
    assert client.delete(f"/v1/items/{gone}", headers=ADMIN).status_code == 200
    app.extensions["recsys"].holder.follow()
    after = _answered(client, "/v1/admin/catalog/clusters?k=2&members=48").get_json()
    listed = [c["medoid"]["item_id"] for c in after["clusters"]]
    listed += [m["item_id"] for c in after["clusters"] for m in c["members"]]
    assert gone not in listed and gone not in [p["item_id"] for p in after["points"]]
    assert sum(c["size"] for c in after["clusters"]) == len(after["points"]) == 31
    assert all(m["title"] for c in after["clusters"] for m in c["members"])


def test_the_most_viewed_item_is_not_an_outlier_for_being_viewed(tmp_path):
    def prepare(engine):  # 200 more shoppers, each of whom viewed a1 on the first day
        with Session(engine) as session, session.begin():
            a1 = session.scalar(select(Item).where(Item.external_id == "a1"))
            for k in range(200):
                fan, day = User(external_id=f"fan-{k}"), datetime(2024, 1, 1)
                viewed = Interaction(
                    user=fan, item=a1, event="view", timestamp=day, dedup_key=f"fan-{k}"
                )
                session.add(viewed)

    client = service_app(build_shop(tmp_path, prepare=prepare)).test_client()
    answer = _answered(client, "/v1/admin/catalog/outliers?top=3&fpr=0.1").get_json()
    assert "a1" not in [item["item_id"] for item in answer["items"]]


def test_clusters_split_comedies_from_dramas_and_map_every_item(client):
    answer = _answered(client, "/v1/admin/catalog/clusters?k=2&members=48").get_json()
    assert answer["k"] == 2 and len(answer["points"]) == 32
    for cluster in answer["clusters"]:
        kinds = {item["item_id"][0] for item in cluster["members"]}
        assert len(kinds) == 1 and cluster["medoid"]["item_id"][0] in kinds
    assert sorted(c["size"] for c in answer["clusters"]) == [16, 16]
    assert all(-1 <= p["x"] <= 1 and -1 <= p["y"] <= 1 for p in answer["points"])
    # named by what all their items share (they had a number only)
    for cluster in answer["clusters"]:
        group = cluster["medoid"]["item_id"][0]
        assert cluster["share"] == 1.0 and cluster["attribute"] in ("brand", "genres")
        assert cluster["value"] in (f"{group}-brand", "Comedy" if group == "a" else "Drama")


def test_bad_parameters_name_the_field(client):
    response = client.get("/v1/admin/catalog/outliers?fpr=2", headers=ADMIN)
    assert response.status_code == 400 and "fpr" in response.get_json()["error"]["message"]
    for bad in ("verified_threshold=1.5", "verify=maybe"):
        response = client.get(f"/v1/admin/catalog/duplicates?{bad}", headers=ADMIN)
        field = bad.split("=")[0]
        assert response.status_code == 400 and field in response.get_json()["error"]["message"]


def test_a_threshold_that_pairs_most_of_the_catalog_is_refused(shop, monkeypatch):
    """A threshold so low that items pair with most others is a 400 naming it, not minutes
    of search and gigabytes of pairs (the cap is lowered here to the toy shop's size)."""
    monkeypatch.setattr(neighbours, "PAIRS_FLOOR", 10)
    monkeypatch.setattr(neighbours, "PAIRS_PER_ITEM", 1)
    client = service_app(shop).test_client()
    for url in ("threshold=0&verify=false", "threshold=-0.5"):
        response = _answered(client, f"/v1/admin/catalog/duplicates?{url}")
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["message"].startswith("threshold")


def test_a_large_duplicate_set_lists_its_first_items_and_says_its_size(client, monkeypatch):
    monkeypatch.setattr(catalog_health, "MAX_MEMBERS", 5)
    answer = _answered(client, "/v1/admin/catalog/duplicates?verify=false&threshold=-1")
    (whole,) = answer.get_json()["sets"]
    assert whole["size"] == 32 and len(whole["items"]) == 5


def test_a_fit_not_done_in_time_is_a_202_then_the_same_answer(client, shop):
    waiting = service_app(shop)
    waiting.config["CATALOG_HEALTH_WAIT_SECONDS"] = 0  # every fit outlasts the wait
    url = "/v1/admin/catalog/clusters?k=2&members=48"
    polls: list = []
    answer = _answered(waiting.test_client(), url, polls)
    assert polls, "a fit that outlasts the wait is answered 202"
    body = polls[0].get_json()
    assert body["status"] == "computing" and body["retry_after"] >= 1
    assert polls[0].headers["Retry-After"] == str(body["retry_after"])
    assert answer.status_code == 200
    assert answer.get_json() == _answered(client, url).get_json()


def test_the_workers_of_one_server_share_a_fit(shop, tmp_path, monkeypatch):
    first = service_app(shop, shared_dir=str(tmp_path)).test_client()
    url = "/v1/admin/catalog/outliers?top=5&fpr=0.1"
    computed = _answered(first, url).get_json()
    assert list(tmp_path.rglob("outliers-*.npz")), "the fit is kept in the shared folder"

    def no_second_fit(self, vectors):
        raise AssertionError("a second worker computed the fit again")

    monkeypatch.setattr(catalog_health.OutlierScorer, "fit", no_second_fit)
    second = service_app(shop, shared_dir=str(tmp_path)).test_client()
    assert _answered(second, url).get_json() == computed
    # another size of the same fit is cut from it, not computed
    assert len(_answered(second, "/v1/admin/catalog/outliers?top=9").get_json()["items"]) == 9


def test_a_server_computes_one_fit_at_a_time(shop, tmp_path, monkeypatch):
    running, most, lock = [0], [0], threading.Lock()

    def one_at_a_time(fit):
        def counted(self, vectors):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.3)
            try:
                return fit(self, vectors)
            finally:
                with lock:
                    running[0] -= 1

        return counted

    for name in ("OutlierScorer", "Clusterer"):
        fitter = getattr(catalog_health, name)
        monkeypatch.setattr(fitter, "fit", one_at_a_time(fitter.fit))
    workers = [service_app(shop, shared_dir=str(tmp_path)) for _ in range(2)]
    for worker in workers:
        worker.config["CATALOG_HEALTH_WAIT_SECONDS"] = 0
    first, second = (worker.test_client() for worker in workers)
    assert first.get("/v1/admin/catalog/outliers", headers=ADMIN).status_code == 202
    assert second.get("/v1/admin/catalog/clusters", headers=ADMIN).status_code == 202
    assert _answered(first, "/v1/admin/catalog/outliers").status_code == 200
    assert _answered(second, "/v1/admin/catalog/clusters").status_code == 200
    assert most[0] == 1


def test_a_failed_fit_is_an_error_and_is_tried_again(shop, monkeypatch):
    fit = catalog_health.OutlierScorer.fit
    failures = iter([RuntimeError("disk full")])

    def fails_once(self, vectors):
        for exc in failures:
            raise exc
        return fit(self, vectors)

    monkeypatch.setattr(catalog_health.OutlierScorer, "fit", fails_once)
    client = service_app(shop).test_client()
    failed = _answered(client, "/v1/admin/catalog/outliers")
    assert failed.status_code == 500 and failed.get_json()["error"]["code"] == "internal_error"
    assert _answered(client, "/v1/admin/catalog/outliers").status_code == 200


def test_a_worker_queues_a_bounded_number_of_fits(shop, monkeypatch):
    fit, release = catalog_health.Clusterer.fit, threading.Event()

    def slow(self, vectors):
        release.wait(30)
        return fit(self, vectors)

    monkeypatch.setattr(catalog_health.Clusterer, "fit", slow)
    app = service_app(shop)
    app.config["CATALOG_HEALTH_WAIT_SECONDS"] = 0
    client = app.test_client()
    urls = [f"/v1/admin/catalog/clusters?k={k}" for k in range(2, 8)]
    queued = [client.get(url, headers=ADMIN).status_code for url in urls]
    limit = catalog_health.MAX_PENDING
    assert queued == [202] * limit + [429] * (len(urls) - limit)
    busy = client.get(urls[-1], headers=ADMIN)
    assert busy.get_json()["error"]["code"] == "catalog_health_busy" and busy.headers["Retry-After"]
    assert client.get(urls[0], headers=ADMIN).status_code == 202  # asked again: still queued
    release.set()
    assert all(_answered(client, url).status_code == 200 for url in urls)


def test_an_unwritable_shared_folder_computes_in_the_worker(shop, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    client = service_app(shop, shared_dir=str(blocked)).test_client()
    assert _answered(client, "/v1/admin/catalog/outliers").status_code == 200


@pytest.fixture(scope="module")
def copies_shop(tmp_path_factory):
    """The shop with its 32 photos replaced after training: 12 products, edited copies of
    products 0-9 (a crop, JPEG, brightness and a shift) and lookalikes of products 0-9 (the
    same product with one shape moved 2 px and one shaded 15% apart). All pairs are
    candidates at threshold=-1, so the photos alone must tell copies from lookalikes."""
    root = tmp_path_factory.mktemp("copies-shop")
    shop = build_shop(root)
    items, lookalikes = products(12, seed=11)
    photos = np.concatenate([items, realistic_edits(items[:10], seed=12), lookalikes[:10]])
    ids = toy_catalog().items["item_id"].tolist()
    for item_id, pixels in zip(ids, photos, strict=True):
        Image.fromarray(pixels).save(root / "images" / f"{item_id}.png")
    planted = {tuple(sorted((ids[i], ids[12 + i]))) for i in range(10)}
    return shop, root / "images", planted


def _duplicate_sets(client, query: str) -> tuple[dict, set]:
    answer = _answered(client, f"/v1/admin/catalog/duplicates?{query}").get_json()
    return answer, {tuple(sorted(i["item_id"] for i in s["items"])) for s in answer["sets"]}


def test_verified_duplicates_are_the_edited_copies_not_the_lookalikes(copies_shop):
    shop, _, planted = copies_shop
    client = service_app(shop).test_client()
    answer, found = _duplicate_sets(client, "threshold=-1")
    assert answer["score"] == "verified" and answer["verified_pairs"] == 32 * 31 // 2
    assert answer["skipped_pairs"] == 0 and answer["verified_threshold"] > 0.9
    # Calibrated: half the copies or more (photos decoded at 32 px, as the CLI), no lookalike.
    assert len(found & planted) >= 5 and found <= planted
    answer, found = _duplicate_sets(client, "threshold=-1&verified_threshold=0.999")
    assert answer["verified_threshold"] == 0.999 and found == planted
    assert all(s["similarity"] >= 0.999 for s in answer["sets"])
    # The served vectors alone cannot tell them apart.
    answer, found = _duplicate_sets(client, "threshold=-1&verify=false")
    assert answer["score"] == "cosine" and found != planted
    # no candidate pair: nothing decoded, and still said to be the photos' answer
    answer, found = _duplicate_sets(client, "threshold=1")
    assert answer["score"] == "verified" and answer["verified_pairs"] == 0 and not found


def test_the_cli_decides_the_bundles_pairs_as_the_service_does(copies_shop, tmp_path):
    """`recsys catalog duplicates` on the active bundle verifies photos as the service does:
    the same sets, scored "verified" (before, it checked titles and listed lookalikes)."""
    (url, artifacts), _, _ = copies_shop
    client = service_app((url, artifacts)).test_client()
    served, found = _duplicate_sets(client, "threshold=-1&limit=200")
    out = tmp_path / "pairs.json"
    result = CliRunner().invoke(
        cli,
        ["--database-url", url, "--artifacts-dir", str(artifacts), "catalog", "duplicates",
         "--threshold", "-1", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(out.read_text())
    assert answer["score"] == "verified" and answer["verified_threshold"] == pytest.approx(
        served["verified_threshold"]
    )
    assert {tuple(sorted(s)) for s in answer["sets"]} == found


def test_photos_that_do_not_decode_are_said_to_leave_the_titles_to_check(copies_shop, caplog):
    """Photo files that would not decode (a volume half-mounted) read as a catalog without
    photos, without a word."""
    shop, images, _ = copies_shop
    away = images.with_name("photos-broken")
    images.rename(away)
    images.mkdir()
    for photo in away.iterdir():
        (images / photo.name).write_bytes(b"not a photo")
    try:
        client = service_app(shop).test_client()
        answer, _ = _duplicate_sets(client, "threshold=0.5")
    finally:
        shutil.rmtree(images)
        away.rename(images)
    assert answer["score"] == "cosine and titles"
    assert "0 of 32 sampled items' photo files decoded" in caplog.text
    assert "32 of 32 photos not verified: cannot read image" in caplog.text  # one line


def test_without_photos_the_answer_is_the_cosine_one_checked_by_titles(copies_shop):
    shop, images, _ = copies_shop
    away = images.with_name("photos-gone")
    images.rename(away)
    try:
        client = service_app(shop).test_client()
        answer, found = _duplicate_sets(client, "threshold=0.5")
        unverified, same = _duplicate_sets(client, "threshold=0.5&verify=false")
    finally:
        away.rename(images)
    assert answer["score"] == "cosine and titles" and answer["verified_pairs"] == 0
    assert unverified["score"] == "cosine"
    # the titles' check only takes pairs away: every set found lies within a cosine one
    assert all(any(set(a) <= set(b) for b in same) for a in found)


@pytest.fixture(scope="module")
def page(shop):
    """Chromium on the /catalog page of the shop served on a free port, every answer first a
    202 (still computing) that the page asks again."""
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    app = service_app(shop)
    app.config["CATALOG_HEALTH_WAIT_SECONDS"] = 0
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # what the page's Content-Security-Policy refused (a style attribute, an inline script)
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
        page.base = f"http://127.0.0.1:{server.server_port}"
        yield page
        browser.close()
        server.shutdown()
        assert errors == [], f"JavaScript errors: {errors}"


def test_the_shop_page_links_to_catalog_health(page):
    from playwright.sync_api import expect

    page.goto(page.base + "/")
    page.get_by_test_id("catalog-health-link").click()
    expect(page.get_by_test_id("status")).to_contain_text("admin key")
    assert page.url.endswith("/catalog")


def test_a_wrong_key_shows_the_error(page):
    from playwright.sync_api import expect

    page.goto(page.base + "/catalog")
    page.locator("#key").fill("not-a-key")
    page.locator("#key").press("Enter")
    expect(page.get_by_test_id("status")).to_have_text("the API key is unknown or revoked")
    expect(page.get_by_test_id("status")).to_have_class("error")
    # WCAG 3.3.1: the box is said to be wrong, and why
    expect(page.locator("#key")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#key")).to_have_accessible_description("the API key is unknown or revoked")


def test_no_key_is_said_and_a_phone_sees_the_key_box_whole(page):
    """WCAG 3.3.1: "Update" without a key did nothing, in silence; WCAG 1.4.10: the key's
    box was 343 px wide in a 320 px window."""
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 320, "height": 800})
    try:
        page.goto(page.base + "/catalog")
        page.evaluate("sessionStorage.clear()")
        page.reload()
        sideways = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(sideways) == 0
        key = page.get_by_role("textbox", name="Admin key")
        assert key.bounding_box()["x"] + key.bounding_box()["width"] <= 320
        # WCAG 2.4.1: the first tab stop skips the header
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        page.get_by_role("button", name="Update").click()
        expect(page.get_by_test_id("status")).to_contain_text("Enter an admin key above first")
        expect(key).to_have_attribute("aria-invalid", "true")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_catalog_health_shows_duplicates_outliers_and_a_browsable_cluster_map(page):
    from playwright.sync_api import expect

    page.goto(page.base + "/catalog")
    page.locator("#key").fill(ADMIN_TOKEN)
    page.locator("#key").press("Enter")
    # the first answers are computed now (expect's 5 s were sometimes too few)
    expect(page.get_by_test_id("status")).to_contain_text("flagged as outliers", timeout=60_000)
    outliers = page.locator('[data-testid="outliers"] [data-testid="item-card"]')
    assert outliers.count() == 24
    assert outliers.first.locator("img").evaluate("img => img.naturalWidth") == 28
    # the map: one dot per item, coloured by cluster; a cluster's button lists its members
    dots = page.locator('[data-testid="cluster-map"] circle')
    assert dots.count() == 32
    buttons = page.get_by_test_id("cluster-button")
    assert buttons.count() >= 2
    # a screen reader names each cluster's button in full, not by its size alone, and the
    # name starts with what the button shows ("144 bags": WCAG 2.5.3, label in name)
    named = re.compile(r"^(\d+ \S+): cluster \d+, \d+ items, \S+ \([a-z ]+, \d+%\)$")
    expect(page.get_by_role("button", name=named)).to_have_count(buttons.count())
    shown = buttons.nth(1).inner_text().split()
    assert named.match(buttons.nth(1).get_attribute("aria-label")).group(1).split() == shown
    # WCAG 4.1.3: a choice is said in a few words, not as the twelve members' titles
    assert page.get_by_test_id("clusters").get_attribute("aria-live") is None
    expect(page.get_by_test_id("cluster-status")).to_have_text("")  # none chosen yet
    buttons.nth(1).click()
    expect(page.get_by_test_id("cluster-status")).to_have_text(
        re.compile(r"^Cluster \d+( \(\S+\))?: \d+ items$")
    )
    expect(buttons.nth(1)).to_have_attribute("aria-pressed", "true")  # not by colour alone
    expect(buttons.nth(0)).to_have_attribute("aria-pressed", "false")
    cluster = buttons.nth(1).get_attribute("data-cluster")
    members = page.locator('[data-testid="cluster-members"] [data-testid="item-card"]')
    expect(members.first).to_be_visible()
    active = page.locator(f'[data-testid="cluster-map"] circle[data-cluster="{cluster}"]')
    assert page.locator('[data-testid="cluster-map"] circle.active').count() == active.count()
    # duplicates side by side: lower the threshold until the closest pair shows
    page.locator("#threshold").fill("0.9")
    page.locator("#threshold").press("Enter")
    # the answer at 0.9, not the sets still shown from the first load's 0.95
    rule = page.get_by_test_id("duplicate-rule")
    expect(rule).to_contain_text("cosine ≥ 0.9, confirmed by their photos")
    pair = page.get_by_test_id("duplicate-set").first
    expect(pair).to_be_visible()
    cards = pair.get_by_test_id("item-card")
    assert cards.count() >= 2
    assert all(cards.nth(i).locator("img").count() == 1 for i in range(cards.count()))
    # a refused request: its error in its own section, none of the sets of the request
    # before it, and the other sections still shown (one failure blanked the whole page)
    refused = '{"error": {"status": 500, "code": "internal_error", "message": "refused"}}'
    page.route(
        "**/v1/admin/catalog/duplicates*",
        lambda route: route.fulfill(status=500, content_type="application/json", body=refused),
    )
    page.locator("#threshold").fill("0.8")
    page.locator("#threshold").press("Enter")
    expect(page.get_by_test_id("status")).to_have_class("error")
    expect(page.get_by_test_id("status")).to_contain_text("failed: duplicates: refused")
    expect(page.get_by_test_id("status")).to_contain_text("flagged as outliers")
    expect(page.get_by_test_id("duplicate-set")).to_have_count(0)
    expect(page.locator('[data-testid="duplicates"] [data-testid="section-error"]')).to_have_text(
        "refused"
    )
    expect(outliers).to_have_count(24)
    expect(dots).to_have_count(32)


def test_outliers_do_not_follow_the_weight_the_similar_surface_gives_the_photo(shop):
    """The similar surface's weights are chosen for what shoppers view next; where a retrain
    dropped the photo (image weight 0), a listing with another department's photo was no
    outlier any more (planted AUC 0.95 -> 0.55 on a 2,000-item demo shop). Outliers read every
    content block at one weight: the same answer whatever the surface weighs."""
    answers = []
    for image_weight in (1.0, 0.0):
        app = service_app(shop)
        fused = app.extensions["recsys"].holder.state.recommender.fused
        fused.surface_weights_["similar"] = {
            **fused.surface_weights_["similar"],
            "image": image_weight,
        }
        answer = _answered(app.test_client(), "/v1/admin/catalog/outliers?top=10").get_json()
        answers.append([(item["item_id"], item["score"]) for item in answer["items"]])
    assert answers[0] == answers[1]
