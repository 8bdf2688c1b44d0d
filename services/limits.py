"""Rate limits on writes and visual search, per API key and per client address.

A view opts in with ``@endpoint(rate_limit="write" | "search")``; the limit itself is a setting
(``Settings.write_rate_limit``, ``search_rate_limit``). An opted-in view is counted per client
address and, when the caller sent a key that ``services.auth`` checked, per key as well, so
neither many keys from one address nor one key from many addresses goes past it. A refused
request is a 429 in the service's error shape with ``Retry-After``.

The counting is the ``limits`` library (the engine of Flask-Limiter: its fixed-window strategy
and storages). Flask-Limiter itself is not used: its hooks run on every request, limited or not,
and cost 150-200 us each time on this machine, more than the rest of a public read's overhead;
here a view that is not limited is not touched at all.

Counters must be shared by every gunicorn worker, or each worker would allow the whole limit.
Without Redis or memcached on the host, the default store is ``SQLiteStorage``: one SQLite
file per catalog in ``/dev/shm`` (RAM), which every process on the host opens; each counted
request is one atomic UPSERT there (tens of microseconds). Several hosts behind one balancer
need a store they share: set ``RECSYS_RATE_LIMIT_STORAGE=redis://...`` (any ``limits``
storage URI). Behind a proxy, the client address is the proxy's unless the app is wrapped in
``werkzeug.middleware.proxy_fix.ProxyFix`` (see the README). A store that fails is logged and
lets requests through: limits protect the service, they must not take it down.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from flask import Flask, g, request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from recsys.catalog.db import catalog_key
from recsys.errors import InvalidSettings
from recsys.settings import Settings
from services.contract import contract_of
from services.errors import ApiError

log = logging.getLogger(__name__)

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
            connection = self._local.connection = _open(self.path)
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


def _open(path: str, patience: float = 5.0) -> sqlite3.Connection:
    """A connection to the counters file, in WAL mode with the table made.

    Workers that boot together race to switch a new file to WAL and create the table; SQLite
    answers the losers "database is locked" at once for the switch, without waiting on its busy
    timeout. They try again (up to ``patience`` seconds) rather than fail their first request.
    """
    deadline = time.monotonic() + patience
    while True:
        connection = sqlite3.connect(path, timeout=patience, isolation_level=None)
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")  # counters, not records
            connection.execute(_SCHEMA)
            return connection
        except sqlite3.OperationalError as exc:
            connection.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def default_storage_uri(database_url: str) -> str:
    """One counters file per catalog (``catalog_key``: two shops' ``sqlite:///shop.db`` from
    their own folders counted each other's failed keys), in RAM when the host has /dev/shm."""
    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    name = hashlib.sha256(catalog_key(database_url).encode()).hexdigest()[:16]
    return f"sqlite://{folder / f'recsys-ratelimits-{name}.db'}"


# The counter ``make_limiter`` writes once to check the store takes writes.
_CHECK_KEY = "recsys/store-check"


def make_limiter(settings: Settings) -> FixedWindowRateLimiter:
    """The counters of every limit of this host's workers (``Settings.rate_limit_storage``),
    opened once here: ``InvalidSettings`` naming the setting when they cannot be. A store
    that fails later lets requests through (logged), so one that never worked turned every
    limit off, the failed-key one included, while the service said it was ready."""
    uri = settings.rate_limit_storage or default_storage_uri(settings.database_url)
    try:
        storage = storage_from_string(uri, wrap_exceptions=True)
        if isinstance(storage, SQLiteStorage):  # a write: a file this user cannot write opens
            storage.incr(_CHECK_KEY, 1)
            storage.clear(_CHECK_KEY)
    except (ConfigurationError, StorageError, ValueError, sqlite3.Error) as exc:
        where = "RECSYS_RATE_LIMIT_STORAGE" if settings.rate_limit_storage else "the default"
        fix = (
            'install its client, e.g. pip install "limits[redis]"'
            if "prerequisite" in str(exc)
            else "give a sqlite:/// path to a file this user can write (in a folder it can "
            "write), or a redis:// or memcached:// URI"
        )
        raise InvalidSettings(
            f"rate_limit_storage {uri!r} ({where}) cannot be used: {exc}; {fix}"
        ) from None
    return FixedWindowRateLimiter(storage)


def check_storage(settings: Settings) -> None:
    """``make_limiter``'s check alone, leaving no connection open (the gunicorn master checks
    before it forks the workers)."""
    storage = make_limiter(settings).storage
    connection = getattr(getattr(storage, "_local", None), "connection", None)
    if connection is not None:
        connection.close()


class KeyFailures:
    """Failed key checks per client address (``Settings.key_failure_rate_limit``). Past the
    limit the address's unknown keys get a 429 without being looked up, until the window
    ends: guessing keys or the admin token goes no faster than the limit, and a flood of
    bogus keys costs no catalog read each. Keys that worked (cached) still pass."""

    SCOPE = "key_failures"

    def __init__(self, limiter: FixedWindowRateLimiter, limit: str):
        self.limiter, self.items = limiter, parse_many(limit)

    def check(self) -> None:
        """A 429 when this request's address is past the limit."""
        caller = _address()
        for item in self.items:
            try:
                if self.limiter.test(item, self.SCOPE, caller):
                    continue
                reset = self.limiter.get_window_stats(item, self.SCOPE, caller).reset_time
            except StorageError as exc:
                log.error("rate limit store failed, key check let through: %s", exc)
                return
            raise _refused(reset, f"too many unknown API keys from this address: at most {item}")

    def record(self) -> None:
        """Count one failed key check of this request's address."""
        for item in self.items:
            try:
                self.limiter.hit(item, self.SCOPE, _address())
            except StorageError as exc:
                log.error("rate limit store failed, failed key check not counted: %s", exc)
                return


def _address() -> str:
    return "address:" + (request.remote_addr or "unknown")


def init_app(app: Flask, settings: Settings, limiter: FixedWindowRateLimiter) -> None:
    """Count the views that declare a ``rate_limit``; call after registering the blueprints."""
    sizes = {"write": settings.write_rate_limit, "search": settings.search_rate_limit}
    for name, view in list(app.view_functions.items()):
        contract = contract_of(view)
        if contract is not None and contract.rate_limit is not None:
            items = parse_many(sizes[contract.rate_limit])
            # one count per limit, not per view: PUT, PATCH, DELETE and POST events each got
            # the whole write limit (four times the documented rate)
            app.view_functions[name] = _limited(view, limiter, items, contract.rate_limit)


def _limited(view: Callable, limiter: FixedWindowRateLimiter, items, scope: str) -> Callable:
    @functools.wraps(view)  # keeps the contract on the view
    def wrapper(**path: str):
        _count(limiter, items, scope)
        return view(**path)

    return wrapper


def _count(limiter: FixedWindowRateLimiter, items: list[RateLimitItem], scope: str) -> None:
    """Count this request against each limit, per address and per key; a 429 past one."""
    callers = [_address()]
    if (principal := g.get("principal")) is not None:
        callers.append("key:" + principal.key_id)
    for item in items:
        for caller in callers:
            try:
                allowed = limiter.hit(item, scope, caller)
                if not allowed:
                    reset = limiter.get_window_stats(item, scope, caller).reset_time
            except StorageError as exc:
                log.error("rate limit store failed, request let through: %s", exc)
                return
            if not allowed:
                said = f"too many requests: at most {item} per API key and per address"
                raise _refused(reset, said)


def _refused(reset: float, said: str) -> ApiError:
    """A 429 saying ``said`` and when the window ends (``reset``: epoch seconds)."""
    retry = max(1, math.ceil(reset - time.time()))
    return ApiError(429, "rate_limited", f"{said}; retry in {retry} s", {"Retry-After": str(retry)})
