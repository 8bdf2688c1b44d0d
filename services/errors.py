"""One JSON error shape for every status: ``{"error": {"status", "code", "message"}}``.

Messages never show a file path: domain errors name files for the operator's log (a corrupt
bundle's folder, the SQLite file), and the answer keeps only the last part (``…/name``).
"""

from __future__ import annotations

import logging
import re

from flask import Flask, g, has_app_context, jsonify, request
from sqlalchemy.exc import DatabaseError
from werkzeug.exceptions import ClientDisconnected, HTTPException

from recsys.catalog.db import database_away
from recsys.errors import (
    CatalogNotReady,
    InvalidBundle,
    InvalidInput,
    ModelNotTrained,
    PhotoStoreUnavailable,
    RecsysError,
    SearchTooBroad,
    UnknownItem,
)
from recsys.logs import Repeated
from services import logs
from services.workers import READ_TIMEOUT, REQUEST_DEADLINE

log = logging.getLogger(__name__)

# An absolute path of two or more parts (not a word's "a/b"); group 1 is its last part.
_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"(),;]+/)+([^\s/'\"(),;]*)")
# The exception's class name a worker's last error starts with (``ModelHolder.last_error``):
# a word for the log, not for a client.
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z]+: ")
# How a worker's ``last_error`` starts while the catalog database is not ready for it.
WAITING = "waiting for the catalog"
# Headers an error answer keeps from the exception that made it.
_KEPT_HEADERS = {"allow", "retry-after", "www-authenticate"}
# Seconds a 503 (no model yet, the catalog database away) asks a client to wait.
RETRY_AFTER = 5

_RECSYS_STATUS = (
    (UnknownItem, 404, "unknown_item"),
    # one code for every value a request gets wrong, wherever it is checked (events' values
    # were "invalid_input" and their JSON types "invalid_parameter" on one endpoint)
    (InvalidInput, 400, "invalid_parameter"),
    (SearchTooBroad, 400, "search_too_broad"),
    (ModelNotTrained, 503, "model_not_ready"),
    (CatalogNotReady, 503, "catalog_not_ready"),
    (InvalidBundle, 503, "model_not_ready"),
    (PhotoStoreUnavailable, 503, "uploads_unavailable"),
)


class ApiError(Exception):
    """An error a view raises on purpose: status, machine-readable code, human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def message_of(exc: Exception) -> str:
    """The text of a domain error: a ``KeyError``'s (``UnknownItem``) without the quotes its
    str adds; any other's as it is (stripping every error's quotes cut a range error's
    closing one: "got 'abc")."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def waiting_for_catalog(holder) -> str | None:
    """What a client may read of why the worker is waiting for its catalog (not migrated,
    migrated by newer code, away since the worker started), or None when it is not."""
    problem = holder.last_error
    if problem is None or not problem.startswith(WAITING):
        return None
    return model_problem(problem)


def model_problem(last_error: str | None) -> str:
    """Why no bundle is loaded, as any client may read it: no bundle path, database host or
    driver text (a feed's 503 quoted psycopg's "connection to server at ..., port ...
    failed"); the server log has the details."""
    if not last_error:
        return "no model bundle loaded; run `recsys train`"
    if last_error.startswith(WAITING):  # the catalog, not the bundle
        if "newer code migrated it" in last_error:
            fix = "newer code migrated it: run that code, or downgrade the catalog with it"
        elif "recsys db upgrade" in last_error:
            fix = "run `recsys db upgrade`"
        else:
            fix = "check it answers"
        return (
            f"the catalog database is not ready (the server log says why): {fix}, and check "
            "RECSYS_DATABASE_URL"
        )
    kind = _CLASS_NAME.match(last_error)
    if kind is None:  # the service's own words
        return last_error
    if kind.group() == "ModelNotTrained: ":  # nothing trained: that message names no path
        return last_error[kind.end() :]
    return (
        f"the active model bundle could not be loaded ({kind.group()[:-2]}; the server log "
        "says why); retrain with `recsys train` or roll back with `recsys bundles activate "
        "VERSION`"
    )


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {message}")


