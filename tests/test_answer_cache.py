"""Answers kept by what they were computed from (services.answers): a repeated request is
answered from memory, and an item write, a new event or a new bundle is never hidden by it;
a product page is kept across the catalog's follow steps that cannot have changed it."""

from __future__ import annotations

import re
import shutil

import pytest

from recsys.model.delta import LiveCatalog
from recsys.settings import Settings
from services.answers import AnswerCache
from services.app import create_app
from tests.shop_fixture import ADMIN, ADMIN_TOKEN, build_shop


def test_the_cache_keeps_recent_answers_within_its_byte_budget():
    cache = AnswerCache(max_bytes=100)
    cache.put("a", b"x" * 20)
    cache.put("b", b"y" * 20)
    assert cache.get("a") == b"x" * 20  # now the most recently used
    for key in "cdef":
        cache.put(key, b"z" * 20)
    assert cache.size <= 100 and cache.get("b") is None and cache.get("a") == b"x" * 20
    cache.put("big", b"w" * 26)  # over a quarter of the budget: not kept
    assert cache.get("big") is None
    cache.put(None, b"v")  # no key: nothing kept, nothing found
    assert cache.get(None) is None
    off = AnswerCache(max_bytes=0)
    off.put("a", b"")
    assert off.get("a") is None and len(off) == 0
    with pytest.raises(ValueError, match="max_bytes"):
        AnswerCache(-1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("answers-shop"))


