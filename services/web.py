"""The web page at ``/``: one static page (``services/static``) that uses the JSON API."""

from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, Response, current_app
from markupsafe import escape

from services.context import context

bp = Blueprint("web", __name__)


# The pages load their own scripts, styles and images only (the photo a shopper searches by
# is shown from a blob: URL); no page of this service may be framed, so the /catalog page,
# which takes an admin key, cannot be clickjacked.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@bp.after_app_request
def _hardened(response: Response) -> Response:
    """Every answer: its type is what it says (no sniffing an image or JSON as HTML) and it
    is never framed; pages also get ``PAGE_POLICY``."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", PAGE_POLICY)
    return response


@bp.get("/")
def index() -> Response:
    """The page, told the shop's currency (``RECSYS_CURRENCY``) on its ``<html>`` element."""
    page = _page(str(Path(current_app.static_folder, "index.html")))
    currency = escape(context().settings.currency)
    page = page.replace("<html ", f'<html data-currency="{currency}" ', 1)
    return Response(page, mimetype="text/html")


@functools.cache
def _page(path: str) -> str:
    """The page's file, read once per process (a deploy replaces the process with the file)."""
    return Path(path).read_text(encoding="utf-8")