def without_paths(message: str) -> str:
    """``message`` with each absolute path cut to its last part: ``/srv/x/bundles/v3`` ->
    ``…/v3``."""
    return _PATH.sub(r"…/\1", message)


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    """The error shape; a 503 says when to retry (``Retry-After``, ``RETRY_AFTER`` seconds
    unless the error gives its own)."""
    body = {"error": {"status": status, "code": code, "message": without_paths(message)}}
    if has_app_context():
        g.error_code = code  # for the metrics' count by code
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    if status == 503 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def init_app(app: Flask) -> None:
    @app.before_request
    def _read_chunked_body():
        # A chunked body is read before the view, so one gunicorn cannot read is a 400 for
        # every route: a view that reads no body (DELETE, a reload) answered 200 and did its
        # work, and gunicorn then wrote a second, stray 400 on the connection.
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            request.get_data(cache=True, parse_form_data=True)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {k: v for k, v in exc.get_headers() if k.lower() in _KEPT_HEADERS}
        message = exc.description or exc.name
        if exc.code == 413 and (limit := app.config.get("MAX_CONTENT_LENGTH")):
            message = (
                f"the request body is larger than {limit:,} bytes, the limit "
                "(RECSYS_FLASK_MAX_CONTENT_LENGTH)"
            )
            if request.content_length is not None and request.content_length <= limit:
                # werkzeug's form limits, under the body's: a 57 KB form of 1,001 parts
                # was told its body was over 5 MB
                message = (
                    f"the form has more than {app.config['MAX_FORM_PARTS']:,} parts, or a "
                    f"field other than a file over {app.config['MAX_FORM_MEMORY_SIZE']:,} bytes"
                )
        if isinstance(exc, ClientDisconnected):  # "the browser (or proxy) sent a request..."
            message = (
                "the request body stopped before its end: the client closed the connection, "
                f"or sent nothing for {READ_TIMEOUT:g} s (a request may take "
                f"{REQUEST_DEADLINE:g} s in all)"
            )
            headers["Connection"] = "close"
        return error_response(exc.code or 500, code, message, headers)

    @app.errorhandler(RecsysError)
    def _recsys_error(exc: RecsysError):
        if isinstance(exc, PhotoStoreUnavailable):  # the operator's to fix: the log names it
            log.error("%s (%s)", exc, exc.path)
        for kind, status, code in _RECSYS_STATUS:
            if isinstance(exc, kind):
                message = message_of(exc)
                if isinstance(exc, ModelNotTrained) and message.startswith(WAITING):
                    message = model_problem(message)  # no database host or driver text
                    code = "catalog_not_ready"  # the catalog is what is missing, not a model
                elif isinstance(exc, ModelNotTrained):  # a worker's last error: "Kind: why"
                    message = _CLASS_NAME.sub("", message, count=1)
                return error_response(status, code, message)
        return error_response(400, "invalid_parameter", str(exc))

    database_errors = Repeated(log, "a request met a catalog database error (a 503)")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if type(exc).__module__ == "gunicorn.http.errors":
            # a body gunicorn cannot read (a chunk size "zz", a chunk without its CRLF, a
            # client gone mid-body) is raised where the app reads it: the client's error;
            # the rest of the body cannot be found, so the connection ends with the answer
            return error_response(
                400,
                "bad_request",
                f"the request body cannot be read ({type(exc).__name__}: {exc}); send a "
                "complete body, with a valid chunked encoding if it is chunked",
                {"Connection": "close"},
            )
        request_id = logs.request_id()
        log.exception(
            "unhandled error in %s %s (request %s)", request.method, request.path, request_id
        )
        message = f"internal error; the server log has details (request {request_id})"
        return error_response(500, "internal_error", message)

    @app.errorhandler(DatabaseError)
    def _database_gone(exc: DatabaseError):
        # the server is down, the file locked, full, truncated or damaged (a plain
        # DatabaseError: "database disk image is malformed"); a violated constraint or bad SQL
        # (IntegrityError, ProgrammingError ...) is a bug, a 500
        if not database_away(exc):
            return _unexpected(exc)
        database_errors.failed(exc)
        if "readonly database" in str(getattr(exc, "orig", exc)).lower():
            # no retry helps: its file or folder must be made writable (the log names them)
            return error_response(
                503,
                "catalog_read_only",
                "the catalog database is read-only: writes fail until the operator makes it "
                "writable (the server log names the file)",
            )
        return error_response(
            503,
            "database_unavailable",
            "the catalog database is unavailable (down, too busy or refusing connections); "
            "retry later",
        )
