"""Explanations (recsys.model.explain): every result's reasons sum to its score, exactly as
the fused inner product splits, in the library and in the API's answers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from recsys.catalog import connect
from recsys.cli import cli
from recsys.errors import InvalidInput
from recsys.model.bundle import load_active
from recsys.model.explain import TOP_ITEMS, InCommon, _top_rows, similar_reasons
from tests.shop_fixture import ADMIN, build_shop, service_app


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="module")
def recommender(shop):
    return load_active(connect(shop[0]))


def shares_sum_to_scores(results) -> None:
    for scores, because in zip(results.scores, results.because, strict=True):
        assert len(because) == len(scores) > 0
        totals = [sum(reason.share for reason in reasons) for reasons in because]
        np.testing.assert_allclose(totals, scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["similar", "also"])
def test_similar_items_split_into_blocks_that_sum_to_the_score(recommender, mode):
    results = recommender.similar_items(["a1", "b4"], k=6, mode=mode)
    shares_sum_to_scores(results)
    first = {reason.label: reason.share for reason in results.because[0][0]}
    if mode == "similar":  # a comedy like a comedy: same brand, a genre, and it looks alike
        assert "looks alike" in first and "same brand, genres in common" in first
        assert all(share > 0 for share in first.values())


def test_a_new_items_parts_sum_to_its_score_where_feeds_scale_its_content(shop):
    """Where the weights stage scales new items' content blocks for feeds, "more like this"
    meets them by their whole content (the neighbour table holds them so), but their parts
    were split by the scaled feed vectors: 1 in 5 of a demo shop's similar items had parts
    that did not sum to their score."""
    recommender = load_active(connect(shop[0]))  # its own: the weights change here
    fused = recommender.fused
    cold_scale = {**fused.cold_scale_, "tabular": 0.1, "image": 3.0}
    fused.set_weights(fused.weights_, cold_scale, fused.surface_weights_)
    assert fused.content_cold_scaled
    recommender.compute_neighbours(recommender.neighbours[0].shape[1])
    results = recommender.similar_items(["a1", "b4"], k=31, mode="similar")
    assert {"a-new", "b-new"} <= {item for ids in results.ids for item in ids}
    shares_sum_to_scores(results)


def test_a_new_item_was_never_viewed_together(recommender):
    """A new item's collaborative part is predicted from its attributes: "viewed with items
    like it", never "viewed together", on either side of a pair; the parts still sum."""
    fused = recommender.fused
    assert fused.surface_weights_["also"]["cf"] > 0
    results = recommender.similar_items(["a-new", "a1"], k=31, mode="also")
    shares_sum_to_scores(results)
    rows = [recommender.item_rows(ids) for ids in results.ids]
    for q, (cold_query, reasons) in enumerate(zip([True, False], results.because, strict=True)):
        for row, listed in zip(rows[q], reasons, strict=True):
            labels = {reason.label for reason in listed}
            if cold_query or fused.cold_[row]:
                assert "viewed together" not in labels
    new_labels = {reason.label for listed in results.because[0] for reason in listed}
    assert "viewed with items like it" in new_labels


def test_similar_items_by_hand(recommender):
    """The parts are each block's weighted inner product of query and item vectors."""
    fused = recommender.fused
    results = recommender.similar_items(["a1"], k=3)
    query = fused.item_query_blocks(recommender.item_rows(["a1"]))
    weights = fused.surface_weights_["similar"]
    for item, reasons in zip(results.ids[0], results.because[0], strict=True):
        vector = fused.item_vectors_[recommender.item_rows([item])[0]]
        by_hand = {
            name: weights[name] * float(query[name][0] @ vector[part])
            for name, part in fused.layout_.slices().items()
            if name in query and weights[name]
        }
        assert sorted(r.share for r in reasons) == pytest.approx(sorted(by_hand.values()), abs=1e-5)


