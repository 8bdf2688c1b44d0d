"""Flask app factory: ``create_app()`` for gunicorn, ``recsys serve`` for development.

Production::

    gunicorn -c services/gunicorn.conf.py "services.app:create_app()"
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from flask import Config, Flask, Response, request
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from recsys.catalog import connect
from recsys.catalog.db import database_problem, require_current_schema, sqlite_unwritable
from recsys.catalog.reads import CardCache, CardSnapshot
from recsys.errors import InvalidSettings
from recsys.model.bundle import active_bundle
from recsys.model.delta import DeltaConfig
from recsys.serving import ModelHolder, follow_catalog, load_state
from recsys.settings import Settings, ignored_variable
from services import api, auth, catalog_health, cors, errors, items, limits, logs, ops, web
from services.answers import AnswerCache
from services.context import ServiceContext
from services.metrics import Metrics
from services.metrics import init_app as init_metrics

log = logging.getLogger(__name__)

BLUEPRINTS = (api.bp, items.bp, ops.bp, web.bp, catalog_health.bp)

DEFAULTS = {
    # Largest upload (visual search photos, JSON bodies), bytes; larger requests get a 413.
    "MAX_CONTENT_LENGTH": 5 * 1024 * 1024,
    # Load the active bundle when the app starts (tests may load it themselves).
    "LOAD_MODEL": True,
    # Each process checks the registry's active bundle this often (s) and swaps to it; 0 = off.
    "RELOAD_CHECK_SECONDS": 10.0,
    # Each process applies the catalog's item changes this often (s; the live catalog, see
    # recsys.model.delta): one primary-key read when nothing changed; 0 = off.
    "LIVE_CATALOG_SECONDS": 1.0,
    "JSON_SORT_KEYS": False,
    # Item cards each process keeps in memory (recsys.catalog.reads.CardCache): the catalog
    # follower above keeps them as current as the model's delta (an edit shows within
    # LIVE_CATALOG_SECONDS, on the product page and in every ranked row at once); with the
    # follower off, each request checks the catalog's items generation. 0 reads every card
    # every time.
    "CARD_CACHE_ITEMS": 50_000,
    # The catalog follower also keeps every item's card as columns (CardSnapshot: about 30
    # bytes per item plus titles and attributes), so lists of items no request showed before
    # read no card from the database: only items written since are read.
    "CARD_SNAPSHOT": True,
    # With the follower off: seconds a worker answers cards from memory before it reads the
    # items generation again; 0 reads it on every request, so an edit shows on the next one.
    "CARD_MAX_AGE_SECONDS": 0.0,
    # Serialized similar-items and feed answers each process keeps, in MB (services.answers):
    # a repeated request is answered from memory, exactly as it would be computed again (the
    # key holds the bundle, the catalog generations and the user's new events). 0: none.
    "ANSWER_CACHE_MB": 32,
    # A worker that cannot reach the catalog at start retries after 0.5 s, 1 s, 2 s ... up to
    # this many seconds apart, serving 503s meanwhile, instead of failing to boot.
    "CATALOG_RETRY_MAX_SECONDS": 30.0,
    # How long a worker trusts what it read of an API key (a revoked key works this long).
    "KEY_CACHE_SECONDS": 30.0,
}


def check_config(config) -> None:
    """Raise ``InvalidSettings`` naming the first ``RECSYS_FLASK_*`` value of the wrong kind
    (Flask reads each as JSON, so ``abc`` stays text and failed later, in every worker, as a
    traceback): each of ``DEFAULTS`` takes what its default is, a number >= 0 or true/false
    (in any case: ``False`` is JSON's ``false`` as meant)."""
    for key, default in DEFAULTS.items():
        value = config.get(key, default)
        if isinstance(default, bool):
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                value = config[key] = value.strip().lower() == "true"  # False, TRUE: as meant
            if not isinstance(value, bool):
                raise InvalidSettings(f"RECSYS_FLASK_{key}={value!r} must be true or false")
        elif isinstance(default, int | float):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise InvalidSettings(f"RECSYS_FLASK_{key}={value!r} must be a number >= 0")


def flask_config_from_environment() -> None:
    """``check_config`` of the ``RECSYS_FLASK_*`` environment (the gunicorn master, before
    it forks: one line instead of a traceback per worker)."""
    config = Config("")
    config.from_mapping(DEFAULTS)
    config.from_prefixed_env("RECSYS_FLASK")
    check_config(config)
    prefix = "RECSYS_FLASK_"
    known = [prefix + key for key in (*DEFAULTS, *Flask.default_config)]
    for name in sorted(os.environ):
        if name.startswith(prefix) and name not in known:
            log.warning(ignored_variable(name, known, prefix))


# Item cards read by the gunicorn master before it forks the workers (``preload_cards``):
# every worker starts from this one copy, whose pages they share, and brings it up to date
# through the change log; None: each worker reads its own.
_preloaded_cards: CardSnapshot | None = None


def preload_cards(settings: Settings | None = None) -> None:
    """Read the catalog's item cards once, in the process that forks the workers (gunicorn's
    master, ``services/gunicorn.conf.py``), so that the workers share one ``CardSnapshot``'s
    pages instead of holding a copy each (150 bytes per item per worker). Skipped, with a log
    line, when ``RECSYS_FLASK_CARD_SNAPSHOT`` is false or the catalog does not answer."""
    global _preloaded_cards
    wanted = os.environ.get("RECSYS_FLASK_CARD_SNAPSHOT")
    if wanted is not None and wanted.strip().lower() == "false":  # as ``check_config`` reads
        return
    engine = connect((settings or Settings.load()).database_url)
    try:
        _preloaded_cards = CardSnapshot.read(engine)
    except Exception as exc:  # the workers read their own, or wait for the catalog
        log.warning("item cards not preloaded (each worker reads its own): %s", exc)
    finally:
        engine.dispose()  # no connection crosses the fork


def preload_image_libraries(settings: Settings | None = None) -> bool:
    """Import torch and the image encoder's code in the process that forks the workers when
    the active bundle has an image encoder, which every worker then loads with the bundle:
    imported in each worker after the fork, torch and its libraries were hundreds of MB of
    private memory per worker; imported once here, their pages are shared. Nothing is
    imported for a bundle without one (torch stays out of those workers). -> imported."""
    engine = connect((settings or Settings.load()).database_url)
    try:
        path = Path(active_bundle(engine).path)
    except Exception as exc:  # no bundle yet, the catalog away: the workers import on use
        log.info("image libraries not preloaded: %s", exc)
        return False
    finally:
        engine.dispose()  # no connection crosses the fork
    try:
        if not (path / "image_encoder").is_dir():
            return False
    except OSError as exc:  # unreadable: the workers refuse the bundle and say why
        log.info("image libraries not preloaded: %s", exc)
        return False
    import recsys.vision.encoder  # noqa: F401 (torch and torchvision with it)

    return True


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None):
    """The service over the catalog at ``settings.database_url`` and its active bundle."""
    settings = settings or Settings.load()
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("RECSYS_FLASK")
    app.config.from_mapping(test_config or {})
    check_config(app.config)
    app.json.sort_keys = False
    engine = connect(settings.database_url, settings.database_timeout, settings.database_pool_size)
    metrics = Metrics()
    # The workers of this host (of every host sharing the artifacts) make each live item's
    # blocks once between them (recsys.model.live_share).
    live = DeltaConfig(settings.live_max_items, settings.artifacts_dir / "live-blocks")
    holder = ModelHolder(
        engine,
        loader=functools.partial(load_state, live=live),
        check_interval=float(app.config["RELOAD_CHECK_SECONDS"] or 0),
        on_swap=lambda state: metrics.model_loaded(state.version),
        on_follow=metrics.live_changed,
        on_refused=metrics.bundle_refused,
    )
    cards = CardCache(
        engine,
        int(app.config["CARD_CACHE_ITEMS"]),
        float(app.config["CARD_MAX_AGE_SECONDS"]),
        snapshot=bool(app.config["CARD_SNAPSHOT"]),
        preloaded=_preloaded_cards if app.config["CARD_SNAPSHOT"] else None,
    )
    answers = AnswerCache(int(float(app.config["ANSWER_CACHE_MB"]) * 1e6))
    app.extensions["recsys"] = ServiceContext(settings, engine, holder, metrics, cards, answers)
    logs.init_app(app)
    errors.init_app(app)
    init_metrics(app, metrics)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    _refuse_while_waiting(app, holder)  # before a key is looked up in that catalog
    limiter = limits.make_limiter(settings)
    key_failures = limits.KeyFailures(limiter, settings.key_failure_rate_limit)
    auth.init_app(app, settings, engine, key_failures)
    limits.init_app(app, settings, limiter)
    cors.init_app(app, settings)
    _revalidated(app)  # last: runs first, so logs and metrics see a 304 as such
    _start(app, engine, holder, cards)
    return app


