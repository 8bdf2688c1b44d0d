"""What a serving worker reads to follow the catalog: the items generation, the change log
since a mark, item rows as training reads them, and a snapshot of every item's stock.

Triggers stamp every write to ``items`` with the items generation it set (``ItemChange``,
migration 0004), in commit order, so "every change after generation g" is one indexed query,
and "nothing changed" is one primary-key read (``generation``).

The log is pruned (``prune_changes``, ``recsys db prune-changes``, and ``recsys train`` after
it activates a bundle): rows older than a ``Retention`` go, and ``catalog_state`` records the
highest generation pruned (``changes_pruned_through``). A reader whose mark is below it cannot
know every change since its mark; ``changes_since`` then says ``complete=False`` and the
reader starts afresh from the whole catalog, as at a worker's start.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, case, delete, func, select, update

from recsys.catalog.models import (
    CatalogState,
    Item,
    ItemChange,
    utcnow,
)
from recsys.model.data import ITEM_ROWS, attribute_kinds, items_frame

_GENERATION = select(CatalogState.items_generation).where(CatalogState.id == 1)
_PRUNED = select(CatalogState.changes_pruned_through).where(CatalogState.id == 1)
_CHANGES = (
    select(ItemChange.external_id, ItemChange.deleted, ItemChange.content, ItemChange.generation)
    .where(ItemChange.generation > bindparam("mark"))
    .order_by(ItemChange.generation, ItemChange.id)
)


@dataclass(frozen=True)
class Changes:
    """The catalog's item changes after a mark, one entry per item (its last change wins)."""

    generation: int  # the mark to follow from next time
    removed: list[str]  # items deleted (last change a delete)
    written: list[str]  # items inserted or updated
    content: set[str]  # of ``written``, those whose title, image or attributes changed
    # False: the log was pruned past the mark, so it may lack changes since; start afresh
    complete: bool = True
    # item -> the generation of its last change (every item of ``removed`` and ``written``)
    last_at: dict[str, int] = field(default_factory=dict)
    # item of ``content`` -> the generation of its first content change since its last removal
    content_at: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Retention:
    """How much of the change log ``prune_changes`` keeps: a row goes only when it is both
    older than ``keep_days`` and more than ``keep_generations`` generations behind the
    catalog. A worker follows the log every second and a restarted or swapped one rebuilds
    from the catalog, so only a stalled reader needs old rows; one that falls behind what is
    kept starts afresh (slower, never wrong)."""

    keep_days: float = 7.0  # a week: a worker paused or cut off that long still catches up
    keep_generations: int = 100_000  # ~7 MB of log on SQLite; a quiet catalog keeps its history

    def __post_init__(self) -> None:
        if self.keep_days < 0 or self.keep_generations < 0:
            raise ValueError(
                "keep_days and keep_generations must be >= 0, got "
                f"{self.keep_days} and {self.keep_generations}"
            )


@dataclass(frozen=True)
class Pruned:
    """What ``prune_changes`` did (or, in a dry run, would do)."""

    generation: int  # the catalog's items generation when it read
    previous: int  # the pruned-through mark before
    through: int  # the pruned-through mark after (dry run: would be): rows up to it go
    deleted: int  # log rows deleted (dry run: that would be)
    kept: int  # log rows left


# Items read per step of a stock snapshot. Each step's C work (the fetch, the arrays) holds
# the GIL for milliseconds; 10^6 items read at once held it for seconds, and a service worker
# building a new bundle's delta answered nothing meanwhile (p99 2-5 s during a reload at 10^6
# items, scripts/bench_service.py --existing).
SNAPSHOT_STEP = 10_000


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
        return items_generation(connection)


def items_generation(connection: Connection) -> int:
    """The items generation as ``connection`` sees it: it moves with every item written,
    changed or deleted (in the same transaction)."""
    return int(connection.scalar(_GENERATION) or 0)


def pruned_through(connection: Connection) -> int:
    """The highest generation whose log rows may be gone (read it after the rows it vouches
    for: a prune between the two reads then shows, instead of going unnoticed)."""
    return int(connection.scalar(_PRUNED) or 0)


def changes_since(engine: Engine, mark: int) -> Changes:
    """Every item change stamped after generation ``mark``, collapsed per item; when the log
    was pruned past ``mark``, or the catalog is behind it (restored from a backup: the items
    written since are gone, those removed since are back), ``complete`` is False and the
    caller must start afresh."""
    with engine.connect() as connection:
        now = items_generation(connection)
        if now == mark:
            return Changes(mark, [], [], set())
        if now < mark:
            return Changes(now, [], [], set(), complete=False)
        rows = connection.execute(_CHANGES, {"mark": mark}).all()
        if mark < pruned_through(connection):
            return Changes(now, [], [], set(), complete=False)
    last: dict[str, bool] = {}
    last_at: dict[str, int] = {}
    content_at: dict[str, int] = {}
    for external_id, deleted, changed, at in rows:  # few rows per second: the log of writes
        last.pop(external_id, None)  # re-inserted: ordered by its last change
        last[external_id] = bool(deleted)
        last_at[external_id] = int(at)
        if deleted:
            content_at.pop(external_id, None)
        elif changed:
            content_at.setdefault(external_id, int(at))
    removed = [item for item, deleted in last.items() if deleted]
    written = [item for item, deleted in last.items() if not deleted]
    return Changes(now, removed, written, set(content_at), True, last_at, content_at)


