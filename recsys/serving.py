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
- The live catalog: each state carries a ``LiveCatalog`` (``recsys.model.delta``), rebuilt
  from the catalog when the state is loaded; ``ModelHolder.follow()`` (the service calls it
  every second) applies the catalog's item changes since, so new, changed, removed and
  out-of-stock items show in every answer without retraining.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError

from recsys.catalog.db import database_away
from recsys.catalog.reads import CardCache, user_since
from recsys.errors import CatalogNotReady, InvalidBundle, ModelNotTrained
from recsys.logs import Repeated
from recsys.memory import trim_c_heap
from recsys.model.bundle import active_bundle, active_version, earlier_bundles, load_recommender
from recsys.model.delta import Delta, DeltaConfig, LiveCatalog
from recsys.model.diversity import DEFAULT_DIVERSITY
from recsys.model.live import LiveItems
from recsys.model.recommender import Recommender, Results

log = logging.getLogger(__name__)
_feeds_without_fresh = Repeated(
    log, "the catalog does not answer: feeds answered without the events stored since the bundle"
)

LIVE = DeltaConfig()  # the live catalog's defaults


@dataclass
class ServingState:
    recommender: Recommender
    # interactions stored after this moment (naive UTC) are not in the bundle
    data_read_at: datetime
    loaded_at: float = field(default_factory=time.time)
    # Follows the catalog's item changes since the bundle (None: the bundle alone).
    catalog: LiveCatalog | None = None
    # The bundle's users all came from the catalog: one it no longer has was erased. False
    # for a bundle trained on an event folder (its users need not be in the catalog) and
    # for one that does not say (trained before erasures), until the next training.
    users_from_catalog: bool = False
    # The bundle's folder and its files' sizes and times when it was loaded
    # (``bundle_signature``): files changed or gone under a serving worker are noticed.
    directory: str = ""
    signature: tuple = ()

    @property
    def version(self) -> str:
        return self.recommender.version


def load_state(
    engine: Engine, live: DeltaConfig | None = LIVE, warm: bool = True, bundle=None
) -> ServingState:
    """The registry's active bundle (or the registry row ``bundle``), verified, its image
    encoder loaded (with ``warm``, and what explanations read built); with ``live``, its
    delta rebuilt from the catalog (``recsys.model.delta``)."""
    directory = (bundle or active_bundle(engine)).path
    signature = bundle_signature(directory)  # before reading: a change meanwhile shows later
    recommender = load_recommender(directory)
    if warm:
        warm_images(recommender)
        warm_explanations(recommender)
    manifest = recommender.manifest
    read_at = manifest.get("data_read_at") or manifest["created_at"]
    read_at = datetime.fromisoformat(read_at).replace(tzinfo=None)
    state = ServingState(recommender, read_at, directory=str(directory), signature=signature)
    state.users_from_catalog = manifest.get("events_from") == "catalog"
    if live is not None:
        items = LiveItems.of(recommender, directory, read_at)
        state.catalog = LiveCatalog(engine, recommender, items, read_at, live)
        state.catalog.rebuild()
    return state


def served_recommender(engine: Engine) -> Recommender:
    """The active bundle's recommender with the catalog's live delta, as a worker has it
    (stock, removals, new and changed items), without what only a server warms up: what a
    command answers or scores as the service would."""
    return load_state(engine, warm=False).recommender


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
    if recommender.cf is not None:
        _ = recommender.cf.gram
    if recommender.fused.has_tokens:
        _ = recommender.fused.token_postings
    for name in recommender.filters.postings:
        recommender.filters.labels(name)


# Earlier bundles a starting worker tries when the active one cannot be loaded.
FALLBACK_BUNDLES = 3
# Seconds after a swap before the heap the bundle before freed is handed back (its requests
# in flight are done by then; ``ModelHolder.trim_after_swap``).
SWAP_TRIM_DELAY = 5.0


def bundle_signature(path: str | Path) -> tuple:
    """The bundle folder and each of its files with size, modification time, mode and owner
    (() when there is no folder it can list): what tells a bundle refused once from one
    fixed since, without reading it. Mode and owner too: a bundle refused for a file its
    user could not read stayed refused after a chmod."""
    try:
        folder = Path(path)
        stats = [("", folder.stat()), *((f.name, f.stat()) for f in folder.iterdir())]
    except OSError:
        return ()
    return tuple(
        sorted(
            (name, stat.st_size, stat.st_mtime_ns, stat.st_mode, stat.st_uid, stat.st_gid)
            for name, stat in stats
        )
    )


