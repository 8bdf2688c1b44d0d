"""Variants grouped by an attribute (``group_by``): a shop listing each size and colour of a
product as an item saw 7 of a product page's 10 similar items be that product's own sizes.
With ``group_by`` every list holds one item per value (its best), similar items leave out
the asked item's own value, and a feed leaving out seen items leaves out their values."""

from __future__ import annotations

import pytest

from recsys.catalog import connect
from recsys.errors import UnknownFilter
from recsys.model.bundle import load_active
from recsys.model.recommender import one_per_group
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import build_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The toy shop without images, trained: (database URL, artifacts). Its brand has two
    values (a-brand: comedies, b-brand: dramas)."""
    return build_shop(tmp_path_factory.mktemp("group_by"), photos=False)


def brands(ids):
    return [("a" if i.startswith("a") else "b") for i in ids]


def test_one_per_group_keeps_each_groups_best_past_the_taken_ones():
    groups = [["x", "x", None, "y", None, "z", "y"], ["x", "y"]]
    assert one_per_group(groups, 4, [set(), {"y"}]) == [[0, 2, 3, 4], [0]]
    assert one_per_group(groups, 10, [{"x", "y", "z"}, set()]) == [[2, 4], [0, 1]]


def test_similar_items_list_other_groups_only_and_one_of_each(shop):
    recommender = load_active(connect(shop[0]))
    plain = recommender.similar_items(["a1", "b2"], k=6)
    assert brands(plain.ids[0]).count("a") > 1  # the case: the own brand fills the list
    grouped = recommender.similar_items(["a1", "b2"], k=6, group_by="brand")
    assert [brands(ids) for ids in grouped.ids] == [["b"], ["a"]]
    # each the best of its group: the first item of that brand in a wide enough plain list
    wide = recommender.similar_items(["a1", "b2"], k=31)
    for ids, listed, own in zip(grouped.ids, wide.ids, "ab", strict=True):
        assert ids[0] == next(i for i in listed if not i.startswith(own))


def test_feeds_list_one_item_per_group_and_leave_out_seen_groups(shop):
    recommender = load_active(connect(shop[0]))
    users = ["u2", "u9", "nobody"]
    plain = recommender.recommend(users, k=8, exclude_seen=False)
    grouped = recommender.recommend(users, k=8, exclude_seen=False, group_by="brand")
    for ids, listed in zip(grouped.ids, plain.ids, strict=True):
        assert sorted(brands(ids)) == ["a", "b"]
        assert ids[0] == listed[0]
    seen = recommender.recommend(["u2"], k=8, group_by="brand")
    history = recommender.seen_items("u2")
    assert not set(brands(seen.ids[0])) & set(brands(history))
    folded = recommender.recommend_for_history([["a1"], []], k=8, group_by="brand")
    assert brands(folded.ids[0]) == ["b"]
    assert sorted(brands(folded.ids[1])) == ["a", "b"]  # popularity, one of each


def test_a_group_by_the_model_cannot_group_by_is_refused_naming_the_ones_it_can(shop):
    recommender = load_active(connect(shop[0]))
    for name, why in (("genres", "several"), ("colour", "no categorical attribute")):
        with pytest.raises(UnknownFilter, match=why) as raised:
            recommender.similar_items(["a1"], k=3, group_by=name)
        assert "brand" in str(raised.value)
    assert recommender.check_group_by("") is None


def test_the_api_groups_by_the_request_or_the_servers_setting(shop):
    url, artifacts = shop
    settings = Settings(database_url=url, artifacts_dir=artifacts, group_by="brand")
    client = create_app(settings, {"TESTING": True}).test_client()

    def listed(path):
        response = client.get(path)
        assert response.status_code == 200, response.get_json()
        return [item["item_id"] for item in response.get_json()["items"]]

    assert brands(listed("/v1/items/a1/similar?k=6")) == ["b"]
    assert client.get("/readyz").get_json()["group_by"] == "brand"  # hosts can compare it
    assert len(listed("/v1/items/a1/similar?k=6&group_by=")) == 6
    assert sorted(brands(listed("/v1/users/nobody/recommendations?k=6"))) == ["a", "b"]
    body = client.post("/v1/users/nobody/recommendations", json={"k": 6, "group_by": ""})
    assert len(body.get_json()["items"]) == 6
    refused = client.get("/v1/items/a1/similar?group_by=genres")
    assert refused.status_code == 400
    assert "group_by" in refused.get_json()["error"]["message"]


def test_a_servers_setting_the_model_cannot_group_by_is_logged_and_left_out(shop, caplog):
    """RECSYS_GROUP_BY=genres (several values per item) made every list a 400 blamed on
    clients that sent nothing, while /readyz said ready."""
    url, artifacts = shop
    settings = Settings(database_url=url, artifacts_dir=artifacts, group_by="genres")
    client = create_app(settings, {"TESTING": True}).test_client()
    with caplog.at_level("WARNING", logger="services.api"):
        for _ in range(2):
            answer = client.get("/v1/items/a1/similar?k=6")
            assert answer.status_code == 200 and len(answer.get_json()["items"]) == 6
    said = [r.getMessage() for r in caplog.records if "RECSYS_GROUP_BY" in r.getMessage()]
    assert len(said) == 1 and "genres" in said[0]
    assert client.get("/readyz").get_json()["group_by"] is None  # as the lists apply it
    assert client.get("/v1/items/a1/similar?group_by=genres").status_code == 400
