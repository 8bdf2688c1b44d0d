"""Operations: liveness, readiness, metrics, the OpenAPI document, images, hot reload."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from flask import Blueprint, jsonify, request, send_file
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from recsys.catalog.models import Item
from services.context import context
from services.errors import ApiError
from services.openapi import openapi_document

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """Live: the process answers (says nothing about the model or the database)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready: a bundle is loaded and the catalog database answers."""
    ctx = context()
    try:
        with ctx.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database unavailable: %s", exc)
        raise ApiError(503, "database_unavailable", "the catalog database does not answer") from exc
    if not ctx.holder.ready:
        raise ApiError(503, "model_not_ready", ctx.holder.last_error or "no model bundle loaded")
    return jsonify(status="ready", model_version=ctx.holder.state.version)


@bp.get("/metrics")
def metrics():
    return context().metrics.exposition()


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.get("/images/<item_id>")
def item_image(item_id: str):
    with Session(context().engine) as session:
        path = session.scalar(select(Item.image_path).where(Item.external_id == item_id))
    if path is None or not Path(path).is_file():
        raise ApiError(404, "no_image", f"item {item_id!r} has no image")
    return send_file(path, max_age=86400)


@bp.post("/v1/admin/reload")
def reload_model():
    """Swap in the registry's active bundle; a broken one is refused and the old one serves."""
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
    return jsonify(previous_version=previous, model_version=current)


def _require_admin(token: str) -> None:
    challenge = {"WWW-Authenticate": 'Bearer realm="recsys admin"'}
    if not token:
        raise ApiError(
            401, "admin_disabled", "admin endpoints are off: set RECSYS_ADMIN_TOKEN", challenge
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required", challenge)