def _revalidated(app: Flask) -> None:
    """An ETag on every JSON answer of a GET, and a 304 for a client that has it: a shop's
    pages revalidate instead of fetching each answer again. ``Cache-Control: no-cache``
    (stored, revalidated before each use); ``private`` where the answer is a user's, or a
    key was shown for it (a shared cache must not keep it)."""

    @app.after_request
    def _etag(response: Response) -> Response:
        if request.method not in ("GET", "HEAD") or response.status_code != 200:
            return response
        if response.mimetype != "application/json" or not request.path.startswith("/v1/"):
            return response
        private = "Authorization" in request.headers or request.path.startswith("/v1/users")
        response.headers.setdefault("Cache-Control", "private, no-cache" if private else "no-cache")
        # werkzeug's add_etag and make_conditional cost 20 us a request (Range, dates...):
        # a digest of the body and one header comparison, 6 us
        tag = hashlib.sha1(response.get_data()).hexdigest()
        response.headers["ETag"] = f'"{tag}"'
        # compared weakly (RFC 9110): a proxy that compresses answers (nginx's gzip) sends
        # them on as W/"..." and its clients ask with that; they never got a 304
        if "If-None-Match" in request.headers and request.if_none_match.contains_weak(tag):
            response.status_code = 304
            response.set_data(b"")
        return response


