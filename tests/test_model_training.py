"""`recsys train` end to end on a small catalog: bundle, registry, failures, CLI, metrics."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recsys.catalog.models import Item, ModelBundle
from recsys.errors import InvalidBundle, TrainingFailed
from recsys.evaluation.contenders import Fused
from recsys.ingest.interactions import record_interactions
from recsys.model import training
from recsys.model.bundle import activate_bundle, active_version, load_active, load_recommender
from recsys.model.data import read_catalog
from recsys.model.index import IndexConfig, VectorIndex
from recsys.model.split import temporal_split
from recsys.model.training import train
from tests.shop_fixture import populate, relist, train_config
from tests.toy import toy_catalog


def active(engine):
    with Session(engine) as session:
        return session.scalars(select(ModelBundle).where(ModelBundle.is_active)).all()


def test_train_writes_registers_and_activates_a_bundle(engine, tmp_path):
    populate(engine)
    first = train(engine, tmp_path, train_config())
    second = train(engine, tmp_path, train_config())
    assert [b.version for b in active(engine)] == [second.version]
    manifest = json.loads((second.path / "manifest.json").read_text())
    assert manifest["counts"]["items"] == 32 and manifest["counts"]["cold_items"] == 2
    assert set(manifest["blocks"]) == {"cf", "tabular", "popularity"}
    assert "validation_recall@10" in manifest["metrics"]
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    assert first.path.exists() and not list(tmp_path.glob("bundles/.*"))
    recommender = load_active(engine)
    results = recommender.recommend(["u0", "nobody"], k=4, filters={"genres": "Comedy"})
    assert results.fallback == [False, True]
    assert all(item.startswith("a") for row in results.ids for item in row)
    assert all(len(row) == 4 for row in results.ids)
    in_stock = recommender.similar_items(["b1"], k=10, filters={"in_stock": True}).ids[0]
    assert len(in_stock) == 10 and "b3" not in in_stock and "a3" not in in_stock


def test_precomputed_similar_items_equal_an_index_search(engine, tmp_path):
    populate(engine)
    recommender = load_recommender(train(engine, tmp_path, train_config()).path)
    assert recommender.neighbours is not None  # saved in the bundle and loaded from it
    assert recommender.neighbours[0].shape == (32, 31)  # 32 items: at most 31 others
    items = recommender.item_ids.tolist()
    from_table = recommender.similar_items(items, k=10)
    filtered = recommender.similar_items(["b1"], k=10, filters={"in_stock": True})
    recommender.neighbours = None  # as a bundle from before the table existed
    searched = recommender.similar_items(items, k=10)
    assert from_table.ids == searched.ids
    assert all(item not in row for item, row in zip(items, from_table.ids, strict=True))
    np.testing.assert_allclose(np.array(from_table.scores), np.array(searched.scores), atol=1e-6)
    assert filtered.ids == recommender.similar_items(["b1"], k=10, filters={"in_stock": True}).ids
    assert len(recommender.similar_items(["b1"], k=40).ids[0]) == 31  # wider than the table


def test_filtered_similar_items_come_from_the_table_when_enough_pass(engine, tmp_path, monkeypatch):
    """At 10^6 items the serving graph found 0.70 of a filtered query's exact top 10 and the
    table 0.995: a filter that leaves the table enough rows is answered from it, and only a
    query it leaves short searches the index."""
    populate(engine)
    recommender = load_recommender(train(engine, tmp_path, train_config()).path)
    recommender.neighbours, table = None, recommender.neighbours
    expected = recommender.similar_items(["b1", "a1"], k=10, filters={"in_stock": True})
    recommender.neighbours = table
    searched = []
    search = recommender.index.search
    monkeypatch.setattr(
        recommender.index,
        "search",
        lambda q, *a, **kw: searched.append(len(q)) or search(q, *a, **kw),
    )

    again = recommender.similar_items(["b1", "a1"], k=10, filters={"in_stock": True})
    # half the 32 items are comedies: the 31-wide table holds fewer than 20 for either query
    comedies = recommender.similar_items(["b1", "a1"], k=20, filters={"genres": "Comedy"})

    assert again.ids == expected.ids
    np.testing.assert_array_equal(np.array(again.scores), np.array(expected.scores))
    assert searched == [2]  # only the selective filter's queries went to the index
    assert all(item.startswith("a") for row in comedies.ids for item in row)


def test_a_served_bundle_holds_no_per_item_or_per_user_array_of_its_own(engine, tmp_path):
    """Every worker serving a bundle maps its id lookups and ids from the bundle's files (the
    workers share those pages) and fuses a user's vector when asked, instead of each holding
    a private copy; a bundle written before the lookups were saved still loads and answers
    the same."""
    import json
    import mmap

    def is_mapped(array) -> bool:
        while isinstance(array, np.ndarray):
            array = array.base
        return isinstance(array, mmap.mmap)

    populate(engine)
    path = train(engine, tmp_path, train_config()).path
    recommender = load_recommender(path)
    lookups = [recommender.item_index, recommender.cf.item_index_, recommender.cf.user_index_]
    held = [recommender.item_ids, *(a for i in lookups for a in (i._sorted, i._order))]
    assert all(is_mapped(array) for array in held)
    assert recommender.item_index is recommender.cf.item_index_  # one lookup of the items
    users = recommender.cf.user_ids_.tolist()
    feeds = recommender.recommend(users, k=5)
    assert recommender.item_index.rows(["b1", "nope", "a1"]).tolist()[1] == -1

    manifest = json.loads((path / "manifest.json").read_text())
    for name in [n for n in manifest["files"] if "_index_" in n]:
        (path / name).unlink()
        del manifest["files"][name]
    (path / "manifest.json").write_text(json.dumps(manifest))
    older = load_recommender(path)
    assert not is_mapped(older.item_index._order)  # built: nothing to map
    assert older.recommend(users, k=5).ids == feeds.ids
    rows = older.item_index.rows(["b1", "nope", "a1"]).tolist()
    assert rows == recommender.item_index.rows(["b1", "nope", "a1"]).tolist()


def test_a_catalog_with_one_photo_trains_without_an_image_block(engine, tmp_path, caplog):
    """A shop adding its first photos: one photo is nothing to contrast, so training goes
    on without the image block (it stopped at the images stage) and says why."""
    populate(engine, tmp_path / "images")
    with engine.begin() as connection:
        connection.execute(update(Item).where(Item.external_id != "a1").values(image_path=None))
    recommender = load_recommender(train(engine, tmp_path / "artifacts", train_config()).path)
    assert "image" not in recommender.fused.layout_.dims
    assert "only 1 item has a photo: training without an image block" in caplog.text
    assert recommender.similar_items(["a1"], k=3).ids[0]


def test_a_weight_for_an_event_type_no_event_has_is_named(engine, tmp_path, caplog):
    populate(engine)  # the toy shop's events are views and clicks
    base = train_config()
    config = replace(base, cf=replace(base.cf, event_weights={"purchse": 5.0, "click": 2.0}))
    train(engine, tmp_path, config)
    assert "no event of type 'purchse': its weight changes nothing" in caplog.text
    assert "'click'" not in caplog.text


def test_events_that_all_weigh_nothing_stop_the_training_and_keep_the_bundle(engine, tmp_path):
    """Every event at weight 0 fitted NaN vectors, and the bundle answering nothing was made
    active; now the read stage says so and the active bundle stays."""
    populate(engine)
    base = train_config()
    before = train(engine, tmp_path, base).version
    zero = replace(base.cf, event_weights={"view": 0.0}, default_event_weight=0.0)
    with pytest.raises(TrainingFailed, match=r"read.*has weight 0: give at least one event"):
        train(engine, tmp_path, replace(base, cf=zero))
    assert active_version(engine) == before


def test_a_non_finite_vector_is_never_written(engine, tmp_path, monkeypatch):
    populate(engine)
    fuse = training._fuse

    def broken(*args):
        fitted = fuse(*args)
        fitted.fused.item_vectors_[3, 0] = np.nan
        return fitted

    monkeypatch.setattr(training, "_fuse", broken)
    with pytest.raises(TrainingFailed, match=r"fuse.*not finite; nothing was written"):
        train(engine, tmp_path, train_config())
    assert active_version(engine) is None and not list((tmp_path / "bundles").glob("2*"))


def test_the_neighbour_table_width_is_a_training_option(engine, tmp_path):
    populate(engine)
    narrow = load_recommender(train(engine, tmp_path, replace(train_config(), neighbours=5)).path)
    assert narrow.neighbours[0].shape == (32, 5)
    none = load_recommender(train(engine, tmp_path, replace(train_config(), neighbours=0)).path)
    assert none.neighbours is None and not (none.manifest["files"].keys() & {"neighbours.npy"})
    assert none.similar_items(["b1"], k=5).ids == narrow.similar_items(["b1"], k=5).ids


def test_a_training_never_undoes_an_activation_made_while_it_ran(engine, tmp_path, monkeypatch):
    """Two overlapping trainings made the last to finish active, on older data, and a
    scheduled one would undo a rollback made while it ran: a bundle activated meanwhile
    stays active, the new one is registered beside it."""
    populate(engine)
    first = train(engine, tmp_path, train_config())
    second = train(engine, tmp_path, train_config())
    choose = training.choose_weights

    def rolled_back_meanwhile(*args, **kwargs):
        activate_bundle(engine, first.version)  # an operator's rollback, or another run
        return choose(*args, **kwargs)

    monkeypatch.setattr(training, "choose_weights", rolled_back_meanwhile)
    third = train(engine, tmp_path, train_config())
    assert not third.active and second.active
    assert active_version(engine) == first.version
    with Session(engine) as session:
        registered = set(session.scalars(select(ModelBundle.version)))
    assert {first.version, second.version, third.version} <= registered


def test_failed_training_leaves_the_active_bundle_unchanged(engine, tmp_path, monkeypatch):
    populate(engine)
    before = train(engine, tmp_path, train_config())

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(training.VectorIndex, "build", broken)
    with pytest.raises(TrainingFailed, match=r"stage 'index'.*disk on fire"):
        train(engine, tmp_path, train_config())
    assert [b.version for b in active(engine)] == [before.version]
    assert len(list((tmp_path / "bundles").iterdir())) == 1


def test_a_failed_registration_removes_its_bundle_and_a_full_disk_says_so(
    engine, tmp_path, monkeypatch
):
    """A registration refused (a locked or read-only catalog) left the whole bundle folder
    for the next run; a full disk said only numpy's "N requested and M written"."""
    import errno

    from sqlalchemy.exc import OperationalError

    populate(engine)

    def locked(*args, **kwargs):
        raise OperationalError("UPDATE model_bundles", {}, Exception("database is locked"))

    monkeypatch.setattr(training, "register_bundle", locked)
    with pytest.raises(TrainingFailed, match=r"stage 'register': Exception: database is locked;"):
        train(engine, tmp_path, train_config())
    assert list((tmp_path / "bundles").iterdir()) == []  # nothing left behind
    monkeypatch.undo()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "write_bundle", full)
    with pytest.raises(TrainingFailed, match=r"the disk holding .*bundles is full.*bundles gc"):
        train(engine, tmp_path, train_config())
    monkeypatch.undo()
    monkeypatch.setattr(training.os, "access", lambda path, mode: False)  # a read-only mount
    with pytest.raises(TrainingFailed, match=r"cannot be written under .*nothing was trained"):
        train(engine, tmp_path, train_config())


