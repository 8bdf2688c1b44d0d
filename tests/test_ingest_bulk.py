"""The bulk ingest against a slow, obvious row-by-row reference: same rows, same rejects
(reasons, details, lines), same idempotency, on messy random files and on both backends."""

from __future__ import annotations

import csv
import hashlib
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.catalog import changes, connect, migrate
from recsys.catalog.models import Interaction, Item, User
from recsys.errors import InvalidInput
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items
from recsys.ingest.bulk import SQLITE_CACHE_KIB, lookup_ids, prepare
from recsys.ingest.interactions import InteractionIngester, dedup_keys, record_interactions
from recsys.ingest.item_writes import delete_item, put_item
from recsys.ingest.known import KNOWN_KEYS_LIMIT, KnownKeys
from recsys.ingest.pipeline import SeenKeys
from recsys.ingest.readers import Record, batch_from_records
from recsys.ingest.report import IngestReport
from recsys.ingest.values import (
    BadValue,
    bool_column,
    event_column,
    id_column,
    is_missing,
    parse_bool,
    parse_event,
    parse_id,
    parse_timestamp,
    parse_weight,
    timestamp_column,
    weight_column,
)
from tests.test_ingest import interaction_rows

ITEMS = [f"i{n}" for n in range(40)] + ["ü-7", "x,y"]
IDS = ["u1", "u2", " u3 ", "ü9", "", "  ", "u\ufffd", "x" * 256, "12", "user, with comma", "i\nj"]
WEIGHTS = ["", "1", "2.5", " 3 ", "-1", "abc", "1e400", "nan", "1_0", ".5", "0", "+4"]
EVENTS = ["", "view", "VIEW", " click ", "bad event!", "cart", "a" * 40, "é"]
TIMES = [
    "",
    "2024-02-01T10:00:00Z",
    "2024-02-01 12:00:00+02:00",
    "2024-02-01",
    "2024-02-01T10:00",
    "2024-02-01T10:00:00.25",
    "1706781600",
    "1706781600000",
    "1706781600.5",
    "2024-02-30",
    "not-a-date",
    "0001-01-01T00:00:00",
    " 2024-03-01 ",
    "2024-02-01T10:00:00+25:00",
    "20240201T100000",
]


def messy_csv(path: Path, rows: int, seed: int) -> None:
    """Interactions with every kind of problem, quoting, blank and short lines."""
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        item = rng.choice([*ITEMS, *ITEMS, "zz-unknown", ""])
        fields = [rng.choice(IDS), item, rng.choice(TIMES), rng.choice(EVENTS)]
        fields.append(rng.choice(WEIGHTS))
        if rng.random() < 0.05:
            fields = fields[:3]
        lines.append(fields)
        if rng.random() < 0.1:
            lines.append(list(lines[-1]))  # a repeat
        if rng.random() < 0.03:
            lines.append([])  # a blank line
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["user_id", "item_id", "timestamp", "event", "weight"])
        writer.writerows(lines)


def reference(path: Path, known_items: set[str]) -> tuple[set[tuple], dict[int, tuple]]:
    """Row by row with the scalar rules: accepted rows and rejects {line: (reason, detail)}."""
    rows, rejects, _ = reference_with_repeats(path, known_items)
    return rows, rejects


def reference_with_repeats(path: Path, known_items: set[str]) -> tuple[set, dict, int]:
    """``reference``, and how many rows repeat an earlier one whole (delivered twice)."""
    rows, rejects, seen, repeats = set(), {}, {}, 0
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as file:
        reader = csv.reader(file)
        header = [name.strip() for name in next(reader)]
        previous = reader.line_num
        for values in reader:
            line, previous = previous + 1, reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue
            if len(values) != len(header):
                detail = f"has {len(values)} fields, the header has {len(header)}"
                rejects[line] = ("malformed_row", detail)
                continue
            try:
                row = reference_row(dict(zip(header, values, strict=True)))
            except ValueError as exc:
                rejects[line] = exc.args
                continue
            if row[1] not in known_items:
                detail = (
                    f"item_id {row[1]!r} is not in the catalog (never ingested, or removed); "
                    "ingest the item first, or leave out events of removed items"
                )
                rejects[line] = ("unknown_item", detail)
            elif (kept := seen.get((*row[:3], row[4]))) == row[3]:
                repeats += 1  # the same row again: delivered twice, unchanged
            elif kept is not None:
                detail = (
                    "the same user, item, event and timestamp appear earlier in this file with "
                    f"weight {kept:g}; the first is kept, and this row's weight ({row[3]:g}) is "
                    "not stored (to count both, sum them into one row or give each its own time)"
                )
                rejects[line] = ("duplicate", detail)
            else:
                seen[(*row[:3], row[4])] = row[3]
                rows.add(row)
    return rows, rejects, repeats


