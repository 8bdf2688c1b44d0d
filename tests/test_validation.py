"""One rule for ids and values at every door: the scalar rules, typed columns, ingest files,
the library's ``record_interactions`` and the HTTP API; and odd-but-valid rows train."""

from __future__ import annotations

import csv
import json
import sys
import unicodedata
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.catalog.models import Interaction, Item, User
from recsys.errors import InvalidInput
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items, values
from recsys.ingest.interactions import record_interactions
from recsys.ingest.item_writes import delete_item, patch_item, put_item
from recsys.ingest.values import (
    MAX_ID_LENGTH,
    BadValue,
    attribute_value,
    is_missing,
    parse_id,
    parse_text,
    parse_timestamp,
    parse_weight,
    timestamp_column,
    weight_column,
)
from recsys.model.bundle import load_recommender
from recsys.model.recommender import check_filters
from recsys.model.training import train
from services.errors import ApiError
from services.schemas import path_id
from tests.shop_fixture import ADMIN, build_shop, populate, service_app, train_config
from tests.test_ingest import interaction_rows
from tests.toy import toy_catalog

QUIET = IngestOptions(show_progress=False)

# Ids a catalog row can never have, and what the message says about each.
BAD_IDS = {
    "probe\x00": "U+0000 at position 5",
    "a\x1bb": "U+001B",
    "x\x85y": "U+0085",
    "line\u2028break": "U+2028",
    "\u202eevil": "U+202E",
    "\ud800": "unpaired surrogate",
    "bad\ufffdbyte": "not valid UTF-8 (it holds U+FFFD); re-save the file (or send the text) as",
    "x" * (MAX_ID_LENGTH + 1): "256 characters long, the limit is 255",
    float("nan"): "not a finite number",
    float("inf"): "not a finite number",
    True: "is a boolean",
    ".": "path segment '.' or '..'",
    "..": "could not be read at its URL: give it another id",
    "a/../b": "path segment",
    "./x": "path segment",
    "x/.": "path segment",
}
# Ids that are odd but valid: they must survive ingest, training and the bundle unchanged.
ODD_ITEMS = {
    "a0": "ä 0 tee",
    "a1": "👩\u200d💻 laptop",
    "a2": "i" * MAX_ID_LENGTH,
    "b0": "商品 b0",
    "b1": "two  spaces inside",
    "b2": "12.5",
}
ODD_USERS = {"u0": "ü 0", "u1": "u" * MAX_ID_LENGTH, "u8": "用户 8", "u9": "🙂"}


@pytest.mark.parametrize("value, says", BAD_IDS.items(), ids=lambda v: ascii(v)[:12])
def test_bad_ids_are_refused_naming_the_field(value, says):
    with pytest.raises(BadValue, match=r"^user_id ") as refused:
        parse_id(value, "user_id")
    assert says in str(refused.value)
    assert len(str(refused.value)) < 200  # a long id is cut in the message


def test_odd_ids_are_kept_as_written_without_surrounding_space():
    for odd in [*ODD_ITEMS.values(), *ODD_USERS.values()]:
        assert parse_id(f"  {odd}\t", "item_id") == odd
    assert parse_id(12.0, "item_id") == "12" and parse_id(7, "item_id") == "7"
    with pytest.raises(BadValue, match="item_id is empty"):
        parse_id(" ", "item_id")


def test_ids_with_slashes_are_kept_but_dot_segments_are_not():
    """/v1/items/.. was sent as /v1/ and /v1/items/./similar as /v1/items/similar by every
    browser and HTTP client: such an id was stored and could never be read."""
    kept = ["AB/123", "/lead", "trail/", "a//b", ".x", "..x", "x..", "...", "a/.../b", "/"]
    assert [parse_id(v, "item_id") for v in kept] == kept
    column = pa.array([*kept, ".", "a/./b", "../x", "x/.."])
    parsed = values.item_id_column(column, len(column))
    assert parsed.values.to_pylist() == [*kept, None, None, None, None]
    assert sorted(parsed.errors) == [10, 11, 12, 13]
    assert "path segment" in str(parsed.errors[10])