def test_a_bundle_with_a_bad_checksum_is_refused(engine, tmp_path):
    populate(engine)
    result = train(engine, tmp_path, train_config())
    load_recommender(result.path)
    vectors = result.path / "item_vectors.npy"
    array = np.load(vectors)
    array[0, 0] += 1.0
    np.save(vectors, array)
    with pytest.raises(InvalidBundle, match=r"item_vectors\.npy.*checksum"):
        load_recommender(result.path)


def toy_title(item_id: str) -> str:
    """The toy catalog's title of an item: a1 is "Comedy story 1", b-new "Drama story new"."""
    return f"{'Comedy' if item_id[0] == 'a' else 'Drama'} story {item_id[1:].lstrip('-')}"


def test_cli_train_recommend_similar(engine, run_cli, tmp_path):
    populate(engine)
    out = run_cli("--artifacts-dir", tmp_path, "train", "--factors", "8", "--quiet")
    assert "written to" in out.output
    # the toy's few shoppers are too few to choose weights on: the defaults, and why
    skipped = r"weights stage skipped: \d+ validation users, under grid.min_users 50; the weights"
    assert re.search(skipped, run_cli("stats").output)
    rows = json.loads(run_cli("recommend", "--user", "u9", "-k", "3", "--json").output)
    assert len(rows[0]["ids"]) == 3 and rows[0]["fallback"] is False
    # titles from the catalog beside the ids, and beside the history items the reasons name
    assert rows[0]["titles"] == [toy_title(item) for item in rows[0]["ids"]]
    viewed = [r for reasons in rows[0]["because"] for r in reasons if "item_id" in r]
    assert viewed and all(r["title"] == toy_title(r["item_id"]) for r in viewed)
    rows = json.loads(run_cli("similar", "--item", "a-new", "--json").output)
    assert rows[0]["item"] == "a-new" and len(rows[0]["ids"]) == 10
    assert rows[0]["title"] == "Comedy story new"
    shown = run_cli("similar", "--item", "a1", "-k", "1").output.splitlines()
    assert shown[0] == 'item a1 "Comedy story 1"'
    assert re.fullmatch(r'  +1\. a\d+  \d\.\d{4}  "Comedy story \d+"  because .+', shown[1])
    rows = json.loads(run_cli("similar", "--item", "a-new", "--k", "4", "--json").output)
    assert len(rows[0]["ids"]) == 4  # the HTTP API's name for it works too
    failed = run_cli("similar", "--item", "missing", expect_exit=2)
    assert "item 'missing' is not in model bundle" in failed.output
    # an unknown user's feed down to the items nobody viewed: no "+0.000" nor "-1.000"
    listed = run_cli("recommend", "--user", "nobody", "-k", "100").output
    assert "because popular with shoppers +0." in listed
    assert re.search(
        r'a-new  0\.0000  "Comedy story new"  because new in the catalog$', listed, re.MULTILINE
    )
    # events stored since the bundle are folded in, as the service's feed folds them in
    record_interactions(engine, [{"user_id": "nobody", "item_id": "b1", "event": "view"}])
    rows = json.loads(run_cli("recommend", "--user", "nobody", "-k", "3", "--json").output)
    assert rows[0]["fallback"] is False and all(i.startswith("b") for i in rows[0]["ids"])
    assert {r["item_id"] for reasons in rows[0]["because"] for r in reasons if "item_id" in r} == {
        "b1"
    }
    # ids follow the rule ingest and the HTTP API apply: stripped, checked, named in the error
    rows = json.loads(run_cli("similar", "--item", " a-new ", "-k", "2", "--json").output)
    assert rows[0]["item"] == "a-new" and len(rows[0]["ids"]) == 2
    failed = run_cli("similar", "--item", "x" * 300, expect_exit=2)
    assert "the id is 300 characters long, the limit is 255" in failed.output
    failed = run_cli("recommend", "--user", "u\t9", expect_exit=2)
    assert "control character U+0009" in failed.output
    # as the service answers: the catalog's writes since the bundle count (no sold-out item)
    first = json.loads(run_cli("similar", "--item", "a1", "-k", "1", "--json").output)
    gone = first[0]["ids"][0]
    with Session(engine) as session, session.begin():
        session.execute(update(Item).where(Item.external_id == gone).values(in_stock=False))
    rows = json.loads(run_cli("similar", "--item", "a1", "-k", "20", "--json").output)
    assert gone not in rows[0]["ids"]


