"""What an API key may do: its scopes, and the checks the CLI, settings and service share."""

from __future__ import annotations

from collections.abc import Iterable

# name -> what it allows. ``admin`` holds every other scope too.
SCOPES = {
    "items:read": "browse the catalog, item pages and their similar items",
    "feeds:read": "users' home feeds (and ranking candidates for a user)",
    "search:read": "visual search by photo",
    "users:read": "list users",
    "users:write": "erase users and all their events (DELETE /v1/users/<id>)",
    "events:write": "record interactions (POST /v1/interactions)",
    "catalog:write": "write items (PUT, PATCH, DELETE /v1/items/<id>)",
    "metrics:read": "Prometheus metrics (GET /metrics)",
    "admin": "every scope, and the admin endpoints (POST /v1/admin/reload)",
}
ADMIN = "admin"
# Reads anyone may make without a key: similar items, feeds, item pages and visual search.
# /metrics is open too unless metrics:read is left out of RECSYS_PUBLIC_SCOPES.
DEFAULT_PUBLIC = ("items:read", "feeds:read", "search:read", "metrics:read")
# What RECSYS_PUBLIC_SCOPES may open: reads (users:read for a demo's list of shoppers), never
# a write or admin.
OPENABLE = ("items:read", "feeds:read", "search:read", "users:read", "metrics:read")


def parse_scopes(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    """Scope names from ``"a,b"``/``"a b"`` or an iterable, checked; ``ValueError`` naming
    ``what`` and the known scopes otherwise."""
    names = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    unknown = [name for name in names if name not in SCOPES]
    if unknown:
        raise ValueError(f"{what}: unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(names))


def grants(held: Iterable[str], needed: str) -> bool:
    """Whether scopes ``held`` allow what ``needed`` guards."""
    return needed in held or ADMIN in held
