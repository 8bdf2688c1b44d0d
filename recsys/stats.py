"""What the catalog holds, for `recsys stats` and the service's health pages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session

from recsys.catalog.db import require_current_schema
from recsys.catalog.models import Interaction, Item, ItemAttribute, ModelBundle, User, catalog_id
from recsys.errors import InvalidBundle
from recsys.ingest.values import latest_event_time
from recsys.model.bundle import find_active, located, read_manifest, readable


def catalog_stats(engine: Engine, artifacts_dir: str | Path | None = None) -> dict[str, Any]:
    require_current_schema(engine)
    with Session(engine) as session:
        items = session.scalar(select(func.count(Item.id)))
        with_images = session.scalar(
            select(func.count(Item.id)).where(Item.image_path.is_not(None))
        )
        events = session.execute(
            select(Interaction.event, func.count(Interaction.id))
            .group_by(Interaction.event)
            .order_by(Interaction.event)
        ).all()
        attributes = session.execute(
            select(ItemAttribute.name, ItemAttribute.kind).order_by(ItemAttribute.name)
        )
        times = _event_times(session)
        active = find_active(session)
        return {
            "catalog_id": catalog_id(session.connection()),
            "items": items,
            "items_with_images": with_images,
            "items_without_images": items - with_images,
            "items_in_stock": session.scalar(select(func.count(Item.id)).where(Item.in_stock)),
            "users": session.scalar(select(func.count(User.id))),
            "interactions": sum(count for _, count in events),
            "events": {event: count for event, count in events},
            "event_times": times,
            "attributes": {name: kind.value for name, kind in attributes},
            "active_bundle": _bundle(session, active, artifacts_dir),
        }


def _event_times(session: Session) -> dict[str, Any]:
    """The events' first and last time (UTC), and how many have none or one past the clock
    (ingest refuses those now; an older catalog may hold some): what a time-based split,
    the validation slice and the time decay will make of the log, in one read."""
    stamp = Interaction.timestamp
    late = latest_event_time()
    first, last, undated, future = session.execute(
        select(
            func.min(stamp),
            func.max(stamp),
            func.count(Interaction.id) - func.count(stamp),
            func.count(case((stamp >= late, 1))),
        )
    ).one()
    shown = lambda moment: None if moment is None else moment.isoformat(timespec="seconds")  # noqa: E731
    return {
        "first": shown(first),
        "last": shown(last),
        "without_time": undated or 0,
        "past_the_clock": future or 0,
    }


def _bundle(
    session: Session, bundle: ModelBundle | None, artifacts_dir: str | Path | None
) -> dict[str, Any] | None:
    """The active bundle's row, its folder ``located`` under ``artifacts_dir`` (default: the
    settings'), whether this code can read it there, and what was stored since its data was
    read (``since``)."""
    if bundle is None:
        return None
    path = located(bundle.path, bundle.version, artifacts_dir)
    return {
        "version": bundle.version,
        "path": path,
        "readable": readable(path),
        "created_at": bundle.created_at.isoformat(timespec="seconds"),
        "metrics": bundle.metrics,
        "since": _since(session, path),
    }


def _since(session: Session, path: str) -> dict[str, Any] | None:
    """The events stored since the bundle's data was read and the events it was trained on
    (None when its manifest cannot be read): feeds fold a shopper's newer events in, but
    only a training learns from them (a shop whose log grew tenfold in a day had no sign of
    it: the retrain signal follows the live items alone)."""
    try:
        manifest = read_manifest(path, verify=False)
        read_at = datetime.fromisoformat(manifest.get("data_read_at") or manifest["created_at"])
    except (InvalidBundle, KeyError, TypeError, ValueError):
        return None
    moment = read_at.replace(tzinfo=None)  # stored times are naive UTC
    stored = Interaction.created_at > moment
    events, users = session.execute(
        select(func.count(Interaction.id), func.count(Interaction.user_id.distinct())).where(stored)
    ).one()
    return {
        "data_read_at": moment.isoformat(timespec="seconds"),
        "trained_on": int((manifest.get("counts") or {}).get("interactions", 0)),
        "events": int(events),
        "users": int(users),
    }
