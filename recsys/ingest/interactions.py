"""Ingest interactions: ``user_id`` and ``item_id`` required; ``timestamp`` (ISO 8601 or epoch
seconds), ``event`` and ``weight`` or ``rating`` optional. Users are created on first sight;
an interaction naming an item the catalog does not have is rejected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine

from recsys.catalog.changes import items_generation
from recsys.catalog.models import Item, User, utcnow
from recsys.errors import InvalidInput
from recsys.ingest.bulk import (
    WRITTEN,
    ensure_users,
    hold_events_lock,
    lookup_ids,
    upsert_interactions,
    write_transaction,
)
from recsys.ingest.known import KnownKeys
from recsys.ingest.pipeline import (
    IngestOptions,
    Problems,
    SeenKeys,
    accepted,
    first_problems,
    refuse,
    run_ingest,
    unknown_fields,
)
from recsys.ingest.readers import Batch, Record, batch_from_records
from recsys.ingest.report import IngestReport, Reason
from recsys.ingest.users import erased_before, said_at, taken_back
from recsys.ingest.values import (
    FUTURE_SLACK,
    event_column,
    id_column,
    is_missing,
    timestamp_column,
    weight_column,
)

DEFAULT_EVENT = "interaction"
RATING_EVENT = "rating"


# The fields an event has: a file's other columns, or an event's other keys, are refused
# naming them (a "Timestamp" or "event_time" column was ignored, every time stored empty).
COLUMNS = ("user_id", "item_id", "event", "weight", "rating", "timestamp")


class InteractionIngester:
    name = "interactions"
    required = ("user_id", "item_id")
    known = COLUMNS
    attributes = False

    def __init__(self, stamp: datetime | None = None) -> None:
        # the time the HTTP API dates undated events with: such an event was sent now
        self.stamp = stamp
        self.seen = SeenKeys()
        # read by ``look_up`` only: a whole file's batches, not one request's events
        self.known_items, self.known_users = KnownKeys(Item), KnownKeys(User)

    def parse(self, batch: Batch) -> tuple[pa.Table, Problems]:
        """Valid rows (row, user, item, event, weight, timestamp, dedup_key, hash) and the
        others' problems."""
        n, column = len(batch), batch.columns.get
        weight = weight_column(column("weight"), n, "weight")
        rating = weight_column(column("rating"), n, "rating")
        user = id_column(column("user_id"), n, "user_id")
        item = id_column(column("item_id"), n, "item_id")
        event = event_column(column("event"), n)
        moment = timestamp_column(column("timestamp"), n)
        problems = unknown_fields(batch, COLUMNS)
        problems |= first_problems(
            [
                ("weight", weight, False),
                ("rating", rating, False),
                ("user_id", user, True),
                ("item_id", item, True),
                ("event", event, False),
                ("timestamp", moment, False),
            ]
        )
        for row in np.flatnonzero(~weight.missing & ~rating.missing).tolist():
            problems.setdefault(
                row,
                (
                    Reason.INVALID_VALUE,
                    "weight and rating both given: send one (a rating is the weight of a "
                    "rating event)",
                ),
            )
        default = np.where(weight.missing & ~rating.missing, RATING_EVENT, DEFAULT_EVENT)
        rows = pa.table(
            {
                "row": np.arange(n),
                "user": user.values,
                "item": item.values,
                "event": pc.if_else(pa.array(event.missing), pa.array(default), event.values),
                "weight": pc.coalesce(weight.values, rating.values, 1.0),
                "timestamp": moment.values,
            }
        )
        rows = rows.filter(pa.array(accepted(n, problems)))
        keys, hashes = dedup_keys(rows)
        rows = rows.append_column("dedup_key", keys).append_column("hash", pa.array(hashes))
        return rows, problems

    def look_up(self, reader: Connection, rows: pa.Table) -> ReadAhead:
        """The ids the catalog has for the rows' items and users, read on a connection of
        their own ahead of the write's transaction (the pipeline's parse thread)."""
        generation = items_generation(reader)  # first: an item write after it then shows
        items = self.known_items.find(reader, rows["item"].combine_chunks(), generation)
        users = self.known_users.find(reader, rows["user"].combine_chunks())
        return ReadAhead(rows, items, users, generation)

    def write(
        self, connection: Connection, batch: pa.Table | ReadAhead, report: IngestReport
    ) -> Problems:
        """Resolve ids, drop unknown items and repeats, upsert the rest: set-wise."""
        staged = self.stage(connection, batch)
        staged.count(report, *self.write_staged(connection, staged))
        return staged.problems

    def stage(
        self,
        connection: Connection,
        batch: pa.Table | ReadAhead,
        pending: pd.Series | None = None,
    ) -> Staged:
        """``write`` but the events' own write (``write_staged``): ids resolved, unknown
        items and repeats refused, new users added. ``pending``: name -> id of users added
        by a transaction that commits before this one writes its events (the previous
        batch's, when the pipeline overlaps batches), taken as found."""
        hold_events_lock(connection)  # before the events are stamped (``settled_writes``)
        rows, known_items, known_users = _known_ids(connection, batch)
        item_ids = lookup_ids(connection, Item, rows["item"].combine_chunks(), known_items)
        unknown = pa.array(item_ids < 0)
        details = [
            f"item_id {item!r} is not in the catalog (never ingested, or removed); ingest the "
            "item first, or leave out events of removed items"
            for item in rows["item"].filter(unknown).to_pylist()
        ]
        problems: Problems = {}
        refuse(problems, rows["row"].filter(unknown).to_numpy(), Reason.UNKNOWN_ITEM, details)
        rows = rows.append_column("item_id", pa.array(item_ids))
        rows = rows.append_column("user_id", pa.array(known_users)).filter(pc.invert(unknown))
        rows = _after_erasures(connection, rows, problems, self.stamp)
        weights = rows["weight"].to_numpy()
        first, earlier = self.seen.first_occurrences(rows["hash"].to_numpy(), weights)
        # the same row again (its weight too) is the same event delivered twice: counted as
        # unchanged, as a second delivery over HTTP is, where it was a reject (exit 1)
        again = ~first & (earlier == weights)
        other = ~first & ~again
        details = [
            "the same user, item, event and timestamp appear earlier in this file with weight "
            f"{kept:g}; the first is kept, and this row's weight ({weight:g}) is not stored (to "
            "count both, sum them into one row or give each its own time)"
            for kept, weight in zip(earlier[other].tolist(), weights[other].tolist(), strict=True)
        ]
        refuse(problems, rows["row"].to_numpy()[other], Reason.DUPLICATE, details)
        staged = self._written(connection, rows.filter(pa.array(first)), problems, pending)
        return replace(staged, repeated=int(again.sum()))

    def write_staged(self, connection: Connection, staged: Staged) -> tuple[int, int]:
        """Upsert the staged events in ``stage``'s transaction -> (inserted, updated)."""
        return upsert_interactions(connection, staged.rows)

    def _written(
        self, connection: Connection, rows: pa.Table, problems: Problems, pending: pd.Series | None
    ) -> Staged:
        now = utcnow()
        names, known = rows["user"].combine_chunks(), rows["user_id"].to_numpy().copy()
        missing = np.flatnonzero(known < 0)
        # Python strings only for the rows of users not found (most rows are known users)
        new_names = names.take(pa.array(missing)).to_numpy(zero_copy_only=False)
        if pending is not None and len(pending) and len(missing):
            known[missing] = pending.reindex(new_names).fillna(-1).to_numpy(np.int64)
            still = known[missing] < 0
            missing, new_names = missing[still], new_names[still]
        user_ids = ensure_users(connection, names, now, known)
        added = None  # most batches (an HTTP event of a known user) add none
        if len(missing):
            added = pd.Series(user_ids[missing], index=new_names, dtype=np.int64)
            added = added[~added.index.duplicated()]
        rows = rows.set_column(rows.column_names.index("user_id"), "user_id", pa.array(user_ids))
        created = pa.array(np.full(rows.num_rows, np.datetime64(now, "us")))
        rows = rows.append_column("created_at", [created]).select(list(WRITTEN))
        return Staged(rows, problems, added)