def reference_row(values: dict) -> tuple:
    def optional(column, rule):
        value = values.get(column)
        if is_missing(value):
            return None
        try:
            return rule(value, column)
        except BadValue as exc:
            raise ValueError("invalid_value", str(exc)) from None

    def required(column, rule):
        if is_missing(values.get(column)):
            raise ValueError("missing_value", f"{column} is empty")
        return optional(column, rule)

    weight, rating = optional("weight", parse_weight), optional("rating", parse_weight)
    user, item = required("user_id", parse_id), required("item_id", parse_id)
    default = "rating" if weight is None and rating is not None else "interaction"
    event = optional("event", parse_event) or default
    moment = optional("timestamp", parse_timestamp)
    return (user, item, event, weight if weight is not None else rating or 1.0, moment)


def read_rejects(path: Path | None) -> dict[int, tuple]:
    if path is None:
        return {}
    with open(path, newline="") as file:
        return {int(r["line"]): (r["reason"], r["detail"]) for r in csv.DictReader(file)}


@pytest.fixture
def catalog(engine, tmp_path):
    items = tmp_path / "items.csv"
    with open(items, "w", newline="") as file:
        csv.writer(file).writerows([["item_id"], *[[item] for item in ITEMS]])
    ingest_items(engine, items, options=IngestOptions(show_progress=False))
    return engine


@pytest.mark.parametrize("seed, batch_size", [(1, 7), (2, 50_000)])
def test_bulk_matches_the_row_by_row_reference(catalog, tmp_path, seed, batch_size):
    path = tmp_path / "events.csv"
    messy_csv(path, 600, seed)
    expected_rows, expected_rejects = reference(path, set(ITEMS))
    options = IngestOptions(show_progress=False, batch_size=batch_size)

    report = ingest_interactions(catalog, path, options)

    assert read_rejects(report.rejects_path) == expected_rejects
    assert interaction_rows(catalog) == expected_rows
    assert report.inserted == len(expected_rows)
    assert sum(report.rejected.values()) == len(expected_rejects)


def test_rerun_changes_nothing_and_changed_weights_are_updated(catalog, tmp_path):
    path = tmp_path / "events.csv"
    messy_csv(path, 300, 3)
    options = IngestOptions(show_progress=False, batch_size=40)
    first = ingest_interactions(catalog, path, options)
    before = interaction_rows(catalog)

    again = ingest_interactions(catalog, path, options)

    # rows repeated within the file are unchanged both times (the same event delivered twice)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, first.accepted)
    assert read_rejects(again.rejects_path) == read_rejects(first.rejects_path)
    assert interaction_rows(catalog) == before
    changed = tmp_path / "changed.csv"
    changed.write_text(path.read_text().replace(",2.5\n", ",7\n"))
    update = ingest_interactions(catalog, changed, options)
    assert update.inserted == 0 and update.updated > 0
    assert update.updated + update.unchanged == first.accepted


