"""The web page at ``/``: one static page (``services/static``) that uses the JSON API."""

from __future__ import annotations

from flask import Blueprint, current_app

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    return current_app.send_static_file("index.html")