def make_app(built, tmp_path, copy: bool = True, **config):
    url, artifacts = built
    if copy:
        shutil.copy(url.removeprefix("sqlite:///"), tmp_path / "shop.db")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        artifacts_dir=artifacts,
        images_root=artifacts.parent / "images",
        admin_token=ADMIN_TOKEN,
        write_rate_limit="10000/minute",
    )
    base = {"TESTING": True, "RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0}
    return create_app(settings, {**base, **config})


def follow(app) -> None:
    """One step of the worker's catalog follower (the service runs one a second)."""
    ctx = app.extensions["recsys"]
    ctx.holder.follow()
    ctx.cards.follow()


def counting(app, method: str) -> list:
    """Count the served recommender's calls of ``method`` (a list of their arguments)."""
    recommender = app.extensions["recsys"].holder.state.recommender
    calls, original = [], getattr(recommender, method)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    setattr(recommender, method, counted)
    return calls


@pytest.fixture
def app(built, tmp_path):
    """The service over a copy of the shop, its follower one step in: answers are kept."""
    app = make_app(built, tmp_path)
    follow(app)
    return app


def test_a_repeated_product_page_is_answered_once_until_an_item_changes(app):
    client = app.test_client()
    calls = counting(app, "similar_items")
    first = client.get("/v1/items/a1/similar?k=5")
    assert first.status_code == 200
    again = client.get("/v1/items/a1/similar?k=5")
    assert again.data == first.data and len(calls) == 1
    assert client.get("/v1/items/a1/similar?k=4").status_code == 200  # another request
    assert len(calls) == 2
    shown, title = (first.get_json()["items"][0][key] for key in ("item_id", "title"))
    # a word no other item has: the card changes, the item's vectors do not
    renamed = f"{title} zzyzx"
    edit = client.patch(f"/v1/items/{shown}", json={"title": renamed}, headers=ADMIN)
    assert edit.status_code == 200
    follow(app)  # the worker's next follow step: new generations, new keys
    after = client.get("/v1/items/a1/similar?k=5").get_json()
    assert len(calls) == 3
    assert {i["item_id"]: i["title"] for i in after["items"]}[shown] == renamed


def test_a_new_event_is_in_the_next_feed_though_the_last_one_was_kept(app):
    client = app.test_client()
    calls = counting(app, "recommend")
    before = client.get("/v1/users/u2/recommendations?k=5")
    assert client.get("/v1/users/u2/recommendations?k=5").data == before.data
    assert len(calls) == 1
    events = [{"user_id": "u2", "item_id": f"b{k}", "event": "purchase"} for k in range(10)]
    posted = client.post("/v1/interactions", json={"events": events}, headers=ADMIN)
    assert posted.status_code == 201
    after = client.get("/v1/users/u2/recommendations?k=5").get_json()
    assert all(i["item_id"].startswith("a") for i in before.get_json()["items"])
    assert sum(i["item_id"].startswith("b") for i in after["items"]) >= 3  # folded in at once


@pytest.mark.parametrize("config", [{"ANSWER_CACHE_MB": 0}, {}])
def test_answers_are_computed_each_time_when_off_or_not_following(built, tmp_path, config):
    app = make_app(built, tmp_path, **config)
    client = app.test_client()
    if config:  # the cache is off; without a follow step there is no generation to key on
        follow(app)
    calls = counting(app, "similar_items")
    for _ in range(3):
        assert client.get("/v1/items/a1/similar?k=5").status_code == 200
    assert len(calls) == 3 and len(app.extensions["recsys"].answers) == 0


def test_product_pages_are_kept_across_steps_that_cannot_change_them(built, tmp_path):
    """Through new, edited, sold-out, restocked and deleted items, every product page served
    from the kept answers equals the one computed afresh, and a step that wrote an item far
    from a page keeps the page."""
    kept = make_app(built, tmp_path)
    fresh = make_app(built, tmp_path, copy=False, ANSWER_CACHE_MB=0)
    pages = [f"/v1/items/{group}{k}/similar?k=5" for group in "ab" for k in range(15)]
    pages += ["/v1/items/a1/similar?k=3&diversity=0.5", "/v1/items/b4/similar?k=4&mode=also"]
    pages += ["/v1/items/a2/similar?k=4&brand=a-brand", "/v1/items/b6/similar?k=4&in_stock=false"]
    feeds = [f"/v1/users/u{n}/recommendations?k=5" for n in range(16)]
    feeds += ["/v1/users/visitor/recommendations", "/v1/users/u3/recommendations?diversity=0.5"]
    feeds += ["/v1/users/u9/recommendations?exclude_seen=false&k=8"]
    client, fresh_client = kept.test_client(), fresh.test_client()
    calls = counting(kept, "similar_items")

    def step() -> int:
        """Follow in both workers; the product pages computed afresh by the one keeping
        answers (every page and feed equal to the other worker's)."""
        for app in (kept, fresh):
            follow(app)
        calls.clear()
        for page in pages + feeds:
            answer, expected = client.get(page), fresh_client.get(page)
            assert (answer.status_code, answer.data) == (expected.status_code, expected.data)
        return len(calls)

    def write(method: str, item_id: str, body=None) -> None:
        response = getattr(client, method)(f"/v1/items/{item_id}", json=body, headers=ADMIN)
        made = method == "put" and response.get_json().get("created")
        assert response.status_code == (201 if made else 200), response.get_json()

    assert step() == len(pages)
    assert step() == 0  # nothing written: every page kept
    far = {"title": "Garden hose", "attributes": {"year": 1950, "brand": "z-brand"}}
    write("put", "z-far", far)
    assert step() <= 4  # far from every page: only the pages the steps cannot tell are computed
    twin = {"title": "Comedy story 1", "image": "a1.png", "attributes": {"year": 1991}}
    write("put", "a-twin", twin | {"attributes": {"genres": ["Comedy"], "brand": "a-brand"}})
    assert step() > 4  # a near-twin of a1 outscores its pages' last items
    write("patch", "a5", {"title": "Comedy story five"})
    write("patch", "b2", {"in_stock": False})
    step()
    write("delete", "a7")
    write("patch", "z-far", {"title": "Garden hose, green"})
    step()
    write("patch", "b2", {"in_stock": True})  # shown again
    step()
    write("delete", "a-twin")
    step()
    metrics = client.get("/metrics").get_data(as_text=True)
    for endpoint in ("similar", "feed"):
        pattern = rf'recsys_answers_total\{{endpoint="{endpoint}",source="(\w+)"\}} (\S+)'
        counts = dict(re.findall(pattern, metrics))
        assert float(counts["carried"]) > 0 and float(counts["computed"]) > 0, endpoint


def test_a_write_outside_a_pages_neighbour_row_keeps_the_page(built, tmp_path):
    """With neighbour rows narrower than the catalog (as in any real shop), an edit, a sale
    and a removal of items outside a page's row keep the page, which equals the one computed
    afresh; a write inside the row does not."""
    kept = make_app(built, tmp_path)
    fresh = make_app(built, tmp_path, copy=False, ANSWER_CACHE_MB=0)
    for app in (kept, fresh):
        recommender = app.extensions["recsys"].holder.state.recommender
        rows, scores = recommender.neighbours
        recommender.neighbours = (rows[:, :8].copy(), scores[:, :8].copy())
    row = recommender.item_index.rows(["a1"])[0]
    table_row = recommender.neighbours[0][row]
    inside = set(recommender.item_ids[table_row[table_row >= 0]].tolist())
    outside = [i for i in recommender.item_ids.tolist() if i not in inside and i != "a1"]
    client, fresh_client = kept.test_client(), fresh.test_client()
    calls = counting(kept, "similar_items")

    def page_after(method: str, item_id: str, body) -> int:
        response = getattr(client, method)(f"/v1/items/{item_id}", json=body, headers=ADMIN)
        assert response.status_code == 200
        for app in (kept, fresh):
            follow(app)
        calls.clear()
        answer = client.get("/v1/items/a1/similar?k=5")
        assert answer.data == fresh_client.get("/v1/items/a1/similar?k=5").data
        return len(calls)

    for app in (kept, fresh):
        follow(app)
    assert client.get("/v1/items/a1/similar?k=5").status_code == 200
    assert page_after("patch", outside[0], {"title": "Renamed far away"}) == 0
    assert page_after("patch", outside[1], {"in_stock": False}) == 0
    assert page_after("delete", outside[2], None) == 0
    assert page_after("patch", outside[1], {"in_stock": True}) == 0
    assert page_after("patch", sorted(inside)[0], {"in_stock": False}) == 1


def test_an_answer_kept_at_a_part_of_a_bulk_update_is_not_served_after_it(
    built, tmp_path, monkeypatch
):
    """A bulk update is followed a part per step, each published at a generation of its own
    (the catalog's, through which its content writes are applied): an answer kept at one part
    is never served for a later one, or for the state before."""
    monkeypatch.setattr(LiveCatalog, "_budget", lambda self: 3)  # items embedded per step
    kept = make_app(built, tmp_path)
    fresh = make_app(built, tmp_path, copy=False, ANSWER_CACHE_MB=0)
    client, fresh_client = kept.test_client(), fresh.test_client()
    pages = ["/v1/items/a1/similar?k=5", "/v1/items/a2/similar?k=5"]
    pages += ["/v1/users/u1/recommendations?k=5", "/v1/users/stranger/recommendations?k=5"]

    def compared() -> list[bytes]:
        answers = []
        for page in pages:
            answer, expected = client.get(page), fresh_client.get(page)
            assert (answer.status_code, answer.data) == (expected.status_code, expected.data)
            answers.append(answer.data)
        return answers

    for app in (kept, fresh):
        follow(app)
    first = compared()
    listed = client.get(pages[0]).get_json()["items"][0]["item_id"]
    far = {"title": "Garden hose", "attributes": {"year": 1950, "brand": "z-brand"}}
    for k in range(7):
        client.put(f"/v1/items/z-far{k}", json=far, headers=ADMIN)
    client.delete(f"/v1/items/{listed}", headers=ADMIN)
    twin = {"title": "Comedy story 1", "image": "a1.png"}
    twin |= {"attributes": {"year": 1991, "genres": ["Comedy"], "brand": "a-brand"}}
    client.put("/v1/items/a-twin", json=twin, headers=ADMIN)
    states, behind = [first], []
    while True:
        steps = [app.extensions["recsys"].holder.follow() for app in (kept, fresh)]
        if steps[0] is None:
            break
        assert steps[1].generation == steps[0].generation
        behind.append(steps[0].behind)
        states.append(compared())
    assert behind[:2] == [True, True] and behind[-1] is False
    assert listed.encode() not in states[1][0]  # removed at the first step
    assert b"a-twin" not in states[1][0] and b"a-twin" in states[-1][0]