def test_a_relisted_item_is_a_duplicate_of_its_source(engine, run_cli, tmp_path):
    # a seller lists a1 again: same title and attributes, a new id, no events yet; and
    # another item with a1's attributes, whose title differs only by its number
    populate(engine)
    relist(engine, "a1", "a1-again")
    with Session(engine) as session:
        title = session.scalar(select(Item.title).where(Item.external_id == "a1"))
    relist(engine, "a1", "a1-twin", title=title.rsplit(" ", 1)[0] + " 9")
    run_cli("--artifacts-dir", tmp_path, "train", "--factors", "8", "--quiet")

    def pairs(*flags):
        out = tmp_path / "duplicates.json"
        run_cli("catalog", "duplicates", "--threshold", "0.99", "--out", out, *flags)
        rows = json.loads(out.read_text())["rows"]
        return {frozenset((r["item_a"], r["item_b"])) for r in rows}

    assert {"a1", "a1-again"} in pairs()
    assert not any("a1-twin" in pair for pair in pairs())  # the titles tell them apart
    assert {"a1", "a1-twin"} in pairs("--no-verify")  # the vectors alone do not
    # on the bundle the threshold defaults to the service's (0.95), which the JSON states
    out = tmp_path / "default.json"
    run_cli("catalog", "duplicates", "--out", out)
    answer = json.loads(out.read_text())
    assert answer["threshold"] == 0.95 and answer["score"] == "cosine and titles"
    assert ["a1", "a1-again"] in [sorted(found) for found in answer["sets"]]
    # each pair with the two titles a person checks it by
    pair = next(r for r in answer["rows"] if {r["item_a"], r["item_b"]} == {"a1", "a1-again"})
    assert pair["title_a"] == pair["title_b"] == title


