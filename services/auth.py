"""Who may call what: each endpoint's scope, public scopes, API keys and the admin token.

An endpoint declares the scope it needs in its contract (``@endpoint(scope=...)``). At app
creation the views whose scope is not public (``Settings.public_scopes``) are collected in a
dict, so a public request costs one dict lookup and reads nothing. A guarded one needs
``Authorization: Bearer <key>``: the admin token (``RECSYS_ADMIN_TOKEN``) holds ``admin``,
any other key is looked up in the catalog (``recsys.catalog.keys``) and the answer kept in
memory for ``KEY_CACHE_SECONDS`` (app config, 30 s), so a revoked key stops working within
that time.

401 without a usable key, 403 with a key that lacks the scope; both carry RFC 6750's
``WWW-Authenticate`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

from flask import Flask, g, request
from sqlalchemy import Engine

from recsys.catalog.keys import find_key
from recsys.scopes import ADMIN, grants
from recsys.settings import Settings
from services.contract import contract_of
from services.errors import ApiError
from services.limits import KeyFailures

KEY_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Principal:
    """The caller a key identifies: ``key_id`` (``"admin-token"`` for the admin token)."""

    key_id: str
    scopes: tuple[str, ...]


class KeyCache:
    """Keys -> ``Principal`` (None: not a usable key), from the catalog at most every
    ``ttl`` seconds per key. Safe to share between a worker's threads."""

    def __init__(self, engine: Engine, admin_token: str, ttl: float):
        self.engine, self.ttl = engine, ttl
        self._admin = admin_token.encode()
        # Keys that work, and apart from them those that do not: a client sending bogus keys
        # fills and clears only the second (it cleared the whole cache at 10,000 of them).
        self._found: dict[str, tuple[float, Principal | None]] = {}
        self._refused: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def principal(self, key: str, unknown=None) -> Principal | None:
        """The key's caller, or None; ``unknown()`` runs (and may raise) first for a key not
        known to work (a key that worked at its last lookup is), before it is looked up in
        the catalog."""
        if self._admin and hmac.compare_digest(key.encode(), self._admin):
            return Principal("admin-token", (ADMIN,))
        digest = hashlib.sha256(key.encode()).hexdigest()  # the cache never holds a key
        now = time.monotonic()
        cached = self._found.get(digest) or self._refused.get(digest)
        fresh = cached is not None and cached[0] > now
        if fresh and cached[1] is not None:
            return cached[1]
        # a key that worked at its last lookup is looked up again whatever other keys from
        # its address did: it was refused for 30 s when a stale client beside it sent a
        # revoked one past the limit
        if unknown is not None and digest not in self._found:
            unknown()
        if fresh:
            return None
        info = find_key(self.engine, key)
        found = Principal(info.key_id, info.scopes) if info is not None else None
        kept = self._found if found is not None else self._refused
        with self._lock:
            self._found.pop(digest, None)  # a key revoked since moves to the refused ones
            if len(kept) >= KEY_CACHE_SIZE:
                kept.clear()
            kept[digest] = (now + self.ttl, found)
        return found


def guarded_views(app: Flask, public_scopes: tuple[str, ...]) -> dict[str, str]:
    """{endpoint name: scope it needs} for every view whose scope is not public."""
    guarded = {}
    for name, view in app.view_functions.items():
        contract = contract_of(view)
        scope = contract.scope if contract is not None else None
        if scope is not None and scope not in public_scopes:
            guarded[name] = scope
    return guarded


def init_app(app: Flask, settings: Settings, engine: Engine, failures: KeyFailures) -> None:
    """Check credentials before every guarded view; call after registering the blueprints.
    ``failures`` counts unknown keys per address and refuses past its limit."""
    guarded = guarded_views(app, settings.public_scopes)
    keys = KeyCache(engine, settings.admin_token, float(app.config["KEY_CACHE_SECONDS"]))
    app.extensions["recsys.auth"] = guarded

    @app.before_request
    def _authorize():
        if request.method == "OPTIONS":  # says which methods a path takes, nothing of its data
            return
        needed = guarded.get(request.endpoint)
        if needed is not None:
            header = request.headers.get("Authorization", "")
            g.principal = authorize(keys, header, needed, failures)


def authorize(
    keys: KeyCache, header: str, needed: str, failures: KeyFailures | None = None
) -> Principal:
    """The caller of a view that needs scope ``needed``, or a 401/403 saying what to send
    (a 429 once ``failures`` says the address sent too many unknown keys)."""
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthorized",
            f"this endpoint needs an API key with scope {needed}: send "
            "`Authorization: Bearer <key>` (an operator creates one with "
            f"`recsys keys create --scope {needed}`)",
            _challenge(needed),
        )
    found = keys.principal(key.strip(), failures.check if failures is not None else None)
    if found is None:
        if failures is not None:
            failures.record()
        raise ApiError(
            401,
            "invalid_key",
            "the API key is unknown or revoked",
            _challenge(needed, "invalid_token"),
        )
    if not grants(found.scopes, needed):
        raise ApiError(
            403,
            "insufficient_scope",
            f"API key {found.key_id} lacks scope {needed} (it has: {', '.join(found.scopes)})",
            _challenge(needed, "insufficient_scope"),
        )
    return found


def _challenge(scope: str, error: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="recsys", scope="{scope}"'
    if error:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}