def _after_erasures(
    connection: Connection, rows: pa.Table, problems: Problems, stamp: datetime | None = None
) -> pa.Table:
    """The rows but the events of erased users from before their erasure (refused), or dated
    within a day after it (``taken_back``): an old file ingested again does not bring an
    erased shopper back. An undated row of theirs is refused too (nothing shows it came
    after), but for those the HTTP API dated ``stamp``. Their later events are kept, under a
    user added anew (a key read before the erasure is gone)."""
    erased = erased_before(connection, rows["user"].combine_chunks())
    if np.isnat(erased).all():
        return rows
    moments = rows["timestamp"].combine_chunks().cast(pa.timestamp("us"))
    moments = moments.to_numpy(zero_copy_only=False).astype("datetime64[us]")
    stamped = False if stamp is None else moments == np.datetime64(stamp, "us")
    was, gone = ~np.isnat(erased), taken_back(erased, moments, stamped)
    details = [  # not naming the user: the rejects file keeps no erased shopper's data
        f"its user was erased at {said_at(when)} UTC; "
        + (
            "an undated event of theirs is not taken back (nothing shows it came after)"
            if moment is None
            else f"their events dated before {said_at(when + FUTURE_SLACK)} UTC are not taken "
            "back (a clock up to a day fast could have dated an older event so)"
        )
        for when, moment in zip(erased[gone].tolist(), moments[gone].tolist(), strict=True)
    ]
    refuse(problems, rows["row"].filter(pa.array(gone)).to_numpy(), Reason.ERASED_USER, details)
    keys = np.where(was & ~gone, -1, rows["user_id"].to_numpy())
    rows = rows.set_column(rows.column_names.index("user_id"), "user_id", pa.array(keys))
    return rows.filter(pa.array(~gone))