def test_text_keeps_line_breaks_but_no_other_control_character():
    assert parse_text("Multi\nline\ttitle", "title") == "Multi\nline\ttitle"
    with pytest.raises(BadValue, match=r"title .* U\+0000"):
        parse_text("nul\x00inside", "title")
    with pytest.raises(BadValue, match=r"attribute 'colour' .* U\+0000"):
        attribute_value("red\x00", "attribute 'colour'")
    with pytest.raises(BadValue, match="not a finite number"):
        attribute_value(float("inf"), "attribute 'price'")
    assert attribute_value(float("nan")) is None  # how pandas writes an empty cell


@pytest.mark.parametrize(
    "value, expected",
    [
        (3.0, 3),
        ("-17", -17),
        (1e300, 1e300),  # was echoed back as a 301-digit integer
        ("12345678901234567890", "12345678901234567890"),  # a code: a float changed it
        ("9007199254740993", "9007199254740993"),
        ("9007199254740992", 2**53),
    ],
)
def test_whole_numbers_are_ints_only_where_exact(value, expected):
    parsed = attribute_value(value, "attribute 'price'")
    assert parsed == expected and type(parsed) is type(expected)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1)),
        ("1970-01-01T00:30:00+01:00", None),  # 1969-12-31T23:30 UTC
        ("2099-12-31T23:59:59.999999", datetime(2099, 12, 31, 23, 59, 59, 999999)),
        ("2100-01-01", None),
        ("0001-01-01", None),
        ("9999-12-31", None),
        ("9999-12-31T23:59:59-14:00", None),  # past year 9999 in UTC
        ("0001-01-01T00:00:00+14:00", None),  # before year 1 in UTC
        ("0", datetime(1970, 1, 1)),
        ("-1", None),
        ("4102444799", datetime(2099, 12, 31, 23, 59, 59)),
        ("4102444800", None),
        ("nan", None),
        (date(2024, 2, 1), datetime(2024, 2, 1)),
        (datetime(1969, 12, 31, 23, 59, tzinfo=UTC), None),
    ],
)
def test_timestamps_are_kept_within_1970_to_2100(value, expected, monkeypatch):
    monkeypatch.setattr(values, "now", lambda: datetime(2100, 1, 1))  # the range's end binds
    if expected is not None:
        assert parse_timestamp(value) == expected
        return
    with pytest.raises(BadValue, match=r"^timestamp .*(range|finite)"):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "value, says",
    [
        (float("nan"), "not a finite number"),
        ("NaN", "not a finite number"),
        (10**400, "too large"),
        ("1e400", "not a finite number"),
        (-0.5, "negative"),
        (1_000_001, "above the limit 1,000,000"),
    ],
)
def test_weights_are_finite_and_bounded(value, says):
    with pytest.raises(BadValue, match=f"^weight .*{says}"):
        parse_weight(value, "weight")
    assert not is_missing(value)


def test_tiny_and_large_weights_within_the_bound_are_kept():
    assert parse_weight(1e-300, "weight") == 1e-300
    assert parse_weight("1e6", "weight") == 1_000_000


