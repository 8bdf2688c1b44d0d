"""The live catalog in the library, on SQLite and PostgreSQL: the change log the triggers
write, a worker's delta following it, and the next training folding it in."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.orm import Session

from recsys.catalog import changes
from recsys.catalog.models import Item
from recsys.catalog.reads import CardCache
from recsys.errors import InvalidInput, UnknownItem
from recsys.ingest.item_writes import delete_item, patch_item, put_item
from recsys.model.bundle import load_active
from recsys.model.delta import DeltaConfig
from recsys.model.fusion import TOKENS
from recsys.model.training import train
from recsys.serving import load_state
from tests.shop_fixture import populate, train_config

TWIN = {
    "title": "Comedy story 1",
    "attributes": {"year": 1991, "genres": ["Comedy"], "brand": "a-brand"},
}


def test_the_change_log_says_what_changed(engine, tmp_path):
    populate(engine)
    mark = changes.generation(engine)
    assert changes.changes_since(engine, mark).written == []
    put_item(engine, "n1", TWIN, tmp_path)
    patch_item(engine, "a1", {"in_stock": False}, tmp_path)
    patch_item(engine, "a2", {"title": "Renamed"}, tmp_path)
    delete_item(engine, "a3")
    with Session(engine) as session, session.begin():  # a hand-written UPDATE counts too
        session.execute(update(Item).where(Item.external_id == "a4").values(in_stock=False))
    found = changes.changes_since(engine, mark)
    assert found.removed == ["a3"]
    assert sorted(found.written) == ["a1", "a2", "a4", "n1"]
    assert found.content == {"n1", "a2"}  # a1 and a4: their stock alone
    assert changes.changes_since(engine, found.generation).written == []
    delete_item(engine, "n1")
    put_item(engine, "n1", TWIN, tmp_path)  # removed, then listed again: listed
    again = changes.changes_since(engine, found.generation)
    assert again.written == ["n1"] and again.removed == []


def test_writes_are_checked_and_all_or_nothing(engine, tmp_path):
    populate(engine)
    with pytest.raises(InvalidInput, match=r"^attributes\.year"):
        put_item(engine, "n1", {"attributes": {"year": float("inf")}}, tmp_path)
    with pytest.raises(UnknownItem):
        patch_item(engine, "nope", {"in_stock": False}, tmp_path)
    with pytest.raises(UnknownItem):
        delete_item(engine, "nope")
    assert changes.item_rows(engine, ["n1"]).empty


def test_a_worker_follows_the_catalog_and_the_next_training_folds_it_in(engine, tmp_path):
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=100))
    recommender = state.recommender
    assert recommender.live.size == 0 and recommender.live.hides == 2  # a3, b3: out of stock
    before = recommender.similar_items(["a1"], k=5).ids[0]
    put_item(engine, "a-twin", TWIN, tmp_path)
    delete_item(engine, before[0])
    patch_item(engine, before[1], {"in_stock": False}, tmp_path)
    assert recommender.similar_items(["a1"], k=5).ids[0] == before  # until the follow step
    assert state.catalog.follow() is not None and state.catalog.follow() is None
    after = recommender.similar_items(["a1"], k=5).ids[0]
    assert "a-twin" in after[:3] and not {before[0], before[1]} & set(after)
    feeds = recommender.recommend(["u0", "u1", "stranger"], k=30).ids
    assert all(not {before[0], before[1]} & set(ids) for ids in feeds)
    with pytest.raises(UnknownItem):
        recommender.similar_items([before[0]])
    # the next training reads the whole catalog: the delta's changes are in the new bundle
    train(engine, tmp_path / "artifacts", train_config())
    retrained = load_active(engine)
    assert retrained.fused.cold_[retrained.item_index["a-twin"]]
    assert before[0] not in retrained.item_index
    assert not retrained.filters.in_stock[retrained.item_index[before[1]]]
    assert "a-twin" in retrained.similar_items(["a1"], k=3).ids[0]


def test_the_card_cache_rereads_only_the_items_the_log_names(engine, tmp_path):
    populate(engine)
    cache = CardCache(engine, capacity=100)
    assert cache.cards(["a1", "b2"])["a1"].title == "Comedy story 1"
    patch_item(engine, "a1", {"title": "Renamed"}, tmp_path)
    asked = []
    listen = event.listens_for(engine, "before_cursor_execute")
    listen(lambda _c, _k, sql, params, *rest: asked.append((sql, str(params))))
    found = cache.cards(["a1", "b2"])
    assert found["a1"].title == "Renamed" and found["b2"].title == "Drama story 2"
    cards = [params for sql, params in asked if "FROM items" in sql and "IN (" in sql]
    assert len(cards) == 1 and "a1" in cards[0] and "b2" not in cards[0]  # b2 from memory


def test_a_followed_card_cache_answers_from_memory_and_moves_with_the_follower(engine, tmp_path):
    populate(engine)
    cache = CardCache(engine, capacity=100)
    cache.follow()
    assert cache.cards(["a1", "b2"])["a1"].title == "Comedy story 1"
    patch_item(engine, "a1", {"title": "Renamed"}, tmp_path)
    asked = []
    listen = event.listens_for(engine, "before_cursor_execute")
    listen(lambda _c, _k, sql, *rest: asked.append(sql))
    # requests between two follow steps read nothing: the page and its lists stay as one
    assert cache.cards(["a1", "b2"])["a1"].title == "Comedy story 1"
    assert asked == []
    cache.follow()  # the follower's step reads the log and drops a1's card only
    found = cache.cards(["a1", "b2"])
    assert found["a1"].title == "Renamed" and found["b2"].title == "Drama story 2"
    # a follower that stopped: past stale_after, requests check the catalog themselves
    stalled = CardCache(engine, capacity=100, stale_after=0.0)
    stalled.follow()
    assert stalled.cards(["a1"])["a1"].title == "Renamed"
    patch_item(engine, "a1", {"title": "Renamed again"}, tmp_path)
    assert stalled.cards(["a1"])["a1"].title == "Renamed again"


def test_live_items_rank_in_feeds_with_their_token_term(engine, tmp_path):
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=100))
    recommender, fused = state.recommender, state.recommender.fused
    fused.set_weights({**fused.weights_, TOKENS: 3.0}, fused.cold_scale_, fused.surface_weights_)
    put_item(engine, "a-twin", TWIN, tmp_path)  # a1's content: a1's tokens
    state.catalog.follow()
    live, a1 = recommender.live, recommender.item_index["a1"]
    users = list(recommender.cf.user_ids_)
    feeds = recommender.recommend(users, k=len(recommender.item_ids) + 1)
    shared = 0
    for user, ids, scores in zip(users, feeds.ids, feeds.scores, strict=True):
        row = recommender.user_index[user]
        cosine = (fused.user_tokens_[row] @ fused.item_tokens_[a1].T).toarray()[0, 0]
        term = 3.0 * fused.cold_scale_.get(TOKENS, 1.0) * cosine  # a new item is cold
        expected = live.vectors[0] @ fused.user_vectors(row) + term
        assert abs(scores[ids.index("a-twin")] - expected) < 1e-5, user
        shared += cosine > 0
    assert shared  # some users' tokens meet the twin's: the term moved their scores


def test_a_hand_typed_update_survives_a_rebuild_of_the_live_catalog(engine, tmp_path):
    """A SQL UPDATE of an item's content sets no updated_at, but the change log's triggers
    see it: a worker that follows saw it, and one that rebuilds (a restart, a new bundle's
    load) missed it, so two workers answered differently."""
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    following = load_state(engine, DeltaConfig(max_items=100))
    with engine.begin() as connection:  # as an operator types it: no ORM, no updated_at
        typed = "UPDATE items SET title = :title WHERE external_id = 'a1'"
        connection.execute(text(typed), {"title": "Drama story 1, a remake"})
    assert following.catalog.follow() is not None
    restarted = load_state(engine, DeltaConfig(max_items=100))
    for state in (following, restarted):
        assert state.recommender.live.knows("a1")
    ask = dict(k=6, mode="similar")
    assert restarted.recommender.similar_items(["a1"], **ask).ids == (
        following.recommender.similar_items(["a1"], **ask).ids
    )


def test_removals_and_stock_do_not_wait_behind_a_bulk_content_update(engine, tmp_path):
    """After an 8,000-row price file, items it sold out kept showing for up to 30 s, and a
    DELETE after it for 10 s: a follow step embedded every changed item before it published.
    Now a step applies every removal and stock change, and the content writes a part at a
    time, the new items showing step by step."""
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=100, step_seconds=0.02))
    catalog, recommender = state.catalog, state.recommender
    embedded, made = [], catalog.items.blocks

    def slow(frame):  # 2 ms an item, as a photo through the image encoder on a CPU
        embedded.append(len(frame))
        time.sleep(0.002 * len(frame))
        return made(frame)

    catalog.items.blocks = slow
    before = recommender.similar_items(["a1"], k=5).ids[0]
    new = [f"n{k}" for k in range(40)]
    for item in new:
        put_item(engine, item, TWIN, tmp_path)
    delete_item(engine, before[0])
    patch_item(engine, before[1], {"in_stock": False}, tmp_path)
    first = catalog.follow()
    assert first.behind and 0 < sum(embedded) < len(new)
    assert first.generation < changes.generation(engine)
    after = recommender.similar_items(["a1"], k=5).ids[0]
    assert not {before[0], before[1]} & set(after)
    shown = set(first.ids.tolist())
    assert shown and shown < set(new)  # the oldest writes first
    steps = [first]
    while (step := catalog.follow()) is not None:
        steps.append(step)
    assert len(steps) > 2 and not steps[-1].behind
    assert steps[-1].generation == changes.generation(engine)
    generations = [step.generation for step in steps]
    assert generations == sorted(set(generations))  # each state its own generation
    assert set(recommender.live.ids.tolist()) == set(new) and sum(embedded) == len(new)


def test_room_freed_in_a_full_delta_goes_to_the_waiting_items(engine, tmp_path):
    """Slots freed while the live catalog was full stayed empty until a retrain; the items
    past the cap were embedded (then thrown away) on every step."""
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=2))
    catalog, recommender = state.catalog, state.recommender
    embedded, made = [], catalog.items.blocks
    catalog.items.blocks = lambda frame: embedded.append(len(frame)) or made(frame)
    for item in ("n1", "n2", "n3", "n4"):
        put_item(engine, item, TWIN, tmp_path)
    delta = catalog.follow()
    assert sorted(delta.ids.tolist()) == ["n1", "n2"] and delta.waiting == {"n3", "n4"}
    assert sum(embedded) == 2 and delta.retrain_due
    delete_item(engine, "n1")
    delta = catalog.follow()
    assert sorted(delta.ids.tolist()) == ["n2", "n3"] and delta.waiting == {"n4"}
    assert "n3" in recommender.similar_items(["a1"], k=10).ids[0]
