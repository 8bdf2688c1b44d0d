"""SQLAlchemy 2.0 models of the catalog. ``migrations/`` reproduces them exactly."""

from __future__ import annotations

import contextlib
import enum
import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so migrations are the same on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Naive UTC now: every timestamp in the catalog is naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AttributeKind(enum.StrEnum):
    """How a tabular item attribute is encoded by later stages."""

    NUMERIC = "numeric"  # robust-scaled number
    CATEGORICAL = "categorical"  # one-hot
    MULTI = "multi"  # multi-valued "a|b|c", multi-hot
    TEXT = "text"  # free text, TF-IDF + SVD
    DATE = "date"  # ISO date, encoded as age


def _enum_values(enum_type: type[enum.Enum]) -> list[str]:
    return [member.value for member in enum_type]


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    # Absolute path of the product image, checked to exist at ingest.
    image_path: Mapped[str | None] = mapped_column(Text)
    in_stock: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Tabular attributes by column name; kinds are recorded in item_attributes.
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# The title search index (migration 0011), which the models do not declare: an FTS5 table of
# this name (and its shadow tables) on SQLite, a pg_trgm GIN index of this name on PostgreSQL.
# The reads use the one, migrations/env.py leaves both out of the model comparison.
TITLE_SEARCH_TABLE = "item_search"
TITLE_TRIGRAM_INDEX = "ix_items_title_trigrams"


class ItemAttribute(Base):
    """The inferred kind of each tabular attribute column seen at ingest."""

    __tablename__ = "item_attributes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[AttributeKind] = mapped_column(
        Enum(AttributeKind, native_enum=False, length=16, values_callable=_enum_values)
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Erasure(Base):
    """A user erased (``recsys.ingest.users``), by the SHA-256 of their id, never the id: the
    catalog keeps no name of an erased shopper, yet knows one again when their events come
    back. Events of theirs from before ``erased_at`` are refused at ingest and left out of
    training from event folders; a feed whose bundle was trained before ``erased_at`` does
    not use the bundle's history of them (migration 0012)."""

    __tablename__ = "erasures"

    user_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime)


def user_key(user_id: str) -> str:
    """An erased user's key (``Erasure.user_key``): the SHA-256 of their id, in hex."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        # A user's events stored since a time: what every home feed folds in (0009).
        Index("ix_interactions_user_arrival", "user_id", "created_at"),
        # Re-ingesting a file is idempotent. Led by the user (the key already hashes it), so
        # one user's new events share index pages instead of landing at random (0006).
        UniqueConstraint("user_id", "dedup_key", name="uq_interactions_user_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    # Naive UTC; NULL when the source had no timestamp.
    timestamp: Mapped[datetime | None] = mapped_column(DateTime)
    # Hash of (user, item, event, timestamp), unique per user.
    dedup_key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    user: Mapped[User] = relationship()
    item: Mapped[Item] = relationship()


class CatalogState(Base):
    """One row (id 1): ``items_generation`` grows with every write to ``items``.

    Database triggers bump it (per statement on PostgreSQL, per row on SQLite), so every
    writer counts, an operator's hand-written UPDATE included; the service's card cache
    compares it per request to know its cards are current.

    ``changes_pruned_through``: the highest generation whose ``item_changes`` rows may have
    been pruned (migration 0005); a reader whose mark is below it starts afresh.

    ``catalog_id``: a random id made once per catalog (migration 0013), kept by copies and
    restores: whose bundles and backups are whose (``catalog_id`` below).
    """

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    items_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    changes_pruned_through: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    catalog_id: Mapped[str | None] = mapped_column(String(32))


def catalog_id(connectable) -> str | None:
    """The catalog's id (``CatalogState.catalog_id``), from an engine or a connection; None
    for a catalog that has none (a schema before migration 0013, or no state row)."""
    with _connected(connectable) as connection:
        return connection.scalar(select(CatalogState.catalog_id).where(CatalogState.id == 1))


# Of another copy's items (a bundle's, a backup's), the share this catalog must hold, by id
# and title, to take it for its own when no catalog id says (bundles and backups from before
# migration 0013): its items churn between a backup and a restore; another shop's do not meet,
# even where two shops made by the same tools number their items alike (sku-000001 ...).
SAME_CATALOG_SHARE = 0.5
# Item ids asked of the catalog at a time (one IN list), and the most items compared.
ID_BATCH = 10_000
COMPARED_ITEMS = 20_000


def items_held(connectable, ids: list[str], titles: list[str | None] | None = None) -> float:
    """The share of these items (ids, with their titles when given) this catalog holds with
    the same title: 1.0 for none. At most ``COMPARED_ITEMS`` of them are compared (evenly
    spread)."""
    if not ids:
        return 1.0
    step = max(1, -(-len(ids) // COMPARED_ITEMS))
    ids = ids[::step]
    titles = None if titles is None else titles[::step]
    held = 0
    with _connected(connectable) as connection:
        for start in range(0, len(ids), ID_BATCH):
            batch = ids[start : start + ID_BATCH]
            found = dict(
                connection.execute(
                    select(Item.external_id, Item.title).where(Item.external_id.in_(batch))
                ).all()
            )
            if titles is None:
                held += len(found)
            else:
                wanted = titles[start : start + ID_BATCH]
                held += sum(
                    i in found and found[i] == t for i, t in zip(batch, wanted, strict=True)
                )
    return held / len(ids)


@contextlib.contextmanager
def _connected(connectable):
    """``connectable`` itself when it is a connection, else a connection of the engine."""
    if isinstance(connectable, Connection):
        yield connectable
    else:
        with connectable.connect() as connection:
            yield connection


class ModelBundle(Base):
    """Registry of trained bundles; at most one is active (enforced by a partial index)."""

    __tablename__ = "model_bundles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


Index(
    "uq_model_bundles_one_active",
    ModelBundle.is_active,
    unique=True,
    sqlite_where=text("is_active"),
    postgresql_where=text("is_active"),
)


class ApiKey(Base):
    """A credential for the HTTP service: scopes, and the SHA-256 of the key (never the key).

    The key is ``rk_<key_id>_<secret>``; ``key_id`` is public (``recsys keys list`` shows it,
    ``revoke`` takes it) and finds the row, the hash proves the rest.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    # Space-separated scope names (recsys.scopes.SCOPES).
    scopes: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class ItemChange(Base):
    """The item change log: one row per item inserted, updated or deleted, written by the
    triggers that bump ``items_generation`` and stamped with the generation they set
    (migration 0004). ``content``: the write changed what the item's vector is made of (title,
    image, attributes), not only its stock. ``changed_at``: when it was logged (naive UTC,
    migration 0005), for pruning. Workers follow it (``recsys.catalog.changes``)."""

    __tablename__ = "item_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    deleted: Mapped[bool] = mapped_column(Boolean)
    content: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime)