def test_typed_columns_agree_with_the_scalar_rules():
    """Parquet's typed columns: timestamps beyond Python's years, dates, zones, NaN weights."""
    micros = [0, -1, 4102444800 * 10**6, 200_000 * 365 * 86400 * 10**6, 1706781600 * 10**6]
    typed = [
        pa.array(micros, pa.timestamp("us")),
        pa.array(micros, pa.timestamp("us", tz="Asia/Tokyo")),
        pa.array([0, -1, 47482, 2_000_000, 19754], pa.date32()),
        pa.array([s // 10**6 for s in micros], pa.timestamp("s")),
    ]
    for column in typed:
        parsed = timestamp_column(column, len(column), "timestamp")
        for row, value in enumerate(column):
            try:
                expected = parse_timestamp(value.as_py())
            except (BadValue, OverflowError, ValueError):  # beyond Python: clamped, refused
                assert row in parsed.errors and "outside the accepted range" in str(
                    parsed.errors[row]
                )
                continue
            assert parsed.values[row].as_py() == expected and row not in parsed.errors
    weights = pa.array([1.0, float("nan"), float("inf"), None, 1e7, 0.0])
    parsed = weight_column(weights, len(weights), "weight")
    assert sorted(parsed.errors) == [1, 2, 4] and parsed.missing.tolist()[3]
    assert parsed.values.to_pylist() == [1.0, None, None, None, None, 0.0]


def catalog_with_items(engine, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\ni1,One\ni2,Two\n")
    ingest_items(engine, path, options=QUIET)


def read_rejects(path: Path) -> dict[int, tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return {int(r["line"]): (r["reason"], r["detail"]) for r in csv.DictReader(file)}


def test_a_float_id_of_2_53_or_more_is_refused_not_changed(engine, tmp_path):
    """12345678901234567890.0 in JSON and 2**53 + 1 in a Parquet float column were stored as
    the float's integer, another user (12345678901234567168, 2**53); integers stay exact."""
    catalog_with_items(engine, tmp_path)
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"user_id": 12345678901234567890.0, "item_id": "i1"}\n'
        '{"user_id": 12345678901234567168, "item_id": "i1"}\n'
        '{"user_id": 9007199254740991.0, "item_id": "i1"}\n'
    )
    report = ingest_interactions(engine, path, QUIET)
    reason, detail = read_rejects(report.rejects_path)[1]
    assert reason == "invalid_value" and detail.endswith(
        "write ids as text: a float cannot hold this id exactly"
    )
    table = pa.table(
        {
            "user_id": pa.array([2**53 + 1, 12], pa.int64()).cast(pa.float64(), safe=False),
            "exact": pa.array([2**53 + 1, 12], pa.int64()),
            "item_id": ["i2", "i2"],
        }
    )
    pq.write_table(table.select(["user_id", "item_id"]), tmp_path / "floats.parquet")
    pq.write_table(
        table.select(["exact", "item_id"]).rename_columns(["user_id", "item_id"]),
        tmp_path / "ints.parquet",
    )
    report = ingest_interactions(engine, tmp_path / "floats.parquet", QUIET)
    assert list(read_rejects(report.rejects_path)) == [1]
    ingest_interactions(engine, tmp_path / "ints.parquet", QUIET)
    users = {user for user, *_ in interaction_rows(engine)}
    assert users == {"12345678901234567168", "9007199254740991", "12", str(2**53 + 1)}


def test_a_decimal_id_reads_as_a_float_id_does():
    """A Parquet decimal128(10, 2) id 123 was the id "123.00"."""
    column = pa.array([Decimal("123.00"), Decimal("12.50"), Decimal("-0.00")], pa.decimal128(10, 2))
    assert values.id_column(column, 3, "item_id").values.to_pylist() == ["123", "12.5", "0"]
    assert parse_id(Decimal("123.00"), "item_id") == parse_id(123.0, "item_id") == "123"
    with pytest.raises(BadValue, match="longer than 255 characters"):
        parse_id(Decimal("1E+999999999"), "item_id")


def test_files_reject_bad_ids_and_values_by_line(engine, tmp_path):
    catalog_with_items(engine, tmp_path)
    lines = [
        {"user_id": "ok", "item_id": "i1", "timestamp": "2024-02-01"},
        {"user_id": "probe\u0000", "item_id": "i1"},
        {"user_id": "\ud800", "item_id": "i1"},
        {"user_id": "w", "item_id": "i1", "weight": float("nan")},
        {"user_id": "w", "item_id": "i2", "weight": 10**400},
        {"user_id": "t", "item_id": "i1", "timestamp": "9999-12-31T23:59:59-14:00"},
        {"user_id": "t", "item_id": "i2", "timestamp": "0001-01-01"},
        {"user_id": "e", "item_id": "i2", "timestamp": ""},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = ingest_interactions(engine, path, QUIET)

    rejects = read_rejects(report.rejects_path)
    assert {line: reason for line, (reason, _) in rejects.items()} == {
        n: "invalid_value" for n in range(2, 8)
    }
    assert [rejects[n][1].split()[0] for n in range(2, 8)] == ["user_id"] * 2 + ["weight"] * 2 + [
        "timestamp"
    ] * 2
    # In a file an empty timestamp means the event has none (re-ingesting stays idempotent).
    assert interaction_rows(engine) == {
        ("ok", "i1", "interaction", 1.0, datetime(2024, 2, 1)),
        ("e", "i2", "interaction", 1.0, None),
    }


def test_a_csv_with_nul_bytes_rejects_those_rows(engine, tmp_path):
    catalog_with_items(engine, tmp_path)
    path = tmp_path / "events.csv"
    path.write_bytes(b"user_id,item_id\nok,i1\nprobe\x00,i1\n\x00,i2\n")

    report = ingest_interactions(engine, path, QUIET)

    assert set(read_rejects(report.rejects_path)) == {3, 4}
    assert interaction_rows(engine) == {("ok", "i1", "interaction", 1.0, None)}


def test_parquet_timestamps_beyond_python_are_rejected_rows(engine, tmp_path):
    catalog_with_items(engine, tmp_path)
    path = tmp_path / "events.parquet"
    year_300000 = 200_000 * 365 * 86400 * 10**6
    stamps = pa.array([1706781600 * 10**6, year_300000, -(10**6), None], pa.timestamp("us"))
    users = ["a", "b", "c", "d"]
    pq.write_table(pa.table({"user_id": users, "item_id": ["i1"] * 4, "timestamp": stamps}), path)

    report = ingest_interactions(engine, path, QUIET)

    assert {line for line in read_rejects(report.rejects_path)} == {2, 3}
    stored = {row[0]: row[4] for row in interaction_rows(engine)}
    assert stored == {"a": datetime(2024, 2, 1, 10), "d": None}  # a null is no time, not year 1


def test_a_column_name_with_a_control_character_fails_the_file(engine, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"item_id": "x", "col\u0000our": "red"}) + "\n")
    with pytest.raises(InvalidInput, match=r"column 2's name .* U\+0000"):
        ingest_items(engine, path, options=QUIET)
    with Session(engine) as session:
        assert session.scalar(select(func.count(Item.id))) == 0


def test_library_events_without_a_timestamp_are_stamped_now(engine, tmp_path):
    catalog_with_items(engine, tmp_path)
    now = datetime(2024, 5, 1, 12)
    events = [{"user_id": "a", "item_id": "i1", "timestamp": ts} for ts in ("", " ", None)]
    events.append({"user_id": "a", "item_id": "i2"})

    recorded = record_interactions(engine, events, now=now)

    assert recorded.inserted == 2  # the three i1 events are one event: same moment
    assert interaction_rows(engine) == {
        ("a", "i1", "interaction", 1.0, now),
        ("a", "i2", "interaction", 1.0, now),
    }


def test_library_refuses_one_event_twice_with_two_weights(engine, tmp_path):
    catalog_with_items(engine, tmp_path)
    event = {"user_id": "a", "item_id": "i1", "event": "view", "timestamp": "2024-02-01"}
    same = [event, {**event, "item_id": "i2"}, dict(event)]
    assert record_interactions(engine, same).inserted == 2  # an exact repeat is stored once

    clash = [{**event, "weight": 1}, {**event, "item_id": "i2"}, {**event, "weight": 2}]
    with pytest.raises(InvalidInput, match=r"events\[2\]: .* as events\[0\] .*\(2, not 1\)"):
        record_interactions(engine, clash)
    assert len(interaction_rows(engine)) == 2

    # each repeat is held against the first of its key: only the ones that differ from it
    other = {**event, "item_id": "i2", "timestamp": "2024-03-01"}
    repeats = [{**other, "weight": 3}, {**event, "weight": 1}, {**other, "weight": 3}]
    repeats += [{**other, "weight": 4}, {**event, "weight": 5}, {**event, "weight": 1}]
    with pytest.raises(InvalidInput) as refused:
        record_interactions(engine, repeats)
    message = str(refused.value)
    assert "events[3]: " in message and "as events[0] with another weight (4, not 3)" in message
    assert "events[4]: " in message and "as events[1] with another weight (5, not 1)" in message
    assert "events[2]" not in message and "events[5]" not in message
    assert len(interaction_rows(engine)) == 2


def test_accepted_odd_ids_and_values_train_and_come_back_in_the_bundle(
    engine, tmp_path, monkeypatch
):
    """Every door takes odd-but-valid rows, and `recsys train` on them neither crashes nor
    changes an id: unicode, inner spaces, ids at the length limit, the range's first and last
    instants (stored by a machine whose clock says 2100; trained by this one, to which the
    last is in the future), tiny and large weights (with and without the interaction weight
    in ALS)."""
    monkeypatch.setattr(values, "now", lambda: datetime(2100, 1, 1))
    data = toy_catalog()
    items, events = tmp_path / "items.csv", tmp_path / "events.csv"
    with open(items, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["item_id", "title", "in_stock", "year", "genres", "brand"])
        for row in data.items.to_dict("records"):
            item_id = ODD_ITEMS.get(row["item_id"], row["item_id"])
            writer.writerow(
                [item_id, *[row[k] for k in ("title", "in_stock", "year", "genres")], row["brand"]]
            )
    extremes = {0: "1970-01-01T00:00:00Z", 1: "2099-12-31T23:59:59.999999Z"}
    weights = {2: "1e-300", 3: "1e6", 4: "0"}
    with open(events, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["user_id", "item_id", "event", "weight", "timestamp"])
        for n, row in enumerate(data.interactions.to_dict("records")):
            user = ODD_USERS.get(row["user_id"], row["user_id"])
            item = ODD_ITEMS.get(row["item_id"], row["item_id"])
            stamp = extremes.get(n, row["timestamp"].isoformat())
            writer.writerow([user, item, row["event"], weights.get(n, row["weight"]), stamp])
    assert ingest_items(engine, items, options=QUIET).total_rejected == 0
    assert ingest_interactions(engine, events, QUIET).total_rejected == 0
    api_user = "api user ü"
    record_interactions(
        engine,
        [
            {"user_id": f" {api_user} ", "item_id": ODD_ITEMS["a0"], "weight": 1e-300},
            {"user_id": api_user, "item_id": ODD_ITEMS["a2"], "timestamp": "2099-12-31"},
        ],
    )

    plain = train_config()
    weighted = replace(plain, cf=replace(plain.cf, use_interaction_weight=True))
    for config in (plain, weighted):
        recommender = load_recommender(train(engine, tmp_path / "artifacts", config).path)
        assert set(ODD_ITEMS.values()) <= set(recommender.item_ids.tolist())
        assert {*ODD_USERS.values(), api_user} <= set(recommender.user_index)
        feeds = recommender.recommend([*ODD_USERS.values(), api_user], k=3)
        assert feeds.fallback == [False] * 5 and all(len(row) == 3 for row in feeds.ids)
        similar = recommender.similar_items([ODD_ITEMS["a2"]], k=3).ids[0]
        assert len(similar) == 3 and ODD_ITEMS["a2"] not in similar


# The HTTP doors.


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture
def client(shop):
    return service_app(shop).test_client()


def post_raw(client, text: str):
    headers = {**ADMIN, "Content-Type": "application/json"}
    return client.post("/v1/interactions", data=text.encode(), headers=headers)


def stored(shop, user: str) -> list[tuple]:
    from recsys.catalog import connect

    engine = connect(shop[0])
    with Session(engine) as session:
        query = (
            select(Item.external_id, Interaction.weight, Interaction.timestamp)
            .join(Interaction.item)
            .join(Interaction.user)
            .where(User.external_id == user)
        )
        rows = session.execute(query).all()
    engine.dispose()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize(
    "event, says",
    [
        (
            '{"user_id": "probe\\u0000", "item_id": "a1"}',
            "user_id 'probe\\x00' holds the control",
        ),
        (
            '{"user_id": "\\ud800", "item_id": "a1"}',
            "user_id '\\ud800' has an unpaired surrogate",
        ),
        ('{"user_id": "h", "item_id": "a1", "weight": NaN}', "weight nan is not a finite"),
        ('{"user_id": "h", "item_id": "a1", "weight": 1' + "0" * 400 + "}", "weight 1000"),
        (
            '{"user_id": "h", "item_id": "a1", "timestamp": "9999-12-31T23:59:59-14:00"}',
            "timestamp",
        ),
        (
            '{"user_id": "h", "item_id": "a1", "timestamp": "0001-01-01T00:00:00+14:00"}',
            "timestamp",
        ),
        ('{"user_id": "h", "item_id": "a1", "timestamp": "1969-12-31"}', "outside the accepted"),
    ],
)
def test_bad_events_are_a_400_naming_the_field(client, shop, event, says):
    response = post_raw(client, f'{{"events": [{event}]}}')
    assert response.status_code == 400, response.get_data(as_text=True)
    message = response.get_json()["error"]["message"]
    assert message.startswith("events[0]: ") and says in message, message
    assert stored(shop, "h") == []


def test_an_empty_timestamp_over_http_is_now(client, shop):
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    events = [{"user_id": "h-now", "item_id": "a1", "timestamp": ""}]
    assert (
        client.post("/v1/interactions", json={"events": events}, headers=ADMIN).status_code == 201
    )
    [(item, _, moment)] = stored(shop, "h-now")
    assert item == "a1" and before <= moment <= datetime.now(UTC).replace(tzinfo=None)


def test_one_event_twice_with_two_weights_is_a_400_naming_the_index(client, shop):
    event = {"user_id": "h-twice", "item_id": "a2", "timestamp": "2024-02-01T00:00:00Z"}
    events = [{**event, "weight": 1}, {**event, "weight": 2}]
    response = client.post("/v1/interactions", json={"events": events}, headers=ADMIN)
    assert response.status_code == 400
    assert (
        "events[1]: the same user, item, event and timestamp as events[0]"
        in (response.get_json()["error"]["message"])
    )
    assert stored(shop, "h-twice") == []


@pytest.mark.parametrize("k", ["5_0", "%EF%BC%95", "1e1", " 5", "9" * 30, "0x10"])
def test_query_integers_are_plain_ascii_digits(client, k):
    for path in ("/v1/users/u1/recommendations", "/v1/items/a1/similar"):
        response = client.get(f"{path}?k={k}")
        assert response.status_code == 400, (path, k)
        assert response.get_json()["error"]["message"].startswith("k: must be a whole number")
    assert client.get("/v1/items?limit=1_0").status_code == 400
    assert client.get("/v1/users/u1/recommendations?k=5").status_code == 200


def test_candidate_ids_follow_the_id_rule(client):
    body = {"candidates": ["a1", "a2\u0000"]}
    response = client.post("/v1/users/u1/recommendations", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["message"].startswith("candidates[1]: id 'a2\\x00'")


@pytest.mark.parametrize("value", ["user-00000\x00", "x" * 256, "\u202eu1", " ", ".."])
def test_path_ids_follow_the_id_rule(value):
    with pytest.raises(ApiError) as refused:
        path_id("user_id", value)
    assert refused.value.status == 400 and refused.value.message.startswith("user_id ")
    assert path_id("user_id", " user-00000 ") == "user-00000"


@pytest.mark.parametrize("value", ["", "   ", None, "\xa0"], ids=ascii)
def test_library_item_writes_refuse_an_empty_id_by_the_id_rule(engine, tmp_path, value):
    """put_item raised sqlite3's "NOT NULL constraint failed", patch_item and delete_item
    "item None is not in the catalog"."""
    empty = r"^item_id is empty; ids are 1 to 255 characters$"
    for write in (put_item, patch_item):
        with pytest.raises(InvalidInput, match=empty):
            write(engine, value, {"title": "t"}, tmp_path)
    with pytest.raises(InvalidInput, match=empty):
        delete_item(engine, value)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0


def test_an_event_dated_past_tomorrow_is_refused_at_every_door(engine):
    """A clock years ahead, or a year typed wrong, is refused naming the row; a clock a few
    hours fast (or a local time read as UTC) passes."""
    soon = (datetime.now(UTC) + timedelta(hours=20)).isoformat()
    assert parse_timestamp(soon) > datetime.now(UTC).replace(tzinfo=None)
    for late in (
        "2099-12-31",
        "2027-06-01T00:00:00+00:00",
        str(int(datetime(2090, 1, 1).timestamp())),
    ):
        with pytest.raises(
            BadValue, match=r"in the future: after .* UTC, a day past this machine's clock"
        ):
            parse_timestamp(late)
    column = timestamp_column(pa.array([soon, "2099-12-31", "2024-01-01"]), 3)
    assert column.values.is_valid().to_pylist() == [True, False, True]
    assert "in the future" in str(column.errors[1])
    event = {"user_id": "u1", "item_id": "a0", "timestamp": "2031-01-01"}
    with pytest.raises(InvalidInput, match=r"events\[0\]: timestamp .*in the future"):
        record_interactions(engine, [event])


@pytest.mark.parametrize(
    "value, expected",
    [
        ("20240310", datetime(2024, 3, 10)),  # ISO 8601's basic date: read as 1970-08-23
        (20240310, datetime(2024, 3, 10)),  # a JSON number, a warehouse's date key
        (20240310.0, datetime(2024, 3, 10)),  # a float column of date keys with gaps
        ("12345678", datetime(1970, 5, 23, 21, 21, 18)),  # no date: epoch seconds
        ("19691231", None),  # a date before the range, not a second of 1970
        ("1_710_072_000", None),  # float() reads these; no log writes them
        ("١٧١٠٠٧٢٠٠٠", None),
    ],
)
def test_eight_digit_dates_are_dates_and_numbers_are_ascii(value, expected):
    if expected is None:
        with pytest.raises(BadValue):
            parse_timestamp(value)
        return
    assert parse_timestamp(value) == expected
    types = {int: pa.int32(), float: pa.float64(), str: pa.string()}
    as_column = pa.array([value], types[type(value)])
    assert timestamp_column(as_column, 1).values.to_pylist() == [expected]


def test_an_id_or_title_has_one_form_and_no_invisible_twin(engine):
    """ "Jürgen" with a combining umlaut was a second user; "sku-1" with a zero-width space a
    second item that looked the same everywhere it was shown."""
    decomposed, composed = "Ju\u0308rgen", "Jürgen"
    assert parse_id(decomposed, "user_id") == composed == path_id("user_id", decomposed)
    assert parse_text("Scho\u0308ffel Jacke", "title") == "Schöffel Jacke"
    for twin in ("sku-1\u200b", "\ufeffsku-1", "sku\u00ad-1", "sku\u20601"):
        with pytest.raises(BadValue, match="invisible or control character"):
            parse_id(twin, "item_id")
    assert parse_id("👩\u200d💻", "item_id") == "👩\u200d💻"  # an emoji's joiner stays
    populate(engine)
    before = {user for user, *_ in interaction_rows(engine)}
    record_interactions(engine, [{"user_id": decomposed, "item_id": "a0"}])
    record_interactions(engine, [{"user_id": composed, "item_id": "a1"}])
    assert {user for user, *_ in interaction_rows(engine)} - before == {composed}


# Invisible characters that made "SKU-1" and a second item that looked the same.
INVISIBLE = [
    0x200E, 0x200F, 0x061C, 0x034F, 0x180E, 0x3164, 0x115F, 0x1160, 0xFFA0, 0x2800,
    *range(0xFE00, 0xFE10), 0xE0001, 0xE0020, 0xE0041, 0xE007F, 0xE0100, 0xE01EF,
]  # fmt: skip


def test_invisible_look_alikes_are_refused_naming_the_character():
    for code in INVISIBLE:
        with pytest.raises(BadValue, match=rf"U\+{code:04X} at position 5; remove it$"):
            parse_id(f"SKU-1{chr(code)}", "item_id")
    column = pa.array([f"SKU-1{chr(code)}" for code in INVISIBLE])
    assert values.item_id_column(column, len(column)).values.null_count == len(INVISIBLE)
    formats = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    kept = [c for c in formats if values._ID_BAD.search(chr(c)) is None]
    assert kept == [0x200C, 0x200D]  # the joiners of emoji and Persian or Indic words


def test_an_id_of_joiners_alone_is_refused_and_messages_show_invisible_characters():
    """An id of zero-width joiners alone looked empty and was taken; a refused id's message
    showed a Hangul filler as 'ㅤ' (repr leaves it as it is)."""
    with pytest.raises(BadValue, match="only zero-width joiners"):
        parse_id("\u200d\u200c", "user_id")
    column = pa.array(["\u200d\u200c", "\u200d", "ok"])
    assert values.id_column(column, 3, "user_id").values.to_pylist() == [None, None, "ok"]
    with pytest.raises(BadValue, match=r"'\\u3164'"):
        parse_id("\u3164", "user_id")


def test_ids_in_other_scripts_and_emoji_are_kept():
    written = [
        "متجر-١٢",  # Arabic
        "می‌خواهم",  # Persian, with its ZWNJ
        "חנות-5",  # Hebrew
        "商品-五",
        "क्षत्रिय",  # Devanagari with its combining marks
        "한글-1",
        "👩‍💻",
        "🙂",
    ]
    assert [parse_id(text, "item_id") for text in written] == written


def test_a_filter_value_is_asked_in_the_form_values_are_stored_in():
    """Attribute values are stored composed (NFC); a brand asked with a combining mark
    (?brand=Ba%CC%88umler) matched no item, at the HTTP API and in the library alike."""
    assert check_filters({"brand": "Ba\u0308umler"}) == {"brand": "Bäumler"}
    assert check_filters({"brand": ["Ba\u0308umler", 3], "in_stock": True}) == {
        "brand": ["Bäumler", 3],
        "in_stock": True,
    }
