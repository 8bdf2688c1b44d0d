"""Ingestion: good and bad files in every format, exact rejects, idempotency, updates."""

from __future__ import annotations

import csv
import gzip
import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from recsys.catalog import reads
from recsys.catalog.models import AttributeKind, Interaction, Item, ItemAttribute, User
from recsys.errors import InvalidInput
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items
from recsys.ingest.interactions import InteractionIngester, record_interactions
from recsys.ingest.items import recorded_kinds
from recsys.ingest.values import BadValue, parse_timestamp

ITEMS_CSV = """\
item_id,title,image,in_stock,price,brand,tags,released,description
a1,Red shirt,img/a1.png,true,19.99,Acme,summer|cotton,2024-01-05,A soft red cotton shirt
a2,Blue jeans,,yes,49.5,Denimco,denim,2023-11-30,Classic straight leg jeans in dark blue wash
a3,Boots,img/missing.png,1,89,Acme,leather|winter,2022-09-01,Warm leather boots with a thick sole
a1,Red shirt again,,true,10,Acme,,2024-01-05,dup
,No id,,true,5,Acme,,,
a4,Hat,,maybe,5,Acme,,,
a5,"Multi
line title",,false,12,Acme,,,
a6,Short row,,true
"""
# line -> reason, for the rows above that must be rejected
ITEM_REJECTS = {
    4: "missing_image",
    5: "duplicate",
    6: "missing_value",
    7: "invalid_value",
    10: "malformed_row",
}

INTERACTIONS_CSV = """\
user_id,item_id,timestamp,event,weight
u1,a1,2024-02-01T10:00:00Z,view,1
u1,a2,1706781600,click,
u2,a1,2024-02-01 12:00:00+02:00,purchase,3
u2,zz,2024-02-01T10:00:00,view,1
u1,a1,2024-02-01T10:00:00Z,view,2
u3,a1,not-a-date,view,1
u3,a1,2024-02-01,VIEW!,1
u3,,2024-02-01,view,1
u3,a2,2024-02-01,view,-2
u3,a2,1706781600000,view,1
u3,a5,,,
"""
INTERACTION_REJECTS = {
    5: "unknown_item",
    6: "duplicate",
    7: "invalid_value",
    8: "invalid_value",
    9: "missing_value",
    10: "invalid_value",
    11: "invalid_value",
}


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    Image.new("L", (8, 8), 128).save(tmp_path / "img" / "a1.png")
    (tmp_path / "items.csv").write_text(ITEMS_CSV)
    (tmp_path / "interactions.csv").write_text(INTERACTIONS_CSV)
    return tmp_path


def read_rejects(path: Path) -> dict[int, str]:
    with open(path, newline="") as file:
        return {int(row["line"]): row["reason"] for row in csv.DictReader(file)}


def interaction_rows(engine) -> set[tuple]:
    with Session(engine) as session:
        query = (
            select(User.external_id, Item.external_id, Interaction.event, Interaction.weight,
                   Interaction.timestamp)
            .join(Interaction.user)
            .join(Interaction.item)
        )  # fmt: skip
        return set(map(tuple, session.execute(query)))


def test_bad_items_are_rejected_with_line_and_reason(engine, shop):
    report = ingest_items(engine, shop / "items.csv", options=IngestOptions(show_progress=False))

    assert (report.inserted, report.updated, report.unchanged) == (3, 0, 0)
    assert dict(report.rejected) == {reason: 1 for reason in ITEM_REJECTS.values()}
    assert report.rejects_path == shop / "items.csv.rejects.csv"
    assert read_rejects(report.rejects_path) == ITEM_REJECTS
    with Session(engine) as session:
        items = {item.external_id: item for item in session.scalars(select(Item))}
        kinds = dict(session.execute(select(ItemAttribute.name, ItemAttribute.kind)).all())
    assert set(items) == {"a1", "a2", "a5"}
    assert items["a1"].image_path == str((shop / "img" / "a1.png").resolve())
    assert items["a1"].attributes["tags"] == ["summer", "cotton"]
    assert items["a1"].attributes["price"] == 19.99
    assert items["a5"].title == "Multi\nline title" and items["a5"].in_stock is False
    assert kinds == {
        "price": AttributeKind.NUMERIC,
        "brand": AttributeKind.CATEGORICAL,
        "tags": AttributeKind.MULTI,
        "released": AttributeKind.DATE,
        "description": AttributeKind.TEXT,
    }


