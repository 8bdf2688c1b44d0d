"""The live catalog: what changed since a bundle was trained, kept beside its index.

The catalog is the source of truth. Each serving worker follows its change log
(``recsys.catalog.changes``: one primary-key read a second, and one indexed read of the new
log rows when something changed) and keeps a small delta beside the bundle:

- **live items**: new and changed items with their fused vectors, made from the bundle's own
  fitted parts (``LiveItems``). A changed item that had interactions keeps its collaborative
  and popularity blocks; only its content blocks are made anew.
- **hidden bundle rows**: items removed from the catalog, out of stock, or superseded by a
  live row. ``in_stock=false`` in a filter asks for the out-of-stock ones explicitly.

``Recommender`` answers (similar items, feeds, visual search) merge the bundle's index or
neighbour table with the live items, and leave hidden rows out everywhere, neighbour-table
rows included. The delta holds at most ``DeltaConfig.max_items`` live items; past it answers
go on (further new items wait, removals still apply) and ``Delta.retrain_due`` says so. The
next ``recsys train`` reads the whole catalog, so the new bundle holds every live item.

A restart rebuilds the delta from the catalog: items written after the bundle's data was read
(``updated_at``) or unknown to it get live vectors, items missing or out of stock are hidden.

**A follow step's parts.** Removals and stock changes cost a few array writes; a content write
costs its item's embedding (a photo through the image encoder: milliseconds an item). A step
reads the log from its mark to the catalog's generation G and applies every removal and every
written item's stock through G, but content writes only through a cut c <= G: the whole
generations of content writes, oldest first, that fit ``DeltaConfig.step_seconds`` at the
rate measured so far (at least one generation; none when even the first would not fit and the
generation before it is past the mark). It publishes at generation c, the next step goes on
from c (and skips the removals and stock it already applied through G), and ``Delta.behind``
tells the follower to take it at once. So an 8,000-row price file shows a part a step, and
a sale or a DELETE logged after it waits one part, not all of it.

Answers are kept by the delta's ``generation`` and carried across steps by the
``written_at`` stamps (``services.answers``): each published state must have a generation
no other state of the worker has, and every item a step changes must be stamped above the
generation of the step before. Both hold: each step publishes at a cut above the last one
(c > mark: it is the mark's first content generation less one, or takes at least that
generation) and stamps what it applied, early removals and stock included, with c. What a
state at c holds beyond c (stock and removals through G) is held by no other state at c.
A single generation's content writes (one PostgreSQL statement's rows) are never split: a
step takes them whole. Room that removals free in a full delta goes to the waiting items,
oldest first, in the step that frees it (steps move only with the log, so that a state
never changes without a new generation).

    catalog = LiveCatalog(engine, recommender, LiveItems.of(recommender, bundle_dir), read_at)
    catalog.rebuild()   # recommender.live is now the delta
    catalog.follow()    # every second: apply what changed since
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sqlalchemy import Engine

from recsys.catalog import changes
from recsys.model import explain, sparse_rows
from recsys.model.fusion import fuse, normalize_rows
from recsys.model.live import LiveItems
from recsys.model.live_share import SharedBlocks
from recsys.model.ranges import Range, number_of, passes_any
from recsys.model.ranking import top_k_finite

log = logging.getLogger(__name__)

# Item rows read and embedded at once (a rebuild after a large ingest reads many).
CHUNK = 2048
# A follow step's content work: at least this many items (one generation's, at least), and
# before any was measured, this many seconds per item (a photo through the image encoder on
# a CPU core; blocks read from another worker's files take far less).
MIN_STEP = 16
FIRST_PER_ITEM = 2e-3
LIVE_REASON = explain.NEW_REASON
# A bundle item written since (its listing changed) in a feed, scored as it is now.
UPDATED_REASON = "updated in the catalog"
# (query, the live rows added (n,), their scores (n,)) -> their reasons
Because = Callable[[int, np.ndarray, np.ndarray], list[list[explain.Reason]]]


@dataclass(frozen=True)
class DeltaConfig:
    # Live items (new or changed since the bundle) a worker keeps beside its bundle. Each
    # costs one vector per worker and one dot product per answer; past this many, answers go
    # on without the newest items and /readyz and /metrics say a retrain is due.
    max_items: int = 10_000
    # Where the workers of one host (or of one shared artifacts store) leave the blocks they
    # made for live items, one folder per bundle version (``recsys.model.live_share``); None:
    # each worker makes every live item's blocks itself.
    shared_root: Path | None = None
    # Content work (items embedded) a follow step takes on before it publishes, in seconds at
    # the rate measured so far: a bulk update is applied a part at a time, and removals and
    # stock changes logged after it wait one part, not all of it.
    step_seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {self.max_items}")
        if self.step_seconds <= 0:
            raise ValueError(f"step_seconds must be > 0, got {self.step_seconds}")


@dataclass(frozen=True)
class Delta:
    """One immutable state of the delta; a request reads ``recommender.live`` once."""

    generation: int  # the catalog's items generation this state is current to
    ids: np.ndarray  # (M,) str: live items
    vectors: np.ndarray  # (M, D) fused item vectors, as the bundle's index holds its items'
    # (M, D) the items as similar-items queries meet them (FusedModel.surface_item_vectors:
    # as ``vectors``, but a new item's content is not scaled down by the feed's cold scale)
    surface: np.ndarray
    blocks: dict[str, np.ndarray]  # block -> (M, d) unweighted (item queries, visual search)
    in_stock: np.ndarray  # (M,) bool
    has_image: np.ndarray  # (M,) bool
    attributes: tuple[dict[str, Any], ...]  # (M,) for attribute filters
    shown: np.ndarray  # (N,) bool: bundle rows in the catalog, in stock, not superseded
    shown_out: np.ndarray  # (N,) bool: the same, out of stock (the in_stock=false filter)
    removed: np.ndarray  # (N,) bool: bundle rows no longer in the catalog
    pending: int  # new or changed items left out because the delta is full
    max_items: int
    positions: dict[str, int] = field(default_factory=dict)  # id -> live row
    # (M, F) unit attribute and title tokens and (M,) their feed term's weight times cold
    # multiplier, as FusedModel.item_tokens_ and token_scale_ (None: the feed has no token term)
    tokens: sp.csr_matrix | None = None
    token_scale: np.ndarray | None = None
    # (N,) the generation of each bundle row's last write or removal (the rebuild's for rows
    # not written since). Shared by the deltas of one rebuild and raised in place by the
    # follower before it publishes a step, so a reader of an older delta may see a later
    # write's mark but never misses one its own delta reflects.
    written_at: np.ndarray | None = None
    live_written_at: np.ndarray | None = None  # (M,) the same for the live items
    # items added since the bundle and removed since: left out of candidate lists as removed
    # bundle items are, and "removed from the catalog" on their product page
    gone: frozenset[str] = frozenset()
    # items in the catalog, new or changed, left out because the delta is full (``pending``)
    waiting: frozenset[str] = frozenset()
    # content writes of the change log past ``generation`` are still to be applied (their
    # items' stock, and every removal, already are): the follower takes its next step at once
    behind: bool = False

    def __post_init__(self) -> None:
        self.positions.update({item: k for k, item in enumerate(self.ids.tolist())})

    @functools.cached_property
    def tokens_by_token(self) -> sp.csr_matrix | None:
        """(F, M) CSR ``tokens`` transposed, once per state: a feed's profile times it is a
        third of the time of a product with ``tokens.T`` (which scipy converts per call)."""
        return None if self.tokens is None else self.tokens.T.tocsr()

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def retrain_due(self) -> bool:
        """The delta is full: items listed from now on wait for the next ``recsys train``."""
        return self.pending > 0 or (self.max_items > 0 and self.size >= self.max_items)

    @property
    def hides(self) -> int:
        return int((~self.shown).sum())

    def visible(self, filters: dict[str, Any] | None):
        """(bundle rows an answer may list, or None for all; ``filters`` less ``in_stock``,
        which this mask applies with the catalog's current stock)."""
        filters = dict(filters or {})
        wanted = filters.pop("in_stock", True)
        return (self.shown if wanted else self.shown_out), filters

    def knows(self, item_id: str) -> bool:
        return item_id in self.positions

    def mask(self, filters: dict[str, Any] | None, candidates=None) -> np.ndarray:
        """(M,) bool: live items passing ``filters`` (stock and attributes, numeric and date
        ranges as ``ItemFilters.resolve`` reads them) and, when given, in ``candidates``.
        Attribute filters are matched item by item: M is small."""
        filters = dict(filters or {})
        wanted = bool(filters.pop("in_stock", True))
        mask = self.in_stock == wanted
        for name, value in filters.items():
            if _ranges(value):  # a numeric or date attribute (ItemFilters.resolve)
                numbers = [number_of(value[0].kind, found.get(name)) for found in self.attributes]
                mask &= passes_any(value, np.array(numbers, dtype=np.float64))
                continue
            allowed = {str(v) for v in np.atleast_1d(value).tolist()}
            mask &= np.fromiter(
                (_has_any(found.get(name), allowed) for found in self.attributes),
                dtype=bool,
                count=self.size,
            )
        if candidates is not None:
            mask &= np.isin(self.ids, np.asarray(list(candidates), dtype=str))
        return mask

    def values_of(self, row: int, names) -> dict[str, set[str]]:
        """Live item ``row``'s values of the attributes ``names`` (those it has), as
        ``ItemFilters.values_of`` gives a bundle row's."""
        attributes, out = self.attributes[row], {}
        for name in names:
            value = attributes.get(name)
            if value is not None:
                out[name] = {str(v) for v in (value if isinstance(value, list) else [value])}
        return out

    def shared(self, row: int, values: dict[str, set[str]], named) -> list[str]:
        """The attributes of which live item ``row`` has one of ``values``, as ``named``
        (``ItemFilters.named``) names them."""
        attributes = self.attributes[row]
        return [
            named(name, several=len(wanted) > 1 or isinstance(value, list))
            for name, wanted in values.items()
            if _has_any(value := attributes.get(name), wanted)
        ]

    def item_queries(self, item_ids, surface: str, fused) -> np.ndarray:
        """(Q, D) "items like these" queries of live items, as ``FusedModel.item_queries``."""
        rows = [self.positions[item] for item in item_ids]
        blocks = {b: v[rows] for b, v in self.blocks.items() if b != "popularity"}
        if "cf" in blocks:
            blocks["cf"] = normalize_rows(blocks["cf"])
        return fuse(blocks, fused.surface_weights_[surface], fused.layout_)

    def merge(
        self,
        results,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray,
        skip=None,
        profiles=None,
        surface: bool = False,
        because: Because | None = None,
    ):
        """``results`` (per query, best first) with the live items ``allowed`` (M,) bool
        ranked in by score (``queries @ vectors``, or ``queries @ surface`` for similar-items
        queries, plus for feeds the token term of the users' token ``profiles`` (Q, F), as
        ``FusedModel.token_scores`` gives bundle items); ``skip``: per query, ids never to add
        (the query item, seen items) or None for a query that takes no live items;
        ``because``: the added items' reasons (by default ``LIVE_REASON``, the whole score)."""
        if not self.size or not allowed.any():
            return results
        scores = np.asarray(queries) @ (self.surface if surface else self.vectors).T
        if profiles is not None and self.tokens is not None:
            scores = scores + (profiles @ self.tokens_by_token).toarray() * self.token_scale
        return self._merge(results, scores, k, allowed, skip, because)

    def merge_scored(self, results, scores: np.ndarray, k: int, allowed, skip, because=None):
        """``merge`` with the live items' scores given: (Q, M)."""
        if not self.size or not allowed.any():
            return results
        return self._merge(results, scores, k, allowed, skip, because)

    def merge_images(self, results, queries: np.ndarray, k: int, allowed: np.ndarray):
        """Visual search: ``results`` with the live items that have a photo, by cosine of
        their image vectors to the query photos'."""
        allowed = allowed & self.has_image
        if not self.size or "image" not in self.blocks or not allowed.any():
            return results
        scores = np.asarray(queries) @ self.blocks["image"].T
        because = lambda _q, _rows, found: explain.single(explain.PHOTO_REASON, found)  # noqa: E731
        return self._merge(results, scores, k, allowed, None, because)

    def _merge(self, results, scores: np.ndarray, k: int, allowed: np.ndarray, skip, because):
        scores = np.where(allowed[None, :], scores, -np.inf).astype(np.float32, copy=False)
        best = scores.max(axis=1)  # (Q,)
        for q in range(len(results.ids)):
            if skip is not None and skip[q] is None:
                continue
            if self._none_enter(results, q, k, best[q]):
                continue
            blocked = set(skip[q]) if skip is not None else set()
            # equal scores in row order: an answer lists its tied items in one order
            found = top_k_finite(scores[q : q + 1], k + len(blocked))[0]
            found = [j for j in found[found >= 0].tolist() if self.ids[j] not in blocked][:k]
            if found:
                reasons = None
                if results.because:
                    rows = np.asarray(found, dtype=np.int64)
                    reasons = (because or _whole)(q, rows, scores[q, rows])
                _insert(results, q, self.ids[found].tolist(), scores[q, found], k, reasons)
        return results

    def _none_enter(self, results, q: int, k: int, best: float) -> bool:
        """No live item can change query ``q``'s answer: it lists k items, none of them live,
        and the last scores at least ``best``, the best live score (``_insert`` keeps the
        answer's items on equal scores). Most answers are such, and skip the ranking."""
        listed = results.ids[q]
        return (
            len(listed) >= k
            and best <= np.min(results.scores[q])
            and not any(item in self.positions for item in listed)
        )


def _whole(_q: int, _rows: np.ndarray, scores: np.ndarray) -> list[list[explain.Reason]]:
    return explain.single(LIVE_REASON, scores)


def _insert(results, q: int, ids: list[str], scores: np.ndarray, k: int, added=None) -> None:
    """Query ``q`` of ``results`` with live ``ids`` added, the best k kept (a live id that
    the bundle's part also lists, from a state a moment older, keeps its live place);
    ``added``: their reasons."""
    live = set(ids)
    old_ids, old_scores = results.ids[q], np.asarray(results.scores[q])
    keep = [j for j, item in enumerate(old_ids) if item not in live]
    because = results.because[q] if results.because else None
    all_ids = [old_ids[j] for j in keep] + ids
    all_scores = np.concatenate([old_scores[keep], scores]).astype(np.float32)
    order = np.argsort(-all_scores, kind="stable")[:k]
    results.ids[q] = [all_ids[j] for j in order]
    results.scores[q] = all_scores[order]
    if because is not None:
        reasons = [because[j] for j in keep] + added
        results.because[q] = [reasons[j] for j in order]


def _ranges(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], Range)


