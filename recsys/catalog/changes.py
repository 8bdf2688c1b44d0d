"""What a serving worker reads to follow the catalog: the items generation, the change log
since a mark, item rows as training reads them, and a snapshot of every item's stock.

Triggers stamp every write to ``items`` with the items generation it set (``ItemChange``,
migration 0004), in commit order, so "every change after generation g" is one indexed query,
and "nothing changed" is one primary-key read (``generation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, select

from recsys.catalog.models import AttributeKind, CatalogState, Item, ItemAttribute, ItemChange
from recsys.model.data import items_frame

_GENERATION = select(CatalogState.items_generation).where(CatalogState.id == 1)
_CHANGES = (
    select(ItemChange.external_id, ItemChange.deleted, ItemChange.content)
    .where(ItemChange.generation > bindparam("mark"))
    .order_by(ItemChange.generation, ItemChange.id)
)
_ROWS = select(Item.external_id, Item.title, Item.image_path, Item.in_stock, Item.attributes)


@dataclass(frozen=True)
class Changes:
    """The catalog's item changes after a mark, one entry per item (its last change wins)."""

    generation: int  # the mark to follow from next time
    removed: list[str]  # items deleted (last change a delete)
    written: list[str]  # items inserted or updated
    content: set[str]  # of ``written``, those whose title, image or attributes changed


@dataclass(frozen=True)
class StockSnapshot:
    """Every item's id, stock and last write, read at items generation ``generation``."""

    generation: int
    item_ids: np.ndarray  # (n,) str
    in_stock: np.ndarray  # (n,) bool
    updated_at: np.ndarray  # (n,) datetime64[us]


def generation(engine: Engine) -> int:
    """The items generation (one primary-key read)."""
    with engine.connect() as connection:
        return int(connection.scalar(_GENERATION) or 0)


def changes_since(engine: Engine, mark: int) -> Changes:
    """Every item change stamped after generation ``mark``, collapsed per item."""
    with engine.connect() as connection:
        now = int(connection.scalar(_GENERATION) or 0)
        if now == mark:
            return Changes(mark, [], [], set())
        rows = connection.execute(_CHANGES, {"mark": mark}).all()
    last: dict[str, bool] = {}
    content: set[str] = set()
    for external_id, deleted, changed in rows:  # few rows per second: the log of writes
        last.pop(external_id, None)  # re-inserted: ordered by its last change
        last[external_id] = bool(deleted)
        if changed and not deleted:
            content.add(external_id)
    removed = [item for item, deleted in last.items() if deleted]
    written = [item for item, deleted in last.items() if not deleted]
    return Changes(now, removed, written, content & set(written))


def stock_snapshot(engine: Engine) -> StockSnapshot:
    """The generation, then every item's stock and last write (so a write between the two
    reads is seen twice, never missed)."""
    with engine.connect() as connection:
        now = int(connection.scalar(_GENERATION) or 0)
        rows = connection.execute(select(Item.external_id, Item.in_stock, Item.updated_at)).all()
    ids, stock, updated = zip(*rows, strict=True) if rows else ((), (), ())
    return StockSnapshot(
        now,
        np.asarray(ids, dtype=str),
        np.asarray(stock, dtype=bool),
        np.asarray(updated, dtype="datetime64[us]"),
    )


def item_rows(engine: Engine, item_ids: Sequence[str]) -> pd.DataFrame:
    """The catalog rows of those ``item_ids`` it has, as ``recsys.model.data.read_catalog``
    frames them (item_id, title, image_path, in_stock and one column per attribute)."""
    with engine.connect() as connection:
        kinds = _kinds(connection)
        rows = connection.execute(
            _ROWS.where(Item.external_id.in_(bindparam("ids", expanding=True))),
            {"ids": list(item_ids)},
        ).all()
    return items_frame(rows, list(kinds))


def _kinds(connection: Connection) -> dict[str, str]:
    rows = connection.execute(select(ItemAttribute.name, ItemAttribute.kind)).all()
    return {name: AttributeKind(kind).value for name, kind in rows}


def written_after(snapshot: StockSnapshot, moment: datetime) -> np.ndarray:
    """(n,) bool: the snapshot's items last written after ``moment`` (naive UTC)."""
    return snapshot.updated_at > np.datetime64(moment, "us")