def prune_changes(
    engine: Engine,
    retention: Retention | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Pruned:
    """Delete the log rows past ``retention`` (one DELETE) and advance the pruned-through mark
    in the same transaction; ``now`` (naive UTC) is the clock the age is measured by."""
    with engine.begin() as connection:
        generation, previous, through = _prune_point(connection, retention or Retention(), now)
        old = ItemChange.generation <= through
        if dry_run:
            deleted = connection.scalar(select(func.count(ItemChange.id)).where(old)) or 0
        else:
            deleted = connection.execute(delete(ItemChange).where(old)).rowcount
            mark = CatalogState.changes_pruned_through  # another prune may have gone further
            connection.execute(
                update(CatalogState)
                .where(CatalogState.id == 1)
                .values(changes_pruned_through=case((mark < through, through), else_=mark))
            )
        kept = connection.scalar(select(func.count(ItemChange.id))) or 0
    return Pruned(generation, previous, through, deleted, kept - deleted if dry_run else kept)


def _prune_point(
    connection: Connection, retention: Retention, now: datetime | None
) -> tuple[int, int, int]:
    """The items generation, the pruned-through mark, and the generation to prune through:
    below every row logged within ``keep_days`` and ``keep_generations`` of the catalog."""
    state = select(CatalogState.items_generation, CatalogState.changes_pruned_through)
    generation, previous = connection.execute(state.where(CatalogState.id == 1)).one()
    now = now or utcnow()
    # a retention longer than the calendar (keep_days=1e10) keeps every row by age
    days = min(retention.keep_days, (now - datetime.min).days)
    cutoff = now - timedelta(days=days)
    recent = select(func.min(ItemChange.generation)).where(ItemChange.changed_at >= cutoff)
    first_recent = connection.scalar(recent)
    by_age = generation if first_recent is None else first_recent - 1
    return generation, previous, max(previous, min(generation - retention.keep_generations, by_age))


def stock_snapshot(engine: Engine) -> StockSnapshot:
    """The generation, then every item's stock and last write (so a write between the two
    reads is seen twice, never missed).

    Read in steps of ``SNAPSHOT_STEP`` rows, letting other threads run between steps: a
    service worker takes this snapshot for each new bundle while its request threads keep
    answering from the old one.
    """
    query = select(Item.external_id, Item.in_stock, Item.updated_at)
    ids, stock, updated = [], [], []
    with engine.connect() as connection:
        now = items_generation(connection)
        result = connection.execution_options(yield_per=SNAPSHOT_STEP).execute(query)
        for rows in result.partitions():
            step_ids, step_stock, step_updated = zip(*rows, strict=True)
            ids.append(np.asarray(step_ids, dtype=str))
            stock.append(np.asarray(step_stock, dtype=bool))
            updated.append(np.asarray(step_updated, dtype="datetime64[us]"))
            time.sleep(0)  # the GIL to the request threads
    if not ids:
        return StockSnapshot(
            now,
            np.zeros(0, dtype=str),
            np.zeros(0, dtype=bool),
            np.zeros(0, dtype="datetime64[us]"),
        )
    return StockSnapshot(now, np.concatenate(ids), np.concatenate(stock), np.concatenate(updated))


def item_rows(engine: Engine, item_ids: Sequence[str]) -> pd.DataFrame:
    """The catalog rows of those ``item_ids`` it has, as ``recsys.model.data.read_catalog``
    frames them (item_id, title, image_path, in_stock and one column per attribute), in the
    order of ``item_ids`` (a full live catalog keeps the first items it is given)."""
    with engine.connect() as connection:
        kinds = attribute_kinds(connection)
        rows = connection.execute(
            ITEM_ROWS.where(Item.external_id.in_(bindparam("ids", expanding=True))),
            {"ids": list(item_ids)},
        ).all()
    frame = items_frame(rows, list(kinds))
    place = {item: k for k, item in enumerate(item_ids)}
    order = np.argsort([place[item] for item in frame["item_id"].tolist()], kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def stock_rows(engine: Engine, item_ids: Sequence[str]) -> pd.DataFrame:
    """The stock of those ``item_ids`` the catalog has (item_id, in_stock)."""
    query = select(Item.external_id, Item.in_stock).where(
        Item.external_id.in_(bindparam("ids", expanding=True))
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"ids": list(item_ids)}).all()
    return pd.DataFrame(
        {
            "item_id": np.array([row[0] for row in rows], dtype=object),
            "in_stock": np.array([bool(row[1]) for row in rows], dtype=bool),
        }
    )


def written_after(snapshot: StockSnapshot, moment: datetime) -> np.ndarray:
    """(n,) bool: the snapshot's items last written after ``moment`` (naive UTC)."""
    return snapshot.updated_at > np.datetime64(moment, "us")
