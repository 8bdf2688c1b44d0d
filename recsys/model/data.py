"""Reading the catalog into frames: what the training pipeline sees of the database."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from recsys.catalog.models import AttributeKind, Interaction, Item, ItemAttribute, User

log = logging.getLogger(__name__)

INTERACTION_COLUMNS = ["user_id", "item_id", "event", "weight", "timestamp"]


@dataclass
class CatalogData:
    """Items, their attribute kinds and interactions, all keyed by external ids (strings)."""

    # One row per item: item_id, title, image_path, in_stock, then one column per attribute.
    items: pd.DataFrame
    # Attribute column name -> kind recorded at ingest ("title" is added as text when present).
    kinds: dict[str, str] = field(default_factory=dict)
    # user_id, item_id, event, weight, timestamp (datetime64, NaT when unknown).
    interactions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=INTERACTION_COLUMNS)
    )

    @property
    def counts(self) -> dict[str, int]:
        return {
            "items": len(self.items),
            "users": int(self.interactions["user_id"].nunique()),
            "interactions": len(self.interactions),
            "items_with_images": int(self.items["image_path"].notna().sum()),
            "attributes": len(self.kinds),
        }


def read_catalog(engine: Engine) -> CatalogData:
    """Everything training needs from the catalog, in three queries."""
    with Session(engine) as session:
        item_rows = session.execute(
            select(Item.external_id, Item.title, Item.image_path, Item.in_stock, Item.attributes)
        ).all()
        kind_rows = session.execute(select(ItemAttribute.name, ItemAttribute.kind)).all()
        interaction_rows = session.execute(
            select(
                User.external_id,
                Item.external_id,
                Interaction.event,
                Interaction.weight,
                Interaction.timestamp,
            )
            .join(User, Interaction.user_id == User.id)
            .join(Item, Interaction.item_id == Item.id)
        ).all()
    kinds = {name: AttributeKind(kind).value for name, kind in kind_rows}
    items = items_frame(item_rows, list(kinds))
    interactions = pd.DataFrame(interaction_rows, columns=INTERACTION_COLUMNS)
    interactions["timestamp"] = pd.to_datetime(interactions["timestamp"])
    interactions["weight"] = interactions["weight"].astype(float)
    log.info("read %d items, %d interactions from the catalog", len(items), len(interactions))
    return CatalogData(items=items, kinds=kinds, interactions=interactions)


def items_frame(rows, attribute_names: list[str]) -> pd.DataFrame:
    """Rows of (external_id, title, image_path, in_stock, attributes) -> one flat frame."""
    records = []
    for external_id, title, image_path, in_stock, attributes in rows:
        record = {"item_id": external_id, "title": title, "image_path": image_path}
        record["in_stock"] = bool(in_stock)
        attributes = attributes or {}
        record.update({name: attributes.get(name) for name in attribute_names})
        records.append(record)
    columns = ["item_id", "title", "image_path", "in_stock", *attribute_names]
    return pd.DataFrame.from_records(records, columns=columns)


def index_of(ids: np.ndarray) -> dict[str, int]:
    """External id -> row number."""
    return {key: row for row, key in enumerate(ids.tolist())}
