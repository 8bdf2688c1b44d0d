"""What serving reads from the catalog: item cards, pages of items and users, image paths,
a user's latest events, and whether the database answers.

Item cards have one source, the catalog. The product page, the catalog pages and every ranked
row (similar items, feeds, visual search) read them from it, so a page and the rows beside it
show the same title, stock and attributes, and a catalog edit shows everywhere on the next
request, without a new bundle. The service reads them through a ``CardCache``: each request
first reads the catalog's items generation (one primary-key read; database triggers bump it
on every write to ``items``, whoever writes), and when that number moved the cache drops the
cards of the items the change log names for the new generations (``item_changes``), or all
of its cards when the log cannot say (a TRUNCATE, a jump of more than ``LOG_STEP``, a log
pruned past the cache's generation). A request therefore never sees a card older than the
catalog it started on, and costs one tiny query instead of reading and decoding every card on
the page; item writes cost the cache only the written items' cards.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pydantic_core
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Select,
    Text,
    bindparam,
    cast,
    column,
    func,
    literal,
    literal_column,
    null,
    select,
    table,
    union_all,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError

from recsys.catalog import changes
from recsys.catalog.db import database_away, fold_case
from recsys.catalog.models import (
    TITLE_SEARCH_TABLE,
    CatalogState,
    Erasure,
    Interaction,
    Item,
    ItemChange,
    User,
    user_key,
)
from recsys.catalog.title_index import SIGMAS, match_phrase, without_sigma
from recsys.errors import CatalogNotReady, SearchTooBroad
from recsys.ingest.values import MIN_SEARCH, parse_search
from recsys.logs import Repeated
from recsys.model.data import IdIndex

log = logging.getLogger(__name__)
_answered_stale = Repeated(log, "the catalog does not answer: item cards answered as last known")
T = TypeVar("T")

# Most recent events of a user that ``fresh_items`` returns (a feed folds them in).
FRESH_LIMIT = 200
# Distinct items of a user's events beyond those that ``user_since`` returns as seen (a feed
# leaves them out): a shopper with 300 purchases since the bundle was offered the 100 oldest.
# Taken from their newest FRESH_SCAN_LIMIT events, newest first: a bot's 300,000 events on 5
# items were all read on each of its feed requests (88 ms).
FRESH_SEEN_LIMIT = 2000
FRESH_SCAN_LIMIT = 5000
# Matches a page of items counts before it stops (``ItemPage.exact`` False: there are more):
# the whole count of a catalog of 10^7 items, or of every title holding a common word, would
# cost each page a scan of them.
COUNT_LIMIT = 1_000
# How long the queries of one title search may run before it is refused (``SearchTooBroad``):
# a text whose every trigram is common but which few titles hold makes the index walk those
# trigrams' lists (80 ms at 10^6 items on SQLite, 0.4 s at 3x10^5 on PostgreSQL), a cost
# that grows with the catalog; a search that finds its items takes a few milliseconds.
SEARCH_SECONDS = 1.0
# SQLite's trigram index of titles (migration 0011); its hidden column of the same name
# takes the MATCH.
_TITLES = table(TITLE_SEARCH_TABLE, column("rowid"), column(TITLE_SEARCH_TABLE))
# Ids whose titles ``item_titles`` reads a query (SQLite binds at most 32,766 values).
TITLE_BATCH = 10_000
# Item generations a card cache catches up on through the change log; past it, it starts afresh.
LOG_STEP = 1000


@dataclass(frozen=True, slots=True)
class ItemCard:
    """An item's display fields."""

    item_id: str
    title: str | None
    in_stock: bool
    has_image: bool
    attributes: dict[str, Any]


# A card as a ``CardCache`` holds it: (title, in_stock, has_image, attributes as JSON text, ""
# for none). A plain tuple of strings and bools leaves the garbage collector's lists after its
# first collection, where a card object (and its attribute dict) would stay on them: with tens
# of thousands of cards held, every full collection walked them all, a pause of 15-40 ms that
# stalled the worker's requests.
Packed = tuple[str | None, bool, bool, str]


def _pack(card: ItemCard) -> Packed:
    document = json.dumps(card.attributes) if card.attributes else ""
    return card.title, card.in_stock, card.has_image, document