def test_an_item_id_ending_in_the_similar_items_path_is_rejected(engine, tmp_path):
    """/v1/items/AB/similar names AB's similar items: an item "AB/similar" could never be
    read there. Other ids with "/" are fine."""
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\nAB/similar,x\nAB/123,y\nsimilar,z\n")
    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))
    assert (report.inserted, dict(report.rejected)) == (2, {"invalid_value": 1})
    assert read_rejects(report.rejects_path) == {2: "invalid_value"}
    assert "ends in '/similar'" in report.rejects_path.read_text()
    with Session(engine) as session:
        assert set(session.scalars(select(Item.external_id))) == {"AB/123", "similar"}


def test_an_image_that_is_no_photo_is_rejected_as_an_item_write_refuses_it(engine, tmp_path):
    """An HTML page named .png was accepted by the file ingest, listed with an image_url the
    service then refused to serve (a broken image on the page); an item write refused it."""
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "real.webp")
    (tmp_path / "page.png").write_text("<html><script>alert(1)</script></html>")
    (tmp_path / "art.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    path = tmp_path / "items.csv"
    rows = ["item_id,image", "a,real.png", "b,real.webp", "c,page.png", "d,art.svg"]
    path.write_text("\n".join(rows) + "\n")
    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))
    assert (report.inserted, dict(report.rejected)) == (2, {"invalid_value": 2})
    assert read_rejects(report.rejects_path) == {4: "invalid_value", 5: "invalid_value"}
    assert "is not a PNG, JPEG, WebP or GIF" in report.rejects_path.read_text()


def test_a_link_in_the_images_root_to_a_file_elsewhere_is_rejected(engine, tmp_path):
    """The service serves an item's image to anyone: a symlink in the root must not make a
    file outside it an item's image (the HTTP item write refused it already)."""
    from PIL import Image

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "secret.png")
    Image.new("RGB", (4, 4)).save(root / "own.png")
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "inner.png").symlink_to(root / "own.png")  # a link within the root is fine
    path = root / "items.csv"
    path.write_text("item_id,image\na,own.png\nb,link.png\nc,inner.png\n")
    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))
    assert (report.inserted, read_rejects(report.rejects_path)) == (2, {3: "invalid_value"})
    assert "once its links are followed" in report.rejects_path.read_text()
    with Session(engine) as session:
        stored = dict(session.execute(select(Item.external_id, Item.image_path)).all())
    assert stored == {"a": str(root / "own.png"), "c": str(root / "own.png")}


def test_parquet_strings_typed_as_binary_are_read_as_their_text(engine, tmp_path):
    """Spark and Hive may write strings as binary: the id b'i1' is the item i1, not a new
    item named "b'i1'"; bytes that are not UTF-8 are refused, not stored as their repr."""
    import pyarrow.parquet as pq

    ids = pa.array([b"i1", b"i2", b"\xff\xfe"], pa.binary())
    titles = pa.array([b"First", b"Second", b"Third"], pa.binary())
    pq.write_table(pa.table({"item_id": ids, "title": titles}), tmp_path / "items.parquet")
    report = ingest_items(
        engine, tmp_path / "items.parquet", options=IngestOptions(show_progress=False)
    )
    assert (report.inserted, dict(report.rejected)) == (2, {"invalid_value": 1})
    assert "not UTF-8 text" in report.rejects_path.read_text()
    with Session(engine) as session:
        stored = dict(session.execute(select(Item.external_id, Item.title)).all())
    assert stored == {"i1": "First", "i2": "Second"}


def test_json_lines_keys_first_seen_on_a_later_line_meet_the_name_rules(engine, tmp_path):
    """A CSV header is checked before anything is written; a JSON Lines key can first appear
    on any line: "k" (a query parameter) and a name with a line break were stored."""
    path = tmp_path / "items.jsonl"
    lines = ['{"item_id": "q1", "brand": "a"}', '{"item_id": "q2", "k": "5"}',
             '{"item_id": "q3", "bad\\nkey": "v"}', '{"item_id": "q4", "brand": "b"}']  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))
    assert (report.inserted, read_rejects(report.rejects_path)) == (
        2,
        {2: "invalid_value", 3: "invalid_value"},
    )
    assert "query parameter of the service" in report.rejects_path.read_text()
    with Session(engine) as session:
        assert set(session.scalars(select(ItemAttribute.name))) == {"brand"}