def test_no_duplicate_says_how_close_the_closest_pair_came(engine, run_cli, tmp_path):
    """A bookshop's one work in two formats (titles that differ by a word) scored up to 0.899
    and the command said "0 pairs in 0 sets at cosine and titles score >= 0.9500", nothing
    of how close they came or what would list them."""
    populate(engine)
    relist(engine, "a1", "a1-hardcover")
    with Session(engine) as session, session.begin():
        for book, binding in (("a1", "paperback"), ("a1-hardcover", "hardcover")):
            item = session.scalar(select(Item).where(Item.external_id == book))
            item.title = f"{item.title} {binding}"  # 4 words, 3 shared: 0.75
    run_cli("--artifacts-dir", tmp_path, "train", "--factors", "8", "--quiet")
    out = tmp_path / "duplicates.json"
    result = run_cli("catalog", "duplicates", "--out", out)
    assert (
        "0 pairs in 0 sets at cosine and titles score >= 0.9500; the closest pair scores "
        "0.7500; lower --threshold to list near-duplicates" in result.stderr
    )
    assert json.loads(out.read_text())["closest_left_out"] == 0.75
    run_cli("catalog", "duplicates", "--threshold", "0.75", "--out", out)
    assert [sorted(found) for found in json.loads(out.read_text())["sets"]] == [
        ["a1", "a1-hardcover"]
    ]