def _unpack(item_id: str, packed: Packed) -> ItemCard:
    title, in_stock, has_image, document = packed
    # json.loads, in Rust; a JSON null (an item stored without attributes) is none, as
    # ``item_cards`` reads it
    attributes = (pydantic_core.from_json(document) if document else None) or {}
    return ItemCard(item_id, title, in_stock, has_image, attributes)


@dataclass(frozen=True, slots=True)
class ItemPage:
    cards: list[ItemCard]
    total: int  # items matching the search, all pages together, counted to COUNT_LIMIT
    exact: bool = True  # False: more than COUNT_LIMIT match
    next: int | None = None  # the ``after`` of the page that follows; None: this is the last


@dataclass(frozen=True, slots=True)
class UserActivity:
    user_id: str
    interactions: int


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[UserActivity]
    next: int | None = None  # the ``after`` of the page that follows; None: this is the last


_CARD_COLUMNS = (Item.external_id, Item.title, Item.in_stock, Item.image_path, Item.attributes)
# Built once: per call only the parameters change (SQLAlchemy caches the compiled form).
_CARDS = select(*_CARD_COLUMNS).where(Item.external_id.in_(bindparam("ids", expanding=True)))
_TITLES_OF = select(Item.external_id, Item.title).where(
    Item.external_id.in_(bindparam("ids", expanding=True))
)
_GENERATION = select(CatalogState.items_generation).where(CatalogState.id == 1)
_CHANGED = select(ItemChange.external_id).where(
    ItemChange.generation > bindparam("old"), ItemChange.generation <= bindparam("new")
)


def _newest_events(*columns, limit: int):
    """A subquery of the item (``item``), the id (``arrival``) and ``columns`` of the
    user's (``user_id``) events stored after ``since``, the newest ``limit``, taken in the
    order of the (user, stored time) index: ordered by id, every one of a bot's 200,000
    events was joined and sorted (109 ms)."""
    return (
        select(Item.external_id.label("item"), Interaction.id.label("arrival"), *columns)
        .join(Interaction, Interaction.item_id == Item.id)
        .join(User, Interaction.user_id == User.id)
        .where(User.external_id == bindparam("user_id"))
        .where(Interaction.created_at > bindparam("since"))
        .order_by(Interaction.created_at.desc(), Interaction.id.desc())
        .limit(limit)
        .subquery()
    )


# A row for the user's latest erasure (none: never erased), one for the user (none: the catalog
# has no such user), then the items of each of their newest events stored since a time (one
# more than kept, to tell a longer history), newest first: one statement on the erasures',
# the users' and the events' indexes (a LEFT JOIN of users and events made SQLite scan every
# event: 64 ms instead of 7 us).
_NEWEST = _newest_events(Interaction.timestamp.label("moment"), limit=FRESH_LIMIT + 1)
_FRESH_ITEMS = (
    union_all(
        select(literal(0).label("part"), null().label("item"), literal(0).label("arrival"),
               Erasure.erased_at.label("erased_at"),
               cast(null(), DateTime).label("moment"))
        .where(Erasure.user_key == bindparam("user_key")),
        select(literal(1), null(), literal(0), null(), null())
        .where(User.external_id == bindparam("user_id")),
        select(literal(2), _NEWEST.c.item, _NEWEST.c.arrival, null(), _NEWEST.c.moment),
    )
    .order_by(literal_column("part"), literal_column("arrival").desc())
)  # fmt: skip
# The distinct items of the user's newest events stored since a time, newest first, read
# only when there are more of those events than FRESH_LIMIT.
_SCANNED = _newest_events(limit=FRESH_SCAN_LIMIT)
_FRESH_SEEN = (
    select(_SCANNED.c.item)
    .group_by(_SCANNED.c.item)
    .order_by(func.max(_SCANNED.c.arrival).desc())
    .limit(FRESH_SEEN_LIMIT)
)


def _reading(engine: Engine) -> Connection:
    """A connection for reads. On PostgreSQL in autocommit: each statement reads what is
    committed when it starts, as inside a READ COMMITTED transaction, but the server is not
    sent a BEGIN before the first statement and a ROLLBACK when the connection goes back to
    the pool, two round trips a checkout (``scripts/bench_request_reads.py``; RESULTS,
    session 52). SQLite reads begin no transaction anyway, and switching its connection's
    mode costs more than the read. Not for reads that set a transaction-local limit
    (``_time_limit``)."""
    connection = engine.connect()
    if engine.dialect.name == "sqlite":
        return connection
    return connection.execution_options(isolation_level="AUTOCOMMIT")


