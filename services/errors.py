"""One JSON error shape for every status: ``{"error": {"status", "code", "message"}}``."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from recsys.errors import (
    CatalogNotReady,
    InvalidBundle,
    InvalidInput,
    ModelNotTrained,
    RecsysError,
    UnknownItem,
)

log = logging.getLogger(__name__)

_RECSYS_STATUS = (
    (UnknownItem, 404, "unknown_item"),
    (InvalidInput, 400, "invalid_input"),
    (ModelNotTrained, 503, "model_not_ready"),
    (CatalogNotReady, 503, "catalog_not_ready"),
    (InvalidBundle, 503, "model_not_ready"),
)


class ApiError(Exception):
    """An error a view raises on purpose: status, machine-readable code, human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def message_of(exc: Exception) -> str:
    """The text of a domain error (``UnknownItem`` is a ``KeyError``, whose str is quoted)."""
    return str(exc).strip("'\"")


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {message}")


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    body = {"error": {"status": status, "code": code, "message": message}}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(RecsysError)
    def _recsys_error(exc: RecsysError):
        for kind, status, code in _RECSYS_STATUS:
            if isinstance(exc, kind):
                return error_response(status, code, message_of(exc))
        return error_response(400, "invalid_input", str(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the server log has details")