def test_train_on_an_empty_catalog_says_which_stage_failed(engine, tmp_path):
    with pytest.raises(TrainingFailed, match=r"stage 'read'.*no items"):
        train(engine, tmp_path, train_config())
    assert active(engine) == []


def test_evaluation_fits_exactly_what_train_trains(engine, tmp_path):
    populate(engine)
    config = train_config()
    result = train(engine, tmp_path, config, "cpu")
    bundle = load_recommender(result.path)
    contender = Fused(config).fit(read_catalog(engine))
    np.testing.assert_array_equal(contender.model_.item_vectors_, bundle.fused.item_vectors_)
    assert contender.model_.weights_ == result.weights == bundle.manifest["weights"]
    assert config == train_config()  # fitting wrote nothing into the config


def test_temporal_split_holds_out_each_users_latest_share():
    data = toy_catalog()
    train_part, test_part = temporal_split(data.interactions, 0.2)
    for user, held in test_part.groupby("user_id"):
        kept = train_part[train_part["user_id"] == user]
        assert held["timestamp"].min() >= kept["timestamp"].max()
        assert len(held) == int(0.2 * (len(held) + len(kept)))


def test_a_shop_with_few_shoppers_keeps_the_default_weights_and_says_why(caplog):
    """Below grid.min_users validation users a 2-standard-error gain cannot show, so the
    search would only keep cf alone: the config's weights stand, as with no events."""
    config = train_config()
    small = replace(config, grid=replace(config.grid, min_users=50))
    with caplog.at_level("INFO", logger="recsys.model.validation"):
        fitted = training.fit_in_memory(toy_catalog(), small)
    unsearched = training.fit_in_memory(toy_catalog(), replace(small, validation_share=0))
    assert fitted.fused.weights_ == unsearched.fused.weights_
    assert fitted.fused.cold_scale_ == unsearched.fused.cold_scale_
    assert "validation_recall@10" not in fitted.metrics
    why = fitted.metrics["validation"]
    assert re.fullmatch(
        r"skipped: \d+ validation users, under grid.min_users 50; the weights are the defaults",
        why,
    )
    assert "the weights are the defaults" in caplog.text
    searched = training.fit_in_memory(toy_catalog(), config)  # min_users 2: the search runs
    assert "validation_recall@10" in searched.metrics


