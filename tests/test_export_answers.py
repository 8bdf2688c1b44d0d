"""`recsys export feeds` and `recsys export similar`: every answer the service gives, as
Parquet, equal to what the service answers, written whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from recsys.catalog import connect
from recsys.catalog.reads import list_users
from recsys.cli import cli
from recsys.engines import answers
from recsys.ingest.interactions import record_interactions
from recsys.ingest.item_writes import delete_item
from recsys.serving import FeedRequest, home_feed, load_state, served_recommender
from tests.shop_fixture import build_shop, relist

# a user of the catalog since the training, with events; the id needs quoting in a CSV
ODD_USER = 'o"brien, 名前 ✓'
REMOVED = "a2"  # removed from the catalog since the training
NEW = "a1-again"  # listed since the training (the live catalog's)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    url, _ = build_shop(tmp_path_factory.mktemp("export-shop"), photos=False)
    engine = connect(url)
    record_interactions(
        engine, [{"user_id": ODD_USER, "item_id": "b1", "event": "purchase"}]
    )  # fresh: folded into their feed, b1 left out as seen
    delete_item(engine, REMOVED)
    relist(engine, "a1", NEW)
    yield url, engine
    engine.dispose()


def run(url: str, *args, expect_exit: int = 0):
    result = CliRunner().invoke(cli, ["--database-url", url, *map(str, args)])
    assert result.exit_code == expect_exit, result.output
    return result


def rows_of(folder) -> dict[str, list[tuple]]:
    """{query id: [(rank, listed id, score, ...), ...]} of an export folder."""
    table = ds.dataset(folder, format="parquet").to_table().to_pylist()
    found: dict[str, list[tuple]] = {}
    for row in table:
        values = list(row.values())
        found.setdefault(values[0], []).append(tuple(values[1:]))
    return {query: sorted(rows) for query, rows in found.items()}


def test_feeds_equal_the_served_feeds(shop, tmp_path):
    url, engine = shop
    out = tmp_path / "feeds"
    run(url, "export", "feeds", "--out", out, "-k", 5, "-q")
    state = load_state(engine, warm=False)
    users = [u.user_id for u in list_users(engine, 0, 1000).users]
    assert ODD_USER in users
    exported = rows_of(out)
    assert sorted(exported) == sorted(users)
    for user_id in users:
        feed = home_feed(state, engine, user_id, FeedRequest(k=5))
        rows = exported[user_id]
        assert [r[1] for r in rows] == feed.ids[0]
        assert [r[0] for r in rows] == list(range(1, len(feed.ids[0]) + 1))
        np.testing.assert_allclose([r[2] for r in rows], feed.scores[0], rtol=1e-6)
        assert {r[3] for r in rows} == {bool(feed.fallback[0])}
    assert "b1" not in [r[1] for r in exported[ODD_USER]]  # their event since: seen
    assert REMOVED not in {r[1] for rows in exported.values() for r in rows}
    manifest = json.loads((out / answers.MANIFEST).read_text())
    assert manifest["users"] == len(users)
    assert manifest["rows"] == sum(map(len, exported.values()))
    assert manifest["bundle_version"] == state.version and manifest["k"] == 5


def test_feeds_of_listed_users_unknown_ones_fall_back(shop, tmp_path):
    url, engine = shop
    listed = tmp_path / "users.txt"
    listed.write_text(f'{ODD_USER}\nnobody, "really" ü\n\nu1\n', encoding="utf-8")
    out = tmp_path / "feeds"
    run(url, "export", "feeds", "--out", out, "--users", listed, "-q")
    exported = rows_of(out)
    assert sorted(exported) == sorted([ODD_USER, 'nobody, "really" ü', "u1"])
    state = load_state(engine, warm=False)
    unknown = home_feed(state, engine, 'nobody, "really" ü', FeedRequest(k=10))
    assert unknown.fallback[0]
    assert [r[1] for r in exported['nobody, "really" ü']] == unknown.ids[0]
    assert all(r[3] for r in exported['nobody, "really" ü'])
    assert not any(r[3] for r in exported[ODD_USER])


def test_feeds_from_standard_input(shop, tmp_path):
    url, _ = shop
    out = tmp_path / "feeds"
    result = CliRunner().invoke(
        cli, ["--database-url", url, "export", "feeds", "--out", str(out), "--users", "-", "-q"],
        input="u1\nu2\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(rows_of(out)) == ["u1", "u2"]


def test_similar_equal_the_served_answers_removed_items_skipped(shop, tmp_path):
    url, engine = shop
    out = tmp_path / "similar"
    result = run(url, "export", "similar", "--out", out, "-q")
    assert "1 skipped" not in result.output  # the catalog's items: none removed among them
    recommender = served_recommender(engine)
    exported = rows_of(out)
    manifest = json.loads((out / answers.MANIFEST).read_text())
    assert manifest["items"] >= len(exported) > 5 and manifest["k"] == 12
    for item_id, rows in exported.items():
        served = recommender.similar_items([item_id], k=12)
        assert [r[1] for r in rows] == served.ids[0]
        np.testing.assert_allclose([r[2] for r in rows], served.scores[0], rtol=1e-6)
    assert REMOVED not in exported and exported[NEW]
    assert REMOVED not in {r[1] for rows in exported.values() for r in rows}

    listed = tmp_path / "items.txt"
    listed.write_text(f"a1\n{REMOVED}\nno-such-item\nb3\n")
    out = tmp_path / "listed"
    result = run(url, "export", "similar", "--out", out, "--items", listed, "-k", 3, "-q")
    assert "2 skipped" in result.output
    assert sorted(rows_of(out)) == ["a1", "b3"]
    manifest = json.loads((out / answers.MANIFEST).read_text())
    assert manifest["skipped"] == 2
    assert manifest["skipped_ids"] == [REMOVED, "no-such-item"]


def test_a_failure_midway_leaves_nothing(shop, tmp_path, monkeypatch):
    url, _ = shop
    monkeypatch.setattr(answers, "IDS_PER_PART", 2)
    written = []

    def failing(table, path):
        if written:
            raise RuntimeError("disk gone")
        written.append(path)
        table.to_pandas()  # a part made

    monkeypatch.setattr(answers, "write_part", failing)
    out = tmp_path / "feeds"
    result = run(url, "export", "feeds", "--out", out, "-q", expect_exit=1)
    assert isinstance(result.exception, RuntimeError)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder either


def test_overwrite_replaces_only_an_export(shop, tmp_path):
    url, _ = shop
    out = tmp_path / "feeds"
    listed = tmp_path / "users.txt"
    listed.write_text("u1\n")
    run(url, "export", "feeds", "--out", out, "--users", listed, "-q")
    refused = run(url, "export", "feeds", "--out", out, "--users", listed, expect_exit=2)
    assert "--overwrite" in refused.output
    run(url, "export", "feeds", "--out", out, "--users", listed, "-q", "--overwrite")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep")
    run(url, "export", "feeds", "--out", notes, "--overwrite", expect_exit=2)
    assert (notes / "todo.txt").read_text() == "keep"
