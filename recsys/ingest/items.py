"""Ingest items: ``item_id`` required; ``image``, ``title``, ``in_stock`` optional; every other
column is a tabular attribute whose kind is inferred and recorded in ``item_attributes``."""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Text,
    bindparam,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert, Update

from recsys.catalog.models import AttributeKind, Item, ItemAttribute, ItemChange, utcnow
from recsys.ingest.bulk import dialect_insert, is_postgresql, values_of, values_table
from recsys.ingest.pipeline import (
    IngestOptions,
    Problems,
    SeenKeys,
    accepted,
    first_problems,
    hash64,
    refuse,
    run_ingest,
)
from recsys.ingest.readers import Batch
from recsys.ingest.report import FIRST_CLEARED, IngestReport, Reason
from recsys.ingest.values import (
    BadValue,
    Parsed,
    attribute_column,
    bool_column,
    check_attribute_name,
    image_column,
    item_id_column,
    kind_of_counts,
    merge_kinds,
    misfit,
    parse_id,
    shown,
    text_column,
    value_kind,
)

log = logging.getLogger(__name__)

KNOWN_COLUMNS = ("item_id", "image", "title", "in_stock")


def _named_checks(attributes: dict[str, Parsed]) -> list[tuple[str, Parsed, bool]]:
    """A check refusing the rows that give a value to an attribute whose name the rules
    refuse: a CSV's header is checked before anything is written, but a JSON Lines file's
    keys can first appear on any line (``pipeline.check_columns`` sees the first)."""
    checks = []
    for name, parsed in attributes.items():
        try:
            parse_id(name, "an attribute's name")
            check_attribute_name(name)
        except BadValue as exc:
            given = np.flatnonzero(~parsed.missing)
            errors = {int(row): exc for row in given}
            checks.append(
                (f"attribute {shown(name)}", Parsed(parsed.values, parsed.missing, errors), False)
            )
    return checks


FIELDS = ("title", "image_path", "in_stock", "attributes")


