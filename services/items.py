"""Item writes under /v1 (the live catalog): PUT, PATCH and DELETE ``/v1/items/<id>``.

They need an API key with scope ``catalog:write`` (or the admin token), check values by the
rules of ``recsys ingest items`` and store each write in one transaction
(``recsys.ingest.item_writes``). Every serving worker follows the catalog's change log and
shows the change within about a second, without retraining (``recsys.model.delta``); the
worker that made a write follows the item cards before it answers, so its own next read of
the item shows the write (a GET right after a DELETE answered the item for a second).

A photo comes either as a path under the service's images root (JSON ``image``) or as the
multipart part ``image`` beside a part ``item`` holding the JSON fields.
"""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote

from flask import Blueprint

from recsys.errors import InvalidInput, UnknownItem
from recsys.ingest import item_writes
from recsys.vision.photo import check_photo
from services.api import _decode_image, _image_slot
from services.context import card, context
from services.contract import endpoint, validated
from services.errors import ApiError, bad_parameter, message_of
from services.schemas import (
    Item,
    ItemFields,
    ItemRemoved,
    ItemUpload,
    ItemWritten,
    id_routes,
    path_id,
)

log = logging.getLogger(__name__)

bp = Blueprint("items", __name__, url_prefix="/v1")
id_routes(bp)  # before the routes: they name ids as <id:...>

WRITE_ERRORS = (400, 404, 413, 415, 503)
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}


# no tail: a PUT creating an item "<id>/similar" is told why it cannot (a 400 naming the id)
@bp.put("/items/<id:item_id>")
@endpoint(
    body=ItemFields,
    form=ItemUpload,
    responses={200: ItemWritten, 201: ItemWritten},
    errors=(400, 413, 415, 503),
    scope="catalog:write",
    rate_limit="write",
)
def put_item(
    item_id: str, body: ItemFields | None = None, form: ItemUpload | None = None
) -> ItemWritten | tuple[ItemWritten, int]:
    """Replace an item (200), or create it (201) (JSON, or multipart with its photo)"""
    written = _write(item_writes.put_item, item_id, body, form)
    if not written.created:
        return written
    return written, 201, {"Location": "/v1/items/" + quote(written.item.item_id, safe="")}


@bp.patch('/items/<id(tail="/similar"):item_id>')
@endpoint(
    body=ItemFields,
    form=ItemUpload,
    responses={200: ItemWritten},
    errors=WRITE_ERRORS,
    scope="catalog:write",
    rate_limit="write",
)
def patch_item(
    item_id: str, body: ItemFields | None = None, form: ItemUpload | None = None
) -> ItemWritten:
    """Change some of an item's fields (stock, price, a new photo ...)"""
    return _write(item_writes.patch_item, item_id, body, form)


@bp.delete('/items/<id(tail="/similar"):item_id>')
@endpoint(
    responses={200: ItemRemoved},
    errors=(400, 404, 503),
    scope="catalog:write",
    rate_limit="write",
)
def delete_item(item_id: str) -> ItemRemoved:
    """Remove an item from the catalog (and its events)"""
    item_id = path_id("item_id", item_id)
    ctx = context()
    try:
        generation, photo = item_writes.delete_item(ctx.engine, item_id)
    except UnknownItem:
        raise ApiError(404, "unknown_item", f"item {item_id!r} is not in the catalog") from None
    if photo is not None:  # an upload of the item's, unless another item names it too
        item_writes.drop_unused_photo(ctx.engine, photo, ctx.settings.images_root)
    _caught_up(ctx)
    return ItemRemoved(item_id=item_id, generation=generation)


def _caught_up(ctx) -> None:
    """Follow the catalog's cards now, as the worker's follower does once a second, so this
    worker's next read of the item shows the write (one read of the change log). The model's
    delta keeps its step: making a written item's vectors is the follower's work, shared by
    the workers. The write is stored either way; a failure leaves the follower to catch up."""
    if not ctx.holder.ready:
        return
    try:
        ctx.cards.follow()
    except Exception:
        log.warning("following the cards after a write failed; the follower catches up")


def _write(write, item_id: str, body: ItemFields | None, form: ItemUpload | None):
    item_id = path_id("item_id", item_id)
    ctx = context()
    fields, photo = _fields(body, form)
    root = ctx.settings.images_root
    if photo is not None:
        suffix = _suffix(photo, ctx.settings.max_image_pixels)
        photo = item_writes.save_photo(root, photo, suffix, item_writes.upload_catalog(ctx.engine))
    try:
        written = write(ctx.engine, item_id, fields, root, photo, ctx.settings.max_image_pixels)
    except (UnknownItem, InvalidInput) as exc:
        if photo is not None:  # saved for a write now refused: no item names it
            item_writes.drop_unused_photo(ctx.engine, photo)
        if isinstance(exc, UnknownItem):
            raise ApiError(404, "unknown_item", f"item {item_id!r} is not in the catalog") from None
        raise ApiError(400, "invalid_parameter", message_of(exc)) from None
    if written.replaced_photo is not None:  # the upload it named, unless another item does
        item_writes.drop_unused_photo(ctx.engine, written.replaced_photo, root)
    _caught_up(ctx)
    return ItemWritten(
        item=Item(**card(item_id, written.card)),
        created=written.created,
        changed=written.changed,
        generation=written.generation,
    )


def _fields(body: ItemFields | None, form: ItemUpload | None):
    """(the fields sent, the uploaded photo's bytes or None)."""
    if body is not None:
        return body.model_dump(exclude_unset=True), None
    try:
        document = json.loads(form.item)
    except (ValueError, RecursionError):
        raise bad_parameter("item", "is not a JSON document of the item's fields") from None
    if not isinstance(document, dict):
        raise bad_parameter("item", "must be a JSON object of the item's fields")
    try:
        fields = validated(ItemFields, document).model_dump(exclude_unset=True)
    except ApiError as exc:  # the fields are inside the part named item
        raise ApiError(exc.status, exc.code, f"item.{exc.message}", exc.headers) from None
    if "image" in fields:
        raise bad_parameter("item.image", "send either a photo or an image path, not both")
    return fields, form.image


def _suffix(data: bytes, max_pixels: int) -> str:
    """The stored photo's suffix, after the checks of a visual search upload (a 400 naming
    the field ``image`` for anything but a PNG, JPEG, WebP or GIF within the pixel cap),
    decoded in one of the worker's image slots as a search's photo is (two 25-megapixel
    photos at once took a worker from 718 to 1,307 MB)."""
    with _image_slot(context().image_slots):
        _decode_image(data, max_pixels)
    return SUFFIXES[check_photo(io.BytesIO(data), max_pixels)]
