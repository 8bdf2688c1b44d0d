"""Ingest items: ``item_id`` required; ``image``, ``title``, ``in_stock`` optional; every other
column is a tabular attribute whose kind is inferred and recorded in ``item_attributes``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from recsys.catalog.models import AttributeKind, Item, ItemAttribute
from recsys.ingest.pipeline import (
    IngestOptions,
    RowRejected,
    SeenKeys,
    key_hash,
    optional,
    parsed,
    required,
    run_ingest,
)
from recsys.ingest.readers import Record
from recsys.ingest.report import IngestReport, Reason, Reject
from recsys.ingest.values import (
    BadValue,
    attribute_value,
    column_kind,
    merge_kinds,
    parse_bool,
    parse_id,
)

KNOWN_COLUMNS = ("item_id", "image", "title", "in_stock")


@dataclass
class ItemRow:
    line: int
    external_id: str
    title: str | None
    image_path: str | None
    in_stock: bool
    attributes: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "image_path": self.image_path,
            "in_stock": self.in_stock,
            "attributes": self.attributes,
        }


class ItemIngester:
    name = "items"
    required = ("item_id",)

    def __init__(self, images_root: Path):
        self.images_root = Path(images_root).resolve()
        self.seen = SeenKeys()

    def parse(self, record: Record) -> ItemRow:
        attributes = {}
        for column, raw in record.values.items():
            if column in KNOWN_COLUMNS:
                continue
            value = parsed(raw, f"attribute {column!r}", lambda v, _c: attribute_value(v))
            if value is not None:
                attributes[column] = value
        return ItemRow(
            line=record.line,
            external_id=required(record, "item_id", parse_id),
            title=optional(record, "title", _parse_text),
            image_path=optional(record, "image", self._image_path),
            in_stock=optional(record, "in_stock", parse_bool, default=True),
            attributes=attributes,
            source=record.values,
        )

    def _image_path(self, value: Any, column: str) -> str:
        path = self.images_root / str(value).strip()
        if not path.is_file():
            raise RowRejected(
                Reason.MISSING_IMAGE,
                f"{column} {str(value).strip()!r} not found under {self.images_root}",
            )
        return str(path.resolve())

    def write(
        self, session: Session, rows: Sequence[ItemRow], report: IngestReport
    ) -> Iterable[Reject]:
        firsts = self.seen.first_occurrences([key_hash(row.external_id) for row in rows])
        unique = []
        for row, first in zip(rows, firsts, strict=True):
            if first:
                unique.append(row)
            else:
                detail = f"item_id {row.external_id!r} appears earlier in this file"
                yield Reject(row.line, Reason.DUPLICATE, detail, row.source)
        existing = {
            item.external_id: item
            for item in session.scalars(
                select(Item).where(Item.external_id.in_([row.external_id for row in unique]))
            )
        }
        new = []
        for row in unique:
            item = existing.get(row.external_id)
            if item is None:
                new.append({"external_id": row.external_id, **row.fields()})
            elif _differs(item, row.fields()):
                for name, value in row.fields().items():
                    setattr(item, name, value)
                report.updated += 1
            else:
                report.unchanged += 1
        if new:
            session.execute(insert(Item), new)
            report.inserted += len(new)
        record_attribute_kinds(session, [row.attributes for row in unique])


def _differs(item: Item, values: dict[str, Any]) -> bool:
    return any(getattr(item, name) != value for name, value in values.items())


def _parse_text(value: Any, column: str) -> str:
    text = str(value).strip()
    if "\ufffd" in text:
        raise BadValue(f"{column} is not valid UTF-8")
    return text


def record_attribute_kinds(session: Session, attributes: Sequence[dict[str, Any]]) -> None:
    """Infer each attribute column's kind in this batch and widen the recorded kind."""
    columns: dict[str, list[Any]] = {}
    for row in attributes:
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    if not columns:
        return
    recorded = {
        attribute.name: attribute
        for attribute in session.scalars(
            select(ItemAttribute).where(ItemAttribute.name.in_(columns))
        )
    }
    for name, values in columns.items():
        kind = column_kind(values)
        attribute = recorded.get(name)
        if attribute is None:
            session.add(ItemAttribute(name=name, kind=kind or AttributeKind.CATEGORICAL))
        elif (widened := merge_kinds(attribute.kind, kind)) != attribute.kind:
            attribute.kind = widened


def ingest_items(
    engine: Engine,
    path: str | Path,
    images_root: str | Path | None = None,
    options: IngestOptions | None = None,
) -> IngestReport:
    """Upsert items from ``path``; image paths are relative to ``images_root`` (default: the
    file's folder). Returns the report; rejected rows are in ``report.rejects_path``."""
    path = Path(path)
    ingester = ItemIngester(Path(images_root) if images_root else path.parent)
    return run_ingest(engine, path, ingester, options or IngestOptions())
