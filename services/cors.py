"""Cross-origin reads and writes from browsers on the shop's own pages (CORS).

Off unless ``Settings.cors_origins`` names origins (``RECSYS_CORS_ORIGINS``): then an answer
to a request whose ``Origin`` is one of them (or any, with ``*``) carries
``Access-Control-Allow-Origin`` with that origin, and a preflight (``OPTIONS`` with
``Access-Control-Request-Method``) says which methods the path takes and that
``Authorization`` and ``Content-Type`` may be sent. No cookies are involved (keys travel in
``Authorization``), so credentials are never allowed. Without the setting no hook is
registered: a request pays nothing for it.
"""

from __future__ import annotations

from flask import Flask, request

from recsys.settings import Settings

# X-Request-ID: the README asks clients to send one (it comes back in the answer and the logs)
# If-None-Match: a page revalidating an answer by its ETag itself
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID, If-None-Match"
EXPOSED_HEADERS = "Retry-After, ETag, X-Request-ID"
MAX_AGE_SECONDS = 600


def init_app(app: Flask, settings: Settings) -> None:
    origins = frozenset(settings.cors_origins)
    if not origins:
        return
    anyone = "*" in origins

    @app.after_request
    def _cors(response):
        response.vary.add("Origin")  # a cache must not give one origin's answer to another
        origin = request.headers.get("Origin")
        if origin is None or not (anyone or origin in origins):
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = response.headers.get("Allow", "")
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
        return response
