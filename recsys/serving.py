"""What a service needs around a ``Recommender``: fresh events and hot swaps.

The library does not know it is served: ``services/`` turns these into HTTP. Item cards and
other catalog reads are in ``recsys.catalog.reads`` (one source of cards for every view).

- ``ServingState``: one loaded bundle and the moment its data was read. Loading one also
  loads its image encoder and image index (``warm_images``) and what explanations read
  (``warm_explanations``), so no request pays for them.
- ``ModelHolder``: the current state behind one reference. ``reload()`` builds a new state
  completely (checksums verified) before swapping the reference, so a request that already
  holds the old state finishes on it and none sees a half-loaded model; a broken bundle
  raises and the old state keeps serving. ``maybe_reload()`` follows the registry's active
  bundle (each server process checks it every ``check_interval`` seconds).
- ``home_feed``: a user's recommendations with the events stored since the bundle's data
  was read folded into their vector (no retraining), so a feed reflects what they just did;
  ``FeedRequest`` says what is asked (k, filters, candidates, diversity λ).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.catalog.reads import fresh_items
from recsys.errors import InvalidBundle, ModelNotTrained
from recsys.model.bundle import active_version, load_active
from recsys.model.diversity import DEFAULT_DIVERSITY
from recsys.model.recommender import Recommender, Results

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    recommender: Recommender
    # interactions stored after this moment (naive UTC) are not in the bundle
    data_read_at: datetime
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.recommender.version


def load_state(engine: Engine) -> ServingState:
    """The registry's active bundle, verified, its image encoder loaded."""
    recommender = load_active(engine)
    warm_images(recommender)
    warm_explanations(recommender)
    manifest = recommender.manifest
    read_at = manifest.get("data_read_at") or manifest["created_at"]
    read_at = datetime.fromisoformat(read_at).replace(tzinfo=None)
    return ServingState(recommender, read_at)


def warm_images(recommender: Recommender) -> None:
    """Load the image encoder and build the image index now (one search of a blank image):
    otherwise the first visual search of each process pays for both (12 s, 640 MB measured on
    the demo shop). A bundle whose encoder cannot be loaded still serves everything else."""
    if not recommender.has_images:
        return
    try:
        recommender.search_images(np.zeros((1, 32, 32, 3), dtype=np.uint8), k=1)  # (1, H, W, 3)
    except InvalidBundle as exc:
        log.warning("bundle %s: visual search unavailable: %s", recommender.version, exc)


def warm_explanations(recommender: Recommender) -> None:
    """Build what explanations read on first use (the cf factors' Gram matrix, each filterable
    attribute's item x value matrix, the token postings of a bundle without them), so that no
    request pays for it."""
    _ = recommender.item_gram
    if recommender.fused.has_tokens:
        _ = recommender.fused.token_postings
    for name in recommender.filters.postings:
        recommender.filters.labels(name)


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
        """Reload when the registry's active bundle changed; at most every half
        check_interval (the service's watcher pauses 0.5 to 1.5 intervals between calls)."""
        now = time.monotonic()
        if now - self._checked < self.check_interval / 2 or self._lock.locked():
            return
        self._checked = now
        try:
            active = active_version(self.engine)
            current = self._state.version if self._state else None
            if active is not None and active != current:
                self.reload()
        except Exception:  # the current state keeps serving; the error is logged and kept
            log.exception("background reload failed")


@dataclass(frozen=True)
class FeedRequest:
    """What a home feed is asked for."""

    k: int = 20
    exclude_seen: bool = True
    candidates: list[str] | None = None  # rank only these item ids
    filters: dict[str, Any] | None = None
    # MMR λ, 0 to 1 (recsys.model.diversity; 0: the plain ranking)
    diversity: float = DEFAULT_DIVERSITY


def home_feed(
    state: ServingState, engine: Engine, user_id: str, request: FeedRequest | None = None
) -> Results:
    """One user's top-k with their fresh events folded in; unknown users fall back."""
    request = request or FeedRequest()
    recommender = state.recommender
    stored = fresh_items(engine, user_id, state.data_read_at)
    known = recommender.item_index.rows(stored) >= 0
    fresh = [item for item, keep in zip(stored, known, strict=True) if keep]
    options = (request.k, request.exclude_seen, request.candidates, request.filters)
    if not fresh:
        return recommender.recommend([user_id], *options, diversity=request.diversity)
    history = list(dict.fromkeys(recommender.seen_items(user_id) + fresh))
    return recommender.recommend_for_history([history], *options, diversity=request.diversity)