def _read(engine: Engine, work: Callable[[Connection], T], transaction: bool = False) -> T:
    """``work(connection)`` on a ``_reading`` connection (with ``transaction``, a plain one),
    run once more on a fresh connection when the first finds the pooled one dead
    (``connection_invalidated``: the server restarted or the link dropped since its last use,
    within the pool's ping interval, ``recsys.catalog.db``). Reads change nothing, so running
    one again is safe."""
    connect = engine.connect if transaction else lambda: _reading(engine)
    try:
        with connect() as connection:
            return work(connection)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("a pooled catalog connection was dead (%s); reading again", exc.orig)
    with connect() as connection:
        return work(connection)


class Texts:
    """A column of strings (None allowed) as Arrow lays it out: one UTF-8 buffer and each
    string's offsets in it, a few bytes per string beyond its text where a list of Python
    strings costs about 50. ``take`` slices the buffer for the asked rows: Arrow's own
    ``take`` builds a new array per call, several times the cost for a card's few rows."""

    def __init__(self, values) -> None:
        array = pa.array(values, type=pa.large_string())
        _, offsets, data = array.buffers()
        self._offsets = np.frombuffer(offsets, dtype=np.int64)[: len(array) + 1]
        self._data = memoryview(data) if data is not None else memoryview(b"")
        self._valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None

    def take(self, rows: np.ndarray) -> list[str | None]:
        """The strings at ``rows`` (an int array), in order."""
        data, starts, ends = self._data, self._offsets[rows], self._offsets[rows + 1]
        spans = zip(starts.tolist(), ends.tolist(), strict=True)
        texts = [str(data[start:end], "utf-8") for start, end in spans]
        if self._valid is None:
            return texts
        valid = self._valid[rows].tolist()
        return [text if ok else None for text, ok in zip(texts, valid, strict=True)]


class CardSnapshot:
    """Every item's card at one items generation, held as columns: the ids in an ``IdIndex``,
    titles and attribute documents (JSON text) as ``Texts``, stock and photo as bits, a
    few dozen bytes per item where a dict of cards costs about 600. A ``CardCache`` answers
    from it the items written neither since the snapshot nor ever asked again, so a request
    reads no card from the database however many distinct items it shows."""

    def __init__(self, generation: int, ids, titles, in_stock, has_image, attributes) -> None:
        self.generation = generation
        self.index = IdIndex(np.asarray(ids, dtype=str))
        self.titles = Texts(titles)
        self.attributes = Texts(attributes)
        self.in_stock = np.asarray(in_stock, dtype=bool)
        self.has_image = np.asarray(has_image, dtype=bool)

    def __len__(self) -> int:
        return len(self.in_stock)

    @classmethod
    def read(cls, engine: Engine) -> CardSnapshot:
        """The generation, then every card (a write between the two reads is logged after
        that generation, so the cache reads that item afresh)."""
        photo, document = Item.image_path.is_not(None), cast(Item.attributes, Text)
        columns = (Item.external_id, Item.title, Item.in_stock, photo, document)

        def snapshot(connection: Connection) -> tuple:
            # every item, no request's read: not held to the service's statement timeout,
            # for this transaction alone (a session's SET, behind a PgBouncer pooling
            # transactions, stayed on the server connection for other clients)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            return connection.scalar(_GENERATION), connection.execute(select(*columns)).all()

        generation, rows = _read(engine, snapshot, transaction=True)
        ids, titles, stock, image, attributes = zip(*rows, strict=True) if rows else [()] * 5
        return cls(generation, ids, titles, stock, image, attributes)

    def cards(self, item_ids: Sequence[str]) -> dict[str, ItemCard]:
        """The cards of those ``item_ids`` the snapshot holds, by id."""
        return {
            item_id: _unpack(item_id, packed) for item_id, packed in self.packed(item_ids).items()
        }

    def packed(self, item_ids: Sequence[str]) -> dict[str, Packed]:
        """``cards`` as a ``CardCache`` holds them (attributes left as JSON text)."""
        rows = self.index.rows(list(item_ids)) if item_ids else np.zeros(0, dtype=np.int64)
        known = rows >= 0
        ids = [item_id for item_id, ok in zip(item_ids, known.tolist(), strict=True) if ok]
        rows = rows[known]
        titles = self.titles.take(rows)
        documents = [doc or "" for doc in self.attributes.take(rows)]
        stock, image = self.in_stock[rows].tolist(), self.has_image[rows].tolist()
        return dict(zip(ids, zip(titles, stock, image, documents, strict=True), strict=True))


