"""Rate limits on writes and visual search, per API key and per client address (Flask-Limiter).

A view opts in with ``@endpoint(rate_limit="write" | "search")``; the limit itself is a setting
(``Settings.write_rate_limit``, ``search_rate_limit``). Each opted-in view gets two limits of
that size: one counted per API key (when the caller sent one that ``services.auth`` checked)
and one per client address, so neither many keys from one address nor one key from many
addresses goes past it. A refused request is a 429 in the service's error shape with
``Retry-After``; the views that do not opt in are not counted.

Counters must be shared by every gunicorn worker, or each worker would allow the whole limit.
Without Redis or memcached on the host, the default store is ``SQLiteStorage``: one SQLite
file per catalog in ``/dev/shm`` (RAM), which every process on the host opens; each counted
request is one atomic UPSERT there (a few tens of microseconds). Several hosts behind one
balancer need a store they share: set ``RECSYS_RATE_LIMIT_STORAGE=redis://...`` (any
``limits`` storage URI). Behind a proxy, the client address is the proxy's unless the app is
wrapped in ``werkzeug.middleware.proxy_fix.ProxyFix`` (see the README).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from flask import Flask, g
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits.storage import Storage

from recsys.settings import Settings
from services.contract import contract_of
from services.errors import error_response

_SCHEMA = """CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL)"""
_INCR = """INSERT INTO counters (key, count, expires) VALUES (:key, :amount, :now + :expiry)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN expires <= :now THEN :amount ELSE count + :amount END,
    expires = CASE WHEN expires <= :now THEN :now + :expiry ELSE expires END
RETURNING count"""
# Expired counters are deleted on one increment in this many.
_SWEEP_EVERY = 512


class SQLiteStorage(Storage):
    """A ``limits`` storage in one SQLite file, shared by the processes of one host.

    ``sqlite:///dev/shm/limits.db``: fixed-window counters (Flask-Limiter's default
    strategy); one connection per thread; every increment is a single atomic UPSERT.
    """

    STORAGE_SCHEME = ["sqlite"]  # noqa: RUF012 (the name limits' registry reads)

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions, **options)
        self.path = urlparse(uri).path if uri else ""
        if not self.path:
            raise ValueError(f"rate limit storage {uri!r} names no file: sqlite:///path/file.db")
        self._local = threading.local()
        self._increments = 0

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _db(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")  # counters, not records
            connection.execute(_SCHEMA)
            self._local.connection = connection
        return connection

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        values = {"key": key, "amount": amount, "now": now, "expiry": expiry}
        count = self._db().execute(_INCR, values).fetchone()[0]
        self._increments += 1
        if self._increments % _SWEEP_EVERY == 0:
            self._db().execute("DELETE FROM counters WHERE expires <= ?", (now,))
        return count

    def get(self, key: str) -> int:
        query = "SELECT count FROM counters WHERE key = ? AND expires > ?"
        row = self._db().execute(query, (key, time.time())).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        query = "SELECT expires FROM counters WHERE key = ? AND expires > ?"
        row = self._db().execute(query, (key, time.time())).fetchone()
        return row[0] if row else time.time()

    def check(self) -> bool:
        try:
            self._db().execute("SELECT 1")
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        return self._db().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        self._db().execute("DELETE FROM counters WHERE key = ?", (key,))


def default_storage_uri(database_url: str) -> str:
    """One counters file per catalog, in RAM when the host has /dev/shm."""
    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    name = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return f"sqlite://{folder / f'recsys-ratelimits-{name}.db'}"


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Limit the views that declare a ``rate_limit``; call after registering the blueprints."""
    limiter = Limiter(
        get_remote_address,
        storage_uri=settings.rate_limit_storage or default_storage_uri(settings.database_url),
        headers_enabled=True,  # X-RateLimit-* on limited views, Retry-After on a 429
        swallow_errors=True,  # a broken counters store logs and lets requests through
    )
    limiter.init_app(app)
    sizes = {"write": settings.write_rate_limit, "search": settings.search_rate_limit}
    for name, view in list(app.view_functions.items()):
        contract = contract_of(view)
        if contract is None or contract.rate_limit is None:
            continue
        size = sizes[contract.rate_limit]
        per_key = limiter.limit(size, key_func=_key_of_caller, exempt_when=_anonymous)
        app.view_functions[name] = limiter.limit(size)(per_key(view))

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        return error_response(
            429,
            "rate_limited",
            f"too many requests: at most {exc.description} per API key and per address; "
            "retry after the seconds in Retry-After",
        )

    return limiter


def _anonymous() -> bool:
    return g.get("principal") is None


def _key_of_caller() -> str:
    return "key:" + g.principal.key_id
