"""Ingest interactions: ``user_id`` and ``item_id`` required; ``timestamp`` (ISO 8601 or epoch
seconds), ``event`` and ``weight`` or ``rating`` optional. Users are created on first sight;
an interaction naming an item the catalog does not have is rejected."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from recsys.catalog.models import Interaction, Item, User, utcnow
from recsys.errors import InvalidInput
from recsys.ingest.pipeline import (
    IngestOptions,
    RowRejected,
    SeenKeys,
    key_hash,
    optional,
    required,
    run_ingest,
)
from recsys.ingest.readers import Record
from recsys.ingest.report import IngestReport, Reason, Reject
from recsys.ingest.values import BadValue, parse_event, parse_float, parse_id, parse_timestamp

DEFAULT_EVENT = "interaction"
RATING_EVENT = "rating"


@dataclass
class InteractionRow:
    line: int
    user: str
    item: str
    event: str
    weight: float
    timestamp: datetime | None
    source: dict[str, Any]

    @property
    def dedup_key(self) -> str:
        moment = self.timestamp.isoformat() if self.timestamp else ""
        return key_hash("\x1f".join((self.user, self.item, self.event, moment)))


class InteractionIngester:
    name = "interactions"
    required = ("user_id", "item_id")

    def __init__(self) -> None:
        self.seen = SeenKeys()

    def parse(self, record: Record) -> InteractionRow:
        weight = optional(record, "weight", _parse_weight)
        rating = optional(record, "rating", _parse_weight)
        default_event = RATING_EVENT if weight is None and rating is not None else DEFAULT_EVENT
        return InteractionRow(
            line=record.line,
            user=required(record, "user_id", parse_id),
            item=required(record, "item_id", parse_id),
            event=optional(record, "event", lambda v, _c: parse_event(v), default=default_event),
            weight=next((w for w in (weight, rating) if w is not None), 1.0),
            timestamp=optional(record, "timestamp", parse_timestamp),
            source=record.values,
        )

    def write(
        self, session: Session, rows: Sequence[InteractionRow], report: IngestReport
    ) -> Iterable[Reject]:
        item_ids = _lookup(session, Item, {row.item for row in rows})
        known = []
        for row in rows:
            if row.item in item_ids:
                known.append(row)
            else:
                detail = f"item_id {row.item!r} is not in the catalog; ingest the item first"
                yield Reject(row.line, Reason.UNKNOWN_ITEM, detail, row.source)
        keys = [row.dedup_key for row in known]
        unique = []
        for row, key, first in zip(known, keys, self.seen.first_occurrences(keys), strict=True):
            if first:
                unique.append((row, key))
            else:
                detail = "the same user, item, event and timestamp appear earlier in this file"
                yield Reject(row.line, Reason.DUPLICATE, detail, row.source)
        user_ids = _users(session, {row.user for row, _ in unique})
        existing = {
            key: (id_, weight)
            for key, id_, weight in session.execute(
                select(Interaction.dedup_key, Interaction.id, Interaction.weight).where(
                    Interaction.dedup_key.in_([key for _, key in unique])
                )
            )
        }
        new, changed = [], []
        for row, key in unique:
            if key not in existing:
                new.append(_values(row, key, user_ids[row.user], item_ids[row.item]))
            elif existing[key][1] != row.weight:
                changed.append({"id": existing[key][0], "weight": row.weight})
        if new:
            session.execute(insert(Interaction), new)
        if changed:
            session.execute(update(Interaction), changed)
        report.inserted += len(new)
        report.updated += len(changed)
        report.unchanged += len(unique) - len(new) - len(changed)


def _values(row: InteractionRow, key: str, user_id: int, item_id: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "item_id": item_id,
        "event": row.event,
        "weight": row.weight,
        "timestamp": row.timestamp,
        "dedup_key": key,
    }


def _parse_weight(value: Any, column: str) -> float:
    number = parse_float(value, column)
    if number < 0:
        raise BadValue(f"{column} {number:g} is negative; implicit feedback weights must be ≥ 0")
    return number


def _lookup(
    session: Session, model: type[Item] | type[User], external_ids: set[str]
) -> dict[str, int]:
    if not external_ids:
        return {}
    query = select(model.external_id, model.id).where(model.external_id.in_(external_ids))
    return dict(session.execute(query).all())


def _users(session: Session, external_ids: set[str]) -> dict[str, int]:
    """Ids of these users, creating the ones not seen before."""
    ids = _lookup(session, User, external_ids)
    missing = external_ids - ids.keys()
    if missing:
        session.execute(insert(User), [{"external_id": name} for name in sorted(missing)])
        ids.update(_lookup(session, User, missing))
    return ids


def ingest_interactions(
    engine: Engine, path: str | Path, options: IngestOptions | None = None
) -> IngestReport:
    """Add interactions from ``path``; re-ingesting the same file changes nothing."""
    return run_ingest(engine, Path(path), InteractionIngester(), options or IngestOptions())


@dataclass
class RecordedEvents:
    inserted: int
    updated: int
    unchanged: int
    users: list[str]


def record_interactions(
    engine: Engine, events: Sequence[dict[str, Any]], now: datetime | None = None
) -> RecordedEvents:
    """Store a batch of events (dicts with the file columns) in one transaction, all or none.

    Events without a timestamp are stamped ``now`` (default: the current UTC time), so two
    views of one item are two events. A bad event raises ``InvalidInput`` naming
    ``events[i].<field>`` and nothing is stored.
    """
    ingester = InteractionIngester()
    stamp = (now or utcnow()).isoformat()
    rows, problems = [], []
    for position, event in enumerate(events):
        values = {"timestamp": stamp, **{k: v for k, v in event.items() if v is not None}}
        try:
            rows.append(ingester.parse(Record(line=position, values=values)))
        except RowRejected as exc:
            problems.append(f"events[{position}]: {exc.detail}")
    report = IngestReport(Path("<api>"))
    with Session(engine) as session, session.begin():
        if not problems:
            problems = [
                f"events[{reject.line}]: {reject.detail}"
                for reject in ingester.write(session, rows, report)
                if reject.reason != Reason.DUPLICATE
            ]
        if problems:  # leaving the block with an exception rolls the transaction back
            raise InvalidInput("; ".join(problems[:10]) + "; nothing was stored")
    users = sorted({row.user for row in rows})
    return RecordedEvents(report.inserted, report.updated, report.unchanged, users)
