"""Flask app factory: ``create_app()`` for gunicorn, ``recsys serve`` for development.

Production::

    gunicorn -c services/gunicorn.conf.py "services.app:create_app()"
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask

from recsys.catalog import connect
from recsys.catalog.db import require_current_schema
from recsys.catalog.reads import CardCache
from recsys.serving import ModelHolder
from recsys.settings import Settings
from services import api, errors, ops, web
from services.context import ServiceContext
from services.metrics import Metrics
from services.metrics import init_app as init_metrics

log = logging.getLogger(__name__)

BLUEPRINTS = (api.bp, ops.bp, web.bp)

DEFAULTS = {
    # Largest upload (visual search photos, JSON bodies), bytes; larger requests get a 413.
    "MAX_CONTENT_LENGTH": 5 * 1024 * 1024,
    # Load the active bundle when the app starts (tests may load it themselves).
    "LOAD_MODEL": True,
    # Each process checks the registry's active bundle this often (s) and swaps to it; 0 = off.
    "RELOAD_CHECK_SECONDS": 10.0,
    "JSON_SORT_KEYS": False,
    # Item cards each process keeps in memory (always current: see recsys.catalog.reads);
    # 0 reads every card from the catalog on every request.
    "CARD_CACHE_ITEMS": 50_000,
}


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None):
    """The service over the catalog at ``settings.database_url`` and its active bundle."""
    settings = settings or Settings.load()
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("RECSYS_FLASK")
    app.config.from_mapping(test_config or {})
    app.json.sort_keys = False
    engine = connect(settings.database_url)
    require_current_schema(engine)
    metrics = Metrics()
    holder = ModelHolder(
        engine,
        check_interval=float(app.config["RELOAD_CHECK_SECONDS"] or 0),
        on_swap=lambda state: metrics.model_loaded(state.version),
    )
    cards = CardCache(engine, int(app.config["CARD_CACHE_ITEMS"]))
    app.extensions["recsys"] = ServiceContext(settings, engine, holder, metrics, cards)
    errors.init_app(app)
    init_metrics(app, metrics)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    if app.config["LOAD_MODEL"]:
        _load_at_start(holder)
    if app.config["RELOAD_CHECK_SECONDS"]:
        _start_watcher(holder)
    return app


def _load_at_start(holder: ModelHolder) -> None:
    """Load the active bundle; without one the service starts unready (readyz says why)."""
    try:
        holder.reload()
    except Exception as exc:
        log.error("no model bundle loaded at start: %s", exc)


def _start_watcher(holder: ModelHolder) -> None:
    """A daemon thread that follows the registry's active bundle (one per process)."""

    def watch() -> None:
        while True:
            time.sleep(holder.check_interval)
            holder.maybe_reload()

    threading.Thread(target=watch, name="bundle-watcher", daemon=True).start()
