"""Pruning the item change log (migration 0005), on SQLite and PostgreSQL: old rows go, the
catalog records how far, and every reader whose mark predates the prune starts afresh."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from recsys.catalog import changes
from recsys.catalog.models import CatalogState, ItemChange, utcnow
from recsys.catalog.reads import CardCache, CardSnapshot
from recsys.errors import UnknownItem
from recsys.ingest.item_writes import delete_item, patch_item, put_item
from recsys.model.delta import DeltaConfig
from recsys.model.training import train
from recsys.serving import load_state
from tests.shop_fixture import populate, train_config

TWIN = {
    "title": "Comedy story 1",
    "attributes": {"year": 1991, "genres": ["Comedy"], "brand": "a-brand"},
}
EVERYTHING = changes.Retention(keep_days=0, keep_generations=0)


def log_generations(engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(select(ItemChange.generation).order_by(ItemChange.id)))


def pruned_through(engine) -> int:
    with engine.connect() as connection:
        return changes.pruned_through(connection)


def prune_through(engine, generation: int) -> changes.Pruned:
    """Prune every log row up to ``generation`` (and none after it)."""
    keep = changes.generation(engine) - generation
    return changes.prune_changes(engine, changes.Retention(keep_days=0, keep_generations=keep))


def test_pruning_deletes_rows_past_both_limits_and_keeps_the_rest(engine, tmp_path):
    populate(engine)
    patch_item(engine, "a1", {"title": "Renamed"}, tmp_path)
    middle = changes.generation(engine)
    patch_item(engine, "a2", {"in_stock": False}, tmp_path)
    delete_item(engine, "a3")
    with engine.begin() as connection:  # every row so far but the last two: ten days old
        assert connection.scalar(select(func.count()).where(ItemChange.changed_at.is_(None))) == 0
        old = update(ItemChange).where(ItemChange.generation <= middle)
        connection.execute(old.values(changed_at=utcnow() - timedelta(days=10)))
    everything = log_generations(engine)
    assert changes.prune_changes(engine).deleted == 0  # 100,000 generations are kept
    pruned = changes.prune_changes(engine, changes.Retention(keep_days=7, keep_generations=1))
    assert (pruned.through, pruned.kept) == (middle, 2)
    assert pruned.deleted == len(everything) - 2
    assert log_generations(engine) == [middle + 1, middle + 2] == everything[-2:]
    assert pruned_through(engine) == middle
    # a later prune with a longer retention never moves the mark back
    assert changes.prune_changes(engine, changes.Retention(keep_days=30)).through == middle
    assert pruned_through(engine) == middle
    # age alone: rows younger than keep_days stay however many generations behind
    assert changes.prune_changes(engine, changes.Retention(keep_generations=0)).deleted == 0
    forever = changes.Retention(keep_days=1e10, keep_generations=0)  # past the calendar
    assert changes.prune_changes(engine, forever).deleted == 0
    assert changes.prune_changes(engine, EVERYTHING).kept == 0
    assert pruned_through(engine) == changes.generation(engine)


def test_changes_since_a_pruned_mark_say_the_log_is_incomplete(engine, tmp_path):
    populate(engine)
    mark = changes.generation(engine)
    patch_item(engine, "a1", {"title": "Renamed"}, tmp_path)
    after = changes.generation(engine)
    patch_item(engine, "a2", {"in_stock": False}, tmp_path)
    prune_through(engine, after)
    assert not changes.changes_since(engine, mark).complete  # a1's rename is gone
    found = changes.changes_since(engine, after)
    assert found.complete and found.written == ["a2"]


def test_a_worker_behind_the_pruned_log_rebuilds_its_delta(engine, tmp_path):
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=100))
    recommender = state.recommender
    put_item(engine, "n0", TWIN, tmp_path)
    state.catalog.follow()
    assert "n0" in recommender.live.ids
    # the worker stalls; meanwhile items change and the log is pruned past its mark
    patch_item(
        engine, "a1", {"title": "Drama story 1", "attributes": {"genres": ["Drama"]}}, tmp_path
    )
    delete_item(engine, "b2")
    delete_item(engine, "n0")
    put_item(engine, "n1", TWIN, tmp_path)
    patch_item(engine, "a2", {"in_stock": False}, tmp_path)
    prune_through(engine, changes.generation(engine) - 1)  # a2's write is still logged
    assert state.catalog.follow() is not None
    live = recommender.live
    assert live.generation == changes.generation(engine)
    assert sorted(live.ids.tolist()) == ["a1", "n1"]  # a1 re-encoded; n0 gone
    assert live.attributes[live.ids.tolist().index("a1")]["genres"] == ["Drama"]
    with pytest.raises(UnknownItem):
        recommender.similar_items(["b2"])
    shown = set(recommender.similar_items(["a1"], k=20).ids[0])
    assert not {"b2", "n0", "a2"} & shown and "n1" in shown


def test_a_worker_whose_catalog_was_restored_to_an_older_backup_rebuilds(engine, db_url, tmp_path):
    """A restore took the catalog's generation back: the worker moved its mark back and kept
    serving the items written since the backup (gone from the catalog) and leaving out the
    one removed since (back in it)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("db restore is SQLite's")
    from recsys.catalog.backup import backup, restore

    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=100))
    recommender = state.recommender
    backup(db_url, tmp_path / "monday.db")
    put_item(engine, "n0", TWIN, tmp_path)
    delete_item(engine, "b2")
    state.catalog.follow()
    assert "n0" in recommender.live.ids
    restore(engine, db_url, tmp_path / "monday.db")
    assert state.catalog.follow() is not None
    assert "n0" not in recommender.live.ids
    assert "b2" in recommender.similar_items(["a1"], k=30).ids[0]