@dataclass(frozen=True)
class Staged:
    """A batch ready for its events' write, in its open transaction (``stage``)."""

    rows: pa.Table  # the ``WRITTEN`` columns
    problems: Problems
    users: pd.Series | None  # new users of the batch (name -> id), added or found now; None: none
    repeated: int = 0  # rows the same as one earlier in the file: unchanged, not written

    def count(self, report: IngestReport, inserted: int, updated: int) -> None:
        report.inserted += inserted
        report.updated += updated
        report.unchanged += self.rows.num_rows - inserted - updated + self.repeated


@dataclass(frozen=True)
class ReadAhead:
    """Parsed rows with the ids ``look_up`` read for them ahead of their write (-1: none then).

    The item ids hold while the items generation is still ``generation``; after any item
    write the write looks them all up again (an item deleted in between must not be written
    to). Users are never deleted, so the user ids found hold.
    """

    rows: pa.Table
    item_ids: np.ndarray  # (B,)
    user_ids: np.ndarray  # (B,)
    generation: int


def _known_ids(
    connection: Connection, batch: pa.Table | ReadAhead
) -> tuple[pa.Table, np.ndarray | None, np.ndarray]:
    """(rows, item ids to trust or None, user ids to trust: -1 where to look up)."""
    if not isinstance(batch, ReadAhead):
        return batch, None, np.full(batch.num_rows, -1, np.int64)
    current = items_generation(connection) == batch.generation
    return batch.rows, batch.item_ids if current else None, batch.user_ids


def dedup_keys(rows: pa.Table) -> tuple[pa.Array, np.ndarray]:
    """(B,) hex digest of (user, item, event, timestamp) per row, and its first 64 bits.

    The digest is stored (``interactions.dedup_key``), so it stays the 128-bit BLAKE2b of
    the fields joined by U+001F that every earlier ingest wrote; hashlib has no batch form,
    so this is the one step that runs once per row.
    """
    moments = iso_moments(rows["timestamp"].combine_chunks())
    joined = pc.binary_join_element_wise(
        rows["user"], rows["item"], rows["event"], moments, "\x1f"
    ).cast(pa.binary())
    digests = [blake2b(key, digest_size=16).hexdigest() for key in joined.to_pylist()]
    hashes = np.frombuffer(bytes.fromhex("".join(digests)), dtype=">u8")[::2]
    return pa.array(digests, pa.string()), hashes.astype(np.uint64)


def iso_moments(timestamps: pa.Array) -> pa.Array:
    """``datetime.isoformat()`` of each timestamp, "" where there is none."""
    text = timestamps.cast(pa.timestamp("us")).cast(pa.string())  # "2024-02-01 10:00:00.000000"
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    whole = pc.equal(pc.utf8_slice_codeunits(text, 20), "000000")
    return pc.if_else(whole, pc.utf8_slice_codeunits(text, 0, 19), text).fill_null("")