def test_shared_attributes_read_as_a_list():
    """The page shows the label as it is: column names in a sentence, not "a and b and c"."""
    shares = {"tabular": np.array([[0.5, 0.4, 0.3]]), "image": np.array([[0.2, 0.2, 0.2]])}
    shared = [[["brand", "department", "colour_tone"], ["brand", "price_band"], ["brand"]]]
    labels = [[r.label for r in reasons] for reasons in similar_reasons(shares, shared, 0)]
    assert [first for first, _ in labels] == [
        "same brand, department and colour tone",
        "same brand and price band",
        "same brand",
    ]
    assert all(second == "looks alike" for _, second in labels)


def test_values_in_common_are_not_called_the_same():
    """Every MovieLens pair sharing one genre read "same genres" (Pulp Fiction's Comedy|Crime|
    Drama|Thriller beside Guarding Tess's Comedy|Drama): an attribute of several values per
    item is named as values in common."""
    shares = {"tabular": np.array([[0.5, 0.4]])}
    shared = [[["brand", InCommon("genres")], [InCommon("genres"), InCommon("tags")]]]
    labels = [reasons[0].label for reasons in similar_reasons(shares, shared, 0)]
    assert labels == ["same brand, genres in common", "genres and tags in common"]


def test_feeds_split_into_history_items_that_sum_to_the_score(recommender):
    results = recommender.recommend(["u9", "u2", "someone-new"], k=8)
    shares_sum_to_scores(results)
    seen = set(recommender.seen_items("u9"))
    for reasons in results.because[0]:
        named = [r for r in reasons if r.item_id is not None]
        assert 1 <= len(named) <= 3 and {r.item_id for r in named} <= seen
        assert [r.share for r in named] == sorted((r.share for r in named), reverse=True)
    assert all(r[0].label == "popular with shoppers" for r in results.because[2])


def test_a_fallback_feed_does_not_call_an_item_without_events_popular(recommender):
    everything = len(recommender.item_ids)
    results = recommender.recommend(["someone-new"], k=everything)
    labels = dict(zip(results.ids[0], (r[0].label for r in results.because[0]), strict=True))
    assert labels["a-new"] == labels["b-new"] == "new in the catalog"
    assert labels["a1"] == "popular with shoppers"


def test_a_folded_in_history_is_explained_exactly(recommender):
    """For a feed folded in from a history, the history items' parts (ALS's user step split
    per item, the content profiles' terms) leave no remainder."""
    history = ["b1", "b5", "a2"]
    results = recommender.recommend_for_history([history], k=6)
    shares_sum_to_scores(results)
    for reasons in results.because[0]:
        labels = {r.label: r.share for r in reasons}
        assert abs(labels.get("your overall taste", 0.0)) < 1e-4
        assert {r.item_id for r in reasons if r.item_id} <= set(history)


def test_a_history_of_new_items_is_folded_in_from_their_predicted_factors(recommender):
    """A shopper whose only events are on items no one had viewed at training time: their cf
    factors are the ones predicted from content (as their product page pairs them), where
    they were 0 and such a feed scored nothing (every score 0, in catalog order)."""
    cf_only = recommender.fused.cf_stand_ins(np.flatnonzero(recommender.fused.cold_))
    assert np.abs(cf_only).sum() > 0  # the toy shop's new items have predicted factors
    results = recommender.recommend_for_history([["b-new"]], k=5)
    assert results.fallback == [False]
    assert (results.scores[0] > 0).all()
    assert sum(item.startswith("b") for item in results.ids[0]) >= 4  # dramas, like b-new
    shares_sum_to_scores(results)
    for reasons in results.because[0]:
        assert {r.item_id for r in reasons if r.item_id} == {"b-new"}


def test_api_answers_carry_reasons_that_sum_to_the_score(shop):
    client = service_app(shop).test_client()
    similar = client.get("/v1/items/a1/similar?k=5").get_json()["items"]
    feed = client.get("/v1/users/u9/recommendations?k=5&diversity=0.3").get_json()["items"]
    for item in similar + feed:
        assert sum(r["share"] for r in item["because"]) == pytest.approx(item["score"], abs=1e-4)
    viewed = [r for r in feed[0]["because"] if r.get("item_id")]
    assert viewed and all(r["title"].startswith("Drama story") for r in viewed)


