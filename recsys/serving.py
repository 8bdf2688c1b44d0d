"""What a service needs around a ``Recommender``: catalog cards, fresh events, hot swaps.

The library does not know it is served: ``services/`` turns these into HTTP.

- ``ServingState``: one loaded bundle plus the catalog's display fields (title, attributes,
  stock, whether there is an image) of every item, read once at load.
- ``ModelHolder``: the current state behind one reference. ``reload()`` builds a new state
  completely (checksums verified) before swapping the reference, so a request that already
  holds the old state finishes on it and none sees a half-loaded model; a broken bundle
  raises and the old state keeps serving. ``maybe_reload()`` follows the registry's active
  bundle (each server process checks it every ``check_interval`` seconds).
- ``home_feed``: a user's recommendations with the events stored since the bundle's data
  was read folded into their vector (no retraining), so a feed reflects what they just did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from recsys.catalog.models import Interaction, Item, ModelBundle, User
from recsys.errors import ModelNotTrained
from recsys.model.recommender import Recommender, Results

log = logging.getLogger(__name__)

# Most recent fresh events folded into a feed.
FRESH_LIMIT = 200


@dataclass
class ServingState:
    recommender: Recommender
    # external item id -> display fields (title, in_stock, has_image, attributes)
    cards: dict[str, dict[str, Any]]
    # interactions stored after this moment (naive UTC) are not in the bundle
    data_read_at: datetime
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.recommender.version


def load_state(engine: Engine) -> ServingState:
    """The registry's active bundle (verified) and the catalog's item cards."""
    recommender = Recommender.load_active(engine)
    manifest = recommender.manifest
    read_at = manifest.get("data_read_at") or manifest["created_at"]
    read_at = datetime.fromisoformat(read_at).replace(tzinfo=None)
    return ServingState(recommender, item_cards(engine), read_at)


def item_cards(engine: Engine, item_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    query = select(Item.external_id, Item.title, Item.in_stock, Item.image_path, Item.attributes)
    if item_ids is not None:
        query = query.where(Item.external_id.in_(item_ids))
    with Session(engine) as session:
        return {
            external_id: {
                "title": title,
                "in_stock": bool(in_stock),
                "has_image": image_path is not None,
                "attributes": attributes or {},
            }
            for external_id, title, in_stock, image_path, attributes in session.execute(query)
        }


def active_version(engine: Engine) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(ModelBundle.version).where(ModelBundle.is_active))


class ModelHolder:
    """The serving state behind one reference; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        loader: Callable[[Engine], ServingState] = load_state,
        check_interval: float = 10.0,
        on_swap: Callable[[ServingState], None] | None = None,
    ):
        self.engine, self.loader, self.check_interval = engine, loader, check_interval
        self.on_swap = on_swap
        self._state: ServingState | None = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self.last_error: str | None = None

    @property
    def state(self) -> ServingState:
        state = self._state
        if state is None:
            raise ModelNotTrained(
                self.last_error or "no model bundle loaded; run `recsys train`, then reload"
            )
        return state

    @property
    def ready(self) -> bool:
        return self._state is not None

    def reload(self) -> tuple[str | None, str]:
        """Load the active bundle and swap it in -> (old version, new version).

        Raises (``InvalidBundle``, ``ModelNotTrained``) and keeps the current state when the
        active bundle cannot be loaded.
        """
        with self._lock:
            old = self._state.version if self._state else None
            try:
                new_state = self.loader(self.engine)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("reload refused, still serving %s: %s", old, exc)
                raise
            self._state, self.last_error = new_state, None
            self._checked = time.monotonic()
            if self.on_swap is not None:
                self.on_swap(new_state)
        log.info("serving model bundle %s (was %s)", new_state.version, old)
        return old, new_state.version

    def maybe_reload(self) -> None:
        """Reload when the registry's active bundle changed; at most every check_interval."""
        now = time.monotonic()
        if now - self._checked < self.check_interval or self._lock.locked():
            return
        self._checked = now
        try:
            active = active_version(self.engine)
            current = self._state.version if self._state else None
            if active is not None and active != current:
                self.reload()
        except Exception:  # the current state keeps serving; the error is logged and kept
            log.exception("background reload failed")


# Built once: per request only the parameters change (SQLAlchemy caches the compiled form).
_FRESH_ITEMS = (
    select(Item.external_id)
    .join(Interaction, Interaction.item_id == Item.id)
    .join(User, Interaction.user_id == User.id)
    .where(User.external_id == bindparam("user_id"), Interaction.created_at > bindparam("since"))
    .order_by(Interaction.id.desc())
    .limit(FRESH_LIMIT)
)


def fresh_items(engine: Engine, user_id: str, since: datetime) -> list[str]:
    """Items of the user's events stored after ``since``, newest first (at most FRESH_LIMIT)."""
    with engine.connect() as connection:
        rows = connection.execute(_FRESH_ITEMS, {"user_id": user_id, "since": since})
        return list(rows.scalars())


def home_feed(
    state: ServingState,
    engine: Engine,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    candidates: list[str] | None = None,
    filters: dict[str, Any] | None = None,
) -> Results:
    """One user's top-k with their fresh events folded in; unknown users fall back."""
    recommender = state.recommender
    fresh = [
        item
        for item in fresh_items(engine, user_id, state.data_read_at)
        if item in recommender.item_index
    ]
    if not fresh:
        return recommender.recommend([user_id], k, exclude_seen, candidates, filters)
    history = list(dict.fromkeys(recommender.seen_items(user_id) + fresh))
    return recommender.recommend_for_history([history], k, exclude_seen, candidates, filters)