@dataclass(frozen=True)
class Refused:
    """The registry's active bundle as this worker last failed to load it."""

    version: str
    signature: tuple
    reason: str


class ModelHolder:
    """The serving state behind one reference; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        loader: Callable[[Engine], ServingState] = load_state,
        check_interval: float = 10.0,
        on_swap: Callable[[ServingState], None] | None = None,
        on_follow: Callable[[Delta], None] | None = None,
        on_refused: Callable[[Refused | None], None] | None = None,
    ):
        self.engine, self.loader, self.check_interval = engine, loader, check_interval
        self.on_swap, self.on_follow, self.on_refused = on_swap, on_follow, on_refused
        self._state: ServingState | None = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self.last_error: str | None = None
        # The active bundle this worker could not load, while it serves another (or none):
        # not tried again until its files change or another bundle is activated.
        self.refused: Refused | None = None
        self._reload_failures = Repeated(log, "checking for a new active bundle failed")
        self._follow_failures = Repeated(
            log, "following the catalog failed (the last delta serves)"
        )
        self._swapped_at: float | None = None  # time.monotonic() of a swap not yet trimmed

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

    def reload(self, fallback: bool = False) -> tuple[str | None, str]:
        """Load the active bundle and swap it in -> (old version, new version).

        Raises (``InvalidBundle``, ``ModelNotTrained``) and keeps the current state when the
        active bundle cannot be loaded. With ``fallback``, a worker serving nothing (one
        starting, or restarted after a crash while its siblings serve the last good bundle)
        serves the newest earlier bundle that loads instead, and says so (``refused``). So
        does a worker whose served bundle is the one refused: its files changed under it (a
        copy over it, a damaged disk), and what it maps from them gave 500s.
        """
        with self._lock:
            old = self._state.version if self._state else None
            try:
                new_state = self.loader(self.engine)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._set_refused(self._refusal(exc))
                served_refused = self.refused is not None and self.refused.version == old
                may_fall_back = (fallback and self._state is None) or served_refused
                if not may_fall_back or self.refused is None:
                    log.warning("reload refused, still serving %s: %s", old, exc)
                    raise
                new_state = self._earlier(exc)
            else:
                self._set_refused(None)
            self._state, self.last_error = new_state, None
            self._checked = self._swapped_at = time.monotonic()
            if self.on_swap is not None:
                self.on_swap(new_state)
            if self.on_follow is not None and new_state.recommender.live is not None:
                self.on_follow(new_state.recommender.live)
        log.info("serving model bundle %s (was %s)", new_state.version, old)
        return old, new_state.version

    def _set_refused(self, refused: Refused | None) -> None:
        self.refused = refused
        if self.on_refused is not None:
            self.on_refused(refused)

    def _refusal(self, exc: Exception) -> Refused | None:
        """What was refused: the active bundle row and its files now. None when the bundle
        itself is not at fault (a database error while its live catalog was read: tried
        again at the next check), nothing is active, or the registry cannot be read."""
        if not isinstance(exc, InvalidBundle):
            return None
        try:
            bundle = active_bundle(self.engine)
        except Exception:
            return None
        reason = f"{type(exc).__name__}: {exc}"
        return Refused(bundle.version, bundle_signature(bundle.path), reason)

    def _earlier(self, exc: Exception) -> ServingState:
        """The newest of the ``FALLBACK_BUNDLES`` earlier bundles that loads; ``exc`` raised
        again when none does."""
        refused = self.refused
        for bundle in earlier_bundles(self.engine, refused.version, FALLBACK_BUNDLES):
            try:
                state = self.loader(self.engine, bundle=bundle)
            except Exception as other:
                log.warning("earlier bundle %s cannot be loaded either: %s", bundle.version, other)
                continue
            log.error(
                "the active bundle %s cannot be loaded (%s); serving the earlier bundle %s "
                "until it is fixed or another is activated (`recsys bundles activate VERSION`)",
                refused.version,
                exc,
                state.version,
            )
            return state
        if self._state is None:
            log.warning("no model bundle loaded: %s", exc)
        else:  # it read as if the worker served nothing
            log.warning(
                "the active bundle %s cannot be loaded (%s) and no earlier one loads either: "
                "still serving %s",
                refused.version,
                exc,
                self._state.version,
            )
        raise exc

    def maybe_reload(self) -> None:
        """Reload when the registry's active bundle changed; at most every half
        check_interval (the service's watcher pauses 0.5 to 1.5 intervals between calls). An
        active bundle refused before is tried again only once its files changed, also when
        it is the one served (its files restored in place)."""
        now = time.monotonic()
        if now - self._checked < self.check_interval / 2 or self._lock.locked():
            return
        self._checked = now
        try:
            active = active_version(self.engine)
            current = self._state.version if self._state else None
            refused = self.refused is not None and self.refused.version == active
            changed = active != current or refused or self._served_files_changed()
            if active is not None and changed and not self._still_refused(active):
                try:
                    self.reload(fallback=self._state is None)
                except InvalidBundle:
                    if self.refused is None:
                        raise
                    # refused, and said so ("reload refused"): no failure of the check, whose
                    # traceback and "failed no longer" a moment later read as a recovery
            self._reload_failures.worked()
        except Exception as exc:  # the current state keeps serving; the error is logged
            self._reload_failures.failed(exc)

    def _served_files_changed(self) -> bool:
        """The served bundle's files are not those it was loaded from (its folder deleted,
        a file truncated or copied over): the worker reloads, and a bundle that no longer
        loads is refused and the newest earlier one served, as a starting worker would. A
        worker went on answering from a deleted folder's mappings, or died of SIGBUS on a
        truncated file while its siblings served on, each worker another version."""
        state = self._state
        if state is None or not state.directory:
            return False
        return bundle_signature(state.directory) != state.signature

    def _still_refused(self, active: str) -> bool:
        """``active`` is the bundle refused last, with the same files (checking its
        checksums again would read every file of it, gigabytes at 10^6 items)."""
        refused = self.refused
        if refused is None or refused.version != active:
            return False
        return bundle_signature(active_bundle(self.engine).path) == refused.signature

    def trim_after_swap(self, delay: float = SWAP_TRIM_DELAY) -> bool:
        """Once per swap, ``delay`` seconds after it, when the requests that held the bundle
        before are done: the C heap its arrays freed goes back to the system (glibc keeps
        it: a worker kept 100 MB more after each rollback in a soak) -> whether it trimmed."""
        at = self._swapped_at
        if at is None or time.monotonic() - at < delay:
            return False
        self._swapped_at = None
        trim_c_heap()
        return True

    @property
    def live(self) -> Delta | None:
        """The served bundle's delta (None: no bundle, or no live catalog)."""
        state = self._state
        return state.recommender.live if state is not None else None

    def follow(self) -> Delta | None:
        """Apply the catalog's item changes since the last call to the served state's delta
        (one primary-key read when nothing changed); the new delta, or None. Errors are
        logged: the last delta keeps serving."""
        state = self._state
        if state is None or state.catalog is None:
            return None
        try:
            delta = state.catalog.follow()
        except Exception as exc:
            self._follow_failures.failed(exc)
            return None
        self._follow_failures.worked()
        if delta is not None and self.on_follow is not None:
            self.on_follow(delta)
        return delta


