"""Operations: liveness, readiness, metrics, the OpenAPI document, images, hot reload."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, current_app, jsonify, send_file

from recsys.catalog import reads
from recsys.errors import CatalogNotReady, InvalidInput
from recsys.logs import Repeated
from recsys.scopes import ADMIN
from recsys.vision.photo import image_mimetype
from services.context import context
from services.contract import Raw, endpoint
from services.errors import ApiError, message_of, model_problem, waiting_for_catalog
from services.openapi import openapi_document
from services.schemas import (
    ImageQuery,
    LiveCatalog,
    Readiness,
    Reloaded,
    Status,
    id_routes,
    path_id,
)

log = logging.getLogger(__name__)
# a probe every few seconds from each balancer: one line a minute while the catalog is away
# (README, "Durability and faults"), not one per probe
_unready = Repeated(log, "readiness: the catalog database does not answer")

bp = Blueprint("ops", __name__)
id_routes(bp)  # before the routes: they name ids as <id:...>


@bp.get("/healthz")
@endpoint(responses={200: Status})
def healthz() -> Status:
    """Liveness: the process answers (says nothing about the model or the database)"""
    return Status(status="ok")


@bp.get("/readyz")
@endpoint(responses={200: Readiness}, errors=(503,))
def readyz() -> Readiness:
    """Readiness: a model bundle is loaded and the catalog database answers

    ``live`` says what the answering worker serves beside its bundle, and whether a retrain
    is due (its live catalog is full); the service is still ready then."""
    ctx = context()
    waiting = waiting_for_catalog(ctx.holder)
    if waiting is not None:  # not migrated, migrated by newer code, away since start
        raise ApiError(503, "catalog_not_ready", waiting)
    _check_catalog(ctx.engine)
    if not ctx.holder.ready:
        raise ApiError(503, "model_not_ready", model_problem(ctx.holder.last_error))
    state, refused = ctx.holder.state, ctx.holder.refused
    return Readiness(
        status="ready",
        model_version=state.version,
        live=_live(ctx.holder.live),
        refused_version=refused.version if refused is not None else None,
        group_by=_served_group_by(state, ctx.settings.group_by),
        image_search=state.recommender.has_images,
    )


def _served_group_by(state, setting: str) -> str | None:
    """The server's group_by (RECSYS_GROUP_BY) as its lists apply it: None when unset or
    when the served bundle cannot group by it (``services.api._group_by`` leaves it out)."""
    try:
        return state.recommender.check_group_by(setting)
    except InvalidInput:
        return None


def _live(delta) -> LiveCatalog | None:
    """What the live catalog adds to the bundle; still ready when a retrain is due."""
    if delta is None:
        return None
    return LiveCatalog(
        items=delta.size,
        max_items=delta.max_items,
        waiting=delta.pending,
        hidden=delta.hides,
        generation=delta.generation,
        retrain_due=delta.retrain_due,
    )


def _check_catalog(engine) -> None:
    """A query on the configured database: for SQLite the engine first checks that the file
    at the configured path is still the one its connection opened (``recsys.catalog.db``), so
    a catalog moved away or deleted while serving is a 503 here, and ready again once back."""
    try:
        reads.ping(engine)
    except CatalogNotReady as exc:  # the SQLite file is gone; the message names no path
        _unready.failed(exc)
        raise ApiError(503, "database_unavailable", message_of(exc)) from exc
    except Exception as exc:  # the driver's text may hold paths or hosts: the log has it
        _unready.failed(exc)
        raise ApiError(503, "database_unavailable", "the catalog database does not answer") from exc
    _unready.worked()


@bp.get("/metrics")
@endpoint(responses={200: Raw("text/plain", "Prometheus text format")}, scope="metrics:read")
def metrics():
    """Prometheus metrics"""
    return context().metrics.exposition()


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(current_app))


# The types an item's image is served as (image_mimetype: its format's, read from the file):
# the photo formats uploads take (PHOTO_FORMATS), and BMP and TIFF, which an ingested folder
# may hold.
IMAGE = Raw(
    ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff"),
    "The image file, as the type of its format",
)


@bp.get("/images/<id:item_id>")
@endpoint(query=ImageQuery, responses={200: IMAGE}, errors=(400, 404, 503))
def item_image(item_id: str, query: ImageQuery):
    """An item's image"""
    item_id = path_id("item_id", item_id)  # as every path that names an item reads it
    path = reads.image_path(context().engine, item_id)
    # Only a file that is an image is served, whatever path the catalog holds for it
    mimetype = image_mimetype(path) if path is not None and Path(path).is_file() else None
    if mimetype is None:
        raise ApiError(404, "no_image", f"item {item_id!r} has no image")
    # The URL stays when an item's photo is replaced: clients revalidate (a 304 while the
    # ETag, of the file's path, size and time, holds) instead of keeping an old photo a day.
    return send_file(path, mimetype=mimetype, max_age=0)


@bp.post("/v1/admin/reload")
@endpoint(responses={200: Reloaded}, errors=(401, 403, 409, 503), scope=ADMIN)
def reload_model() -> Reloaded:
    """Switch to the registry's active bundle; a broken one is refused, the old one serves"""
    ctx = context()  # services.auth checked the admin token or a key with scope admin
    try:
        previous, current = ctx.holder.reload()
    except Exception as exc:
        serving = ctx.holder.state.version if ctx.holder.ready else None
        raise ApiError(
            409,
            "bundle_refused",
            f"the active bundle was refused ({exc}); still serving {serving}",
        ) from exc
    return Reloaded(previous_version=previous, model_version=current)
