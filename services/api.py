"""The JSON API under /v1: similar items, home feeds, visual search, events, the catalog."""

from __future__ import annotations

import io

import numpy as np
from flask import Blueprint, jsonify, request
from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.catalog.models import Interaction, Item, User
from recsys.errors import UnknownItem
from recsys.ingest.interactions import record_interactions
from recsys.serving import home_feed, item_cards
from services.context import card, context, ranked
from services.errors import ApiError, bad_parameter, message_of
from services.params import (
    MAX_CANDIDATES,
    MAX_EVENTS,
    MAX_K,
    bool_param,
    bounded_int,
    int_param,
    json_filters,
    json_object,
    query_filters,
    string_list,
)

bp = Blueprint("api", __name__, url_prefix="/v1")

MAX_PAGE = 100
EVENT_FIELDS = ("user_id", "item_id", "event", "weight", "rating", "timestamp")
# Uploaded photos are shrunk to this side before encoding (the encoder resizes again).
UPLOAD_SIDE = 256


@bp.get("/items")
def list_items():
    """A page of the catalog, optionally matching a title substring."""
    offset = int_param(request.args, "offset", 0, 0, 10**9)
    limit = int_param(request.args, "limit", 24, 1, MAX_PAGE)
    text = request.args.get("q", "").strip()
    query = select(Item.external_id).order_by(Item.id)
    count = select(func.count(Item.id))
    if text:
        pattern = f"%{text}%"
        query, count = (
            query.where(Item.title.ilike(pattern)),
            count.where(Item.title.ilike(pattern)),
        )
    with Session(context().engine) as session:
        total = session.scalar(count)
        ids = list(session.scalars(query.offset(offset).limit(limit)))
    cards = item_cards(context().engine, ids)
    items = [card(item_id, cards.get(item_id)) for item_id in ids]
    return jsonify(items=items, total=total, offset=offset, limit=limit)


@bp.get("/items/<item_id>")
def get_item(item_id: str):
    fields = item_cards(context().engine, [item_id]).get(item_id)
    if fields is None:
        raise ApiError(404, "unknown_item", f"item {item_id!r} is not in the catalog")
    holder = context().holder
    in_model = holder.ready and item_id in holder.state.recommender.item_index
    return jsonify(**card(item_id, fields), in_model=bool(in_model))


@bp.get("/items/<item_id>/similar")
def similar_items(item_id: str):
    k = int_param(request.args, "k", 10, 1, MAX_K)
    filters = query_filters(request.args, {"k"})
    state = context().holder.state
    try:
        results = state.recommender.similar_items([item_id], k=k, filters=filters)
    except UnknownItem:
        raise ApiError(
            404, "unknown_item", f"item {item_id!r} is not in model {state.version}"
        ) from None
    except ValueError as exc:
        raise bad_parameter("filters", str(exc)) from None
    return jsonify(item_id=item_id, model_version=state.version, items=ranked(state, results))


@bp.get("/users")
def list_users():
    """A page of users with their number of events (for browsing feeds)."""
    offset = int_param(request.args, "offset", 0, 0, 10**9)
    limit = int_param(request.args, "limit", 24, 1, MAX_PAGE)
    query = (
        select(User.external_id, func.count(Interaction.id))
        .outerjoin(Interaction, Interaction.user_id == User.id)
        .group_by(User.id, User.external_id)
        .order_by(User.id)
        .offset(offset)
        .limit(limit)
    )
    with Session(context().engine) as session:
        rows = session.execute(query).all()
    users = [{"user_id": user_id, "interactions": count} for user_id, count in rows]
    return jsonify(users=users, offset=offset, limit=limit)


@bp.get("/users/<user_id>/recommendations")
def user_feed(user_id: str):
    k = int_param(request.args, "k", 20, 1, MAX_K)
    exclude_seen = bool_param(request.args, "exclude_seen", True)
    filters = query_filters(request.args, {"k", "exclude_seen"})
    return _feed(user_id, k, exclude_seen, None, filters)


@bp.post("/users/<user_id>/recommendations")
def rank_for_user(user_id: str):
    body = json_object(_json_body(), {"k", "candidates", "filters", "exclude_seen"})
    k = bounded_int("k", body.get("k", 20), 1, MAX_K)
    exclude_seen = body.get("exclude_seen", True)
    if not isinstance(exclude_seen, bool):
        raise bad_parameter("exclude_seen", "must be true or false")
    candidates = body.get("candidates")
    if candidates is not None:
        candidates = string_list(candidates, "candidates", MAX_CANDIDATES)
    return _feed(user_id, k, exclude_seen, candidates, json_filters(body.get("filters")))


def _feed(user_id, k, exclude_seen, candidates, filters):
    ctx = context()
    state = ctx.holder.state
    try:
        results = home_feed(state, ctx.engine, user_id, k, exclude_seen, candidates, filters)
    except UnknownItem as exc:
        raise bad_parameter("candidates", message_of(exc)) from None
    except ValueError as exc:
        raise bad_parameter("filters", str(exc)) from None
    return jsonify(
        user_id=user_id,
        model_version=state.version,
        fallback=bool(results.fallback[0]),
        items=ranked(state, results),
    )


@bp.post("/search/image")
def search_image():
    k = int_param(request.args, "k", 10, 1, MAX_K)
    upload = request.files.get("image")
    if upload is None:
        raise bad_parameter("image", "send the photo as a multipart/form-data field named image")
    pixels = _decode_image(upload.read())
    state = context().holder.state
    if not state.recommender.has_images:
        raise ApiError(
            409, "no_image_model", f"model {state.version} was trained without item images"
        )
    results = state.recommender.search_images(pixels, k=k)
    return jsonify(model_version=state.version, items=ranked(state, results))


def _decode_image(data: bytes) -> np.ndarray:
    """(1, H, W, 3) uint8 from an uploaded file, or a 400 naming the field."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((UPLOAD_SIDE, UPLOAD_SIDE))
            return np.array(image, dtype=np.uint8)[None]  # (1, H, W, 3), writable
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise bad_parameter("image", "not a readable image (send PNG, JPEG, WebP or GIF)") from None


@bp.post("/interactions")
def add_interactions():
    body = json_object(_json_body(), {"events"})
    events = body.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
        raise bad_parameter("events", f"must be a list of 1 to {MAX_EVENTS} event objects")
    for position, event in enumerate(events):
        _check_event(position, event)
    recorded = record_interactions(context().engine, events)
    response = jsonify(
        inserted=recorded.inserted,
        updated=recorded.updated,
        unchanged=recorded.unchanged,
        users=recorded.users,
    )
    response.status_code = 201
    return response


def _check_event(position: int, event) -> None:
    if not isinstance(event, dict):
        raise bad_parameter(f"events[{position}]", "must be an object with user_id, item_id")
    for name, value in event.items():
        if name not in EVENT_FIELDS:
            allowed = ", ".join(EVENT_FIELDS)
            raise bad_parameter(f"events[{position}].{name}", f"unknown field; allowed: {allowed}")
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, str | int | float)
        ):
            raise bad_parameter(f"events[{position}].{name}", "must be a string or a number")


def _json_body():
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send a JSON body (Content-Type: application/json)"
        )
    body = request.get_json(silent=True)
    if body is None:
        raise bad_parameter("body", "is not valid JSON")
    return body
