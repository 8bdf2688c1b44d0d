"""What the catalog holds, for `recsys stats` and the service's health pages."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from recsys.catalog.db import require_current_schema
from recsys.catalog.models import Interaction, Item, ItemAttribute, ModelBundle, User
from recsys.model.bundle import find_active


def catalog_stats(engine: Engine) -> dict[str, Any]:
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
        active = find_active(session)
        return {
            "items": items,
            "items_with_images": with_images,
            "items_without_images": items - with_images,
            "items_in_stock": session.scalar(select(func.count(Item.id)).where(Item.in_stock)),
            "users": session.scalar(select(func.count(User.id))),
            "interactions": sum(count for _, count in events),
            "events": {event: count for event, count in events},
            "attributes": {name: kind.value for name, kind in attributes},
            "active_bundle": _bundle(active),
        }


def _bundle(bundle: ModelBundle | None) -> dict[str, Any] | None:
    if bundle is None:
        return None
    return {
        "version": bundle.version,
        "path": bundle.path,
        "created_at": bundle.created_at.isoformat(timespec="seconds"),
        "metrics": bundle.metrics,
    }