def test_a_file_of_stored_and_new_events_adds_the_new_ones(catalog, tmp_path):
    """On PostgreSQL a batch is first copied straight into the table; a batch that holds a
    stored event must fall back whole, storing its new events and counting the others."""
    path = tmp_path / "events.csv"
    messy_csv(path, 400, 4)
    lines = path.read_text().splitlines(keepends=True)
    head = tmp_path / "head.csv"
    head.write_text("".join(lines[: len(lines) // 2]))
    expected_rows, _, repeats = reference_with_repeats(path, set(ITEMS))
    options = IngestOptions(show_progress=False, batch_size=64)
    first = ingest_interactions(catalog, head, options)

    whole = ingest_interactions(catalog, path, options)

    assert interaction_rows(catalog) == expected_rows
    assert whole.inserted == len(expected_rows) - first.inserted > 0
    assert (whole.updated, whole.unchanged) == (0, first.inserted + repeats)


def test_upgrade_to_the_per_user_key_keeps_events_and_idempotency(catalog, tmp_path):
    """Migration 0006 makes events unique by (user, key): a catalog's events survive the way
    down and up again, and the file that wrote them still changes nothing."""
    path = tmp_path / "events.csv"
    messy_csv(path, 300, 4)
    options = IngestOptions(show_progress=False, batch_size=40)
    first = ingest_interactions(catalog, path, options)
    before = interaction_rows(catalog)

    migrate.downgrade(catalog, "0005")
    assert interaction_rows(catalog) == before
    migrate.upgrade(catalog)

    assert interaction_rows(catalog) == before
    again = ingest_interactions(catalog, path, options)
    # rows repeated within the file are unchanged both times (the same event delivered twice)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, first.accepted)


def test_an_upgrade_killed_mid_copy_can_run_again(tmp_path):
    """On SQLite, 0006 copies the interactions table; a kill during the copy leaves batch
    mode's empty copy behind (created before the copy's transaction), and the next upgrade
    still succeeds."""
    engine = connect(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate.upgrade(engine, "0005")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE _alembic_tmp_interactions (id INTEGER)")

    migrate.upgrade(engine)

    assert migrate.current_revision(engine) == migrate.head_revision()
    migrate.check(engine)
    engine.dispose()


def test_new_items_are_written_in_few_statements_on_postgresql(engine, tmp_path):
    """PostgreSQL's item triggers fire once per statement, and each firing bumps the one
    catalog_state row: a statement per item made a batch's write grow with the square of its
    rows (137 s for 50,000 items). A batch of new items is now a handful of statements."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's item triggers fire per row")
    items = tmp_path / "items.csv"
    with open(items, "w", newline="") as file:
        csv.writer(file).writerows([["item_id", "title"], *[[f"n{n}", "x"] for n in range(500)]])

    report = ingest_items(engine, items, options=IngestOptions(show_progress=False))

    assert report.inserted == 500
    assert changes.generation(engine) <= 2  # one statement: its insert and update triggers


def test_changed_items_are_written_in_few_statements_on_postgresql(engine, tmp_path):
    """The same square cost held for changed items (one UPDATE per item); a batch of them is
    now one UPDATE, and every field, JSON attributes and missing values included, lands as
    the file says, with every item in the change log."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's item triggers fire per row")
    items = tmp_path / "items.csv"
    header = ["item_id", "title", "in_stock", "colour"]
    with open(items, "w", newline="") as file:
        csv.writer(file).writerows([header, *[[f"n{n}", "x", "true", "red"] for n in range(500)]])
    ingest_items(engine, items, options=IngestOptions(show_progress=False))
    before = changes.generation(engine)
    rows = [[f"n{n}", f"t{n}", "false", "" if n % 2 else "blue"] for n in range(500)]
    with open(items, "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])

    report = ingest_items(engine, items, options=IngestOptions(show_progress=False))

    assert (report.inserted, report.updated) == (0, 500)
    assert changes.generation(engine) - before == 1
    written = changes.changes_since(engine, before)
    assert sorted(written.written) == sorted(f"n{n}" for n in range(500))
    with Session(engine) as session:
        stored = {
            item.external_id: (item.title, item.in_stock, item.attributes)
            for item in session.scalars(select(Item))
        }
    assert stored["n0"] == ("t0", False, {"colour": "blue"})
    assert stored["n1"] == ("t1", False, {})


def test_the_change_log_trigger_never_pairs_rows_by_nested_loop(engine):
    """The UPDATE trigger pairs a statement's old and new rows; the planner guesses one row
    per transition table and chose a nested loop, n^2 for n changed items (20,000: 40 s).
    Migration 0007 turns nested loops off for that function, and its downgrade back on."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite logs each row in a row trigger")
    query = "SELECT proconfig FROM pg_proc WHERE proname = 'recsys_log_item_changes'"

    def settings():
        with engine.connect() as connection:
            return connection.exec_driver_sql(query).scalar()

    assert settings() == ["enable_nestloop=off"]
    migrate.downgrade(engine, "0006")
    assert settings() is None
    migrate.upgrade(engine)
    assert settings() == ["enable_nestloop=off"]


def test_irregular_quotes_are_read_like_the_csv_module(catalog, tmp_path):
    path = tmp_path / "events.csv"
    messy_csv(path, 200, 4)
    text = path.read_text().splitlines(keepends=True)
    text.insert(120, 'u"7,i1,2024-01-01,view,1\n')  # a quote inside an unquoted field
    path.write_text("".join(text))
    expected_rows, expected_rejects = reference(path, set(ITEMS))

    report = ingest_interactions(catalog, path, IngestOptions(show_progress=False, batch_size=30))

    assert read_rejects(report.rejects_path) == expected_rejects
    assert interaction_rows(catalog) == expected_rows
    assert ('u"7', "i1", "view", 1.0, datetime(2024, 1, 1)) in expected_rows


def test_parquet_with_typed_columns(catalog, tmp_path):
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "user_id": pa.array([7, 8, 7, None, 9, 9]),
            "item_id": ["i1", "i2", "i1", "i3", "i1", "i2"],
            "timestamp": pa.array([1706781600, 1706781601, 1706781600, 0, 0, 4102444800]),
            "weight": [1.5, None, 2.5, -2.0, float("nan"), 1.0],  # row 3: another weight
        }
    )
    pq.write_table(table, path)
    report = ingest_interactions(catalog, path, IngestOptions(show_progress=False))

    assert interaction_rows(catalog) == {
        ("7", "i1", "interaction", 1.5, datetime(2024, 2, 1, 10)),
        ("8", "i2", "interaction", 1.0, datetime(2024, 2, 1, 10, 0, 1)),
    }
    assert {r: reason for r, (reason, _) in read_rejects(report.rejects_path).items()} == {
        3: "duplicate",
        4: "invalid_value",  # the weight comes first
        5: "invalid_value",  # NaN is not a missing weight: it is not a finite number
        6: "invalid_value",  # 2100-01-01 is past the timestamp range
    }


def test_api_batch_is_all_or_nothing(catalog):
    events = [{"user_id": "a", "item_id": "i1"}, {"user_id": "b", "item_id": "nope"}]
    with pytest.raises(InvalidInput, match=r"events\[1\]: item_id 'nope' is not in the catalog"):
        record_interactions(catalog, events)
    with Session(catalog) as session:
        assert session.scalar(select(func.count(Interaction.id))) == 0

    recorded = record_interactions(catalog, [events[0], {**events[0], "item_id": "i2"}])

    assert (recorded.inserted, recorded.users) == (2, ["a"])


def test_the_service_writes_leave_a_pooled_connection_with_its_own_page_cache(catalog, tmp_path):
    """An event or item write of a long-lived process (the service) must not leave the bulk
    ingest's 512 MiB page cache on the pooled connection: every page its later reads touched
    would stay in the worker's memory."""
    if catalog.dialect.name != "sqlite":
        pytest.skip("SQLite's page cache")
    catalog.pool.dispose()  # one pooled connection, opened fresh
    with catalog.connect() as connection:
        default = connection.exec_driver_sql("PRAGMA cache_size").scalar()

    record_interactions(catalog, [{"user_id": "a", "item_id": "i1"}])
    put_item(catalog, "new-item", {"title": "a new item"}, tmp_path)
    delete_item(catalog, "new-item")

    with catalog.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == default
        prepare(connection)  # the file ingest's batches do keep the large cache
        assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB


def test_items_written_between_the_read_ahead_and_the_write_are_looked_up_again(catalog, tmp_path):
    """The parse thread reads a batch's ids before the previous batch commits: an item added
    in between is found by the write, one deleted in between is refused (never written to),
    and a user first seen in between is stored once."""
    ingester = InteractionIngester()
    events = [
        {"user_id": "late-user", "item_id": "late-item"},
        {"user_id": "u1", "item_id": "i1"},
        {"user_id": "u1", "item_id": "i2"},
    ]
    rows, problems = ingester.parse(
        batch_from_records([Record(n, e) for n, e in enumerate(events)])
    )
    with catalog.connect() as reader:
        ahead = ingester.look_up(reader, rows)
    assert (ahead.item_ids[0], ahead.user_ids[0]) == (-1, -1) and min(ahead.item_ids[1:]) > 0
    items = tmp_path / "late.csv"
    items.write_text("item_id\nlate-item\n")
    ingest_items(catalog, items, options=IngestOptions(show_progress=False))
    delete_item(catalog, "i2")
    record_interactions(catalog, [{"user_id": "late-user", "item_id": "i1"}])
    report = IngestReport(tmp_path / "events.csv")

    with catalog.begin() as connection:
        prepare(connection)
        problems = ingester.write(connection, ahead, report)

    assert {row: reason for row, (reason, _) in problems.items()} == {2: "unknown_item"}
    assert report.inserted == 2
    assert {(u, i) for u, i, *_ in interaction_rows(catalog)} == {
        ("late-user", "late-item"),
        ("late-user", "i1"),
        ("u1", "i1"),
    }


def test_a_batch_that_fails_to_write_leaves_the_batches_before_it_and_none_after(
    catalog, tmp_path, monkeypatch
):
    """On PostgreSQL a batch's events are written while the next batch is staged in its own
    transaction (its new users added): when the write fails, the batches before it stay
    whole, and neither it nor the batch staged beside it leaves anything."""
    path = tmp_path / "events.csv"
    events = [(f"u{n // 3}", ITEMS[n % 7]) for n in range(50)]  # users span batches
    path.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in events))
    writes = []
    original = InteractionIngester.write_staged

    def failing(self, connection, staged):
        writes.append(staged.rows.num_rows)
        if len(writes) == 3:
            raise RuntimeError("the server went away")
        return original(self, connection, staged)

    monkeypatch.setattr(InteractionIngester, "write_staged", failing)
    options = IngestOptions(show_progress=False, batch_size=10)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_interactions(catalog, path, options)

    stored = interaction_rows(catalog)
    assert sorted((u, i) for u, i, *_ in stored) == sorted(events[:20])
    with Session(catalog) as session:
        users = set(session.scalars(select(User.external_id)))
    assert users == {u for u, _ in events[:20]}


def known_batch(ingester: InteractionIngester, events: list[dict]):
    rows, _ = ingester.parse(batch_from_records([Record(n, e) for n, e in enumerate(events)]))
    return rows


def catalog_keys(engine, model, names: list[str]) -> list[int]:
    with engine.connect() as connection:
        return lookup_ids(connection, model, pa.array(names)).tolist()


@pytest.mark.parametrize("limit", [KNOWN_KEYS_LIMIT, 1])
def test_one_ingest_keeps_the_keys_it_read_until_items_change(catalog, tmp_path, limit):
    """A file's batches are resolved from the keys its ingest read (or per batch, past the
    limit): users added by an earlier batch are found, and an item deleted or added between
    two batches is refused or found, never taken from what was read before."""
    ingester = InteractionIngester()
    ingester.known_items, ingester.known_users = KnownKeys(Item, limit), KnownKeys(User, limit)
    first = known_batch(ingester, [{"user_id": "u1", "item_id": "i1"}])
    with catalog.connect() as reader:
        ahead = ingester.look_up(reader, first)
    with catalog.begin() as connection:
        ingester.write(connection, ahead, IngestReport(tmp_path / "a.csv"))
    delete_item(catalog, "i2")
    items = tmp_path / "late.csv"
    items.write_text("item_id\nlate-item\n")
    ingest_items(catalog, items, options=IngestOptions(show_progress=False))

    names = ["i1", "i2", "late-item", "i3", "nope"]
    second = known_batch(
        ingester, [{"user_id": f"u{n % 2 + 1}", "item_id": i} for n, i in enumerate(names)]
    )
    with catalog.connect() as reader:
        ahead = ingester.look_up(reader, second)
        assert ahead.generation == changes.items_generation(reader)

    assert ahead.item_ids.tolist() == catalog_keys(catalog, Item, names)
    assert ahead.item_ids[1] == -1 and ahead.item_ids[2] > 0 and ahead.item_ids[4] == -1
    users = [f"u{n % 2 + 1}" for n in range(len(names))]
    assert ahead.user_ids.tolist() == catalog_keys(catalog, User, users)  # u2: -1, not yet
    assert ahead.user_ids[0] > 0 and ahead.user_ids[1] == -1


def test_the_keys_are_read_again_when_the_change_log_was_pruned_past_them(catalog, tmp_path):
    ingester = InteractionIngester()
    rows = known_batch(ingester, [{"user_id": "u1", "item_id": "i5"}])
    with catalog.connect() as reader:
        before = ingester.look_up(reader, rows).item_ids
    delete_item(catalog, "i5")
    items = tmp_path / "again.csv"
    items.write_text("item_id\ni5\n")  # the same id again, under a new key
    ingest_items(catalog, items, options=IngestOptions(show_progress=False))
    pruned = changes.prune_changes(catalog, changes.Retention(keep_days=0, keep_generations=0))
    assert pruned.deleted > 0

    with catalog.connect() as reader:
        after = ingester.look_up(reader, rows).item_ids

    assert after.tolist() == catalog_keys(catalog, Item, ["i5"]) and after[0] != before[0]


def key_hash(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def test_dedup_keys_are_the_stored_format():
    rows = pa.table(
        {
            "user": ["u1", "ü"],
            "item": ["i1", "i2"],
            "event": ["view", "cart"],
            "timestamp": pa.array([datetime(2024, 2, 1, 10, 0, 0, 250), None], pa.timestamp("us")),
        }
    )
    keys, hashes = dedup_keys(rows)
    expected = [
        key_hash("\x1f".join(("u1", "i1", "view", "2024-02-01T10:00:00.000250"))),
        key_hash("\x1f".join(("ü", "i2", "cart", ""))),
    ]
    assert keys.to_pylist() == expected
    assert hashes.tolist() == [int(key[:16], 16) for key in expected]


def test_seen_keys_keeps_first_occurrences_across_batches():
    seen = SeenKeys()
    first = seen.first_occurrences(np.array([5, 3, 5, 9], dtype=np.uint64))
    second = seen.first_occurrences(np.array([9, 1, 1], dtype=np.uint64))
    assert first.tolist() == [True, True, False, True]
    assert second.tolist() == [False, True, False]


def test_seen_keys_agree_with_a_set_over_many_batches():
    rng = np.random.default_rng(0)
    seen, reference = SeenKeys(), set()
    for size in rng.integers(0, 300, size=80):
        hashes = rng.integers(0, 3_000, size=size).astype(np.uint64)
        expected = []
        for value in hashes.tolist():
            expected.append(value not in reference)
            reference.add(value)
        assert seen.first_occurrences(hashes).tolist() == expected


ODD_IDS = ["probe\x00", "a\x00b", "\x00", "x\x7f", "x\x85y", "a\u2028b", "\u202eabc", "ü 7"]
ODD_IDS += ["👩\u200d💻", "\U0001f600" * 255]
EDGE_TIMES = [
    "1969-12-31T23:59:59",
    "1970-01-01T00:00:00",
    "2099-12-31T23:59:59.999999",
    "2100-01-01",
    "2262-04-12",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "1970-01-01T00:30:00+01:00",
    "-1",
    "0",
    "4102444799",
    "4102444800",
]
EDGE_WEIGHTS = ["1e-300", "1e6", "1000000.5"]
COLUMN_CASES = [
    (id_column, parse_id, [*IDS, *ODD_IDS, "a" * 255, "é" * 256, "\tx", "12.0"]),
    (weight_column, parse_weight, [*WEIGHTS, "1e5", "-0", "1.", "inf", "1" * 400, *EDGE_WEIGHTS]),
    (timestamp_column, parse_timestamp, [*TIMES, *EDGE_TIMES, "2024-02-01T23:59:60"]),
    (event_column, lambda v, c: parse_event(v), EVENTS),
    (bool_column, parse_bool, ["true", "Y", "0", "maybe", " no ", ""]),
]


@pytest.mark.parametrize("column, rule, values", COLUMN_CASES)
def test_column_parsers_agree_with_the_scalar_rules(column, rule, values):
    values = values * 3
    random.Random(0).shuffle(values)
    parsed = column(pa.array(values, pa.string()), len(values), "col")

    for row, value in enumerate(values):
        if is_missing(value):
            assert parsed.missing[row] and row not in parsed.errors, value
            continue
        try:
            expected = rule(value, "col")
        except BadValue as exc:
            assert str(parsed.errors[row]) == str(exc), value
            continue
        assert parsed.values[row].as_py() == expected, value
        assert not parsed.missing[row] and row not in parsed.errors, value
