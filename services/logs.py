"""Each request's id, and the service's log lines in the format of ``Settings.log_format``.

Every answer carries ``X-Request-ID``: the one the request came with (a proxy's or the
client's, when it is a plausible id), else a new one. The same id is in every line the
service logs while answering it (``request_id`` in JSON lines), in the access log, and in
the message of a 500 ("internal error; the server log has details (request ...)"), so that
a client's report of a failure leads to its traceback.

With ``RECSYS_LOG_FORMAT=json`` gunicorn uses ``services.workers.JsonLogger``: its own lines
and the access log (``RECSYS_ACCESS_LOG``) are JSON objects too, one a line, with the
request's method, path, status, bytes, duration, client address, user agent and id under
``http``.
"""

from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, g, has_request_context, request

from recsys.logs import formatter

REQUEST_ID_HEADER = "X-Request-ID"
# What an id taken from a request may be: a UUID, a hex string, a load balancer's trace id
# (AWS: "Root=1-67891233-abcdef012345678912345678"); anything else gets a new one, so that
# no client writes newlines or markup into the log.
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:;=+/@-]{1,128}")


def init_app(app: Flask) -> None:
    @app.before_request
    def _request_id():
        given = request.headers.get(REQUEST_ID_HEADER)
        g.request_id = given if given and _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def _answer_id(response):
        response.headers[REQUEST_ID_HEADER] = request_id() or ""
        return response


def request_id() -> str | None:
    """The id of the request being answered (None outside one, or before it has one)."""
    return g.get("request_id") if has_request_context() else None


class RequestIds(logging.Filter):
    """Puts the id of the request being answered on each record (``record.request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id()
        return True


def log_to(handler: logging.Handler, kind: str) -> None:
    """The service's own loggers (``recsys``, ``services``) write to ``handler`` in ``kind``'s
    format ("text" or "json"), with the request's id on each record."""
    handler.setFormatter(formatter(kind))
    handler.addFilter(RequestIds())