def _logged(connection, old: int | None, new: int | None) -> list[str] | None:
    """The items the change log names as written after generation ``old`` up to ``new``;
    None when it cannot say: a generation unknown, a move back or of more than ``LOG_STEP``,
    a move with nothing logged (a TRUNCATE), or a log pruned past ``old``."""
    if old is None or new is None or not 0 <= new - old <= LOG_STEP:
        return None
    if new == old:
        return []
    changed = connection.execute(_CHANGED, {"old": old, "new": new}).scalars().all()
    if not changed or old < changes.pruned_through(connection):
        return None
    return changed


def _card(row: Row) -> ItemCard:
    item_id, title, in_stock, image_path, attributes = row
    return ItemCard(item_id, title, bool(in_stock), image_path is not None, attributes or {})


def _missing(item_ids: Sequence[str], found: dict[str, ItemCard]) -> list[str]:
    """The asked ids (once each, in order) that ``found`` lacks."""
    return [item_id for item_id in dict.fromkeys(item_ids) if item_id not in found]


def item_cards(engine: Engine, item_ids: Sequence[str]) -> dict[str, ItemCard]:
    """The cards of those ``item_ids`` the catalog has, by id (unknown ids are left out)."""
    if not item_ids:
        return {}
    rows = _read(engine, lambda c: c.execute(_CARDS, {"ids": list(item_ids)}).all())
    return {row[0]: _card(row) for row in rows}