def follow_catalog(holder: ModelHolder, seconds: float, cards: CardCache | None = None) -> None:
    """Call ``holder.follow()`` (and ``cards.follow()``) every ``seconds``, forever (one daemon
    thread per process): the model's delta and the item cards move together. A failure is
    logged once with its traceback, then a line a minute while it lasts."""
    card_failures = Repeated(log, "following the catalog's cards failed; requests read them")
    while True:
        started = time.monotonic()
        delta = holder.follow()
        holder.trim_after_swap()
        if cards is not None and holder.ready:  # before that, requests read for themselves
            try:
                cards.follow()
            except Exception as exc:
                card_failures.failed(exc)
            else:
                card_failures.worked()
        # a step that left a bulk update's content writes for later takes the next at once
        wait = 0.0 if delta is not None and delta.behind else seconds
        time.sleep(max(wait - (time.monotonic() - started), 0.05))


@dataclass(frozen=True)
class FeedRequest:
    """What a home feed is asked for."""

    k: int = 20
    exclude_seen: bool = True
    candidates: list[str] | None = None  # rank only these item ids
    filters: dict[str, Any] | None = None
    # MMR λ, 0 to 1 (recsys.model.diversity; 0: the plain ranking)
    diversity: float = DEFAULT_DIVERSITY
    # places kept for new items (recsys.model.recommender.NEW_ITEMS_RULE)
    new_items: int = 0
    # one item per value of this attribute (Recommender.check_group_by); None: none
    group_by: str | None = None


