"""Operations: liveness, readiness, metrics, the OpenAPI document, images, hot reload."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request, send_file

from recsys.catalog import reads
from services.context import context
from services.contract import Raw, endpoint
from services.errors import ApiError
from services.openapi import openapi_document
from services.schemas import Readiness, Reloaded, Status

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@endpoint(responses={200: Status})
def healthz() -> Status:
    """Liveness: the process answers (says nothing about the model or the database)"""
    return Status(status="ok")


@bp.get("/readyz")
@endpoint(responses={200: Readiness}, errors=(503,))
def readyz() -> Readiness:
    """Readiness: a model bundle is loaded and the catalog database answers"""
    ctx = context()
    try:
        reads.ping(ctx.engine)
    except Exception as exc:
        log.warning("readiness: database unavailable: %s", exc)
        raise ApiError(503, "database_unavailable", "the catalog database does not answer") from exc
    if not ctx.holder.ready:
        raise ApiError(503, "model_not_ready", ctx.holder.last_error or "no model bundle loaded")
    return Readiness(status="ready", model_version=ctx.holder.state.version)


@bp.get("/metrics")
@endpoint(responses={200: Raw("text/plain", "Prometheus text format")})
def metrics():
    """Prometheus metrics"""
    return context().metrics.exposition()


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(current_app))


@bp.get("/images/<item_id>")
@endpoint(responses={200: Raw("image/*", "The image file")}, errors=(404,))
def item_image(item_id: str):
    """An item's image"""
    path = reads.image_path(context().engine, item_id)
    if path is None or not Path(path).is_file():
        raise ApiError(404, "no_image", f"item {item_id!r} has no image")
    return send_file(path, max_age=86400)


@bp.post("/v1/admin/reload")
@endpoint(responses={200: Reloaded}, errors=(401, 409), bearer=True)
def reload_model() -> Reloaded:
    """Switch to the registry's active bundle; a broken one is refused, the old one serves"""
    ctx = context()
    _require_admin(ctx.settings.admin_token)
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


def _require_admin(token: str) -> None:
    challenge = {"WWW-Authenticate": 'Bearer realm="recsys admin"'}
    if not token:
        raise ApiError(
            401, "admin_disabled", "admin endpoints are off: set RECSYS_ADMIN_TOKEN", challenge
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required", challenge)