class CardCache:
    """Item cards by id for one process, as current as the catalog.

    ``cards`` reads the items generation, answers from memory while it is unchanged, reads
    the missing cards in one query, and drops everything when the generation moved. With
    ``max_age`` > 0 the generation is read at most that often (seconds) while every asked
    card is in memory: an edit then shows within ``max_age`` instead of on the next call.
    At most ``capacity`` cards are kept (least recently used go first); 0 keeps none, so
    every call reads the catalog. Safe to share between a worker's threads.

    A process that calls ``follow`` every few seconds (the service's catalog follower, the
    same loop that moves the model's live delta) spares its requests the generation read:
    they answer from memory, as current as the last ``follow`` (so a product page and the
    items around it change together), and read only the cards they miss. When ``follow``
    has not run for ``stale_after`` seconds, requests read the generation themselves again.

    With ``snapshot``, ``follow`` also reads every card once into a ``CardSnapshot`` (or
    places the ``preloaded`` one; after that, on the next ``follow`` once the catalog could
    not say what changed), and requests
    answer from it every item not written since, so the cards they miss are read from the
    catalog only for items written since the snapshot.
    """

    def __init__(
        self,
        engine: Engine,
        capacity: int,
        max_age: float = 0.0,
        stale_after: float = 10.0,
        snapshot: bool = False,
        preloaded: CardSnapshot | None = None,
    ) -> None:
        if capacity < 0 or max_age < 0 or stale_after < 0:
            raise ValueError(
                f"capacity, max_age and stale_after must be >= 0, got {capacity}, {max_age}, "
                f"{stale_after}"
            )
        self.engine = engine
        self.capacity = capacity
        self.max_age = max_age
        self.stale_after = stale_after
        self._followed = -math.inf  # time.monotonic() of the last follow()
        self._cards: OrderedDict[str, Packed] = OrderedDict()
        self._generation: int | None = None
        self._checked = -math.inf  # time.monotonic() of the last generation read
        self._lock = threading.Lock()
        self.snapshot = snapshot
        self._snapshot: CardSnapshot | None = None  # current to self._generation but _stale
        self._stale: set[str] = set()  # items written since the snapshot
        # read (or ``preloaded`` by the process that forked this one), waiting to be placed
        self._unplaced: CardSnapshot | None = preloaded if snapshot else None
        self._reader: threading.Thread | None = None  # reading a snapshot

    def __len__(self) -> int:
        return len(self._cards)

    def cards(self, item_ids: Sequence[str]) -> dict[str, ItemCard]:
        """The cards of those ``item_ids`` the catalog has, by id (unknown ids are left out)."""
        if not item_ids:
            return {}
        if not self.capacity:
            return item_cards(self.engine, item_ids)
        now = time.monotonic()
        followed = now - self._followed < self.stale_after
        if followed or now - self._checked < self.max_age:
            generation = self._generation
            found = self._cached(generation, item_ids)
            if len(found) == len(set(item_ids)):
                _answered_stale.worked()  # the catalog is back: said once (a no-op else)
                return found
            if followed:  # the follower keeps the generation: read only the missing cards
                try:
                    read = item_cards(self.engine, _missing(item_ids, found))
                except (DatabaseError, CatalogNotReady) as exc:
                    return self._last_known(item_ids, exc)
                self._keep(generation, {item_id: _pack(card) for item_id, card in read.items()})
                _answered_stale.worked()
                return found | read

        def checked(connection: Connection) -> tuple:
            generation = connection.scalar(_GENERATION)
            self._catch_up(connection, generation)
            found = self._cached(generation, item_ids)
            missing = _missing(item_ids, found)
            rows = connection.execute(_CARDS, {"ids": missing}).all() if missing else []
            return generation, found, rows

        try:
            generation, found, rows = _read(self.engine, checked)
        except (DatabaseError, CatalogNotReady) as exc:
            return self._last_known(item_ids, exc)
        _answered_stale.worked()
        self._checked = now
        if not rows:
            return found
        read = {row[0]: _card(row) for row in rows}
        self._keep(generation, {item_id: _pack(card) for item_id, card in read.items()})
        return found | read

    def _last_known(self, item_ids: Sequence[str], exc: Exception) -> dict[str, ItemCard]:
        """The cards as last known, while the catalog does not answer (a restart, an
        outage), rather than every product page becoming a 503: those the process holds,
        then the snapshot's of items written since it (their card before that write: a
        bulk price update had made every updated item's page and every feed listing one a
        503 for the whole outage). ``exc`` again when one is not known at all, or when it
        is not the database being away."""
        if not database_away(exc):
            raise exc
        found = self._cached(self._generation, item_ids) if self._generation is not None else {}
        missing = _missing(item_ids, found)
        snapshot = self._snapshot
        if missing and snapshot is not None:
            found |= snapshot.cards(missing)
        if len(found) < len(set(item_ids)):
            raise exc
        _answered_stale.failed(exc)
        return found

    def followed_generation(self) -> int | None:
        """The items generation every card this cache answers is current to, when ``follow``
        keeps it (it ran within ``stale_after``); None when requests read it themselves."""
        if not self.capacity or time.monotonic() - self._followed >= self.stale_after:
            return None
        return self._generation

    def follow(self) -> None:
        """Catch up with the catalog now: read its items generation and drop the cards of the
        items written since (all of them when the change log cannot say which). Errors are
        the caller's; until the next successful call, requests check for themselves once
        ``stale_after`` has passed."""
        if not self.capacity:
            return
        now = time.monotonic()

        def caught_up(connection: Connection) -> int | None:
            generation = connection.scalar(_GENERATION)
            self._catch_up(connection, generation)
            return generation

        generation = _read(self.engine, caught_up)
        self._cached(generation, ())  # a move the log did not explain empties the cache
        self._checked = self._followed = now
        if self.snapshot and self._snapshot is None:
            if self._unplaced is not None:
                self._place(self._unplaced)
            elif self._reader is None or not self._reader.is_alive():
                # read in its own thread: at 10^6 items it takes seconds, and the follower
                # that calls this also moves the model's delta
                self._reader = threading.Thread(
                    target=self._read_snapshot, name="card-snapshot", daemon=True
                )
                self._reader.start()

    def wait_for_snapshot(self, timeout: float | None = None) -> bool:
        """Wait for a snapshot read that ``follow`` started; whether one is in use now."""
        if self._reader is not None:
            self._reader.join(timeout)
        return self._snapshot is not None

    def _read_snapshot(self) -> None:
        try:
            self._place(CardSnapshot.read(self.engine))
        except Exception:  # requests read cards from the catalog meanwhile
            log.exception("reading the card snapshot failed; the next follow tries again")

    def _place(self, snapshot: CardSnapshot) -> None:
        """Answer from ``snapshot`` once it is brought up to the cache's generation through
        the change log; kept for the next ``follow`` while the cache is at another one, and
        dropped when the log cannot say what changed since it."""

        def logged(connection: Connection) -> tuple:
            now = connection.scalar(_GENERATION)
            return now, _logged(connection, snapshot.generation, now)

        now, changed = _read(self.engine, logged)
        if changed is None:
            self._unplaced = None
            return
        with self._lock:
            if self._generation != now:
                self._unplaced = snapshot
                return
            self._snapshot, self._stale, self._unplaced = snapshot, set(changed), None

    def _catch_up(self, connection, generation: int | None) -> None:
        """Drop only the cards of the items written since the cached generation (the change
        log says which); when it cannot say, ``_cached`` drops them all."""
        old = self._generation
        changed = _logged(connection, old, generation)
        if not changed:  # nothing moved, or the log cannot say what did
            return
        with self._lock:
            if self._generation == old:
                for item_id in changed:
                    self._cards.pop(item_id, None)
                if self._snapshot is not None:
                    self._stale.update(changed)
                self._generation = generation

    def _cached(self, generation: int | None, item_ids: Sequence[str]) -> dict[str, ItemCard]:
        """The asked cards held in memory at ``generation`` (the cache's own, then the
        snapshot's for items not written since); a cache at another generation starts
        afresh, without its snapshot."""
        with self._lock:
            if generation is None or generation != self._generation:
                self._cards.clear()
                self._snapshot, self._stale = None, set()
                self._generation = generation
                return {}
            found, unseen = {}, []
            for item_id in item_ids:
                if (packed := self._cards.get(item_id)) is not None:
                    self._cards.move_to_end(item_id)
                    found[item_id] = packed
                elif item_id not in self._stale:
                    unseen.append(item_id)
            snapshot = self._snapshot
        if snapshot is not None and unseen:
            read = snapshot.packed(unseen)
            self._keep(generation, read)  # the items a process shows again answer from the dict
            found |= read
        return {item_id: _unpack(item_id, packed) for item_id, packed in found.items()}

    def _keep(self, generation: int | None, read: dict[str, Packed]) -> None:
        """Keep cards read at ``generation`` unless another request saw a newer one since."""
        with self._lock:
            if generation is None or generation != self._generation:
                return
            self._cards.update(read)
            while len(self._cards) > self.capacity:
                self._cards.popitem(last=False)