def test_a_new_column_of_numbers_but_a_few_says_why_it_is_categorical(engine, tmp_path, caplog):
    """One German price "129,50" among numbers made the new column categorical for every
    item: the ingest said "0 rejected" and nothing else. A Chinese description is text."""
    rows = "".join(
        f"i{n},{n}.99,这款运动鞋采用透气网面设计轻便舒适适合日常跑步\n" for n in range(20)
    )
    (tmp_path / "items.csv").write_text("item_id,price,description\n" + rows + 'x,"129,50",短\n')
    ingest_items(engine, tmp_path / "items.csv", options=IngestOptions(show_progress=False))
    said = "attribute 'price' is categorical: 1 of its 21 values here are not numbers"
    said += " (e.g. '129,50')"
    assert said in caplog.text and "a decimal comma?" in caplog.text
    with engine.connect() as connection:
        assert recorded_kinds(connection, ["description"])["description"] == "text"


def test_a_new_column_of_numbers_with_some_units_says_how_to_write_it(engine, tmp_path, caplog):
    """An electronics shop's `ram` (84% numbers, the rest "16 GB" or "512GB") and `screen`
    (88%, the rest '15.6"') became categorical without a word; only `storage` (90%) was
    warned of. Half or more numbers is enough to say so; the kind recorded is unchanged."""
    units = ["16 GB", "512GB", "8 GB", "16 GB", "32 GB"]
    rows = "".join(f"i{n},{n % 4 * 8 or 4},{13 + n % 3},mint\n" for n in range(26))
    rows += "".join(f'u{n},{units[n]},"15.6""",{n}\n' for n in range(5))  # 16% and 16% not
    (tmp_path / "items.csv").write_text("item_id,ram,screen,colour\n" + rows)
    ingest_items(engine, tmp_path / "items.csv", options=IngestOptions(show_progress=False))
    ram = "attribute 'ram' is categorical: 5 of its 31 values here are not numbers"
    assert f"{ram} (e.g. '16 GB', '512GB', '8 GB')" in caplog.text  # 3 examples, no repeats
    assert "attribute 'screen' is categorical: 5 of its 31 values" in caplog.text
    assert "e.g. a column 'ram_gb' of 16, not 'ram' of '16 GB'" in caplog.text
    assert "Kinds never narrow" in caplog.text and "'colour'" not in caplog.text  # 16% numbers
    with engine.connect() as connection:
        kinds = recorded_kinds(connection, ["ram", "screen"])
    assert kinds == {"ram": AttributeKind.CATEGORICAL, "screen": AttributeKind.CATEGORICAL}
    caplog.clear()  # a second file of the same columns: the kind is recorded, nothing new
    ingest_items(engine, tmp_path / "items.csv", options=IngestOptions(show_progress=False))
    assert "values here are not numbers" not in caplog.text
    # codes with a leading zero (EANs) are text by rule, not numbers written wrong
    eans = "".join(f"e{n},{4006381333931 + n}\n" for n in range(20))
    eans += "".join(f"z{n},0115947314{n:03d}\n" for n in range(6))
    (tmp_path / "eans.csv").write_text("item_id,ean\n" + eans)
    ingest_items(engine, tmp_path / "eans.csv", options=IngestOptions(show_progress=False))
    assert "'ean'" not in caplog.text


def test_a_file_widens_an_attributes_kind_only_when_asked_and_says_so(engine, tmp_path, caplog):
    """One stray word in a numeric column made it categorical for the whole catalog, for
    good, and the ingest exited 0 (an HTTP write of the same value is refused): the row is
    rejected, naming the flag that lets the file widen the kind, which then says so."""
    options = IngestOptions(show_progress=False)
    (tmp_path / "a.csv").write_text("item_id,price\na,1.5\nb,2\n")
    ingest_items(engine, tmp_path / "a.csv", options=options)
    (tmp_path / "b.csv").write_text("item_id,price\nc,cheap\nd,3\n")
    report = ingest_items(engine, tmp_path / "b.csv", options=options)
    assert report.inserted == 1 and read_rejects(report.rejects_path) == {2: "invalid_value"}
    with open(report.rejects_path, newline="") as file:
        detail = next(csv.DictReader(file))["detail"]
    assert "attribute 'price' must be a number, as the catalog's 'price' is numeric" in detail
    assert "--widen-kinds to make 'price' categorical for every item" in detail
    with engine.connect() as connection:
        assert recorded_kinds(connection, ["price"]) == {"price": AttributeKind.NUMERIC}
    assert "from now on" not in caplog.text
    report = ingest_items(engine, tmp_path / "b.csv", options=replace(options, widen_kinds=True))
    assert report.inserted == 1 and not report.rejected
    assert (
        "attribute 'price' is categorical from now on, for every item (it was numeric"
        in caplog.text
    )


