"""API keys in the catalog: create (the key is returned once), list, revoke, and find.

A key is ``rk_<key_id>_<secret>``: 12 hex characters that name its row and 43 random URL-safe
characters (256 bits). The catalog keeps only the SHA-256 of the whole key: a key this random
needs no slow password hash, and a stolen table reveals no key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from recsys.catalog.models import ApiKey, utcnow
from recsys.errors import InvalidInput
from recsys.scopes import parse_scopes

_KEY = re.compile(r"^rk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class KeyInfo:
    """What the catalog knows of a key (never the key itself)."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def create_key(engine: Engine, scopes: Iterable[str], name: str = "") -> tuple[KeyInfo, str]:
    """A new key with ``scopes`` -> (its info, the key). The key cannot be read back later."""
    try:
        checked = parse_scopes(scopes, "scope")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not checked:
        raise InvalidInput("a key needs at least one scope, e.g. --scope events:write")
    key_id = secrets.token_hex(6)
    key = f"rk_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(key_id=key_id, name=name, secret_hash=_digest(key), scopes=" ".join(checked))
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return _info(row), key


def list_keys(engine: Engine) -> list[KeyInfo]:
    """Every key, revoked ones included, oldest first."""
    with Session(engine) as session:
        return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(engine: Engine, key_id: str) -> KeyInfo:
    """Revoke the key named ``key_id``, or the key itself (``rk_<id>_<secret>``: its id is
    taken); revoking twice keeps the first time (``KeyInfo.revoked_at`` says when)."""
    whole = _KEY.match(key_id.strip())
    key_id = whole.group(1) if whole else key_id
    with Session(engine, expire_on_commit=False) as session, session.begin():
        row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None:
            raise InvalidInput(f"no API key {key_id!r}; `recsys keys list` shows them")
        row.revoked_at = row.revoked_at or utcnow()
    return _info(row)


def find_key(engine: Engine, key: str) -> KeyInfo | None:
    """The active key ``key`` is, or None (malformed, unknown, wrong secret or revoked)."""
    match = _KEY.match(key)
    if match is None:
        return None
    with Session(engine) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_id == match.group(1)))
        if row is None or not hmac.compare_digest(row.secret_hash, _digest(key)):
            return None
        info = _info(row)
    return info if info.active else None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.key_id, row.name, tuple(row.scopes.split()), row.created_at, row.revoked_at)
