"""Item writes one at a time (the HTTP API's PUT, PATCH and DELETE ``/v1/items/<id>``), by the
rules and the storage code of ``recsys ingest items``.

Values go through the same column parsers as an ingest file's (``recsys.ingest.values``), and
the row is written by ``ItemIngester.write`` (insert or update, attribute kinds recorded and
widened) in one transaction, so a bad value is refused with the reason ingest gives, as an
``InvalidInput`` whose message starts with the field (``attributes.price: ...``), and nothing
is stored. An image path is relative to the images root and must stay inside it; an uploaded
photo is stored under ``<images root>/uploads/`` by its SHA-256 (``save_photo``).

Every write to ``items`` is logged by the catalog's triggers (``recsys.catalog.changes``), so
serving workers pick it up within about a second, as they pick up an ingest file's rows.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Engine, bindparam, delete, select

from recsys.catalog.changes import items_generation
from recsys.catalog.db import catalog_key
from recsys.catalog.models import Item, catalog_id
from recsys.catalog.reads import ItemCard
from recsys.errors import InvalidInput, PhotoStoreUnavailable, UnknownItem
from recsys.files import as_if_plain
from recsys.ingest.bulk import write_transaction
from recsys.ingest.items import FIELDS, KNOWN_COLUMNS, ItemIngester, recorded_kinds
from recsys.ingest.report import IngestReport
from recsys.ingest.values import (
    BadValue,
    Parsed,
    attribute_column,
    bool_column,
    check_attribute_name,
    image_column,
    misfit,
    parse_id,
    parse_item_id,
    shown,
    text_column,
)
from recsys.vision.photo import MAX_PHOTO_PIXELS, check_photo

UPLOADS = "uploads"


@dataclass(frozen=True)
class ItemWrite:
    item_id: str
    created: bool  # a new item
    changed: bool  # False: the catalog already held exactly this
    # The catalog's items generation after the write: a worker whose live catalog is at
    # this generation or later serves it (/readyz, /metrics).
    generation: int
    card: ItemCard  # the item as this write stored it
    # The photo the item named before this write, when the write changed it: an upload no
    # item names any more is removed (``drop_unused_photo``), not left on disk for good.
    replaced_photo: str | None = None


def put_item(
    engine: Engine,
    item_id: Any,
    fields: dict[str, Any],
    images_root: Path,
    photo: Path | None = None,
    max_pixels: int = MAX_PHOTO_PIXELS,
) -> ItemWrite:
    """Create or replace an item: ``fields`` may hold ``title``, ``in_stock`` (default true),
    ``image`` (a path relative to ``images_root``, a photo of at most ``max_pixels``) and
    ``attributes`` (name -> value); absent ones are empty. ``photo``: an already stored image
    (``save_photo``) instead of ``image``."""
    values = parse_fields(item_id, fields, images_root, max_pixels)
    row = {"title": None, "image_path": None, "in_stock": True, "attributes": {}}
    row.update(values)
    row["attributes"] = {k: v for k, v in row["attributes"].items() if v is not None}
    if photo is not None:
        row["image_path"] = str(photo)

    def work(connection: Connection) -> ItemWrite:
        _check_kinds(connection, row["attributes"])
        before = connection.execute(_PHOTO, {"external_id": row["external_id"]}).scalar()
        return _store(connection, row, images_root, before)

    return write_transaction(engine, work)


# Built once: a write binds its id (SQLAlchemy then keys the compiled form only once).
_STORED = select(*[getattr(Item, name) for name in FIELDS]).where(
    Item.external_id == bindparam("external_id")
)
_PHOTO = select(Item.image_path).where(Item.external_id == bindparam("external_id"))
_DELETE = (
    delete(Item).where(Item.external_id == bindparam("external_id")).returning(Item.image_path)
)


def patch_item(
    engine: Engine,
    item_id: Any,
    fields: dict[str, Any],
    images_root: Path,
    photo: Path | None = None,
    max_pixels: int = MAX_PHOTO_PIXELS,
) -> ItemWrite:
    """Change only the given ``fields`` of a stored item (``attributes``: only the names
    given; a None value removes one); ``UnknownItem`` when it is not in the catalog."""
    values = parse_fields(item_id, fields, images_root, max_pixels)
    if photo is not None:
        values["image_path"] = str(photo)

    def work(connection: Connection) -> ItemWrite:
        stored = connection.execute(_STORED, {"external_id": values["external_id"]}).first()
        if stored is None:
            raise UnknownItem(f"item {values['external_id']!r} is not in the catalog")
        row = dict(zip(FIELDS, stored, strict=True))
        before = row["image_path"]
        given = values.pop("attributes", {})
        _check_kinds(connection, {k: v for k, v in given.items() if v is not None})
        attributes = {**(row["attributes"] or {}), **given}
        row.update(values)
        row["attributes"] = {k: v for k, v in attributes.items() if v is not None}
        return _store(connection, row, images_root, before)

    return write_transaction(engine, work)


def delete_item(engine: Engine, item_id: Any) -> tuple[int, str | None]:
    """Remove an item (its interactions go with it) -> (the items generation after it, the
    photo it named); ``UnknownItem`` when there is none."""
    external_id = _item_id(parse_id, item_id)

    def work(connection: Connection) -> tuple[int, str | None] | None:
        found = connection.execute(_DELETE, {"external_id": external_id}).all()
        return (items_generation(connection), found[0][0]) if found else None

    removed = write_transaction(engine, work)
    if removed is None:
        raise UnknownItem(f"item {external_id!r} is not in the catalog")
    return removed


def parse_fields(
    item_id: Any, fields: dict[str, Any], images_root: Path, max_pixels: int = MAX_PHOTO_PIXELS
) -> dict[str, Any]:
    """The given fields, checked and normalised as ``recsys ingest items`` does a row's
    cells: ``external_id`` always, ``title``, ``in_stock``, ``image_path`` (absolute) and
    ``attributes`` when given. ``InvalidInput`` naming the first bad field."""
    values: dict[str, Any] = {"external_id": _item_id(parse_item_id, item_id)}
    unknown = set(fields) - {"title", "in_stock", "image", "attributes"}
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]}: unknown field")
    if "title" in fields:
        values["title"] = _one(text_column, fields["title"], "title")
    if "in_stock" in fields:
        in_stock = _one(bool_column, fields["in_stock"], "in_stock")
        values["in_stock"] = True if in_stock is None else in_stock
    if "image" in fields:
        values["image_path"] = _image(fields["image"], Path(images_root), max_pixels)
    if "attributes" in fields:
        values["attributes"] = _attributes(fields["attributes"] or {})
    return values


def upload_catalog(engine: Engine) -> str:
    """What a catalog's uploaded photos are named for (``upload_name``'s ``catalog``): a
    SQLite catalog's file (``catalog_key``: a copy of the file is another catalog), a
    server's catalog id (migration 0013), whatever URL reaches it: two hosts that reach one
    PostgreSQL as ``127.0.0.1`` and ``localhost`` stored one photo twice, and a photo
    uploaded through one was never removed through the other."""
    key = catalog_key(engine.url)
    if engine.dialect.name == "sqlite":
        return key
    found = catalog_id(engine)
    return f"catalog {found}" if found else key


def upload_name(data: bytes, suffix: str, catalog: str = "") -> str:
    """The file name ``save_photo`` gives an upload of ``data`` to ``catalog``."""
    digest = hashlib.sha256(catalog.encode() + b"\0" + data if catalog else data).hexdigest()
    return f"{digest}{suffix}"


def save_photo(images_root: Path, data: bytes, suffix: str, catalog: str = "") -> Path:
    """Store an uploaded photo as ``<images_root>/uploads/<sha256><suffix>`` (written to a
    temporary file and renamed: a reader never sees half a photo) -> its absolute path. The
    hash is of ``catalog`` (``upload_catalog``) and the bytes: the items of one
    catalog share a file, two catalogs never do (shops whose images roots are one folder, the
    default ``var/images`` from one checkout: one shop's delete removed the other's photo)."""
    folder = (Path(images_root) / UPLOADS).resolve()
    path = folder / upload_name(data, suffix, catalog)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            as_if_plain(temporary)  # a trainer or image server may run as another user
            os.replace(temporary, path)
    except OSError as exc:  # a 500 with a traceback; the operator's to fix, not the client's
        raise PhotoStoreUnavailable(
            f"uploaded photos cannot be stored: {exc.strerror or exc}; the images root "
            "(RECSYS_IMAGES_ROOT) and its uploads folder must be writable by the service",
            str(folder),
        ) from exc
    return path


def drop_unused_photo(engine: Engine, path: Path | str, images_root: Path | None = None) -> None:
    """Remove an uploaded photo that no item names: one saved for a write that was then
    refused (a 400, an unknown item), or one an item named before a write replaced it or
    removed the item, which nothing ever removed. With ``images_root``, only a file in its
    uploads folder (a photo a shop's own files hold is never touched). Only a photo this
    catalog uploaded (its name is ``upload_name`` of its bytes for this catalog): another
    catalog's in a shared images root, one a copy of the catalog inherited, or one an item
    names by its path (``{"image": "uploads/..."}``) is another catalog's to remove."""
    path = Path(path)
    if images_root is not None and path.parent != (Path(images_root) / UPLOADS).resolve():
        return
    try:
        data = path.read_bytes()
    except OSError:
        return
    if path.name != upload_name(data, path.suffix, upload_catalog(engine)):
        return
    with engine.connect() as connection:
        used = connection.execute(
            select(Item.id).where(Item.image_path == str(path)).limit(1)
        ).first()
    if used is None:
        Path(path).unlink(missing_ok=True)


def _store(
    connection: Connection, row: dict[str, Any], images_root: Path, before: str | None = None
) -> ItemWrite:
    """One checked row through ``ItemIngester.store``, the storage code of ingest files."""
    record = {"external_id": row["external_id"], **{name: row[name] for name in FIELDS}}
    report = IngestReport(Path("<api>"))
    ItemIngester(images_root).store(connection, [record], report, widen=False)
    changed = report.unchanged == 0
    generation = items_generation(connection)
    card = ItemCard(
        row["external_id"],
        row["title"],
        row["in_stock"],
        row["image_path"] is not None,
        row["attributes"],
    )
    replaced = before if before is not None and before != row["image_path"] else None
    return ItemWrite(row["external_id"], report.inserted > 0, changed, generation, card, replaced)


def _check_kinds(connection: Connection, attributes: dict[str, Any]) -> None:
    """``InvalidInput`` naming the first attribute whose value does not fit the kind the
    catalog records for it (``values.misfit``): one item's write never re-types an attribute
    of the whole catalog, which the next training would then encode and filter otherwise."""
    for name, kind in recorded_kinds(connection, attributes).items():
        if (wanted := misfit(kind, attributes[name])) is not None:
            raise InvalidInput(
                f"attributes.{name}: {wanted}, as the catalog's {name} is {kind.value} "
                f"(got {shown(attributes[name])}); an ingest file can change an attribute's kind"
            )


def _item_id(rule: Callable[[Any, str], str], value: Any) -> str:
    """The id by the one id rule (``InvalidInput`` with its message, which names item_id). A
    column parser reads an empty id as a missing cell: "", "   " and None were written (a raw
    NOT NULL IntegrityError) or looked up ("item None is not in the catalog")."""
    try:
        return rule("" if value is None else value, "item_id")
    except BadValue as exc:
        raise InvalidInput(str(exc)) from None


def _one(parser: Callable[..., Parsed], value: Any, name: str, field: str | None = None) -> Any:
    """One value through an ingest column parser -> the normalised value (None: missing);
    ``InvalidInput`` starting with ``field`` (default ``name``) and ingest's reason."""
    parsed = parser([value], 1, name)
    if parsed.errors:
        raise InvalidInput(f"{field or name}: {parsed.errors[0]}")
    found = parsed.values[0]
    return found.as_py() if isinstance(found, pa.Scalar) else found


def _image(value: Any, root: Path, max_pixels: int) -> str | None:
    """An image path relative to ``root`` that names a photo inside it (``check_photo``: the
    formats and size an upload may have) -> absolute path."""
    if value is None:
        return None
    root = root.resolve()
    path = _one(lambda column, n, name: image_column(column, n, name, root), value, "image")
    if path is not None and not Path(path).is_relative_to(root):
        raise InvalidInput(f"image: {str(value)!r} is outside the images root; give a path in it")
    if path is not None:
        try:
            check_photo(path, max_pixels)
        except InvalidInput as exc:
            raise InvalidInput(f"image: {shown(str(value))} {exc}") from None
    return path


def _attributes(given: dict[str, Any]) -> dict[str, Any]:
    """Each attribute checked; two names that are one once stripped and composed are refused,
    as a file's header refuses them ("brand" and " brand " kept the last one's value)."""
    out, written = {}, {}
    for name, value in given.items():
        try:
            cleaned = parse_id(name, "attribute name")
        except BadValue as exc:
            raise InvalidInput(f"attributes: {exc}") from None
        if cleaned in written:
            raise InvalidInput(
                f"attributes.{cleaned}: given twice, as {written[cleaned]!r} and {name!r}; "
                "give each attribute once"
            )
        name, written[cleaned] = cleaned, name
        if name in KNOWN_COLUMNS:
            raise InvalidInput(f"attributes.{name}: is a field of its own, not an attribute")
        try:
            check_attribute_name(name)
        except BadValue as exc:
            raise InvalidInput(f"attributes.{name}: {exc}") from None
        if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN, Infinity
            # an ingest file's "NaN" cell is an empty cell; a number sent as NaN is no value
            raise InvalidInput(f"attributes.{name}: {value} is not a finite number")
        out[name] = _one(attribute_column, value, name, f"attributes.{name}")
    return out
