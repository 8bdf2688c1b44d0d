"""``recsys.catalog.reads``: the catalog reads the service makes, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import re
import time
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from recsys.catalog import connect, db, migrate, reads
from recsys.catalog.models import (
    AttributeKind,
    CatalogState,
    Interaction,
    Item,
    ItemAttribute,
    User,
)
from recsys.catalog.title_index import match_phrase
from recsys.errors import SearchTooBroad
from recsys.ingest.values import BadValue
from recsys.model.data import (
    INTERACTION_COLUMNS,
    count_users,
    items_frame,
    read_interactions,
    read_items,
)
from recsys.model.split import sample_users
from tests.shop_fixture import populate
from tests.toy import toy_catalog


def test_item_cards_are_read_by_id_and_unknown_ids_left_out(engine, tmp_path):
    populate(engine, tmp_path / "images")
    cards = reads.item_cards(engine, ["a1", "b2", "nope"])
    assert set(cards) == {"a1", "b2"}
    a1 = cards["a1"]
    assert a1.item_id == "a1" and a1.title == "Comedy story 1" and a1.has_image
    assert a1.in_stock is True and a1.attributes["brand"] == "a-brand"
    assert reads.item_cards(engine, []) == {}
    assert reads.image_path(engine, "a1").endswith("a1.png")
    assert reads.image_path(engine, "nope") is None


def test_item_titles_come_in_the_order_asked_in_batches(engine, monkeypatch):
    populate(engine)
    monkeypatch.setattr(reads, "TITLE_BATCH", 2)  # three queries for these five ids
    titles = reads.item_titles(engine, ["b2", "nope", "a1", "b2", "a2"])
    assert titles == ["Drama story 2", None, "Comedy story 1", "Drama story 2", "Comedy story 2"]
    assert reads.item_titles(engine, []) == []


def test_item_pages_and_title_search(engine):
    populate(engine)
    everything = reads.list_items(engine, offset=0, limit=100)
    assert everything.total == len(everything.cards) == 32
    page = reads.list_items(engine, offset=3, limit=5, text="drama")
    assert page.total == 16 and len(page.cards) == 5
    assert all("Drama" in card.title for card in page.cards)
    assert not page.cards[0].has_image  # populated without images
    drama = [c.item_id for c in reads.list_items(engine, 0, 100, "drama").cards]
    assert [c.item_id for c in page.cards] == drama[3:8]


def test_user_pages_count_events(engine):
    populate(engine)
    with Session(engine) as session, session.begin():
        session.add(User(external_id="zz-no-events"))
    with Session(engine) as session:
        u0 = session.scalar(select(User).where(User.external_id == "u0"))
        u0_events = session.query(Interaction).filter(Interaction.user_id == u0.id).count()
    users = reads.list_users(engine, offset=0, limit=1000).users
    assert users[0].user_id == "u0" and users[0].interactions == u0_events > 0
    assert users[-1].user_id == "zz-no-events" and users[-1].interactions == 0
    assert reads.list_users(engine, offset=1, limit=2).users == users[1:3]


def test_fresh_items_are_the_users_events_after_a_moment(engine):
    populate(engine)
    with Session(engine) as session:
        last = session.scalar(select(Interaction.created_at).order_by(Interaction.id.desc()))
        user = session.scalar(select(User).where(User.external_id == "u1"))
        item = session.scalar(select(Item).where(Item.external_id == "b3"))
        assert reads.fresh_items(engine, "u1", last) == []
        later = last + timedelta(seconds=5)
        session.add(
            Interaction(user=user, item=item, event="view", dedup_key="x" * 32, created_at=later)
        )
        session.commit()
    assert reads.fresh_items(engine, "u1", last) == ["b3"]
    assert reads.fresh_items(engine, "u1", later) == []
    assert "b3" not in reads.fresh_items(engine, "u2", last - timedelta(days=1))
    assert reads.fresh_items(engine, "nobody", last) is None  # no such user (or erased)
    reads.ping(engine)


def test_a_feeds_fresh_events_are_found_by_time_not_by_reading_the_users_history(engine):
    """Every feed asks for its user's events since the bundle: the index must reach the fresh
    rows by their arrival, or a shopper with 10^4 events costs 10^4 row reads per feed."""
    populate(engine)
    statements = []

    def keep(connection, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        reads.fresh_items(engine, "u1", datetime(2026, 1, 1))
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    statement, parameters = statements[-1]
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as connection:
        if postgres:  # a tiny table is read whole otherwise
            connection.exec_driver_sql("SET enable_seqscan = off")
        explain = "EXPLAIN" if postgres else "EXPLAIN QUERY PLAN"
        rows = connection.exec_driver_sql(f"{explain} {statement}", parameters).all()
    plan = "\n".join(str(row[-1]) for row in rows)
    if postgres:
        assert re.search(r"Index Cond: \(\(user_id = .+\) AND \(created_at > ", plan), plan
    else:
        assert "ix_interactions_user_arrival (user_id=? AND created_at>?)" in plan, plan


def test_card_cache_answers_from_memory_until_any_write_to_items(engine):
    """Cards are read once, then from memory; an edit by anyone (here a plain UPDATE, as an
    operator would type it) shows on the very next call."""
    populate(engine)
    cache = reads.CardCache(engine, capacity=100)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert cache.cards(["a1", "b2", "nope"]).keys() == {"a1", "b2"}
    statements.clear()
    assert cache.cards(["b2", "a1"])["a1"].title == "Comedy story 1"
    assert not any("FROM items" in sql for sql in statements)  # only the generation was read
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id == "a1").values(title="Renamed"))
    assert cache.cards(["a1", "b2"])["a1"].title == "Renamed"
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="new-1", title="Added later"))
    assert cache.cards(["new-1"])["new-1"].title == "Added later"


def test_card_cache_keeps_at_most_its_capacity(engine):
    populate(engine)
    cache = reads.CardCache(engine, capacity=3)
    everything = [card.item_id for card in reads.list_items(engine, 0, 100).cards]
    assert len(cache.cards(everything)) == 32 and len(cache) == 3
    assert reads.CardCache(engine, capacity=0).cards(["a1"]).keys() == {"a1"}


def test_training_reads_every_interaction_with_its_ids_in_any_chunking(engine):
    populate(engine)
    expected = toy_catalog().interactions.reset_index(drop=True)
    for chunk_rows in (7, 100_000):
        read = read_interactions(engine, chunk_rows=chunk_rows)
        assert read.columns.tolist() == INTERACTION_COLUMNS
        assert read["user_id"].tolist() == expected["user_id"].tolist()
        assert read["item_id"].tolist() == expected["item_id"].tolist()
        assert read["event"].tolist() == expected["event"].tolist()
        np.testing.assert_allclose(read["weight"], expected["weight"])
        assert (read["timestamp"].to_numpy() == expected["timestamp"].to_numpy()).all()


def test_events_of_shoppers_added_while_the_ids_are_read_are_left_out(engine, monkeypatch):
    """An ingest adding shoppers between the read of the ids and the read of the events (two
    statements) stopped an export or an evaluation with "Index ... out of bounds"."""
    from recsys.model import data

    populate(engine)
    before = read_interactions(engine)
    external_ids = data._external_ids

    def then_a_new_shopper(connection, table):
        lookup = external_ids(connection, table)
        if table == "items":  # after both lookups, before the events' read
            with Session(engine) as session, session.begin():
                item = session.scalar(select(Item).where(Item.external_id == "a1"))
                late = User(external_id=f"late-shopper-{len(added)}")
                session.add(Interaction(user=late, item=item, event="view", dedup_key="late"))
            added.append(late)
        return lookup

    added = []

    monkeypatch.setattr(data, "_external_ids", then_a_new_shopper)
    read = read_interactions(engine, chunk_rows=7)
    pd.testing.assert_frame_equal(read, before)
    batches = list(data.interaction_batches(engine, chunk_rows=7))
    # the first late shopper was stored before this read's ids: in; the second: out
    assert sum(batch.num_rows for batch in batches) == len(before) + 1
    monkeypatch.undo()
    assert "late-shopper-0" in read_interactions(engine)["user_id"].tolist()  # read next time


def test_a_user_sample_read_in_sql_holds_the_rows_sampling_the_whole_read_keeps(engine):
    populate(engine)
    everything = read_interactions(engine)
    n_users = everything["user_id"].nunique()
    assert count_users(engine) == n_users
    for n, seed in ((1, 0), (2, 3), (n_users - 1, 1), (n_users, 0), (n_users + 5, 0)):
        expected = sample_users(everything, n, seed).reset_index(drop=True)
        read = read_interactions(engine, user_sample=(n, seed))
        pd.testing.assert_frame_equal(read, expected)
        assert read["user_id"].nunique() == min(n, n_users)


def test_title_search_takes_like_wildcards_literally(engine):
    populate(engine)
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="pct", title="100% cotton tee"))
        session.add(Item(external_id="under", title="snake_case mug"))
        session.add(Item(external_id="slash", title="a/b test"))
        session.add(Item(external_id="quote", title='the "best" mug'))
    texts = ("00%", "% c", "0% c", "e_c", "a/b", '"best"', "comedy story 1")
    found = {text: [c.item_id for c in reads.list_items(engine, 0, 100, text).cards]
             for text in texts}  # fmt: skip
    assert found["00%"] == found["% c"] == found["0% c"] == ["pct"]
    assert found["e_c"] == ["under"]
    assert found["a/b"] == ["slash"]  # the escape character itself
    assert found['"best"'] == ["quote"]  # the index's own quote character
    assert reads.list_items(engine, 0, 100, "00%").total == 1
    assert len(found["comedy story 1"]) == 6  # 1, 10 to 14: plain search still matches


def test_title_search_finds_any_scripts_titles_in_any_case(engine):
    """SQLite's LIKE folds ASCII letters only: "кроссовки" found none of the titles
    "Кроссовки ...", "SCHÖFFEL" none of "Schöffel ..." (PostgreSQL's ILIKE folds them); a
    Chinese word of two characters was too short to search."""
    populate(engine)
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="ru", title="Кроссовки Спортмастер"))
        session.add(Item(external_id="de", title="Schöffel Jacke grün"))
        session.add(Item(external_id="el", title="ΣΑΝΔΑΛΙΑ"))
        session.add(Item(external_id="zh", title="李宁红色运动鞋"))
    for text, item in (("кроссовки", "ru"), ("СПОРТМАСТЕР", "ru"), ("SCHÖFFEL", "de"),
                       ("GRÜN", "de"), ("σανδαλια", "el"),
                       ("红色", "zh"), ("李宁", "zh")):  # two-character Chinese words  # fmt: skip
        found = reads.list_items(engine, 0, 100, text)
        assert [card.item_id for card in found.cards] == [item], text
        assert found.total == 1


def test_title_search_finds_greek_turkish_and_georgian_titles_in_any_case(engine):
    """On SQLite "ΟΔΟΣ" missed "ΟΔΟΣΤΡΩΤΗΡΑΣ" (Python lowers a word's last Σ to ς),
    "istanbul" missed "İstanbul" and "თბილისი" missed "ᲗᲑᲘᲚᲘᲡᲘ" (the title index keeps İ
    and Georgian capitals as they are); on PostgreSQL "οδος" and "ΚΑΦΈΣ" missed (its lower()
    keeps a final ς)."""
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="roller", title="ΟΔΟΣΤΡΩΤΗΡΑΣ παιχνίδι"))
        session.add(Item(external_id="coffee", title="ΟΔΟΣ καφές σακίδιο"))
        session.add(Item(external_id="scarf", title="İstanbul scarf"))
        session.add(Item(external_id="jacket", title="ᲗᲑᲘᲚᲘᲡᲘ ᲥᲣᲠᲗᲣᲙᲘ"))
        session.add(Item(external_id="shirt", title="shirt"))
        session.add(Item(external_id="upper", title="ΔΩΡΕΑΝ ΑΠΟΣΤΟΛΗΣ ΣΤΟΥΣ ΠΕΛΑΤΕΣ"))
        session.add(Item(external_id="lower", title="δωρεαν αποστολης στους πελατες"))
    search = lambda text: sorted(c.item_id for c in reads.list_items(engine, 0, 100, text).cards)  # noqa: E731
    for text in ("ΟΔΟΣ", "οδος", "οδοσ"):
        assert search(text) == ["coffee", "roller"], text
    assert search("ΚΑΦΈΣ") == search("καφέσ") == ["coffee"]
    assert search("istanbul") == search("İSTANBUL") == ["scarf"]
    assert search("თბილისი") == ["jacket"]
    assert search("SHİRT") == ["shirt"]
    # four sigmas and more: each one both ways
    assert search("αποστολης στους") == search("ΑΠΟΣΤΟΛΗΣ ΣΤΟΥΣ ΠΕΛΑΤΕΣ") == ["lower", "upper"]


def test_title_search_takes_3_to_200_characters(engine):
    populate(engine)
    for text in ("a", "%", " dr ", "é", "傘", "ab"):
        with pytest.raises(BadValue, match="at least 3 characters, 2 in Chinese"):
            reads.list_items(engine, 0, 10, text)
    with pytest.raises(BadValue, match="at most 200"):
        reads.list_items(engine, 0, 10, "drama " * 34)
    assert reads.list_items(engine, 0, 100, "  ").total == 32  # blank: every item


def test_a_search_that_repeats_itself_matches_whole(engine):
    """The index looks up the shortest part of the text that holds all its trigrams
    ("la la" for "la la la la"); the whole text decides."""
    populate(engine)
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="song", title="la la land"))
        session.add(Item(external_id="chorus", title="La la la la la"))
    search = lambda text: sorted(c.item_id for c in reads.list_items(engine, 0, 100, text).cards)  # noqa: E731
    assert search("la la la la") == ["chorus"]  # "la la", what the index looks up, is in both
    assert search("LA LA L") == ["chorus", "song"]
    assert match_phrase("la la la la") == '"la la"'


def test_title_search_follows_every_write(engine):
    """The title index (migration 0011) sees new, renamed and removed items, and a search
    finds exactly the titles holding the text (ASCII case folded, as LIKE does)."""
    populate(engine)
    search = lambda text: sorted(c.item_id for c in reads.list_items(engine, 0, 100, text).cards)  # noqa: E731
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="n1", title="Velvet Lamp"))
        session.add(Item(external_id="n2", title="velvet LAMPshade"))
        session.add(Item(external_id="n3", title="Éclair plate"))
        session.add(Item(external_id="n4", title=None))
    assert search("velvet lamp") == ["n1", "n2"] and search("LAMPSH") == ["n2"]
    assert search("Éclair") == ["n3"]
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id == "n1").values(title="Oak desk"))
        connection.execute(update(Item).where(Item.external_id == "n2").values(in_stock=False))
        connection.execute(update(Item).where(Item.external_id == "n4").values(title="Oak bed"))
        connection.execute(delete(Item).where(Item.external_id == "n3"))
    assert search("velvet") == ["n2"] and search("oak ") == ["n1", "n4"]
    assert search("Éclair") == []
    with Session(engine) as session:
        titles = dict(session.execute(select(Item.external_id, Item.title)).all())
    for text in ("comedy", "story 1", "oak", "ama s", "zzz"):
        expected = sorted(i for i, t in titles.items() if t and text.lower() in t.lower())
        assert search(text) == expected, text


def test_the_title_index_migration_indexes_the_items_already_there(engine):
    migrate.downgrade(engine, "0010")  # the catalog before the index
    populate(engine)
    migrate.upgrade(engine)
    assert len(reads.list_items(engine, 0, 100, "drama").cards) == 16


def test_title_search_reads_the_title_index(engine):
    """The search's query looks its text up in migration 0011's index (a plan that read
    every title would pass every other test)."""
    populate(engine)
    query, _ = reads._title_search(select(Item.id).order_by(Item.id), engine.dialect.name, "drama")
    compiled = query.compile(dialect=engine.dialect)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
            assert "SCAN item_search VIRTUAL TABLE" in plan[0][3]
        else:
            connection.exec_driver_sql("SET enable_seqscan = off")  # 32 items: any plan
            plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
            assert "ix_items_title_trigrams" in " ".join(row[0] for row in plan)


def test_pages_follow_one_another_by_key(engine):
    """``next`` starts the following page where this one ended, for items (searched or not)
    and users, whatever offset the first page took; a short page has none."""
    populate(engine)
    for text in ("", "story"):
        every = [c.item_id for c in reads.list_items(engine, 0, 100, text).cards]
        page, pages = reads.list_items(engine, 2, 5, text), []
        while True:
            pages += [c.item_id for c in page.cards]
            if page.next is None:
                break
            page = reads.list_items(engine, 0, 5, text, after=page.next)
        assert pages == every[2:] and len(every) > 10
    users = reads.list_users(engine, 0, 1000).users
    first = reads.list_users(engine, 0, 3)
    assert reads.list_users(engine, 0, 3, after=first.next).users == users[3:6]
    assert reads.list_users(engine, 0, 1000).next is None
    # a last page that is full says it is the last: no "next" to an empty page
    items = reads.list_items(engine, 0, 1000).cards
    assert reads.list_items(engine, 0, len(items)).next is None
    assert reads.list_items(engine, 0, len(items) - 1).next is not None
    assert reads.list_users(engine, 0, len(users)).next is None
    assert reads.list_users(engine, 0, len(users) - 1).next is not None


def test_a_search_past_its_time_is_refused(engine, monkeypatch):
    """A search whose queries outlast ``SEARCH_SECONDS`` is stopped with a reason (SQLite's
    progress handler; PostgreSQL's statement_timeout, for that search's transaction only)."""
    populate(engine)
    with Session(engine) as session, session.begin():
        session.add_all(Item(external_id=f"n{k}", title=f"plain mug {k}") for k in range(3000))
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    monkeypatch.setattr(reads, "SEARCH_SECONDS", 1e-9)
    if engine.dialect.name == "sqlite":
        with pytest.raises(SearchTooBroad, match="search a rarer word"):
            reads.list_items(engine, 0, 10, "plain mug 29")
    else:  # PostgreSQL's smallest limit, 1 ms, may or may not stop 3,000 titles: it is set
        with contextlib.suppress(SearchTooBroad):
            reads.list_items(engine, 0, 10, "plain mug 29")
        assert "SET LOCAL statement_timeout = 1" in statements
    monkeypatch.setattr(reads, "SEARCH_SECONDS", 1.0)
    assert reads.list_items(engine, 0, 10, "plain mug 29").total == 111  # 29, 29x, 29xx
    statements.clear()
    assert len(reads.list_items(engine, 0, 10).cards) == 10
    assert not any("statement_timeout" in s for s in statements)  # browsing has no limit


def test_item_pages_count_up_to_a_limit(engine, monkeypatch):
    populate(engine)
    monkeypatch.setattr(reads, "COUNT_LIMIT", 10)
    every = reads.list_items(engine, 0, 100)
    assert (every.total, every.exact, len(every.cards)) == (10, False, 32)
    drama = reads.list_items(engine, 12, 100, "drama")
    assert (drama.total, drama.exact, len(drama.cards)) == (10, False, 4)  # 16 dramas
    few = reads.list_items(engine, 0, 100, "comedy story 1")
    assert (few.total, few.exact) == (6, True)


def test_card_cache_with_a_max_age_rereads_the_generation_only_when_due(engine):
    populate(engine)
    cache = reads.CardCache(engine, capacity=100, max_age=3600)
    assert cache.cards(["a1"])["a1"].title == "Comedy story 1"
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id == "a1").values(title="Renamed"))
    assert cache.cards(["a1"])["a1"].title == "Comedy story 1"  # from memory, within max_age
    # A card not in memory makes it read the catalog, generation included: all fresh again.
    assert cache.cards(["a1", "b2"])["a1"].title == "Renamed"


def test_a_followed_card_snapshot_answers_unseen_items_without_reading_cards(engine):
    """With a snapshot, the follower reads every card once; lists of items never shown
    before read no card, and an item written since is read afresh, on the next follow."""
    populate(engine)
    cache = reads.CardCache(engine, capacity=2, snapshot=True)
    cache.follow()
    assert cache.wait_for_snapshot(30)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    everything = [card.item_id for card in reads.list_items(engine, 0, 100).cards]
    statements.clear()
    cards = cache.cards(everything)
    assert len(cards) == 32 and not statements  # read before, held as columns: no query
    assert cards == reads.item_cards(engine, everything)  # every field as the catalog has it
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id == "a1").values(title="Renamed"))
    with Session(engine) as session, session.begin():
        session.add(Item(external_id="new-1", title="Added later"))
    cache.follow()
    statements.clear()
    found = cache.cards(["a1", "b2", "new-1"])
    assert sum("FROM items" in sql for sql in statements) == 1  # the two written items only
    assert found["a1"].title == "Renamed" and found["new-1"].title == "Added later"
    assert found["b2"].title == reads.item_cards(engine, ["b2"])["b2"].title


def test_a_card_snapshot_is_dropped_when_the_catalog_cannot_say_what_changed(engine):
    populate(engine)
    cache = reads.CardCache(engine, capacity=100, snapshot=True)
    cache.follow()
    assert cache.wait_for_snapshot(30)
    with engine.begin() as connection:  # a jump the change log does not explain
        connection.execute(
            update(CatalogState).values(items_generation=CatalogState.items_generation + 5000)
        )
        connection.execute(update(Item).where(Item.external_id == "a1").values(title="Renamed"))
    assert cache.cards(["a1"])["a1"].title == "Comedy story 1"  # followed: not yet checked
    cache.follow()
    assert cache.cards(["a1"])["a1"].title == "Renamed"
    cache.follow()  # a new snapshot, current again
    assert cache.wait_for_snapshot(30)
    assert cache.cards(["a1", "b2"])["a1"].title == "Renamed"


def test_a_preloaded_card_snapshot_is_placed_without_reading_every_card(engine):
    """The gunicorn master reads the cards once before forking; a worker places that
    snapshot through the change log, and an item written since the preload is read afresh."""
    populate(engine)
    preloaded = reads.CardSnapshot.read(engine)
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id == "a1").values(title="Renamed"))
    cache = reads.CardCache(engine, capacity=100, snapshot=True, preloaded=preloaded)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    cache.follow()
    assert cache.wait_for_snapshot(0)  # placed by follow itself: nothing left to read
    assert not any("FROM items" in sql for sql in statements)
    assert cache.cards(["a1"])["a1"].title == "Renamed"
    statements.clear()
    assert cache.cards(["b2"])["b2"].item_id == "b2" and not statements


def test_a_card_snapshot_shows_each_card_as_the_catalog_has_it(engine, tmp_path):
    """Cards from a snapshot equal those read by id: a title missing or in any script, no
    attributes, in the order asked, unknown ids left out."""
    populate(engine, tmp_path / "images")
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id == "a1").values(title=None))
        connection.execute(update(Item).where(Item.external_id == "b2").values(title="Été 🌞 靴"))
        connection.execute(update(Item).where(Item.external_id == "a2").values(attributes=None))
    snapshot = reads.CardSnapshot.read(engine)
    asked = ["b2", "nope", "a1", "a2", "b1"]
    cards = snapshot.cards(asked)
    assert list(cards) == ["b2", "a1", "a2", "b1"]
    assert cards == reads.item_cards(engine, asked)
    assert cards["a1"].title is None and cards["b2"].title == "Été 🌞 靴"
    assert cards["a2"].attributes == {} and cards["b1"].attributes["brand"]
    assert snapshot.cards([]) == {}


def test_catalog_reads_leave_no_transaction_open_on_postgresql(engine):
    """The service's per-request reads (fresh events, cards, titles, pages of users, the
    readiness ping, the cards' follower) run in autocommit on PostgreSQL: a transaction
    left open after a statement costs a BEGIN before it and a ROLLBACK when the connection
    goes back to the pool, two round trips of every feed. The title search keeps its
    transaction, which holds its statement time limit."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads begin no transaction")
    import psycopg  # the PostgreSQL driver, there when this runs on PostgreSQL

    populate(engine)
    left_open = []

    def after(connection, cursor, statement, *args) -> None:
        status = connection.connection.driver_connection.info.transaction_status
        left_open.append(status != psycopg.pq.TransactionStatus.IDLE)

    cache = reads.CardCache(engine, capacity=100, snapshot=True)
    event.listen(engine, "after_cursor_execute", after)
    reads.fresh_items(engine, "u1", datetime(2000, 1, 1))
    reads.item_cards(engine, ["a1", "b2"])
    reads.item_titles(engine, ["a1"])
    reads.image_path(engine, "a1")
    reads.list_users(engine, 0, 10)
    reads.ping(engine)
    assert len(left_open) >= 6 and not any(left_open)
    # the cards' snapshot, one read of every item at start, lifts the statement timeout for
    # its own transaction (a session's SET stayed on a PgBouncer's shared connection)
    cache.follow()
    assert cache.wait_for_snapshot(30) and cache.cards(["a1"])["a1"].title
    reads.list_items(engine, 0, 10, "story")
    assert left_open[-1]  # SET LOCAL statement_timeout lives as long as the transaction


def test_reads_outlive_a_dropped_connection_and_busy_ones_are_not_pinged_on_postgresql(
    engine, db_url, caplog, monkeypatch
):
    """On PostgreSQL a connection that goes back to the pool and out again within a second
    is not pinged (a ping is a round trip before every request's read); when the server
    dropped it meanwhile (a restart), each read runs again on a fresh connection and answers
    as before. A connection idle for longer is pinged at checkout and replaced if dead, so
    writes do not meet it either."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite connections are files, not links")
    populate(engine)
    served = connect(db_url)
    pings = []
    ping = served.dialect.do_ping
    monkeypatch.setattr(served.dialect, "do_ping", lambda c: pings.append(1) or ping(c))

    def drop_pooled() -> None:  # the server ends the pool's one connection
        with served.connect() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")

    before = {
        "cards": lambda: reads.item_cards(served, ["a1", "b2"]),
        "fresh events": lambda: reads.fresh_items(served, "u1", datetime(2000, 1, 1)),
        "titles": lambda: reads.item_titles(served, ["a1", "zz"]),
        "image": lambda: reads.image_path(served, "a1"),
        "users": lambda: reads.list_users(served, 0, 10),
        "items": lambda: reads.list_items(served, 0, 10, "story"),
        "ping": lambda: reads.ping(served),
    }
    answers = {name: read() for name, read in before.items()}
    assert answers["cards"] and answers["fresh events"] and answers["users"].users
    assert not pings  # each checkout came within a second of the last checkin
    for name, read in before.items():
        drop_pooled()
        caplog.clear()
        assert read() == answers[name], name
        assert "reading again" in caplog.text, name  # it met the dead connection
    drop_pooled()
    time.sleep(db.PING_AFTER_IDLE_SECONDS + 0.2)
    caplog.clear()
    with served.begin() as connection:  # a write's checkout: pinged, replaced
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    assert pings and "reading again" not in caplog.text
    served.dispose()


def test_items_read_in_chunks_are_the_frame_of_all_rows_at_once(engine):
    """Chunks whose columns type differently (a price missing from a whole chunk, a colour
    only in the last items) join into the frame one read of every row gives."""
    rows = [
        (f"i{n}", f"Item {n}", None, n % 3 != 0,
         {"brand": f"b{n % 4}", **({"price": n * 1.5} if n >= 4 else {}),
          **({"colour": "red"} if n >= 9 else {})})
        for n in range(11)
    ]  # fmt: skip
    kinds = {"brand": "categorical", "price": "numeric", "colour": "categorical"}
    with Session(engine) as session, session.begin():
        session.add_all(
            Item(external_id=i, title=t, image_path=p, in_stock=s, attributes=a)
            for i, t, p, s, a in rows
        )
        session.add_all(
            ItemAttribute(name=name, kind=AttributeKind(kind)) for name, kind in kinds.items()
        )
    expected = items_frame(rows, list(kinds))
    assert expected["price"].dtype == np.float64
    for chunk_rows in (4, 3, 100):
        read, read_kinds = read_items(engine, chunk_rows=chunk_rows)
        assert read_kinds == kinds
        pd.testing.assert_frame_equal(read, expected)