def test_with_few_shoppers_also_viewed_lists_what_more_like_this_lists():
    """No co-viewing to show yet: cf alone on ``also`` listed chance items (0.10 same-class
    after one shopper's 10 events, 0.95 with no events), so it takes ``similar``'s weights."""
    config = train_config()
    fitted = training.fit_in_memory(
        toy_catalog(), replace(config, grid=replace(config.grid, min_users=50))
    )
    surfaces = fitted.fused.surface_weights_
    assert surfaces["also"] == surfaces["similar"] == {"cf": 0.0, "tabular": 1.0, "popularity": 0.0}
    searched = training.fit_in_memory(toy_catalog(), config)  # the search chose them
    assert searched.fused.surface_weights_["also"]["cf"] > 0


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_cold_items_stay_in_similar_items_when_feeds_scale_their_content_to_zero(kind):
    config = replace(train_config(), index=IndexConfig(kind=kind))
    recommender = training._recommender(
        training.fit_in_memory(toy_catalog(), config), config, False
    )
    fused = recommender.fused
    # as the weights stage picks where new items rank best by their tokens alone
    cold_scale = {**fused.cold_scale_, "tabular": 0.0, "cf": 0.0, "popularity": 0.0}
    fused.set_weights(fused.weights_, cold_scale, fused.surface_weights_)
    recommender.index = VectorIndex.build(fused.item_vectors_, config.index)  # as training
    recommender.compute_neighbours(10)
    cold = np.flatnonzero(fused.cold_)
    assert len(cold) and not fused.item_vectors_[cold].any()  # the feed's view of them
    surface = fused.surface_item_vectors(fused.item_blocks_, fused.cold_)
    exact = fused.item_queries(np.arange(32)) @ surface.T  # (32, 32)
    np.fill_diagonal(exact, -np.inf)
    scores = recommender.neighbours[1]
    np.testing.assert_allclose(scores, -np.sort(-exact, axis=1)[:, :10], atol=1e-5)
    for item in cold:  # first on the product page of the item it is most like
        fan = int(np.argmax(np.where(fused.cold_, -np.inf, exact[:, item])))
        found = recommender.similar_items([recommender.item_ids[fan]], k=3).ids[0]
        assert found[0] == recommender.item_ids[item], found
    # wider than the table and filtered: the serving index, with the cold items put back
    a1, new = (int(np.flatnonzero(recommender.item_ids == i)[0]) for i in ("a1", "a-new"))
    allowed = recommender.filters.mask({"brand": "a-brand"})
    ranked = np.argsort(-np.where(allowed, exact[a1], -np.inf), kind="stable")
    k = max(int(np.flatnonzero(ranked == new)[0]) + 3, 12)  # a-new well inside the list
    answer = recommender.similar_items(["a1"], k=k, filters={"brand": "a-brand"})
    assert "a-new" in answer.ids[0]
    best = -np.sort(-np.where(allowed, exact[a1], -np.inf))[:k]
    np.testing.assert_allclose(answer.scores[0], best, atol=1e-5)


def test_an_hnsw_neighbour_table_is_searched_in_the_similar_surfaces_own_space():
    config = replace(train_config(), index=IndexConfig(kind="hnsw"))
    recommender = training._recommender(
        training.fit_in_memory(toy_catalog(), config), config, False
    )
    fused = recommender.fused
    read = [b for b, w in fused.surface_weights_["similar"].items() if w > 0]
    index, projection = recommender.neighbour_index()
    assert read and "popularity" not in read
    assert index is not recommender.index
    assert index.dim == len(projection.columns) == sum(fused.layout_.dims[b] for b in read)
    exact = fused.item_queries(np.arange(32)) @ fused.item_vectors_.T  # (32, 32)
    np.fill_diagonal(exact, -np.inf)
    rows, scores = recommender.neighbours
    np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, axis=1), atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-exact, axis=1)[:, :31], atol=1e-5)
    flat = replace(config, index=IndexConfig(kind="flat"))
    recommender = training._recommender(training.fit_in_memory(toy_catalog(), flat), flat, False)
    assert recommender.neighbour_index() == (recommender.index, None)