class ItemIngester:
    name = "items"
    required = ("item_id",)
    known = KNOWN_COLUMNS
    attributes = True
    # A column that says the file is another kind (an interactions file given as items
    # replaced every item it named with user_id/event/weight attributes): the command to use.
    elsewhere = (("user_id", "recsys ingest interactions"),)

    def __init__(self, images_root: Path, widen_kinds: bool = False):
        self.images_root = Path(images_root).resolve()
        self.widen_kinds = widen_kinds  # IngestOptions.widen_kinds
        self.seen = SeenKeys()
        self.said_odd: set[str] = set()  # columns of mostly numbers reported (once a file)

    def parse(self, batch: Batch) -> tuple[pd.DataFrame, Problems]:
        """Valid rows (row, external_id and the ``FIELDS``) and the others' problems."""
        n, column = len(batch), batch.columns.get
        attributes = {
            name: attribute_column(values, n, name)
            for name, values in batch.columns.items()
            if name not in KNOWN_COLUMNS
        }
        item = item_id_column(column("item_id"), n, "item_id")
        title = text_column(column("title"), n, "title")
        image = image_column(column("image"), n, "image", self.images_root)
        in_stock = bool_column(column("in_stock"), n, "in_stock")
        checks = [(f"attribute {name!r}", parsed, False) for name, parsed in attributes.items()]
        checks = _named_checks(attributes) + checks
        problems = first_problems(
            [
                *checks,
                ("item_id", item, True),
                ("title", title, False),
                ("image", image, False),
                ("in_stock", in_stock, False),
            ]
        )
        keep = accepted(n, problems)
        rows = pd.DataFrame(
            {
                "row": np.arange(n),
                "external_id": item.values.to_numpy(zero_copy_only=False),
                "title": title.values.to_numpy(zero_copy_only=False),
                "image_path": image.values.to_numpy(zero_copy_only=False),
                "in_stock": in_stock.values.fill_null(True).to_numpy(zero_copy_only=False),
            }
        )[keep]
        kept = {name: parsed.values[keep] for name, parsed in attributes.items()}
        rows["attributes"] = documents(kept, len(rows))
        return rows.reset_index(drop=True), problems

    def look_up(self, reader: Connection, rows: pd.DataFrame) -> pd.DataFrame:
        """Nothing read ahead: a write compares rows with the stored items in its own
        transaction, where no other writer can change them."""
        return rows

    def write(self, connection: Connection, rows: pd.DataFrame, report: IngestReport) -> Problems:
        """Drop repeats and (without ``widen_kinds``) rows whose values do not fit their
        attributes' recorded kinds, then ``store`` the rows as plain records."""
        problems: Problems = {}
        names = rows["external_id"].to_numpy(dtype=object)
        first = self.seen.first_occurrences(hash64(pa.array(names, pa.string())))
        details = [f"item_id {name!r} appears earlier in this file" for name in names[~first]]
        refuse(problems, rows["row"].to_numpy()[~first], Reason.DUPLICATE, details)
        rows = rows[first]
        if not self.widen_kinds:
            fits = _fitting(connection, rows["attributes"].tolist())
            details = [detail for detail in fits if detail]
            refuse(problems, rows["row"].to_numpy()[fits != ""], Reason.INVALID_VALUE, details)
            rows = rows[fits == ""]
        self.store(connection, _records(rows), report, widen=self.widen_kinds)
        return problems

    def store(
        self,
        connection: Connection,
        records: list[dict[str, Any]],
        report: IngestReport,
        widen: bool = True,
    ) -> None:
        """Insert the new items of ``records`` and update the changed ones; one record per
        item, its ``external_id`` and ``FIELDS`` checked and None where missing (as ``write``
        makes them of a file's rows, and an HTTP write of one item of its fields); ``widen``:
        whether these records may widen the attributes' recorded kinds."""
        stored = _existing(connection, [record["external_id"] for record in records])
        new, changed = [], []  # changed: (catalog id, record)
        for record in records:
            found = stored.get(record["external_id"])
            if found is None:
                new.append(record)
            elif _differs(record, found[1]):
                changed.append((found[0], record))
        back = _removed_before(connection, [record["external_id"] for record in new])
        report.revived += len(back)
        report.first_revived += back[: max(0, FIRST_CLEARED - len(report.first_revived))]
        _insert(connection, new)
        _update(connection, changed)
        lost = [c[1]["external_id"] for c in changed if _clears_fields(c, stored)]
        report.cleared += len(lost)
        report.first_cleared += lost[: max(0, FIRST_CLEARED - len(report.first_cleared))]
        report.inserted += len(new)
        report.updated += len(changed)
        report.unchanged += len(records) - len(new) - len(changed)
        documents = [record["attributes"] for record in records]
        record_attribute_kinds(connection, documents, widen, said=self.said_odd)