def test_a_worker_within_retention_reads_only_the_log(engine, tmp_path, monkeypatch):
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config())
    state = load_state(engine, DeltaConfig(max_items=100))
    mark = changes.generation(engine)
    put_item(engine, "n1", TWIN, tmp_path)
    prune_through(engine, mark)  # everything up to this worker's mark, nothing after
    monkeypatch.setattr(changes, "stock_snapshot", lambda engine: pytest.fail("rebuilt"))
    assert state.catalog.follow() is not None
    assert state.recommender.live.ids.tolist() == ["n1"]


def test_a_card_cache_behind_the_pruned_log_drops_its_cards(engine, tmp_path):
    populate(engine)
    cache = CardCache(engine, capacity=100)
    cache.follow()
    assert set(cache.cards(["a1", "a3", "b2"])) == {"a1", "a3", "b2"}
    patch_item(engine, "a1", {"title": "Renamed"}, tmp_path)
    delete_item(engine, "a3")
    patch_item(engine, "b2", {"in_stock": False}, tmp_path)
    prune_through(engine, changes.generation(engine) - 1)  # only b2's write is still logged
    cache.follow()
    found = cache.cards(["a1", "a3", "b2"])
    assert found["a1"].title == "Renamed" and "a3" not in found and not found["b2"].in_stock


def test_a_card_snapshot_older_than_the_pruned_log_is_not_used(engine, tmp_path, monkeypatch):
    populate(engine)
    old = CardSnapshot.read(engine)
    patch_item(engine, "a1", {"title": "Renamed"}, tmp_path)
    delete_item(engine, "a3")
    patch_item(engine, "b2", {"in_stock": False}, tmp_path)
    prune_through(engine, changes.generation(engine) - 1)
    monkeypatch.setattr(CardSnapshot, "read", classmethod(lambda cls, engine: old))
    cache = CardCache(engine, capacity=100, snapshot=True)
    cache.follow()  # the follower read its snapshot before the writes and the prune
    assert not cache.wait_for_snapshot(30)  # it is dropped, not used
    found = cache.cards(["a1", "a3", "b2"])
    assert found["a1"].title == "Renamed" and "a3" not in found and not found["b2"].in_stock


def test_the_cli_dry_run_changes_nothing_and_the_prune_says_what_it_did(engine, run_cli):
    populate(engine)
    rows = len(log_generations(engine))
    everything = ("--keep-days", "0", "--keep-generations", "0")
    output = run_cli("db", "prune-changes", *everything, "--dry-run").output
    assert f"would delete {rows:,} rows" in output
    assert len(log_generations(engine)) == rows and pruned_through(engine) == 0
    output = run_cli("db", "prune-changes", *everything).output
    assert f"deleted {rows:,} rows" in output and "0 rows kept" in output
    assert log_generations(engine) == [] and pruned_through(engine) == changes.generation(engine)
    with engine.connect() as connection:  # the mark is in the catalog, not in this process
        assert connection.scalar(select(CatalogState.changes_pruned_through)) > 0
    assert "afresh" in run_cli("db", "prune-changes", "--help").output


def test_training_prunes_the_log_after_it_activates_a_bundle(engine, run_cli, tmp_path):
    populate(engine)
    rows = len(log_generations(engine))
    with engine.begin() as connection:  # a log as a busy catalog leaves it: old and long
        connection.execute(update(ItemChange).values(changed_at=utcnow() - timedelta(days=10)))
        more = CatalogState.items_generation + 200_000
        connection.execute(update(CatalogState).values(items_generation=more))
    artifacts = ("--artifacts-dir", tmp_path / "artifacts")
    output = run_cli(*artifacts, "train", "--quiet", "--factors", "8", "--no-activate").output
    assert "pruned" not in output and len(log_generations(engine)) == rows
    output = run_cli(*artifacts, "train", "--quiet", "--factors", "8").output
    assert f"item change log: {rows:,} old rows pruned" in output
    assert log_generations(engine) == [] and pruned_through(engine) > 0
    # --json: the same result for a script (train wrote lines only)
    listed = json.loads(run_cli(*artifacts, "train", "-q", "--factors", "8", "--json").stdout)
    assert listed["active"] and listed["version"] in listed["path"]
    assert listed["change_log"] == {"pruned": 0, "kept": 0}
    assert "the weights are the defaults" in listed["metrics"]["validation"]  # a toy's few users
    assert "cf" in listed["seconds"]
    assert listed["weights"]["cf"] > 0