def test_bad_interactions_are_rejected_with_line_and_reason(engine, shop):
    ingest_items(engine, shop / "items.csv", options=IngestOptions(show_progress=False))
    report = ingest_interactions(
        engine, shop / "interactions.csv", IngestOptions(show_progress=False, batch_size=3)
    )

    assert report.inserted == 4
    assert read_rejects(report.rejects_path) == INTERACTION_REJECTS
    assert interaction_rows(engine) == {
        ("u1", "a1", "view", 1.0, datetime(2024, 2, 1, 10, 0)),
        ("u1", "a2", "click", 1.0, datetime(2024, 2, 1, 10, 0)),
        ("u2", "a1", "purchase", 3.0, datetime(2024, 2, 1, 10, 0)),  # +02:00 stored as UTC
        ("u3", "a5", "interaction", 1.0, None),
    }
    with Session(engine) as session:
        assert set(session.scalars(select(User.external_id))) == {"u1", "u2", "u3"}


def test_a_row_delivered_twice_in_a_file_is_one_event_and_no_reject(engine, shop, tmp_path):
    """A pipeline that delivers at least once wrote the same row twice: the second was a
    'duplicate' reject (exit 1), where the same event posted twice over HTTP is unchanged."""
    ingest_items(engine, shop / "items.csv", options=IngestOptions(show_progress=False))
    path = tmp_path / "twice.csv"
    row = "u9,a1,2024-02-01T10:00:00Z,view,2\n"
    path.write_text("user_id,item_id,timestamp,event,weight\n" + row + row)
    report = ingest_interactions(engine, path, IngestOptions(show_progress=False))
    assert (report.inserted, report.unchanged, report.total_rejected) == (1, 1, 0)
    assert not report.rejects_path or not report.rejects_path.exists()


def test_reingesting_the_same_files_changes_nothing(engine, shop):
    options = IngestOptions(show_progress=False, batch_size=2)
    ingest_items(engine, shop / "items.csv", options=options)
    ingest_interactions(engine, shop / "interactions.csv", options)
    before = interaction_rows(engine)

    items_again = ingest_items(engine, shop / "items.csv", options=options)
    again = ingest_interactions(engine, shop / "interactions.csv", options)

    assert (items_again.inserted, items_again.updated, items_again.unchanged) == (0, 0, 3)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)
    assert interaction_rows(engine) == before
    # The same bad rows are still reported: duplicates are judged within the file.
    assert read_rejects(again.rejects_path) == INTERACTION_REJECTS


def test_changed_rows_are_updated(engine, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,price\nx,Old,1\ny,Same,2\n")
    ingest_items(engine, path, options=IngestOptions(show_progress=False))
    path.write_text("item_id,title,price,colour\nx,New,1.5,red\ny,Same,2,\n")

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 1)
    assert report.rejects_path is None and not (tmp_path / "items.csv.rejects.csv").exists()
    with Session(engine) as session:
        x = session.scalar(select(Item).where(Item.external_id == "x"))
        assert (x.title, x.attributes) == ("New", {"price": 1.5, "colour": "red"})
    searched = {text: [c.item_id for c in reads.list_items(engine, 0, 10, text).cards]
                for text in ("new", "old", "same")}  # fmt: skip
    assert searched == {"new": ["x"], "old": [], "same": ["y"]}  # the title index followed


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv.gz"])
def test_other_formats_give_the_same_catalog(engine, tmp_path, fmt):
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1"],
            "item_id": ["i1", "i1", "i2"],
            "timestamp": ["2024-01-01T00:00:00", "2024-01-02T00:00:00", "2024-01-03T00:00:00"],
            "rating": [4.0, 5.0, 3.5],
        }
    )
    items = tmp_path / "items.csv"
    items.write_text("item_id,genres\ni1,Drama|War\ni2,Comedy\n")
    path = tmp_path / f"interactions.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in frame.to_dict("records")))
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, compression="gzip")

    ingest_items(engine, items, options=IngestOptions(show_progress=False))
    report = ingest_interactions(engine, path, IngestOptions(show_progress=False))

    assert report.inserted == 3 and report.total_rejected == 0
    assert interaction_rows(engine) == {
        ("u1", "i1", "rating", 4.0, datetime(2024, 1, 1)),
        ("u2", "i1", "rating", 5.0, datetime(2024, 1, 2)),
        ("u1", "i2", "rating", 3.5, datetime(2024, 1, 3)),
    }


