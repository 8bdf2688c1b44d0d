"""Erasing users: a shopper's right to have their data removed.

``erase_users`` deletes users and every event of theirs from the catalog, in one transaction,
and records each erasure (``Erasure``: the SHA-256 of the id, never the id, and the time).
The record keeps the erasure in force:

- an event of theirs from before the erasure is refused at ingest (``erased_before``,
  reason ``erased_user``), so re-ingesting an old file does not bring them back; so is one
  dated up to a day after it (``taken_back``: an event may be dated that far ahead of the
  clock). A later event (or an undated one the HTTP API stamps with the time it stores it)
  is taken, and they start again as a new shopper;
- training from an event folder leaves out the same events (``without_erased``);
- a feed whose bundle was trained before the erasure does not use the bundle's history of
  them (``recsys.serving.fresh_history``): a user never seen, or their events since alone.

What serves is held to it at once, on every worker, from the next request. The next
``recsys train`` leaves them out of the model; until then the bundle files on disk still hold
their factors and history (and their events shaped the items' factors), so retrain, then
remove the older bundles (``recsys bundles gc --keep 0``), to finish an erasure. On SQLite the
deleted rows' pages are overwritten (``secure_delete``) and the write-ahead log is truncated
when no reader holds it; on PostgreSQL they stay in the table's files until its next vacuum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, delete, exists, insert, select, text

from recsys.catalog.models import (
    Erasure,
    Interaction,
    Item,
    ModelBundle,
    User,
    user_key,
    utcnow,
)
from recsys.errors import InvalidInput
from recsys.ingest.bulk import write_transaction
from recsys.ingest.values import FUTURE_SLACK, BadValue, parse_id

# Users erased per statement (SQLite binds at most 32,766 values in one).
BATCH = 1_000


@dataclass(frozen=True)
class Erased:
    """What an erasure removed: the users found (in the order asked), their events, and the
    ids the catalog did not have."""

    users: list[str]
    events: int
    unknown: list[str]


def erase_users(engine: Engine, user_ids: Sequence[Any]) -> Erased:
    """Delete the users ``user_ids`` and all their events, and record their erasure (also of
    ids the catalog does not have: their events may come later, or train from a folder), all
    or none; ``InvalidInput`` naming the first id that is no valid id (nothing is deleted
    then)."""
    ids = []
    for position, value in enumerate(user_ids):
        try:
            ids.append(parse_id(value, f"user_ids[{position}]"))
        except BadValue as exc:
            raise InvalidInput(f"{exc}; nothing was erased") from None
    ids = list(dict.fromkeys(ids))

    def work(connection: Connection) -> Erased:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # the freed pages are overwritten, not left readable in the file
            connection.execute(text("PRAGMA secure_delete = ON"))
        found, events, now = {}, 0, utcnow()
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            hashes = [user_key(name) for name in batch]
            connection.execute(delete(Erasure).where(Erasure.user_key.in_(hashes)))
            connection.execute(insert(Erasure), [{"user_key": h, "erased_at": now} for h in hashes])
            rows = connection.execute(
                select(User.id, User.external_id).where(User.external_id.in_(batch))
            ).all()
            keys = [key for key, _ in rows]
            found.update((name, key) for key, name in rows)
            if keys:  # the events explicitly: counted, and not left to the engine's cascade
                gone = connection.execute(delete(Interaction).where(Interaction.user_id.in_(keys)))
                events += gone.rowcount
                connection.execute(delete(User).where(User.id.in_(keys)))
        if sqlite:
            connection.execute(text("PRAGMA secure_delete = OFF"))
        erased = [name for name in ids if name in found]
        return Erased(erased, events, [name for name in ids if name not in found])

    erased = write_transaction(engine, work)
    if engine.dialect.name == "sqlite":
        _truncate_log(engine)
    return erased


def user_record(engine: Engine, user_id: Any) -> dict[str, Any]:
    """What the catalog and the registered bundles hold of a user (a subject access
    request): their row's time, every event of theirs (oldest first), their latest erasure,
    and the bundles whose files still hold their factors and history."""
    try:
        name = parse_id(user_id, "user_id")
    except BadValue as exc:
        raise InvalidInput(str(exc)) from None
    with engine.connect() as connection:
        created = connection.execute(
            select(User.created_at).where(User.external_id == name)
        ).scalar()
        events = connection.execute(
            select(
                Item.external_id, Interaction.event, Interaction.weight, Interaction.timestamp,
                Interaction.created_at,
            )
            .join(Interaction, Interaction.item_id == Item.id)
            .join(User, Interaction.user_id == User.id)
            .where(User.external_id == name)
            .order_by(Interaction.timestamp, Interaction.id)
        ).all()  # fmt: skip
        erased = connection.execute(
            select(Erasure.erased_at).where(Erasure.user_key == user_key(name))
        ).scalar()
        bundles = connection.execute(
            select(ModelBundle.version, ModelBundle.path, ModelBundle.is_active).order_by(
                ModelBundle.id.desc()
            )
        ).all()
    from recsys.model.bundle import located  # the model's code only when asked

    holding = [
        {"version": version, "active": active}
        for version, path, active in bundles
        if np.any(_bundle_users(located(path, version)) == name)
    ]
    return {
        "user_id": name,
        "in_catalog": created is not None,
        "created_at": said_at(created),
        "erased_at": said_at(erased),
        "events": [
            {
                "item_id": item,
                "event": event,
                "weight": weight,
                # as stored: two events 0.123 s apart are two events, and looked the same
                "timestamp": said_at(at, "auto"),
                "stored_at": said_at(stored),
            }
            for item, event, weight, at, stored in events
        ],
        "bundles": holding,
    }


def _bundle_users(directory: str | Path) -> np.ndarray:
    """A bundle's user ids, read mapped (not loaded whole); none for a bundle without users
    or one removed from disk."""
    try:
        return np.load(Path(directory) / "cf_user_ids.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return np.zeros(0, dtype=str)


def said_at(moment: datetime | None, timespec: str = "seconds") -> str | None:
    """A stored time as messages and records show it: "2026-12-07 17:10:50" (None: none)."""
    return None if moment is None else moment.isoformat(sep=" ", timespec=timespec)


def erased_in_bundle(engine: Engine, directory: str | Path, moment: datetime) -> int:
    """How many of a bundle's users were erased after ``moment`` (naive UTC; the bundle's
    data was read then): its files still hold their data. Hashes the bundle's user ids only
    when there are such erasures."""
    with engine.connect() as connection:
        keys = connection.execute(
            select(Erasure.user_key).where(Erasure.erased_at > moment)
        ).scalars()
        erased = set(keys)
    if not erased:
        return 0
    return sum(user_key(str(name)) in erased for name in _bundle_users(directory))


def _truncate_log(engine: Engine) -> None:
    """Copy SQLite's write-ahead log into the file and empty it: its frames hold the pages
    as they were before the delete. A reader still holding them keeps it (busy): then the
    log is emptied by a later checkpoint."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def taken_back(
    erased: np.ndarray, moments: np.ndarray, stamped: np.ndarray | bool = False
) -> np.ndarray:
    """(B,) bool: the events an erasure refuses, of ``erased`` (B,) their users' latest
    erasure (``erased_before``; NaT: never) and ``moments`` (B,) their times (NaT: none):
    those of an erased user dated up to ``FUTURE_SLACK`` after the erasure, or undated
    (nothing shows they came after); not those ``stamped`` (B,) with the time they were
    stored by the door that stores them now (the HTTP API's undated events). The slack is
    how far ahead of the clock an event may be dated: an event stored before the erasure
    from a producer whose clock ran 20 hours fast, delivered again, brought the shopper
    back. One rule for every door: ingest, HTTP, training from an event folder."""
    window = erased + np.timedelta64(FUTURE_SLACK)
    return ~np.isnat(erased) & (
        np.isnat(moments) | (moments <= erased) | ((moments <= window) & ~np.asarray(stamped))
    )


def erased_before(connection: Connection, users: pa.Array) -> np.ndarray:
    """(B,) per user id of ``users``, when they were last erased (datetime64[us], NaT for
    users never erased): one query on the (small) erasures table, none when it is empty."""
    when = np.full(len(users), np.datetime64("NaT"), dtype="datetime64[us]")
    if not len(users) or not connection.execute(select(exists().select_from(Erasure))).scalar():
        return when
    names = pc.unique(users)
    keys = [user_key(name) for name in names.to_pylist()]
    found = {}
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        rows = connection.execute(
            select(Erasure.user_key, Erasure.erased_at).where(Erasure.user_key.in_(batch))
        )
        found.update(rows.all())
    if found:
        erased = np.array([found.get(key) for key in keys], dtype="datetime64[us]")
        when = erased[pc.index_in(users, names).to_numpy()]
    return when