def list_items(
    engine: Engine, offset: int, limit: int, text: str = "", after: int | None = None
) -> ItemPage:
    """A page of cards in catalog order; with ``text`` (``values.parse_search``: three
    characters or more), only titles containing it (any case). ``%`` and ``_`` in ``text``
    are themselves, not LIKE wildcards. The total counts up to ``COUNT_LIMIT`` items.

    ``after``: the ``next`` of the page before, to start after its last item (a key, so a
    page deep in the catalog costs what the first does; ``offset`` skips rows one by one)."""
    text = parse_search(text, "text")
    query, key = select(*_CARD_COLUMNS).order_by(Item.id), Item.id
    if text:
        query, key = _title_search(query, engine.dialect.name, text)
    counted = query.with_only_columns(Item.id).order_by(None).limit(COUNT_LIMIT + 1)
    if after is not None:
        query = query.where(key > after)
    page = query.add_columns(Item.id).offset(offset).limit(limit + 1)  # one more: is there a next

    def total_and_rows(connection: Connection) -> tuple:
        with _time_limit(connection, SEARCH_SECONDS if text else 0) as rearm:
            total = connection.scalar(select(func.count()).select_from(counted.subquery()))
            rearm()
            return total or 0, connection.execute(page).all()

    total, rows = _read(engine, total_and_rows, transaction=True)  # for its SET LOCAL
    following = rows[limit - 1][-1] if len(rows) > limit else None  # None: the last page
    cards = [_card(row[:-1]) for row in rows[:limit]]
    return ItemPage(cards, min(total, COUNT_LIMIT), total <= COUNT_LIMIT, following)