def test_bad_json_lines_are_rejected_with_their_line(engine, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a"}\n\n{"item_id": \n["not", "an", "object"]\n{"item_id": "b"}\n')

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert report.inserted == 2
    assert read_rejects(report.rejects_path) == {3: "malformed_row", 4: "malformed_row"}


def test_bad_json_lines_before_the_first_good_one_are_rejects_too(engine, tmp_path):
    """The bad lines read while looking for the first object's keys were dropped: line 1
    gone, with 1 accepted, 0 rejected and exit 0."""
    lines = '{"item_id": 00123}\n[1, 2]\n\n{"item_id": \n{"item_id": "ok-1"}\n{"item_id": 7\n'
    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(gzip.compress(lines.encode()))

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert report.inserted == 1
    with open(report.rejects_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["line"], row["reason"]) for row in rows] == [
        (str(n), "malformed_row") for n in (1, 2, 4, 6)
    ]
    # where on the line itself a line cut short goes wrong (it was "column 1", of the break)
    assert rows[2]["detail"].endswith("at column 13")


@pytest.mark.parametrize("ingest", [ingest_items, ingest_interactions])
def test_a_json_lines_file_of_bad_lines_only_rejects_them_all(engine, tmp_path, ingest):
    """It was refused as having no item_id column (found: none)."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"item_id": 00123, "user_id": "u"}\n[1, 2]\n')

    report = ingest(engine, path, options=IngestOptions(show_progress=False))

    assert report.accepted == 0
    assert read_rejects(report.rejects_path) == {1: "malformed_row", 2: "malformed_row"}


def test_a_json_line_nested_too_deeply_is_a_reject_and_the_rest_lands(engine, tmp_path):
    """A RecursionError half-way through the file was a traceback, with two batches stored
    and nothing said of the rest; every rerun stopped at the same line."""
    path = tmp_path / "items.jsonl"
    deep = '{"item_id": "x", "title": ' + "[" * 50_000 + "]" * 50_000 + "}"
    # just under the parser's limit, it parsed, then writing the reject failed the same way
    under = '{"item_id": "y", "title": ' + "[" * 985 + "]" * 985 + "}"
    path.write_text('{"item_id": "a"}\n' + deep + "\n" + under + '\n{"item_id": "b"}\n')

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert report.inserted == 2
    assert read_rejects(report.rejects_path) == {2: "malformed_row", 3: "malformed_row"}


def test_a_stray_quote_rejects_its_line_alone(engine, shop, tmp_path):
    """A quote that never closes read the rest of the file into one field: one reject, and
    every row after it neither stored nor rejected."""
    ingest_items(engine, shop / "items.csv", options=IngestOptions(show_progress=False))
    rows = [f"u{n},a1,view,2024-01-02T00:00:{n:02d}" for n in range(40)]
    path = tmp_path / "events.csv"
    path.write_text(
        "\n".join(["user_id,item_id,event,timestamp", rows[0], '"' + rows[1], *rows[2:]])
    )

    report = ingest_interactions(engine, path, options=IngestOptions(show_progress=False))

    assert report.inserted == 39
    assert read_rejects(report.rejects_path) == {3: "malformed_row"}
    with open(report.rejects_path, newline="") as file:
        assert "a quote opened on this line is not closed" in next(csv.DictReader(file))["detail"]


def test_a_well_quoted_line_break_is_never_read_as_rows_of_its_own(engine, tmp_path):
    """A row of too many fields whose quoted title runs over lines that look like rows: an
    earlier take on stray quotes read them again as rows, storing items nobody listed; and
    stray quotes on neighbouring lines lost a row without a word."""
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,price\ne1,ok,1\n"
        'e2,"Desc\nsmuggled,Smuggled,9.99\nend",2.5,EXTRA\n'
        'c1,"T1,1\nc2,"T2,2\nc3,T3,3\n'
    )

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert read_rejects(report.rejects_path) == {
        3: "malformed_row",
        6: "malformed_row",
        7: "malformed_row",
    }
    with Session(engine) as session:
        stored = set(session.scalars(select(Item.external_id)))
    assert stored == {"e1", "c3"}


def test_json_objects_and_lists_are_no_ids_or_values(engine, tmp_path):
    """Ingest made the ids "{'id': 7}" and "['u1', 'u2']" and the value "[2, 3]", which the
    HTTP API refuses."""
    path = tmp_path / "items.jsonl"
    lines = [
        {"item_id": {"id": 7}},
        {"item_id": ["a", "b"]},
        {"item_id": "c", "category": [1, [2, 3]]},
        {"item_id": "d", "category": [1, 2]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert report.inserted == 1
    assert read_rejects(report.rejects_path) == {
        1: "invalid_value",
        2: "invalid_value",
        3: "invalid_value",
    }


def test_an_item_removed_while_a_batch_is_written_reads_the_file_again(
    engine, shop, monkeypatch, caplog
):
    """PostgreSQL: an item removed between a batch's look-up and its write stopped the whole
    ingest with exit 130 (the shell's Ctrl-C), a nightly job failing on any delete. The file
    is read again; the rows stored before are found unchanged."""
    ingest_items(engine, shop / "items.csv", options=IngestOptions(show_progress=False))
    raced = []

    class Violation(Exception):
        sqlstate = "23503"

    def raced_once(original):
        def write(self, *args):
            if not raced:
                raced.append(True)
                raise DBAPIError("INSERT", {}, Violation())
            return original(self, *args)

        return write

    for name in ("write", "write_staged"):  # SQLite's path, PostgreSQL's overlapped one
        monkeypatch.setattr(
            InteractionIngester, name, raced_once(getattr(InteractionIngester, name))
        )
    options = IngestOptions(show_progress=False)
    report = ingest_interactions(engine, shop / "interactions.csv", options=options)

    assert raced and report.inserted > 0 and "reading the file again (2 of 3)" in caplog.text


def test_missing_required_column_fails_before_writing(run_cli, engine, tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user,item_id\nu1,a1\n")

    result = run_cli("ingest", "interactions", str(path), expect_exit=2)

    assert "no 'user_id' column" in result.output and "found: user, item_id" in result.output
    assert interaction_rows(engine) == set()
    assert not (tmp_path / "interactions.csv.rejects.csv").exists()


def test_an_interactions_column_it_does_not_take_is_refused_naming_it(run_cli, engine, shop):
    """A 'Timestamp' or 'event_time' column was ignored: every event stored without a time,
    and the file fixed and ingested again stored each event a second time."""
    ingest_items(engine, shop / "items.csv", options=IngestOptions(show_progress=False))
    path = shop / "events.csv"
    path.write_text("user_id,item_id,event_time,session\nu1,a1,2024-03-10T12:00:00Z,s9\n")

    result = run_cli("ingest", "interactions", str(path), expect_exit=2)

    said = "unknown columns 'event_time' (is it 'timestamp'?), 'session': the columns taken are"
    assert said in result.output and "--ignore-column NAME" in result.output
    assert interaction_rows(engine) == set()
    typo = run_cli("ingest", "interactions", str(path), "--ignore-column", "sesion",
                   expect_exit=2)  # fmt: skip
    assert "has no column 'sesion' to leave out" in typo.output
    run_cli("ingest", "interactions", str(path), "--ignore-column", "event_time",
            "--ignore-column", "session", "-q")  # fmt: skip
    assert {row[:2] for row in interaction_rows(engine)} == {("u1", "a1")}

    late = shop / "events.jsonl"  # a JSON Lines key first seen on a later line
    late.write_text('{"user_id": "u2", "item_id": "a1"}\n{"user_id": "u3", "item_id": "a1", '
                    '"Timestamp": "2024-03-10"}\n')  # fmt: skip
    report = ingest_interactions(engine, late, IngestOptions(show_progress=False))
    assert report.inserted == 1 and read_rejects(report.rejects_path) == {2: "invalid_value"}
    with pytest.raises(InvalidInput, match=r"events\[0\]: unknown column 'Timestamp' \(is it"):
        record_interactions(engine, [{"user_id": "u4", "item_id": "a1", "Timestamp": "x"}])


@pytest.mark.parametrize(
    ("name", "header", "fix"),
    [
        ("items.csv", "item_id;title;price", "separated by ';': save the file comma-separated"),
        ("items.csv", "item_id\ttitle\tprice", "separated by tabs: name the file .tsv"),
    ],
)
def test_a_header_joined_by_another_separator_says_so(run_cli, engine, tmp_path, name, header, fix):
    path = tmp_path / name
    path.write_text(f"{header}\na1{header[7]}Shirt{header[7]}10\n")

    result = run_cli("ingest", "items", str(path), expect_exit=2)

    assert "no 'item_id' column" in result.output and fix in result.output
    with Session(engine) as session:
        assert session.scalar(select(Item.id)) is None  # nothing written


def test_an_attribute_named_as_a_query_parameter_fails_before_writing(run_cli, engine, tmp_path):
    """A column named k, mode or diversity could not be filtered on (?k= is the number of
    results): the file is refused before anything is written, naming the column."""
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,mode\na1,Shirt,casual\n")

    result = run_cli("ingest", "items", str(path), expect_exit=2)

    assert "column 3, 'mode' is a query parameter" in result.output
    assert "rename the attribute" in result.output
    with Session(engine) as session:
        assert session.scalar(select(Item.id)) is None


def test_a_nan_cell_is_empty_and_an_overflow_a_reject_so_a_numeric_attribute_stays_numeric(
    engine, tmp_path
):
    """The text NaN in a CSV cell is a missing number, as in a JSON Lines file, and 1e400 is
    refused: neither turns the price into a category for good. Words stay words."""
    path = tmp_path / "items.csv"
    path.write_text("item_id,price,brand\na,10,Infinity\nb,NaN,x\nc,12,nan\nd,1e400,y\n")

    report = ingest_items(engine, path, options=IngestOptions(show_progress=False))

    assert report.accepted == 3 and report.rejected == {"invalid_value": 1}
    with Session(engine) as session:
        stored = dict(session.execute(select(Item.external_id, Item.attributes)).all())
        kinds = recorded_kinds(session.connection(), ["price", "brand"])
    assert stored == {
        "a": {"price": 10, "brand": "Infinity"},
        "b": {"brand": "x"},
        "c": {"price": 12},
    }
    assert kinds == {"price": AttributeKind.NUMERIC, "brand": AttributeKind.CATEGORICAL}


def test_a_row_with_both_weight_and_rating_is_rejected_saying_to_send_one(engine, tmp_path):
    path = tmp_path / "interactions.csv"
    items = tmp_path / "items.csv"
    items.write_text("item_id\na1\n")
    ingest_items(engine, items, options=IngestOptions(show_progress=False))
    path.write_text("user_id,item_id,weight,rating\nu1,a1,2,\nu2,a1,,4\nu3,a1,2,4\n")

    report = ingest_interactions(engine, path, options=IngestOptions(show_progress=False))

    assert report.inserted == 2
    rejects = read_rejects(report.rejects_path)
    assert list(rejects) == [4] and rejects[4] == "invalid_value"


def test_a_null_id_in_parquet_is_a_missing_value_and_the_other_rows_land(engine, tmp_path):
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["a1", None, "a2"]}), items)
    events = tmp_path / "interactions.parquet"
    pq.write_table(pa.table({"user_id": ["u1", None], "item_id": ["a1", "a2"]}), events)
    options = IngestOptions(show_progress=False)

    assert ingest_items(engine, items, options=options).inserted == 2
    report = ingest_interactions(engine, events, options=options)

    assert report.inserted == 1
    assert list(read_rejects(report.rejects_path).values()) == ["missing_value"]


def test_a_gzip_file_cut_short_says_so_and_keeps_the_rows_before(engine, tmp_path):
    rows = b"item_id\n" + b"".join(f"i{n}\n".encode() for n in range(400_000))
    packed = gzip.compress(rows)
    path = tmp_path / "items.csv.gz"
    path.write_bytes(packed[: len(packed) * 3 // 4])  # a download cut short
    options = IngestOptions(show_progress=False, batch_size=10_000)

    with pytest.raises(
        InvalidInput, match=r"items\.csv\.gz: the compressed file is damaged"
    ) as caught:
        ingest_items(engine, path, options=options)

    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(Item))
    assert stored > 0 and f"{stored:,} rows before the damage were stored" in str(caught.value)


def test_cli_reports_rejects_and_exits_nonzero(run_cli, engine, shop):
    result = run_cli("ingest", "items", str(shop / "items.csv"), "-q", expect_exit=1)

    assert "items.csv: line 4: missing_image: image 'img/missing.png' not found" in result.output
    assert "3 accepted (3 new, 0 updated, 0 unchanged), 5 rejected" in result.output
    assert "malformed_row: 1" in result.output
    assert "--images-root" not in result.output  # one photo of eight was missing


def test_a_database_gone_mid_ingest_says_what_was_stored(run_cli, engine, shop, monkeypatch):
    """A PostgreSQL restart mid-ingest said only that the database did not answer, not, as
    every other stop does, how many rows were stored and that a rerun finishes the job."""
    run_cli("ingest", "items", str(shop / "items.csv"), "-q", expect_exit=1)

    class Gone(Exception):
        sqlstate = "57P01"  # admin_shutdown

    Gone.__module__ = "psycopg.errors"  # the server's driver says so

    def write(self, *args):
        raise OperationalError("COPY", {}, Gone("terminating connection"))

    for name in ("write", "write_staged"):
        monkeypatch.setattr(InteractionIngester, name, write)
    args = ("ingest", "interactions", str(shop / "interactions.csv"), "-q", "--json")
    result = run_cli(*args, expect_exit=75)  # a server away may come back: try again later

    assert "interactions.csv: 0 rows were stored, in whole batches; run the same" in result.output
    summary = json.loads(result.stdout)  # what was stored, and why it stopped
    assert summary["accepted"] == 0 and "terminating connection" in summary["error"]


def test_images_missing_everywhere_point_to_images_root(run_cli, engine, tmp_path):
    photos = tmp_path / "photos"
    (photos / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "img" / "x.png")
    path = tmp_path / "files" / "items.csv"
    path.parent.mkdir()
    path.write_text("item_id,image\nx,img/x.png\n")

    result = run_cli("ingest", "items", str(path), "-q", expect_exit=1)
    assert f"not found under {path.parent.resolve()}" in result.output
    assert "pass --images-root DIR" in result.output
    run_cli("ingest", "items", str(path), "-q", "--images-root", str(photos))


def test_cli_json_summary_and_clean_exit(run_cli, engine, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\nx,One\ny,Two\n")

    result = run_cli("ingest", "items", str(path), "-q", "--json")

    assert json.loads(result.output)["inserted"] == 2


def test_ingest_before_migrating_says_how_to_fix(run_cli, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id\nx\n")

    result = run_cli("ingest", "items", str(path), expect_exit=2)

    assert "run `recsys db upgrade` first" in result.output


def test_unknown_extension_is_refused(run_cli, engine, tmp_path):
    path = tmp_path / "items.xlsx"
    path.write_text("item_id\nx\n")

    result = run_cli("ingest", "items", str(path), expect_exit=2)

    assert "cannot tell the format of items.xlsx" in result.output


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("user_id,item_id\nu1,a1\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (gzip.compress("user_id,item_id\n".encode("utf-16")), "csv.gz is UTF-16 text"),
        (b"User_ID, item_id\nu1,a1\n", "rename 'User_ID' to user_id (names are matched exactly)"),
    ],
)
def test_a_header_the_reader_cannot_match_says_what_to_change(
    run_cli, engine, tmp_path, content, says
):
    path = tmp_path / ("events.csv.gz" if content[:2] == b"\x1f\x8b" else "events.csv")
    path.write_bytes(content)

    result = run_cli("ingest", "interactions", str(path), expect_exit=2)

    assert says in result.output


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        ("1710000000000", "milliseconds? divide by 1,000)"),
        ("1710000000000000", "microseconds? divide by 1,000,000)"),
    ],
)
def test_an_epoch_in_a_finer_unit_says_which(value, unit):
    with pytest.raises(BadValue, match=re.escape(unit)):
        parse_timestamp(value, "timestamp")


@pytest.mark.parametrize("value", ["2026-02-30", "9999-99-99", "0000-00-00", "2026-01-01T25:99"])
def test_a_date_that_does_not_exist_is_no_date(value):
    """Of a date's shape but no real day or time: an item write stored it in a date
    attribute as given; it is refused as the value a date attribute must not take."""
    from recsys.ingest.values import misfit, value_kind

    assert value_kind(value) != AttributeKind.DATE
    assert misfit(AttributeKind.DATE, value) == "must be a date (ISO 8601, such as 2025-11-01)"
    for real in (
        "2026-02-28",
        "2026-01-01T23:59",
        "2026-01-01 10:00:00.5Z",
        "2026-01-01T10:00+0100",
    ):
        assert value_kind(real) == AttributeKind.DATE and misfit(AttributeKind.DATE, real) is None