def documents(attributes: dict[str, np.ndarray], length: int) -> list[dict[str, Any]]:
    """One attributes document per row, without the missing values. The JSON column takes a
    document per item, so this is built row by row."""
    if not attributes:
        return [{} for _ in range(length)]
    names = list(attributes)
    return [
        {name: value for name, value in zip(names, values, strict=True) if value is not None}
        for values in zip(*attributes.values(), strict=True)
    ]


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per row of ``external_id`` and the ``FIELDS``, None wherever a value is
    missing, as the database takes them."""
    columns = ["external_id", *FIELDS]
    values = rows[columns].to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    return [dict(zip(columns, row, strict=True)) for row in values.tolist()]


def _existing(connection: Connection, names: list[str]) -> dict[str, tuple[int, tuple]]:
    """external id -> (catalog id, stored ``FIELDS``) of the items the catalog has."""
    if not names:
        return {}
    query = _existing_query(is_postgresql(connection))
    rows = connection.execute(query, values_of(connection, names))
    return {name: (id_, tuple(fields)) for name, id_, *fields in rows}


def _removed_before(connection: Connection, names: list[str]) -> list[str]:
    """Those of ``names`` (items the catalog does not hold) the change log says were removed
    (until it is pruned): an older items file listing them brings them back."""
    if not names:
        return []
    listed = select(values_table(is_postgresql(connection)))
    query = (
        select(ItemChange.external_id)
        .where(ItemChange.deleted, ItemChange.external_id.in_(listed))
        .distinct()
    )
    found = {row[0] for row in connection.execute(query, values_of(connection, names))}
    return [name for name in names if name in found]


@functools.cache
def _existing_query(postgres: bool) -> Select:
    columns = [Item.external_id, Item.id, *[getattr(Item, name) for name in FIELDS]]
    return select(*columns).where(Item.external_id.in_(select(values_table(postgres))))


def _clears_fields(change: tuple[int, dict[str, Any]], stored: dict) -> bool:
    """Whether a changed record leaves out a title, photo or attribute the item had."""
    record = change[1]
    title, image, _, attributes = stored[record["external_id"]][1]  # FIELDS' order
    lost = set(attributes or {}) - set(record["attributes"] or {})
    return bool(
        (title is not None and record["title"] is None)
        or (image is not None and record["image_path"] is None)
        or lost
    )


def _differs(record: dict[str, Any], stored: tuple) -> bool:
    return any(record[name] != old for name, old in zip(FIELDS, stored, strict=True))


def _insert(connection: Connection, new: list[dict[str, Any]]) -> None:
    """Insert new items; one another writer added since the lookup is updated instead.

    PostgreSQL gets the whole batch in one statement, each column one array parameter: its
    item triggers fire once per statement, and each firing bumps the one ``catalog_state``
    row, whose versions pile up within the transaction. One statement per row
    (``executemany``) made a batch's cost grow with the square of its rows (137 s for 50,000
    new items, benchmarks/RESULTS.md session 18).
    """
    if not new:
        return
    if is_postgresql(connection):
        arrays = _arrays({"external_id": [r["external_id"] for r in new]}, new)
        connection.execute(_upsert(True), arrays | {"now": utcnow()})
    else:  # one row of parameters per item (executemany), stamped by the columns' defaults
        connection.execute(_upsert(False), new)


@functools.cache
def _upsert(postgres: bool) -> Insert:
    """The items insert of ``_insert``, built once: PostgreSQL's from the arrays of
    ``_arrays``, stamped ``now``; SQLite's from one row of parameters per item. A row that
    updates a stored item takes the update time its insert would have had."""
    add = dialect_insert(postgres, Item)
    if postgres:
        now = bindparam("now", type_=DateTime())
        rows = _unnested(("external_id", *FIELDS))
        columns = [rows.c.external_id, *[_typed(rows, name) for name in FIELDS], now, now]
        names = ["external_id", *FIELDS, "created_at", "updated_at"]
        add = add.from_select(names, select(*columns))
    return add.on_conflict_do_update(
        index_elements=["external_id"],
        set_={name: add.excluded[name] for name in (*FIELDS, "updated_at")},
    )


def _update(connection: Connection, changed: list[tuple[int, dict[str, Any]]]) -> None:
    """Write the ``FIELDS`` of (catalog id, record) pairs.

    PostgreSQL gets one ``UPDATE ... FROM unnest(arrays)`` for the batch, for the reason
    ``_insert`` gives. SQLite's triggers fire per row either way.
    """
    if not changed:
        return
    if is_postgresql(connection):
        arrays = _arrays({"id": [int(id_) for id_, _ in changed]}, [r for _, r in changed])
        connection.execute(_change(True), arrays)
        return
    params = [
        {"item_id": int(id_), **{f"new_{name}": record[name] for name in FIELDS}}
        for id_, record in changed
    ]
    connection.execute(_change(False), params)


@functools.cache
def _change(postgres: bool) -> Update:
    """The items update of ``_update``, built once (parameters as ``_insert``'s)."""
    table = Item.__table__
    if postgres:
        rows = _unnested(("id", *FIELDS))
        assigned = {name: _typed(rows, name) for name in FIELDS}
        return update(table).where(table.c.id == rows.c.id).values(assigned)
    statement = update(table).where(table.c.id == bindparam("item_id"))
    return statement.values({name: bindparam(f"new_{name}") for name in FIELDS})


_ARRAY_TYPES = {
    "external_id": Text,
    "id": BigInteger,
    "title": Text,
    "image_path": Text,
    "in_stock": Boolean,
    "attributes": Text,  # JSON text, cast back by ``_typed``
}


def _unnested(names: tuple[str, ...]):
    """PostgreSQL: columns ``names`` as a table of rows, each column bound as one array
    parameter ``array_<name>`` (``_arrays``): a few parameters for any number of rows."""
    params = [
        bindparam(f"array_{name}", type_=postgresql.ARRAY(_ARRAY_TYPES[name])) for name in names
    ]
    return func.unnest(*params).table_valued(*names).render_derived(name="rows")


def _arrays(key: dict[str, list], records: list[dict[str, Any]]) -> dict[str, list]:
    """The parameters of ``_unnested`` for the ``key`` column and the ``FIELDS``: the key, then
    the ``FIELDS`` of ``records`` (attribute documents as JSON text)."""
    columns = key | {name: [record[name] for record in records] for name in FIELDS}
    columns["attributes"] = [json.dumps(document) for document in columns["attributes"]]
    return {f"array_{name}": values for name, values in columns.items()}


def _typed(rows, name: str):
    """Column ``name`` of ``_unnested`` rows, cast to the items table's type."""
    return cast(rows.c[name], Item.__table__.c[name].type)


def recorded_kinds(connection: Connection, names) -> dict[str, AttributeKind]:
    """The kinds the catalog records for those of ``names`` it has."""
    _, recorded, _ = _kind_statements(is_postgresql(connection))
    return {name: kind for name, kind in connection.execute(recorded, {"names": list(names)})}


def _fitting(connection: Connection, attributes: list[dict[str, Any]]) -> np.ndarray:
    """(B,) per attributes document, "" where every value fits the kind the catalog
    records for its attribute (``misfit``), else why the first that does not."""
    recorded = recorded_kinds(connection, {name for document in attributes for name in document})
    out = np.full(len(attributes), "", dtype=object)
    if not recorded:
        return out
    for row, document in enumerate(attributes):
        for name, value in document.items():
            kind = recorded.get(name)
            if kind is not None and (why := misfit(kind, value)):
                wider = merge_kinds(kind, value_kind(value))
                out[row] = (
                    f"attribute {name!r} {why}, as the catalog's {name!r} is {kind.value} "
                    f"(got {shown(value)}); fix the value, or ingest with --widen-kinds to make "
                    f"{name!r} {wider.value} for every item"
                )
                break
    return out


def record_attribute_kinds(
    connection: Connection,
    attributes: Sequence[dict[str, Any]],
    widen: bool = True,
    said: set[str] | None = None,
) -> None:
    """Infer each attribute column's kind in this batch and widen the recorded kind (with
    ``widen`` False, only record new names' kinds). ``said``: the columns whose odd values
    were reported already (by an earlier batch of the same file); grown here."""
    counts: dict[str, Counter] = {}
    odd: dict[str, list] = {}  # per column, up to 3 values that are no number or date
    for document in attributes:
        for name, value in document.items():
            kind = value_kind(value)
            counts.setdefault(name, Counter())[kind] += 1
            if kind not in (AttributeKind.NUMERIC, AttributeKind.DATE, None) and not _code(value):
                examples = odd.setdefault(name, [])
                if len(examples) < 3 and value not in examples:
                    examples.append(value)
    if not counts:
        return
    kinds = {name: kind_of_counts(counted) for name, counted in counts.items()}
    _say_mostly_numbers(connection, counts, kinds, odd, set() if said is None else said)
    add, recorded_of, set_kind = _kind_statements(is_postgresql(connection))
    # Record new names (a name already recorded, maybe just now by another writer, stays) ...
    connection.execute(
        add,
        [{"name": name, "kind": kind or AttributeKind.CATEGORICAL} for name, kind in kinds.items()],
    )
    if not widen:
        return
    # ... then widen each recorded kind that this batch widens.
    for name, recorded in connection.execute(recorded_of, {"names": list(kinds)}).all():
        if (widened := merge_kinds(recorded, kinds[name])) != recorded:
            connection.execute(set_kind, {"old_name": name, "new_kind": widened, "now": utcnow()})
            shares = ", ".join(
                f"{n} {getattr(kind, 'value', 'empty')}" for kind, n in counts[name].most_common()
            )
            log.warning(  # for the whole catalog, from one file: an operator must hear of it
                "attribute %r is %s from now on, for every item (it was %s; kinds only "
                "widen): the values given here are %s",
                name,
                widened.value,
                recorded.value,
                shares,
            )


def _say_mostly_numbers(
    connection: Connection,
    counts: dict[str, Counter],
    kinds: dict,
    odd: dict[str, list],
    said: set[str],
) -> None:
    """Warn of a new column whose values are mostly numbers (or dates), half or more, but is
    recorded as categorical for the others: one German price "129,50" among 200 made the
    price categorical for every item, silently, and so did "16 GB" in a column `ram` of
    numbers (84% numbers; a 90% bar let it pass)."""
    mostly = {}  # name -> (what most values are, the kind they would make, how many)
    for name, counted in counts.items():
        if kinds[name] in (AttributeKind.NUMERIC, AttributeKind.DATE) or name in said:
            continue
        for usual, plural in ((AttributeKind.NUMERIC, "numbers"), (AttributeKind.DATE, "dates")):
            if counted[usual] * 2 >= counted.total() and name in odd:
                mostly[name] = (plural, usual, counted[usual])
                break
    if not mostly:
        return
    recorded = recorded_kinds(connection, mostly)  # a recorded name says nothing new
    for name, (plural, usual, n) in mostly.items():
        if name in recorded:
            continue
        said.add(name)
        total = counts[name].total()
        log.warning(
            "attribute %r is %s: %d of its %d values here are not %s (e.g. %s). %s. Kinds "
            "never narrow, so values corrected later leave it %s: to make it %s, ingest the "
            "corrected file under another column name (or into a new catalog)",
            name, kinds[name].value, total - n, total, plural,
            ", ".join(shown(value) for value in odd[name]), _fix_for(usual),
            kinds[name].value, usual.value,
        )  # fmt: skip


def _code(value) -> bool:
    """Whether ``value`` is digits with a leading zero (an EAN, a postcode): text by rule, and
    no number written wrong (a column of EANs was told to write each as a plain number)."""
    digits = isinstance(value, str) and value.isascii() and value.isdigit()
    return digits and len(value) > 1 and value[0] == "0"


def _fix_for(usual: AttributeKind) -> str:
    """How to write a column of ``usual`` values so that each is one."""
    if usual == AttributeKind.DATE:
        return "Write each as an ISO date (2024-03-10)"
    return (
        "Write each as a plain number: no unit (name the unit in the column instead, e.g. a "
        "column 'ram_gb' of 16, not 'ram' of '16 GB'), no thousands separator, a decimal "
        "point (a decimal comma?)"
    )


@functools.cache
def _kind_statements(postgres: bool) -> tuple[Insert, Select, Update]:
    """``record_attribute_kinds``'s statements, built once: add a name unless recorded; the
    recorded kinds of ``names``; set the kind of ``old_name`` to ``new_kind`` at ``now``."""
    table = ItemAttribute.__table__
    add = dialect_insert(postgres, ItemAttribute)
    recorded = select(table.c.name, table.c.kind).where(
        table.c.name.in_(bindparam("names", expanding=True))
    )
    widen = (
        update(table)
        .where(table.c.name == bindparam("old_name"))
        .values(kind=bindparam("new_kind"), updated_at=bindparam("now", type_=DateTime()))
    )
    return add.on_conflict_do_nothing(index_elements=["name"]), recorded, widen


def ingest_items(
    engine: Engine,
    path: str | Path,
    images_root: str | Path | None = None,
    options: IngestOptions | None = None,
) -> IngestReport:
    """Upsert items from ``path``; image paths are relative to ``images_root`` (default: the
    file's folder). Returns the report; rejected rows are in ``report.rejects_path``."""
    path = Path(path)
    options = options or IngestOptions()
    ingester = ItemIngester(Path(images_root) if images_root else path.parent, options.widen_kinds)
    return run_ingest(engine, path, ingester, options)