@contextmanager
def _time_limit(connection: Connection, seconds: float):
    """Stop this connection's statements after ``seconds`` in all (0: no limit) with
    ``SearchTooBroad``: SQLite's progress handler (every 1,000 virtual machine steps, a few
    microseconds) against one deadline; PostgreSQL's ``statement_timeout`` for the
    transaction, set again to what is left by the function this yields, before each
    statement after the first (each statement had its own second: a search of 1.2x10^6
    titles ran 1.7 s)."""
    sqlite = connection.dialect.name == "sqlite"
    deadline, stopped = time.monotonic() + seconds, []

    def past_deadline() -> bool:  # a true answer interrupts the statement
        if time.monotonic() <= deadline:
            return False
        stopped.append(True)
        return True

    def time_out(after: float) -> None:  # LOCAL: until the transaction ends
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(after * 1e3))}")

    def rearm() -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            stopped.append(True)
            raise OperationalError("search", {}, Exception("past its time"))
        time_out(left)

    if not seconds:
        yield lambda: None
        return
    try:
        if sqlite:
            connection.connection.driver_connection.set_progress_handler(past_deadline, 1000)
        else:  # the whole time for the first statement, however short it is
            time_out(seconds)
        yield (lambda: None) if sqlite else rearm
    except OperationalError as exc:
        if not (stopped or getattr(exc.orig, "sqlstate", None) == "57014"):  # query_canceled
            raise
        raise SearchTooBroad(
            f"the search took more than {seconds:g} s: its text is common in the catalog's "
            "titles, or holds no three letters or digits in a row to look up; search a "
            "rarer word"
        ) from None
    finally:
        if sqlite:
            connection.connection.driver_connection.set_progress_handler(None, 0)


def _title_search(query: Select, dialect: str, text: str) -> tuple[Select, Any]:
    """``query`` (of items, in catalog order) cut to titles containing ``text`` (any case),
    and the column it is then ordered by.

    The test is ``title ILIKE``, which PostgreSQL's trigram index serves (migration 0011);
    the order stays the item's id. On SQLite the FTS5 trigram index (the same migration)
    leads instead: it lists, in catalog order, the items whose titles hold the text's trigrams
    in a row (asked for each form a character may take there, ``title_index``, it finds a
    superset of the LIKE's matches, which then decides), so
    that a page of a common word stops after its items instead of listing every match first.
    The order is then the index's row (the same id), whose own range an ``after`` reads."""
    if dialect != "sqlite":
        if not SIGMAS.intersection(text):
            return query.where(Item.title.icontains(text, autoescape=True)), Item.id
        folded = func.translate(func.lower(Item.title), "ς", "σ", type_=Text)
        query = query.where(folded.contains(fold_case(text), autoescape=True))
        part = without_sigma(text)  # what the index can look up
        if len(part.strip()) >= MIN_SEARCH:
            query = query.where(Item.title.icontains(part, autoescape=True))
        return query, Item.id
    folded = func.recsys_fold(Item.title, type_=Text)  # db.FOLD: any script's case
    query = query.where(folded.contains(fold_case(text), autoescape=True))
    # None: two CJK characters (parse_search), or a text whose every part of three characters
    # takes too many forms in the index (``title_index``): no trigram to look up
    phrase = match_phrase(text)
    if phrase is None:
        return query, Item.id
    indexed = _TITLES.join(Item, Item.id == _TITLES.c.rowid)
    query = query.select_from(indexed).where(_TITLES.c[TITLE_SEARCH_TABLE].match(phrase))
    # the index's own order (the item's id): no sort
    return query.order_by(None).order_by(_TITLES.c.rowid), _TITLES.c.rowid


def list_users(engine: Engine, offset: int, limit: int, after: int | None = None) -> UserPage:
    """A page of users in catalog order with their number of events: the page's users first,
    then each one's events counted on the (user, arrival) index, so that a page costs its
    users' events, not the catalog's. ``after``: as for ``list_items``."""
    page = select(User.id, User.external_id).order_by(User.id)
    if after is not None:
        page = page.where(User.id > after)
    page = page.offset(offset).limit(limit + 1).subquery()  # one more: is there a next page
    events = select(func.count()).where(Interaction.user_id == page.c.id).scalar_subquery()
    query = select(page.c.id, page.c.external_id, events).order_by(page.c.id)
    rows = _read(engine, lambda c: c.execute(query).all())
    users = [UserActivity(user_id, count) for _, user_id, count in rows[:limit]]
    return UserPage(users, rows[limit - 1][0] if len(rows) > limit else None)