def ingest_interactions(
    engine: Engine, path: str | Path, options: IngestOptions | None = None
) -> IngestReport:
    """Add interactions from ``path``; re-ingesting the same file changes nothing."""
    return run_ingest(engine, Path(path), InteractionIngester(), options or IngestOptions())


@dataclass(frozen=True)
class RejectedEvent:
    """An event ``record_interactions(..., skip_rejected=True)`` did not store."""

    index: int  # its place in the batch
    reason: str  # ``Reason``'s value, as a rejects file names it
    message: str


@dataclass
class RecordedEvents:
    inserted: int
    updated: int
    unchanged: int
    users: list[str]
    rejected: list[RejectedEvent] = field(default_factory=list)


def record_interactions(
    engine: Engine,
    events: Sequence[dict[str, Any]],
    now: datetime | None = None,
    skip_rejected: bool = False,
) -> RecordedEvents:
    """Store a batch of events (dicts with the file columns) in one transaction, all or none.

    An event without a timestamp (absent, None or blank) is stamped ``now`` (default: the
    current UTC time), so two views of one item in two requests are two events. The same
    event (user, item, event, timestamp) twice in one batch is stored once; with two different
    weights the batch is refused. A bad event raises ``InvalidInput`` naming
    ``events[i].<field>`` and nothing is stored. With ``skip_rejected``, the others are
    stored and the bad ones listed (``RecordedEvents.rejected``): for a forwarder that
    delivers batches as they come, where an event of an item removed since, or of a shopper
    erased since, held up every later event. Concurrent calls that add the same user or
    the same event each succeed and leave one row.
    """
    moment = now or utcnow()
    if moment.tzinfo is not None:  # stored times are naive UTC
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    batch = batch_from_records(
        [
            Record(position, _stamped(event, moment.isoformat()))
            for position, event in enumerate(events)
        ]
    )
    rows, problems = InteractionIngester().parse(batch)
    problems = problems | conflicting_repeats(rows)
    if not skip_rejected:
        _refuse(problems)

    def write(connection: Connection) -> tuple[IngestReport, Problems]:
        report = IngestReport(Path("<api>"))
        found = InteractionIngester(moment).write(connection, rows, report)
        # a repeat is stored once; one with another weight is in ``problems`` already
        found = {row: p for row, p in found.items() if p[0] != Reason.DUPLICATE}
        if not skip_rejected:
            _refuse(found)  # raising inside the transaction rolls it back
        return report, found

    report, found = write_transaction(engine, write)
    problems |= found
    stored = ~np.isin(rows["row"].to_numpy(), list(problems))
    users = sorted(set(rows["user"].filter(pa.array(stored)).to_pylist()))
    rejected = [RejectedEvent(row, *problem) for row, problem in sorted(problems.items())]
    return RecordedEvents(report.inserted, report.updated, report.unchanged, users, rejected)


def _stamped(event: dict[str, Any], stamp: str) -> dict[str, Any]:
    """The event's given values, with ``stamp`` as its timestamp unless it has one."""
    return {"timestamp": stamp, **{k: v for k, v in event.items() if not is_missing(v)}}


def conflicting_repeats(rows: pa.Table) -> Problems:
    """Rows with the same (user, item, event, timestamp) as an earlier row of the batch but
    another weight: storing either weight would silently drop the other."""
    weights, positions = rows["weight"].to_numpy(), rows["row"].to_numpy()
    # the first row of each key (a stable sort keeps the earliest of equal keys first)
    keys = rows["dedup_key"].to_numpy(zero_copy_only=False)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    earliest = first[inverse]  # per row, the first row with its key
    clash = np.flatnonzero(weights != weights[earliest])
    details = [
        f"the same user, item, event and timestamp as events[{earlier}] with another weight "
        f"({weight:g}, not {earlier_weight:g}); send one of them"
        for weight, earlier, earlier_weight in zip(
            weights[clash].tolist(),
            positions[earliest[clash]].tolist(),
            weights[earliest[clash]].tolist(),
            strict=True,
        )
    ]
    problems: Problems = {}
    refuse(problems, positions[clash], Reason.DUPLICATE, details)
    return problems


def _refuse(problems: Problems) -> None:
    if problems:
        details = [f"events[{row}]: {detail}" for row, (_, detail) in sorted(problems.items())]
        raise InvalidInput("; ".join(details[:10]) + "; nothing was stored")