# What a worker waiting for its catalog refuses: every read and write of it. A worker of
# older code on a catalog newer code migrated recorded events and wrote items into a schema
# it does not know; /healthz, /readyz (which says why), /metrics and the page still answer.
_NEEDS_CATALOG = ("/v1/", "/images/")


def _refuse_while_waiting(app: Flask, holder: ModelHolder) -> None:
    @app.before_request
    def _catalog_ready():
        if holder.last_error is None or not request.path.startswith(_NEEDS_CATALOG):
            return None
        waiting = errors.waiting_for_catalog(holder)
        if waiting is not None:
            return errors.error_response(503, "catalog_not_ready", waiting)
        return None


def _start(app: Flask, engine: Engine, holder: ModelHolder, cards: CardCache) -> None:
    """Load the bundle and follow the registry, now if the catalog answers, else from a
    thread that waits for it (the worker boots either way; readyz says what is missing)."""
    load, watch = app.config["LOAD_MODEL"], bool(app.config["RELOAD_CHECK_SECONDS"])
    follow = float(app.config["LIVE_CATALOG_SECONDS"] or 0)
    if follow:
        args = (holder, follow, cards)
        threading.Thread(
            target=follow_catalog, args=args, name="catalog-follower", daemon=True
        ).start()
    problem = _catalog_problem(engine)
    if problem is None:
        if unwritable := sqlite_unwritable(engine):  # reads serve; every write would fail
            log.error("%s: event, item and erasure writes will fail (503)", unwritable)
        if load:
            _load_at_start(holder)
        if watch:
            threading.Thread(
                target=_watch, args=(holder,), name="bundle-watcher", daemon=True
            ).start()
        return
    log.error("catalog not available at start, retrying in the background: %s", problem[1])
    holder.last_error = f"{errors.WAITING}: {problem[0]}"
    retry_max = float(app.config["CATALOG_RETRY_MAX_SECONDS"])
    args = (engine, holder, load, watch, retry_max)
    threading.Thread(target=_wait_for_catalog, args=args, name="catalog-wait", daemon=True).start()


def _catalog_problem(engine: Engine) -> tuple[str, str] | None:
    """Why the catalog cannot serve (unreachable, not migrated), or None: (what /readyz
    shows anyone, no path in it; what the log says: the SQLite file's path, and what the
    driver's error means, ``database_problem``)."""
    try:
        require_current_schema(engine)
    except Exception as exc:  # OperationalError, CatalogNotReady, a driver's own errors
        shown = str(exc).splitlines()[0]
        if isinstance(exc, DBAPIError):
            return shown, database_problem(exc, engine.url.render_as_string(False))
        path = getattr(exc, "path", None)
        return shown, shown + (f" ({path})" if path else "")
    return None


def _wait_for_catalog(engine, holder, load: bool, watch: bool, retry_max: float) -> None:
    delay = 0.5
    while (problem := _catalog_problem(engine)) is not None:
        engine.dispose()  # the next try opens fresh connections (a SQLite file may be back)
        holder.last_error = f"{errors.WAITING}: {problem[0]}"
        log.warning("catalog still not available, next try in %.1f s: %s", delay, problem[1])
        time.sleep(delay)
        delay = min(2 * delay, retry_max)
    log.info("catalog available")
    holder.last_error = None
    if load:
        _load_at_start(holder)
    if watch:
        _watch(holder)


def _load_at_start(holder: ModelHolder) -> None:
    """Load the active bundle (or, when it cannot be loaded, the newest earlier one that
    can: a worker restarted after a bad bundle was activated serves what its siblings still
    serve); without one the service starts unready (readyz says why)."""
    try:
        holder.reload(fallback=True)
    except Exception as exc:
        log.error("no model bundle loaded at start: %s", exc)


def _watch(holder: ModelHolder) -> None:
    """Follow the registry's active bundle (one daemon thread per process).

    Each pause is drawn between half and one and a half check intervals, so the workers of
    one host drift apart and a new bundle is not loaded by all of them in the same second;
    the old bundle keeps answering while this thread loads the new one.
    """
    jitter = random.Random()  # seeded from the OS: each worker its own sequence
    while True:
        time.sleep(holder.check_interval * jitter.uniform(0.5, 1.5))
        holder.maybe_reload()
