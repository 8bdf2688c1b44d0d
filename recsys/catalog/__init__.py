"""The SQL catalog: items, users, interactions and the model registry."""

from recsys.catalog.db import connect, require_current_schema
from recsys.catalog.models import (
    AttributeKind,
    Base,
    Interaction,
    Item,
    ItemAttribute,
    ModelBundle,
    User,
)

__all__ = [
    "AttributeKind",
    "Base",
    "Interaction",
    "Item",
    "ItemAttribute",
    "ModelBundle",
    "User",
    "connect",
    "require_current_schema",
]