def image_path(engine: Engine, item_id: str) -> str | None:
    """The stored path of the item's image, or None (no such item, or no image)."""
    query = select(Item.image_path).where(Item.external_id == item_id)
    return _read(engine, lambda c: c.scalar(query))


def item_titles(engine: Engine, item_ids: Sequence[str]) -> list[str | None]:
    """The title of each of ``item_ids`` (None: no title, or an item the catalog does not
    have), in their order; read ``TITLE_BATCH`` ids a query."""
    found = _titles_of(engine, item_ids)
    return [found.get(item_id) for item_id in item_ids]


def items_present(engine: Engine, item_ids: np.ndarray) -> np.ndarray:
    """(N,) bool: which of ``item_ids`` the catalog has (an item removed since a bundle was
    trained is not); read ``TITLE_BATCH`` ids a query."""
    ids = np.asarray(item_ids, dtype=str)
    return np.isin(ids, np.asarray(list(_titles_of(engine, ids.tolist())), dtype=str))


def _titles_of(engine: Engine, item_ids: Sequence[str]) -> dict[str, str | None]:
    """{external id: title} of those of ``item_ids`` the catalog has, ``TITLE_BATCH`` a query."""
    found: dict[str, str | None] = {}
    ids = list(dict.fromkeys(item_ids))

    def titles(connection: Connection) -> None:
        for start in range(0, len(ids), TITLE_BATCH):
            batch = ids[start : start + TITLE_BATCH]
            found.update((row[0], row[1]) for row in connection.execute(_TITLES_OF, {"ids": batch}))

    _read(engine, titles)
    return found


def titles_by_row(engine: Engine, item_ids: np.ndarray) -> Callable[[np.ndarray], list]:
    """rows -> the titles of ``item_ids[rows]`` (``item_titles``), read when asked: what
    ``duplicates.title_checked`` takes, so that only the candidate pairs' titles are read."""
    return lambda rows: item_titles(engine, item_ids[rows].tolist())


@dataclass(frozen=True)
class UserSince:
    """What a feed reads of a user (``user_since``)."""

    # Items of their events stored after a time, newest first (at most FRESH_LIMIT); None
    # when the catalog has no such user (never seen, or erased: ``recsys.ingest.users``).
    items: list[str] | None
    # When they were last erased (naive UTC); None: never (or before migration 0012).
    erased_at: datetime | None
    # The times of those events (naive UTC; None: undated), as ``items``.
    times: list[datetime | None] = field(default_factory=list)
    # When they have more such events than ``items`` holds: the distinct items of their
    # newest FRESH_SCAN_LIMIT (at most FRESH_SEEN_LIMIT, newest first), which a feed leaves
    # out as seen; else empty.
    seen: list[str] = field(default_factory=list)


def user_since(engine: Engine, user_id: str, since: datetime) -> UserSince:
    """The user's events stored after ``since`` and their latest erasure, in one read (two
    when they have more than FRESH_LIMIT such events)."""
    parameters = {"user_id": user_id, "user_key": user_key(user_id), "since": since}
    rows = _read(engine, lambda c: c.execute(_FRESH_ITEMS, parameters).all())
    erased_at = next((row[3] for row in rows if row[0] == 0), None)
    if not any(row[0] == 1 for row in rows):
        return UserSince(None, erased_at)
    events = [row for row in rows if row[0] == 2]
    seen = []
    if len(events) > FRESH_LIMIT:
        events = events[:FRESH_LIMIT]
        seen = _read(engine, lambda c: c.execute(_FRESH_SEEN, parameters).scalars().all())
    return UserSince([row[1] for row in events], erased_at, [row[4] for row in events], seen)


def fresh_items(engine: Engine, user_id: str, since: datetime) -> list[str] | None:
    """``user_since``'s items alone."""
    return user_since(engine, user_id, since).items


def ping(engine: Engine) -> None:
    """Raise (the driver's error) unless the catalog database answers a query on its items:
    ``SELECT 1`` also answered from a SQLite file truncated or damaged under the service."""
    _read(engine, lambda c: c.execute(select(Item.id).limit(1)).all())
