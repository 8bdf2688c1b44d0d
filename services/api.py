"""The JSON API under /v1: similar items, home feeds, visual search, events, the catalog.

Each view's contract (query, body, answer) is declared with ``@endpoint`` from the models in
``services.schemas``; catalog data comes from ``recsys.catalog.reads``.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from flask import Blueprint, Response
from PIL import Image

from recsys.catalog import reads
from recsys.errors import InvalidInput, UnknownFilter, UnknownItem
from recsys.ingest.interactions import record_interactions
from recsys.ingest.users import erase_users
from recsys.model.recommender import check_new_items
from recsys.serving import FeedRequest, Forgotten, fresh_history, home_feed
from recsys.vision.photo import (
    DECODE_ERRORS,
    PHOTO_FORMATS,
    RELEASE_AFTER_PIXELS,
    check_photo,
    release_memory,
    shown_at,
)
from services.context import answer_key, card, carried_answer, context, kept_answer, ranked
from services.contract import endpoint
from services.errors import ApiError, bad_parameter, message_of
from services.schemas import (
    Events,
    EventsQuery,
    Feed,
    FeedQuery,
    ImageUpload,
    Item,
    ItemDetail,
    ItemPage,
    ItemSearch,
    Page,
    RankRequest,
    Recorded,
    RejectedEvent,
    SearchQuery,
    Similar,
    SimilarQuery,
    UserErased,
    UserPage,
    UserSummary,
    VisualSearch,
    id_routes,
    path_id,
)

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/v1")
id_routes(bp)  # before the routes: they name ids as <id:...>

# The side an item write's photo is decoded at to check it (a search decodes its upload at the
# encoder's input size, as the catalog's photos are).
UPLOAD_SIDE = 256
# How long a visual search waits for one of its worker's image slots before a 503.
IMAGE_WAIT_SECONDS = 5.0


@bp.get("/items")
@endpoint(query=ItemSearch, responses={200: ItemPage}, errors=(400, 503), scope="items:read")
def list_items(query: ItemSearch) -> ItemPage:
    """Browse the catalog (optionally the items whose title contains q)"""
    page = reads.list_items(context().engine, query.offset, query.limit, query.q, query.after)
    items = [Item(**card(found.item_id, found)) for found in page.cards]
    return ItemPage(
        items=items,
        total=page.total,
        total_exact=page.exact,
        offset=query.offset,
        limit=query.limit,
        next=page.next,
    )


@bp.get('/items/<id(tail="/similar"):item_id>')
@endpoint(responses={200: ItemDetail}, errors=(400, 404, 503), scope="items:read")
def get_item(item_id: str) -> ItemDetail:
    """One catalog item"""
    item_id = path_id("item_id", item_id)
    found = context().cards.cards([item_id]).get(item_id)
    if found is None:
        raise ApiError(404, "unknown_item", f"item {item_id!r} is not in the catalog")
    holder = context().holder
    live = holder.live
    in_model = holder.ready and (
        item_id in holder.state.recommender.item_index or (live is not None and live.knows(item_id))
    )
    return ItemDetail(**card(item_id, found), in_model=bool(in_model))


@bp.get("/items/<id:item_id>/similar")
@endpoint(query=SimilarQuery, responses={200: Similar}, errors=(400, 404, 503), scope="items:read")
def similar_items(item_id: str, query: SimilarQuery) -> Response:
    """Items similar to this one (product page)"""
    item_id = path_id("item_id", item_id)
    ctx = context()
    state = ctx.holder.state
    args = (query.k, query.filters, query.mode, query.diversity)
    group = _group_by(ctx, state, query.group_by)

    def unchanged(live, kept) -> bool:
        recommender = state.recommender
        return group is None and recommender.similar_unchanged(
            live, kept.generation, item_id, kept.listed, kept.floor, *args
        )

    compute = functools.partial(_similar, ctx, state, item_id, query, group)
    return carried_answer(ctx, state, "similar", compute, unchanged)


def _similar(ctx, state, item_id: str, query: SimilarQuery, group: str | None):
    """(the answer, the items it lists, its lowest score or -inf when it lists fewer than
    asked, b""): what ``carried_answer`` keeps."""
    try:
        results = state.recommender.similar_items(
            [item_id],
            k=query.k,
            filters=query.filters,
            mode=query.mode,
            diversity=query.diversity,
            group_by=group,
        )
    except UnknownItem as exc:  # not in the bundle (says how to add it), or removed since
        raise ApiError(404, "unknown_item", message_of(exc)) from None
    except UnknownFilter as exc:  # only that: a ValueError of the code is a 500, logged
        raise bad_parameter("filters", str(exc)) from None
    items = ranked(ctx.cards, results)
    answer = {"item_id": item_id, "model_version": state.version, "items": items}  # a Similar
    return answer, *_kept(results, query.k)


def _kept(results, k: int) -> tuple[list[str], float, bytes]:
    """(the items an answer shows a card or a title of: those it lists and those its reasons
    name; its lowest score or -inf when it lists fewer than ``k``; the bundle rows it was
    ranked among or b""): what ``carried_answer`` keeps besides it."""
    listed, scores = results.ids[0], results.scores[0]
    because = results.because[0] if results.because else []
    named = {r.item_id for reasons in because for r in reasons if r.item_id is not None}
    floor = float(np.min(scores)) if len(listed) >= k else -np.inf
    considered = results.considered[0] if results.considered else None
    return [*listed, *sorted(named - set(listed))], floor, considered or b""


@bp.get("/users")
@endpoint(query=Page, responses={200: UserPage}, errors=(400, 503), scope="users:read")
def list_users(query: Page) -> UserPage:
    """Browse users, with their number of events (for browsing feeds)"""
    page = reads.list_users(context().engine, query.offset, query.limit, query.after)
    summaries = [UserSummary(user_id=u.user_id, interactions=u.interactions) for u in page.users]
    return UserPage(users=summaries, offset=query.offset, limit=query.limit, next=page.next)


@bp.delete('/users/<id(tail="/recommendations"):user_id>')
@endpoint(
    responses={200: UserErased},
    errors=(400, 503),
    scope="users:write",
    rate_limit="write",
)
def erase_user(user_id: str) -> UserErased:
    """Erase a user and all their events (a shopper's request to have their data removed)"""
    user_id = path_id("user_id", user_id)
    erased = erase_users(context().engine, [user_id])
    log.info("erased %d user(s) and %d event(s)", len(erased.users), erased.events)
    return UserErased(user_id=user_id, events=erased.events, found=bool(erased.users))


@bp.get("/users/<id:user_id>/recommendations")
@endpoint(query=FeedQuery, responses={200: Feed}, errors=(400, 503), scope="feeds:read")
def user_feed(user_id: str, query: FeedQuery) -> Response:
    """A user's home feed"""
    user_id = path_id("user_id", user_id)
    ctx = context()
    state = ctx.holder.state
    fresh = fresh_history(state, ctx.engine, user_id)
    new_items = _new_items(query.new_items, query.k)
    group = _group_by(ctx, state, query.group_by)
    request = FeedRequest(
        query.k, query.exclude_seen, None, query.filters, query.diversity, new_items, group
    )
    if isinstance(fresh, Forgotten):  # no answer kept from before the erasure is given
        return _feed(ctx, state, user_id, request, fresh)
    if fresh:  # folded in per request: kept by the exact generations and the events
        compute = functools.partial(_feed, ctx, state, user_id, request, fresh)
        return kept_answer(ctx, answer_key(ctx, state, *fresh), compute, "feed")
    args = (query.k, query.exclude_seen, query.filters, query.diversity)

    def unchanged(live, kept) -> bool:
        recommender = state.recommender
        return group is None and recommender.feed_unchanged(
            live, kept.generation, user_id, kept.listed, kept.floor, kept.considered, *args
        )

    def compute():
        answer, results = _feed_results(ctx, state, user_id, request, fresh)
        return answer, *_kept(results, query.k)

    return carried_answer(ctx, state, "feed", compute, unchanged)


@bp.post("/users/<id:user_id>/recommendations")
@endpoint(body=RankRequest, responses={200: Feed}, errors=(400, 413, 415, 503), scope="feeds:read")
def rank_for_user(user_id: str, body: RankRequest) -> dict:
    """Rank a given candidate list (or the catalog) for a user"""
    filters = body.filters.model_dump(exclude_unset=True) if body.filters else {}
    new_items = _new_items(body.new_items, body.k)
    ctx = context()
    state = ctx.holder.state
    group = _group_by(ctx, state, body.group_by)
    request = FeedRequest(
        body.k, body.exclude_seen, body.candidates, filters, body.diversity, new_items, group
    )
    return _feed(ctx, state, path_id("user_id", user_id), request)


def _group_by(ctx, state, asked: str | None) -> str | None:
    """The attribute an answer groups by: the request's ``group_by`` ("" for none; a 400
    naming it when the model cannot group by it), else the server's (RECSYS_GROUP_BY). A
    server's setting the served bundle cannot group by is logged once per bundle and left
    out: every list was a 400 blamed on clients that sent nothing, while /readyz said ready."""
    if asked is None:
        try:
            return state.recommender.check_group_by(ctx.settings.group_by)
        except InvalidInput as exc:
            if state.version not in _GROUP_REFUSED:
                _GROUP_REFUSED.add(state.version)
                log.warning("RECSYS_GROUP_BY is left out for model %s: %s", state.version, exc)
            return None
    try:
        return state.recommender.check_group_by(asked)
    except InvalidInput as exc:
        raise bad_parameter("group_by", str(exc)) from None


_GROUP_REFUSED: set[str] = set()  # bundle versions whose RECSYS_GROUP_BY was logged


def _new_items(new_items: int, k: int) -> int:
    """``new_items`` checked against ``k``, or a 400 naming it."""
    try:
        return check_new_items(new_items, k)
    except InvalidInput as exc:
        raise bad_parameter("new_items", str(exc)) from None


def _feed(ctx, state, user_id: str, request: FeedRequest, fresh=None) -> dict:
    """The feed's answer from ``state`` (the one its key, if any, was made from)."""
    return _feed_results(ctx, state, user_id, request, fresh)[0]


def _feed_results(ctx, state, user_id: str, request: FeedRequest, fresh=None):
    """(the feed's answer, the ``Results`` it was made from)."""
    try:
        results = home_feed(state, ctx.engine, user_id, request, fresh)
    except UnknownItem as exc:
        raise bad_parameter("candidates", message_of(exc)) from None
    except UnknownFilter as exc:  # only that: a ValueError of the code is a 500, logged
        raise bad_parameter("filters", str(exc)) from None
    answer = {  # a Feed
        "user_id": user_id,
        "model_version": state.version,
        "fallback": bool(results.fallback[0]),
        "items": ranked(ctx.cards, results),
    }
    return answer, results


@bp.post("/search/image")
@endpoint(
    query=SearchQuery,
    form=ImageUpload,
    responses={200: VisualSearch},
    errors=(400, 409, 413, 503),
    scope="search:read",
    rate_limit="search",
)
def search_image(query: SearchQuery, form: ImageUpload) -> VisualSearch:
    """Visual search: catalog items that look like an uploaded photo"""
    ctx = context()
    state = ctx.holder.state
    group = _group_by(ctx, state, query.group_by)
    if not state.recommender.has_images:
        raise ApiError(
            409, "no_image_model", f"model {state.version} was trained without item images"
        )
    with _image_slot(ctx.image_slots):
        config = state.recommender.image_encoder.config_  # decoded as its catalog's photos
        mode = "L" if config.channels == 1 else "RGB"
        pixels = _decode_image(form.image, ctx.settings.max_image_pixels, config.input_size, mode)
        try:
            results = state.recommender.search_images(
                pixels, k=query.k, filters=query.filters, group_by=group
            )
        except UnknownFilter as exc:
            raise bad_parameter("filters", str(exc)) from None
    return VisualSearch(model_version=state.version, items=ranked(ctx.cards, results))


@contextmanager
def _image_slot(slots: threading.Semaphore) -> Iterator[None]:
    """One of the worker's image slots, or a 503 when none frees up within IMAGE_WAIT_SECONDS
    (so image work never holds every thread of a worker, nor its memory several times over)."""
    if not slots.acquire(timeout=IMAGE_WAIT_SECONDS):
        raise ApiError(
            503,
            "busy",
            "visual search is busy on this server; retry in a few seconds",
            {"Retry-After": "2"},
        )
    try:
        yield
    finally:
        slots.release()


def _decode_image(
    data: bytes, max_pixels: int, size: int = UPLOAD_SIDE, mode: str = "RGB"
) -> np.ndarray:
    """(1, size, size[, 3]) uint8 from an uploaded file, or a 400 naming the field.

    The format and size are read from the header and checked before any pixel is decoded
    (``check_photo``); JPEGs are decoded straight at a reduced scale (``draft``), and the
    photo is seen as the encoder sees the catalog's (``shown_at``).
    """
    try:
        check_photo(io.BytesIO(data), max_pixels)
        with Image.open(io.BytesIO(data), formats=PHOTO_FORMATS) as image:
            large = image.width * image.height > RELEASE_AFTER_PIXELS
            image.draft(mode, (size, size))
            pixels = shown_at(image, size, mode)[None].copy()  # writable
        if large:
            release_memory()
        return pixels
    except InvalidInput as exc:
        raise bad_parameter("image", str(exc)) from None
    except DECODE_ERRORS:
        # its header said a photo of a format taken: the pixels are what is wrong
        raise bad_parameter(
            "image", "could not be decoded: the file is damaged or cut short; send it again whole"
        ) from None


@bp.post("/interactions")
@endpoint(
    query=EventsQuery,
    body=Events,
    responses={201: Recorded},
    errors=(400, 413, 415, 503),
    scope="events:write",
    rate_limit="write",
)
def add_interactions(body: Events, query: EventsQuery) -> Recorded:
    """Record events; the users' next feeds reflect them (no retraining)"""
    events = [event.model_dump(exclude_unset=True) for event in body.events]
    recorded = record_interactions(context().engine, events, skip_rejected=query.skip_rejected)
    return Recorded(
        inserted=recorded.inserted,
        updated=recorded.updated,
        unchanged=recorded.unchanged,
        users=recorded.users,
        rejected=[
            RejectedEvent(index=r.index, reason=r.reason, message=r.message)
            for r in recorded.rejected
        ],
    )
