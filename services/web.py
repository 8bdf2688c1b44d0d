"""The web page at ``/``: one static page (``services/static``) that uses the JSON API."""

from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, Response, current_app
from markupsafe import escape

from services.context import context

bp = Blueprint("web", __name__)


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