def test_a_configs_mappings_cannot_be_changed_after_its_checks():
    """A frozen config's dict fields could be changed in place, past the checks the config
    made (an event weight of -1), and a config could not be hashed."""
    from recsys.model.config import TrainConfig

    config = TrainConfig()
    for mapping in (config.cf.event_weights, config.fusion.weights, config.tabular.column_weights):
        with pytest.raises(TypeError, match=r"dataclasses\.replace"):
            mapping["view"] = -1.0
    assert hash(config) == hash(TrainConfig()) and config == TrainConfig()
    weighted = replace(config, cf=replace(config.cf, event_weights={"purchase": 4.0}))
    assert weighted.cf.event_weights == {"purchase": 4.0} and weighted != config
    assert json.loads(json.dumps(asdict(weighted)))["cf"]["event_weights"] == {"purchase": 4.0}


def test_a_prune_that_fails_after_the_bundle_is_active_is_a_warning(
    engine, run_cli, tmp_path, monkeypatch
):
    """The change log's prune runs after activation; its failure (a locked catalog) made
    `recsys train` exit 2 with the new bundle already serving."""
    from sqlalchemy.exc import OperationalError

    from recsys.catalog import changes

    def locked(engine):
        raise OperationalError("DELETE FROM item_changes", {}, Exception("database is locked"))

    populate(engine)
    monkeypatch.setattr(changes, "prune_changes", locked)
    done = run_cli("--artifacts-dir", tmp_path, "train", "--factors", "8", "--quiet")
    version = active_version(engine)
    assert f"warning: bundle {version} is active, but pruning the item change log" in done.output
    assert "run `recsys db prune-changes` later" in done.output


def test_a_training_stopped_by_a_locked_catalog_may_be_run_again_exit_75(
    engine, run_cli, tmp_path, monkeypatch
):
    """A nightly job could not tell a locked or restarting catalog (retry) from a bad
    setting: every training failure was exit 2."""
    from sqlalchemy.exc import OperationalError

    populate(engine)

    def locked(*args, **kwargs):
        raise OperationalError("UPDATE model_bundles", {}, Exception("database is locked"))

    monkeypatch.setattr(training, "register_bundle", locked)
    failed = run_cli("--artifacts-dir", tmp_path, "train", "-q", expect_exit=75)
    assert "stage 'register': Exception: database is locked" in failed.output


def test_a_crawler_that_viewed_the_whole_catalog_is_left_out_of_training(engine, tmp_path, caplog):
    """One bot that viewed every item left no item new (new items lost their places in
    feeds) and set every formerly new item's "also viewed" row; it is left out, and said."""
    populate(engine)
    items = read_catalog(engine).items["item_id"].tolist()
    record_interactions(engine, [{"user_id": "bot", "item_id": i, "event": "view"} for i in items])
    config = replace(train_config(), crawler_min_items=10)  # the toy shop has 32 items
    recommender = load_recommender(train(engine, tmp_path, config).path)
    assert "bot" not in recommender.cf.user_ids_
    assert "1 user(s) whose events span over 50% of the catalog's 32 items" in caplog.text
    assert "(--crawler-share, TrainConfig.crawler_share;" in caplog.text  # the flag to change
    kept = load_recommender(train(engine, tmp_path, replace(config, crawler_share=0)).path)
    assert "bot" in kept.cf.user_ids_  # 0 keeps every user


def test_configs_that_train_the_same_model_shape_alike():
    """An evaluation with --event-weight rating=1 was not recorded with a bundle trained
    without it ("cf.event_weights {} != {'rating': 1.0}"), though the default weight is 1:
    the same model. Other weights, and other fields, still differ."""
    from recsys.model.cf import CFConfig
    from recsys.model.config import TrainConfig, model_shaping, shaping_differences

    def shaped(**cf):
        return model_shaping(asdict(TrainConfig(cf=CFConfig(**cf))))

    assert shaping_differences(shaped(), shaped(event_weights={"rating": 1.0})) == {}
    assert shaping_differences(shaped(), shaped(event_weights={"purchase": 5.0})) == {
        "cf.event_weights": ({}, {"purchase": 5.0})
    }
    assert "cf.factors" in shaping_differences(shaped(), shaped(factors=8))