def test_an_item_removed_since_the_bundle_is_not_named_as_a_reason(tmp_path):
    """A shopper's history item deleted from the catalog has no title or page: its part of a
    feed's score counts in "other items you viewed" (the API and the CLI), not as "you
    viewed" an id with a null title."""
    url, artifacts = build_shop(tmp_path)
    client = service_app((url, artifacts)).test_client()

    def named_items(feed):
        return [r.get("item_id") for item in feed for r in item["because"] if r.get("item_id")]

    feed = client.get("/v1/users/u9/recommendations?k=5").get_json()["items"]
    gone = named_items(feed)[0]
    assert client.delete(f"/v1/items/{gone}", headers=ADMIN).status_code == 200
    client.application.extensions["recsys"].holder.follow()
    feed = client.get("/v1/users/u9/recommendations?k=5").get_json()["items"]
    assert gone not in named_items(feed) and all(named_items(feed))
    assert any(r["label"] == "other items you viewed" for item in feed for r in item["because"])
    for item in feed:
        assert sum(r["share"] for r in item["because"]) == pytest.approx(item["score"], abs=1e-4)
    shown = CliRunner().invoke(cli, ["--database-url", url, "recommend", "--user", "u9", "--json"])
    rows = json.loads(shown.output)
    named = [r["item_id"] for reasons in rows[0]["because"] for r in reasons if "item_id" in r]
    assert named and gone not in named


@pytest.mark.parametrize("history", [5, 40, 3000])
def test_a_heavy_shoppers_reasons_name_the_items_a_full_sort_names(history):
    """Only the history items that can be among a listed item's top few are sorted; with
    many equal shares (ties go to the earlier history item) the named items stay the same."""
    rng = np.random.default_rng(history)
    shares = rng.integers(0, 6, size=(history, 20)).astype(np.float64)  # ties everywhere
    shares[:, 3] = 0.0  # a listed item no history item explains
    shares[-1, 5] = 9.0  # the last history item alone on top
    expected = np.argsort(-shares, axis=0, kind="stable")[:TOP_ITEMS]
    np.testing.assert_array_equal(_top_rows(shares, TOP_ITEMS), expected)


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda r: r.recommend(["u1"], k=0), "k must be a whole number >= 1, got 0"),
        (lambda r: r.recommend(["u1"], k="5"), "k must be a whole number >= 1, got '5'"),
        (lambda r: r.similar_items(["a1"], k=-3), "k must be a whole number >= 1, got -3"),
        (lambda r: r.similar_items(["a1"], k=2.5), "got 2.5"),
        (lambda r: r.recommend([None]), "user_id is empty"),
        (lambda r: r.recommend([float("nan")]), "user_id nan is not a finite number"),
        (lambda r: r.similar_items(["a1"], filters={"in_stock": "false"}), "True or False"),
        (lambda r: r.similar_items(["a1"], filters={"brand": None}), "filters['brand']"),
        (lambda r: r.recommend(["u1"], filters=["brand"]), "filters are a mapping"),
    ],
)
def test_the_library_refuses_what_the_http_api_refuses(recommender, call, says):
    """The library's door checks k, ids and filters as the API's does: a 0 stopped in FAISS,
    -3 listed items short of the catalog, "false" kept items in stock, None matched "None"."""
    with pytest.raises(InvalidInput, match=re.escape(says)):
        call(recommender)


def test_library_ids_follow_the_id_rule(recommender):
    """12, 12.0 and "12" are one id, as at ingest; one id alone is a list of one."""
    assert recommender.similar_items("a1", k=3).ids == recommender.similar_items(["a1"], k=3).ids
    assert recommender.recommend(" u1 ", k=3).ids == recommender.recommend(["u1"], k=3).ids


def test_search_by_photo_takes_one_path_or_a_list_of_arrays(recommender, shop):
    """A path alone was read as its characters ("cannot read image t"), and a list of
    arrays as paths; both now search as the README's forms do."""
    from PIL import Image

    photo = shop[1].parent / "images" / "a1.png"
    one = recommender.search_images(str(photo), k=3)
    assert one.ids == recommender.search_images([photo], k=3).ids and "a1" in one.ids[0]
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    listed = recommender.search_images([pixels, pixels], k=3)
    assert listed.ids == [one.ids[0], one.ids[0]]