class Fresh(list):
    """``fresh_history``'s items (newest first) with their events' ``times`` (naive UTC; None:
    undated), which order them for the fold-in (``Recommender.history_with``), and ``seen``:
    when the user has more such events than are folded in (``FRESH_LIMIT``), the distinct
    items of their newest ones (``UserSince.seen``), which the feed leaves out as seen."""

    def __init__(self, items: Sequence[str] = (), times: Sequence = (), seen=()) -> None:
        super().__init__(items)
        self.times = list(times)
        self.seen = list(seen)


class Forgotten(Fresh):
    """``fresh_history``'s answer for a user the bundle knows whose history in it the feed must
    not use: erased since the bundle's data was read (``recsys.ingest.users``). It holds their
    events stored since, if they came back (newest first); empty, the feed is a never-seen
    user's (popularity)."""


def fresh_history(state: ServingState, engine: Engine, user_id: str) -> list[str]:
    """The items of the user's events stored since the bundle's data was read, newest first:
    what a feed folds in beyond the bundle's own history (the items the bundle holds) and
    leaves out (all of them, items added since too). ``Forgotten`` for a user of the bundle's
    erased since. [] while the catalog database is away: the feed is then the bundle's
    (every feed was a 503 from the outage's first second, though the model is in memory)."""
    try:
        since = user_since(engine, user_id, state.data_read_at)
    except (DatabaseError, CatalogNotReady) as exc:
        if not database_away(exc):
            raise
        _feeds_without_fresh.failed(exc)
        return []
    _feeds_without_fresh.worked()
    known = state.recommender.user_index.rows([user_id])[0] >= 0
    if known and since.erased_at is not None and since.erased_at > state.data_read_at:
        return Forgotten(since.items or [], since.times, since.seen)
    if since.items is None:  # never seen, or erased (before migration 0012 recorded erasures)
        return Forgotten() if known and state.users_from_catalog else []
    return Fresh(since.items, since.times, since.seen)


def home_feed(
    state: ServingState,
    engine: Engine,
    user_id: str,
    request: FeedRequest | None = None,
    fresh: list[str] | None = None,
) -> Results:
    """One user's top-k with their fresh events folded in (``fresh``: ``fresh_history``,
    read here when not given); unknown users fall back."""
    request = request or FeedRequest()
    recommender = state.recommender
    fresh = fresh_history(state, engine, user_id) if fresh is None else fresh
    held = (recommender.item_index.rows(list(fresh)) >= 0).tolist() if fresh else []
    folded = [item for item, keep in zip(fresh, held, strict=True) if keep]
    # items the bundle does not hold: folded in from the live catalog (added since), and seen
    elsewhere = [[item for item, keep in zip(fresh, held, strict=True) if not keep]]
    options = (request.k, request.exclude_seen, request.candidates, request.filters)
    shown = {
        "diversity": request.diversity,
        "seen_elsewhere": elsewhere,
        "new_items": request.new_items,
        "group_by": request.group_by,
    }
    # a shopper with more events since the bundle than are folded in: all of them seen (the
    # 100 oldest of 300 purchases since were offered back)
    also = getattr(fresh, "seen", None)
    if also:
        shown["also_seen"] = [also]
    if isinstance(fresh, Forgotten):  # their events since alone; none: a user never seen
        return recommender.recommend_for_history([folded], *options, **shown)
    live = recommender.live
    knows_live = live is not None and any(map(live.knows, elsewhere[0]))
    if not folded and not knows_live and not also:
        return recommender.recommend([user_id], *options, **shown)
    times = fresh.times if isinstance(fresh, Fresh) else None  # None: in arrival order
    if times is not None:
        times = [t for t, keep in zip(times, held, strict=True) if keep]
    history, weights = recommender.history_with(user_id, folded, times)
    weights = None if weights is None else [weights]
    return recommender.recommend_for_history([history], *options, weights=weights, **shown)