def _has_any(value: Any, allowed: set[str]) -> bool:
    if value is None:
        return False
    values = value if isinstance(value, list) else [value]
    return any(str(v) in allowed for v in values)


@dataclass
class _Live:
    """The live items being built, by id (the follower's mutable side of ``Delta``)."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    blocks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    in_stock: dict[str, bool] = field(default_factory=dict)
    has_image: dict[str, bool] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, sp.csr_matrix] = field(default_factory=dict)  # (1, F) unit rows
    token_scale: dict[str, float] = field(default_factory=dict)  # the feed term's weight
    cold: dict[str, bool] = field(default_factory=dict)  # no interactions in the bundle
    written_at: dict[str, int] = field(default_factory=dict)  # the generation of its last write

    def drop(self, item_id: str) -> None:
        parts = (self.vectors, self.blocks, self.in_stock, self.has_image, self.attributes)
        for part in (*parts, self.tokens, self.token_scale, self.cold, self.written_at):
            part.pop(item_id, None)


@dataclass(frozen=True)
class _Rows:
    """The live items' stacked arrays of one publish, shared with its ``Delta``: its rows are
    never written again. ``vectors``, ``surface`` and ``blocks`` are the first rows of
    ``room``'s arrays (by the same names, blocks as "block:<name>"), whose spare rows the next
    publish may fill: no delta sees rows past its own."""

    order: list[str]
    ids: np.ndarray
    vectors: np.ndarray
    surface: np.ndarray
    blocks: dict[str, np.ndarray]
    tokens: dict[str, Any]  # {} or Delta's tokens and token_scale
    room: dict[str, np.ndarray]


class LiveCatalog:
    """Builds one worker's ``Delta`` for one bundle and sets it as ``recommender.live``;
    see the module docstring. ``rebuild`` and ``follow`` may be called from any thread (one
    at a time runs); answers read the last state set."""

    def __init__(
        self,
        engine: Engine,
        recommender,
        items: LiveItems,
        data_read_at: datetime,
        config: DeltaConfig | None = None,
    ):
        self.engine, self.recommender, self.items = engine, recommender, items
        self.data_read_at = data_read_at
        self.config = config or DeltaConfig()
        n = len(recommender.item_ids)
        self._stock = np.array(recommender.filters.in_stock, dtype=bool)
        self._removed = np.zeros(n, dtype=bool)
        self._superseded = np.zeros(n, dtype=bool)
        self._live = _Live()
        self._pending: dict[str, None] = {}  # ids waiting for room, in the order they came
        self._gone: set[str] = set()  # Delta.gone
        self._generation = 0
        # the generation through which removals and stock are applied (>= _generation: a
        # step applies them through the catalog's, its content writes through _generation)
        self._applied_through = 0
        self._per_item = FIRST_PER_ITEM  # seconds an item's content work took, as measured
        self._due = False
        self._lock = threading.Lock()
        # the last publish's arrays; the live items written since it; whether one left since
        self._stacked: _Rows | None = None
        self._written: set[str] = set()
        self._restack = False
        self._written_at = np.zeros(n, dtype=np.int64)  # Delta.written_at
        root = self.config.shared_root
        self.shared = None
        if root is not None and items.parts != "none":
            self.shared = SharedBlocks(root, recommender.version, items.parts)

    @property
    def delta(self) -> Delta | None:
        return self.recommender.live

    def rebuild(self) -> Delta:
        """The delta from the whole catalog (a worker's start, a new bundle): items written
        after the bundle's data was read or unknown to it get live vectors; items missing
        or out of stock are hidden. Then ``follow`` goes on from the generation read here."""
        with self._lock:
            return self._rebuild()

    def _rebuild(self) -> Delta:
        if self.shared is not None:
            self.shared.prune_others()
        snapshot = changes.stock_snapshot(self.engine)
        n = len(self.recommender.item_ids)
        rows = _rows_in_steps(self.recommender.item_index, snapshot.item_ids)  # (S,) -1: new
        known = rows >= 0
        position = np.full(n, -1, dtype=np.int64)  # (N,) each bundle item's snapshot row
        position[rows[known]] = np.flatnonzero(known)  # -1: gone from the catalog
        self._removed = position < 0
        self._stock = np.append(snapshot.in_stock, False)[position]  # gone: -1 -> False
        self._superseded = np.zeros(n, dtype=bool)
        self._live, self._pending = _Live(), {}  # what a follow built is read afresh
        self._gone = self._gone_since_training(snapshot)
        self._stacked = None
        written = changes.written_after(snapshot, self.data_read_at) | (rows < 0)
        written |= self._logged_since_training(snapshot)
        # oldest write first, as follow steps take them: a full delta keeps the same items
        # after a restart (it kept those the catalog happened to return first)
        picked = np.flatnonzero(written)
        picked = picked[np.argsort(snapshot.updated_at[picked], kind="stable")]
        self._write(snapshot.item_ids[picked].tolist(), content=None)
        self._generation = self._applied_through = snapshot.generation
        # a new array: the deltas before this rebuild keep theirs
        self._written_at = np.full(n, snapshot.generation, dtype=np.int64)
        self._live.written_at = dict.fromkeys(self._live.vectors, snapshot.generation)
        return self._publish()

    def _gone_since_training(self, snapshot) -> set[str]:
        """Items the change log shows removed since the bundle's data was read that the
        bundle does not hold and the catalog no longer does (none when the log cannot say)."""
        since = self.recommender.manifest.get("items_generation")
        if since is None:
            return set()
        logged = changes.changes_since(self.engine, int(since))
        if not logged.complete or not logged.removed:
            return set()
        ids = np.asarray(logged.removed, dtype=str)
        bundle = self.recommender.item_index.rows(ids.tolist()) >= 0
        present = np.isin(ids, np.asarray(snapshot.item_ids, dtype=str))
        return set(ids[~bundle & ~present].tolist())

    def _logged_since_training(self, snapshot) -> np.ndarray:
        """(S,) bool: the snapshot's items whose content the change log shows written since
        the bundle's data was read (its ``items_generation``). ``updated_at`` misses a write
        that did not set it (a hand-typed SQL UPDATE; the log's triggers see every write).
        None of them when the bundle predates the mark or the log was pruned past it."""
        since = self.recommender.manifest.get("items_generation")
        none = np.zeros(len(snapshot.item_ids), dtype=bool)
        if since is None:
            return none
        logged = changes.changes_since(self.engine, int(since))
        if not logged.complete or not logged.content:
            return none
        return np.isin(snapshot.item_ids, np.asarray(sorted(logged.content), dtype=str))

    def follow(self) -> Delta | None:
        """Apply the catalog's changes since the last call; None when nothing changed (one
        primary-key read). When the log was pruned past this worker's mark, rebuild."""
        with self._lock:
            found = changes.changes_since(self.engine, self._generation)
            if found.generation == self._generation:
                return None
            if not found.complete:
                why = "is behind" if found.generation < self._generation else "was pruned past"
                log.warning("live catalog: the change log %s %d; rebuilding", why, self._generation)
                return self._rebuild()
            return self._step(found)

    def _step(self, found: changes.Changes) -> Delta:
        """One follow step (see the module docstring): every removal and stock change logged
        since the last step, the content writes through the cut ``_cut`` chooses, and room
        freed for waiting items given to them; published at the cut's generation."""
        cut, todo = self._cut(found)
        new = [i for i in found.removed if found.last_at.get(i, 0) > self._applied_through]
        self._remove(new)
        due = set(todo)
        stock = [
            i
            for i in found.written
            if found.last_at.get(i, 0) > self._applied_through and i not in due
        ]
        self._restock(stock)
        promoted = self._promoted(max(self._budget() - len(todo), 0), set(found.written))
        self._write(todo + promoted, content=found.content | set(promoted))
        self._generation, self._applied_through = cut, found.generation
        self._mark([*new, *stock, *todo, *promoted])
        return self._publish(behind=cut < found.generation)

    def _cut(self, found: changes.Changes) -> tuple[int, list[str]]:
        """(the generation this step is published at, the written items whose content it
        applies): whole generations of content writes, oldest first, as many as fit the
        step's budget (at least one generation; none when the first would not fit and the
        generation before it is past the mark, so that a step publishes at once). The cut is
        a generation of the catalog through which every content write is applied."""
        mark = self._generation
        unplaced = self._unplaced(found.written)
        work = {
            item: found.content_at.get(item, found.last_at.get(item, mark + 1))
            for item, new in zip(found.written, unplaced.tolist(), strict=True)
            if item in found.content or new
        }
        if not work:
            return found.generation, []
        gens = np.array(sorted(set(work.values())), dtype=np.int64)
        counts = np.cumsum(np.bincount(np.searchsorted(gens, list(work.values()))))
        fits = int(np.searchsorted(counts, self._budget(), side="right"))  # generations
        if not fits and gens[0] - 1 > mark:
            return int(gens[0]) - 1, []
        fits = max(fits, 1)
        cut = int(gens[fits] - 1) if fits < len(gens) else found.generation
        todo = [item for item in found.written if work.get(item, cut + 1) <= cut]
        return cut, todo

    def _unplaced(self, item_ids: list[str]) -> np.ndarray:
        """(n,) bool: items this worker holds no vector for (added since the bundle, not live)."""
        if not item_ids:
            return np.zeros(0, dtype=bool)
        rows = self.recommender.item_index.rows(item_ids)
        live = np.array([item in self._live.vectors for item in item_ids], dtype=bool)
        return (rows < 0) & ~live

    def _budget(self) -> int:
        """Items whose content a step applies: ``step_seconds`` at the measured rate."""
        return int(np.clip(self.config.step_seconds / self._per_item, MIN_STEP, CHUNK))

    def _promoted(self, budget: int, written: set[str]) -> list[str]:
        """Waiting items given the room that removals freed, oldest first (up to ``budget``;
        not those ``written`` in this step's range, which its content writes place)."""
        room = self.config.max_items - len(self._live.vectors)
        if not self._pending or room <= 0:
            return []
        waiting = [item for item in self._pending if item not in written]
        return waiting[: min(room, budget)]

    # -- applying changes ----------------------------------------------------------------
    def _mark(self, item_ids: list[str]) -> None:
        """Stamp these items, written or removed, with the generation of this step: bundle
        rows in place (``Delta.written_at``), live items for the next publish."""
        if not item_ids:
            return
        rows = self.recommender.item_index.rows(item_ids)
        self._written_at[rows[rows >= 0]] = self._generation
        marks = self._live.written_at
        for item_id in item_ids:
            if item_id in self._live.vectors:
                marks[item_id] = self._generation

    def _remove(self, item_ids: list[str]) -> None:
        rows = self.recommender.item_index.rows(item_ids) if item_ids else np.zeros(0, int)
        self._removed[rows[rows >= 0]] = True
        self._gone.update(np.asarray(item_ids, dtype=str)[rows < 0].tolist())
        self._superseded[rows[rows >= 0]] = False
        for item_id in item_ids:
            self._drop(item_id)
            self._pending.pop(item_id, None)

    def _write(self, item_ids: list[str], content: set[str] | None) -> None:
        """Items inserted or updated: stock always; vectors where their content changed
        (``content`` None: wherever they could have) or they are new to this worker."""
        self._gone.difference_update(item_ids)  # listed again
        for start in range(0, len(item_ids), CHUNK):
            frame = changes.item_rows(self.engine, item_ids[start : start + CHUNK])
            began = time.perf_counter()
            embedded = self._apply(frame, content)  # an id missing from it was deleted since
            if embedded:  # the rate the next steps' budgets are made from
                took = (time.perf_counter() - began) / embedded
                self._per_item = (self._per_item + took) / 2

    def _restock(self, item_ids: list[str]) -> None:
        """The stock of written items whose content this step leaves for a later one (or
        that did not change): bundle rows and live items."""
        for start in range(0, len(item_ids), CHUNK):
            frame = changes.stock_rows(self.engine, item_ids[start : start + CHUNK])
            ids = frame["item_id"].to_numpy(dtype=str)
            stock = frame["in_stock"].to_numpy(dtype=bool)
            rows = self.recommender.item_index.rows(ids)
            self._stock[rows[rows >= 0]] = stock[rows >= 0]
            for item_id, in_stock in zip(ids.tolist(), stock.tolist(), strict=True):
                if item_id in self._live.in_stock:
                    self._live.in_stock[item_id] = in_stock

    def _apply(self, frame: pd.DataFrame, content: set[str] | None) -> int:
        """Stock and, where due, vectors of these item rows -> the number of items embedded.
        Items that would need a live row the full delta does not have wait, not embedded."""
        ids = frame["item_id"].to_numpy(dtype=str)
        rows = self.recommender.item_index.rows(ids)
        in_bundle = rows >= 0
        stock = frame["in_stock"].to_numpy(dtype=bool)
        self._stock[rows[in_bundle]] = stock[in_bundle]
        self._removed[rows[in_bundle]] = False
        for item_id, in_stock in zip(ids.tolist(), stock.tolist(), strict=True):
            if item_id in self._live.in_stock:
                self._live.in_stock[item_id] = in_stock
        fresh = np.array(
            [
                (content is None or item_id in content)
                or (row < 0 and item_id not in self._live.vectors)
                for item_id, row in zip(ids.tolist(), rows.tolist(), strict=True)
            ],
            dtype=bool,
        )
        fresh &= ~self._waits(ids, fresh)
        if fresh.any():
            self._embed(frame[fresh].reset_index(drop=True), rows[fresh])
        return int(fresh.sum())

    def _waits(self, ids: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """(n,) bool: the ``fresh`` items past the room left for new live rows, now waiting
        (embedding them would be thrown away)."""
        room = max(self.config.max_items - len(self._live.vectors), 0)
        live = self._live.vectors
        wanting = fresh & np.array([i not in live for i in ids.tolist()], dtype=bool)
        waits = wanting & (np.cumsum(wanting) > room)
        self._pending.update(dict.fromkeys(ids[waits].tolist()))
        return waits

    def _embed(self, frame: pd.DataFrame, rows: np.ndarray) -> None:
        """Live vectors of these items (bundle ``rows``, -1 for new items); a bundle item
        whose new vector equals its trained one stays a plain bundle row."""
        fused = self.recommender.fused
        warm = ~fused.without_interactions(rows)
        vectors, blocks, tokens, made = self._vectors(frame, rows, warm)
        cold_tokens = fused.cold_scale_.get("tokens", 1.0)
        bundle = rows >= 0
        as_trained = np.zeros(len(rows), dtype=bool)  # its vector is the bundle's own
        as_trained[bundle] = np.isclose(
            vectors[bundle], fused.item_vectors_[rows[bundle]], atol=1e-5
        ).all(axis=1)
        # the columns read once, not a pandas row per item
        in_stock = frame["in_stock"].to_numpy(dtype=bool).tolist()
        has_image = frame["image_path"].notna().to_numpy().tolist()  # missing: None or NaN
        attributes = _attributes(frame)
        for k, item_id in enumerate(frame["item_id"].astype(str).tolist()):
            row = int(rows[k])
            if not made[k]:  # its values could not be encoded (logged): it stays as it was
                continue
            if as_trained[k]:
                self._superseded[row] = False
                self._drop(item_id)
                continue
            if item_id not in self._live.vectors and not self._room():
                self._pending[item_id] = None
                continue
            self._pending.pop(item_id, None)
            if row >= 0:
                self._superseded[row] = True
            self._live.vectors[item_id] = vectors[k]
            self._written.add(item_id)
            self._live.cold[item_id] = not warm[k]
            self._live.blocks[item_id] = {b: v[k] for b, v in blocks.items()}
            self._live.in_stock[item_id] = in_stock[k]
            self._live.has_image[item_id] = has_image[k]
            self._live.attributes[item_id] = attributes[k]
            if tokens is not None and fused.token_weight:
                self._live.tokens[item_id] = sparse_rows.row_matrix(tokens, k)
                scale = 1.0 if warm[k] else cold_tokens
                self._live.token_scale[item_id] = fused.token_weight * scale

    def _drop(self, item_id: str) -> None:
        if item_id in self._live.vectors:
            self._restack = True  # rows leave the middle: the next publish restacks them all
        self._live.drop(item_id)

    def _room(self) -> bool:
        limit = self.config.max_items
        return limit > 0 and len(self._live.vectors) < limit

    def _vectors(self, frame: pd.DataFrame, rows: np.ndarray, warm: np.ndarray):
        """((n, D) fused vectors, block -> (n, d), (n, F) tokens or None, (n,) made) of these
        items: content from the bundle's parts; ``warm`` items (the bundle had interactions
        for them) keep their cf and popularity blocks (weight 1, as trained), the others get
        them predicted (the cold-item multipliers)."""
        fused = self.recommender.fused
        blocks, tokens, made = self._blocks(frame)
        if not blocks:
            zero = np.zeros((len(frame), fused.layout_.dim), dtype=np.float32)
            return zero, {}, tokens, made
        for name in ("cf", "popularity"):
            if name in blocks and warm.any():
                blocks[name][warm] = fused.item_blocks_[name][rows[warm]]
        vectors = fuse(blocks, fused.cold_scale_, fused.layout_)
        if warm.any():
            ones = dict.fromkeys(fused.layout_.dims, 1.0)
            vectors[warm] = fuse({b: v[warm] for b, v in blocks.items()}, ones, fused.layout_)
        return vectors, blocks, tokens, made

    def _blocks(self, frame: pd.DataFrame):
        """(``LiveItems.blocks``: blocks and tokens, (n,) bool: made), read where another
        worker left them (``self.shared``) and made for the rest, which are left in turn."""
        if self.shared is None:
            return self._made(frame)[:3]
        digests = self.shared.digests(frame)
        found = self.shared.read(frame["item_id"].astype(str).tolist(), digests)
        todo = np.array([one is None for one in found], dtype=bool)
        made = np.ones(len(frame), dtype=bool)
        blocks, tokens = {}, None
        if todo.any():
            rest = frame[todo].reset_index(drop=True)
            blocks, tokens, made[todo], whole = self._made(rest)
            if whole and blocks:
                kept = [digest for digest, t in zip(digests, todo.tolist(), strict=True) if t]
                self.shared.write(rest["item_id"].astype(str).tolist(), kept, blocks, tokens)
            if todo.all():
                return blocks, tokens, made
        joined = _joined(found, todo, blocks, tokens)
        if joined is None:  # files unlike what this worker makes: it makes them all
            log.warning("live items: shared blocks in %s do not fit; made here", self.shared.folder)
            return self._made(frame)[:3]
        return *joined, made

    def _made(self, frame: pd.DataFrame):
        """(``LiveItems.blocks``: blocks and tokens, (n,) bool: made, whether the batch was
        made whole). A photo that cannot be read costs its item the image block, values that
        cannot be encoded cost it its live vector; neither stops the batch (nor the worker's
        following of the catalog)."""
        try:
            return *self.items.blocks(frame), np.ones(len(frame), dtype=bool), True
        except Exception as exc:  # a file removed or broken since it was written, ...
            log.warning("live items: embedding %d items failed (%s); one by one", len(frame), exc)
        parts = [self._one_block(frame.iloc[[k]].reset_index(drop=True)) for k in range(len(frame))]
        made = np.array([part is not None for part in parts], dtype=bool)
        kept = [part for part in parts if part is not None]
        if not kept:
            return {}, None, made, False
        zero = {b: np.zeros_like(v) for b, v in kept[0][0].items()}
        blocks = {b: np.concatenate([(p[0] if p else zero)[b] for p in parts]) for b in zero}
        if kept[0][1] is None:
            return blocks, None, made, False
        empty = sp.csr_matrix(kept[0][1].shape, dtype=kept[0][1].dtype)  # an item not made
        tokens = sp.vstack([p[1] if p else empty for p in parts]).tocsr()
        return blocks, tokens, made, False

    def _one_block(self, one: pd.DataFrame):
        """``LiveItems.blocks`` of one item, without its photo if that fails; None if both do."""
        item_id = one["item_id"][0]
        for attempt in (one, one.assign(image_path=None)):
            try:
                return self.items.blocks(attempt)
            except Exception as exc:
                log.warning("live item %s: %s", item_id, exc)
        return None

    def _publish(self, behind: bool = False) -> Delta:
        live = self._live
        ids = list(live.vectors)
        rows = self._rows(ids)
        self._stacked, self._written, self._restack = rows, set(), False
        delta = Delta(
            generation=self._generation,
            ids=rows.ids,
            vectors=rows.vectors,
            surface=rows.surface,
            blocks=rows.blocks,
            in_stock=np.array([live.in_stock[i] for i in ids], dtype=bool),
            has_image=np.array([live.has_image[i] for i in ids], dtype=bool),
            attributes=tuple(live.attributes[i] for i in ids),
            shown=~self._removed & ~self._superseded & self._stock,
            shown_out=~self._removed & ~self._superseded & ~self._stock,
            removed=self._removed.copy(),
            pending=len(self._pending),
            max_items=self.config.max_items,
            written_at=self._written_at,
            live_written_at=np.array(
                [live.written_at.get(i, self._generation) for i in ids], dtype=np.int64
            ),
            gone=frozenset(self._gone),
            waiting=frozenset(self._pending),
            behind=behind,
            **rows.tokens,
        )
        for mask in (delta.shown, delta.shown_out, delta.removed):
            mask.flags.writeable = False  # answers share them: none may write into one
        self.recommender.live = delta
        if delta.retrain_due and not self._due:
            log.warning(
                "live catalog: %d live items (the most kept), %d more waiting: retrain",
                delta.size,
                delta.pending,
            )
        self._due = delta.retrain_due
        return delta

    def _rows(self, ids: list[str]) -> _Rows:
        """The live items' arrays in ``ids``' order: the last publish's, with the items
        written since appended into their spare rows (``_Rows.room``, a quarter more than
        held, up to ``max_items``) or replaced in a copy, when no item left the live set
        since; all restacked otherwise. At 9,000 live items a step of 20 new ones takes 4 ms
        and a restack 40 (scripts/bench_delta_publish.py)."""
        last = self._stacked
        n = 0 if last is None else len(last.order)
        if last is None or self._restack or not n or ids[:n] != last.order:
            return self._stack(ids)
        tail_ids = ids[n:]
        appended = set(tail_ids)
        changed = [i for i in self._written if i in self._live.vectors and i not in appended]
        if not tail_ids and not changed:
            return last
        tail = self._stack(tail_ids) if tail_ids else None
        if tail is not None and tail.blocks.keys() != last.blocks.keys():
            return self._stack(ids)
        size = len(ids)
        capacity = max(size + size // 4, size + 64)
        if self.config.max_items > 0:
            capacity = max(min(capacity, self.config.max_items), size)
        new_rows = {} if tail is None else _named(tail.vectors, tail.surface, tail.blocks)
        room = {}
        for name, buffer in last.room.items():
            if changed or size > len(buffer):  # edits must not touch the last delta's rows
                buffer = _copied(buffer[:n], capacity)
            if name in new_rows:
                buffer[n:size] = new_rows[name]
            room[name] = buffer
        if changed:
            at = np.array([last.order.index(i) for i in changed])
            edited = self._stack(changed)
            for name, values in _named(edited.vectors, edited.surface, edited.blocks).items():
                room[name][at] = values
        vectors, surface = room["vectors"][:size], room["surface"][:size]
        blocks = {b: room[f"block:{b}"][:size] for b in last.blocks}
        if changed or not last.tokens or (tail is not None and not tail.tokens):
            tokens = self._token_parts(ids)
        elif tail is None:
            tokens = last.tokens
        else:
            tokens = {
                "tokens": sp.vstack([last.tokens["tokens"], tail.tokens["tokens"]], format="csr"),
                "token_scale": np.concatenate(
                    [last.tokens["token_scale"], tail.tokens["token_scale"]]
                ),
            }
        return _Rows(ids, np.asarray(ids, dtype=str), vectors, surface, blocks, tokens, room)

    def _stack(self, ids: list[str]) -> _Rows:
        live, fused = self._live, self.recommender.fused
        names = list(next(iter(live.blocks.values()))) if live.blocks else []
        blocks = {b: np.stack([live.blocks[i][b] for i in ids]) for b in names} if ids else {}
        vectors = np.zeros((0, fused.layout_.dim), dtype=np.float32)
        surface = vectors
        if ids:
            vectors = np.stack([live.vectors[i] for i in ids])
            cold = np.array([live.cold[i] for i in ids], dtype=bool)
            surface = fused.surface_item_vectors(blocks, cold) if blocks else vectors
        ordered = np.asarray(ids, dtype=str)
        room = _named(vectors, surface, blocks)
        return _Rows(list(ids), ordered, vectors, surface, blocks, self._token_parts(ids), room)

    def _token_parts(self, ids: list[str]) -> dict[str, Any]:
        fused, live = self.recommender.fused, self._live
        if not fused.token_weight or not ids or any(i not in live.tokens for i in ids):
            return {}
        rows = [live.tokens[i] for i in ids]  # (1, F) each; joined by their arrays, which is
        # a tenth of sp.vstack's time at 10,000 live items (this runs on every follow step)
        ends = np.cumsum([row.nnz for row in rows])
        tokens = sp.csr_matrix(
            (
                np.concatenate([row.data for row in rows]),
                np.concatenate([row.indices for row in rows]),
                np.concatenate([[0], ends]),
            ),
            shape=(len(rows), rows[0].shape[1]),
        )
        scale = np.array([live.token_scale[i] for i in ids], dtype=np.float32)
        return {"tokens": tokens, "token_scale": scale}


def _named(vectors: np.ndarray, surface: np.ndarray, blocks: dict) -> dict[str, np.ndarray]:
    return {"vectors": vectors, "surface": surface} | {f"block:{b}": v for b, v in blocks.items()}


def _copied(rows: np.ndarray, capacity: int) -> np.ndarray:
    """``rows`` copied into the first rows of a new array of ``capacity`` rows."""
    out = np.empty((capacity, *rows.shape[1:]), dtype=rows.dtype)
    out[: len(rows)] = rows
    return out


def _joined(found: list, todo: np.ndarray, blocks: dict, tokens):
    """The blocks and tokens of a batch whose rows were read (``found``: (blocks, tokens) of
    one item, None where ``todo``) or made (``blocks``, ``tokens``: the ``todo`` rows in order;
    empty when none could be made, which stay zero); None when they do not fit together."""
    read = [one for one in found if one is not None]
    widths = {name: values.shape for name, values in read[0][0].items()}
    token_width = _width(read[0][1])

    def fits(shapes: dict, width) -> bool:
        return shapes == widths and width == token_width

    if blocks and not fits({b: v.shape[1:] for b, v in blocks.items()}, _width(tokens)):
        return None
    if not all(fits({b: v.shape for b, v in one.items()}, _width(t)) for one, t in read):
        return None
    n, at = len(found), np.flatnonzero(~todo)
    joined = {}
    for name, shape in widths.items():
        joined[name] = np.zeros((n, *shape), dtype=read[0][0][name].dtype)
        joined[name][at] = np.stack([one[name] for one, _ in read])
        if blocks:
            joined[name][todo] = blocks[name]
    if token_width is None:
        return joined, None
    rows = [t for _, t in read]
    empty = sp.csr_matrix((1, token_width), dtype=rows[0].dtype)
    made_rows = iter(tokens if tokens is not None else [empty] * int(todo.sum()))
    read_rows = iter(rows)
    ordered = [next(made_rows) if t else next(read_rows) for t in todo.tolist()]
    return joined, sp.vstack(ordered).tocsr()


def _width(tokens) -> int | None:
    return None if tokens is None else tokens.shape[1]


def _attributes(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per row of ``frame``, its attributes that have a value (by column name)."""
    skip = {"item_id", "title", "image_path", "in_stock"}
    names = [name for name in frame.columns if name not in skip]
    if not names:
        return [{} for _ in range(len(frame))]
    columns = [frame[name].tolist() for name in names]
    return [
        {
            name: value
            for name, value in zip(names, values, strict=True)
            if value is not None and not _is_nan(value)
        }
        for values in zip(*columns, strict=True)
    ]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _rows_in_steps(index, item_ids: np.ndarray) -> np.ndarray:
    """``index.rows(item_ids)`` in steps of ``changes.SNAPSHOT_STEP`` ids, letting the request
    threads run between steps (a whole catalog's ids at once holds the GIL for a third of a
    second at 10^6 items)."""
    step = changes.SNAPSHOT_STEP
    parts = []
    for start in range(0, len(item_ids), step):
        parts.append(index.rows(item_ids[start : start + step]))
        time.sleep(0)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
