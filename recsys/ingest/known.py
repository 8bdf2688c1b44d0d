"""The catalog keys of external ids, read once per ingest so that a batch's ids cost no query.

An interaction ingest resolves every event's user and item to their catalog keys. Asking the
database for each batch's distinct ids costs a lookup per id in the table's unique index:
at 10⁶ items about 75 ms of the server's CPU per batch of 50,000 events, on the core that
its ``COPY`` needs (benchmarks/RESULTS.md, session 27). ``KnownKeys`` reads a table's
(external id, key) pairs once, when the ingest's first batch is looked up, and resolves the
batches in memory; ids it does not hold are looked up in the database as before, and those
found there are kept too. A table of more than ``KNOWN_KEYS_LIMIT`` rows is not read: its
batches are looked up per batch.

Keys only ever go stale by a delete. Users are never deleted. Items are: the cache remembers
the items generation it is valid at (``mark``), and when the catalog's has moved on,
``refresh`` forgets every item the change log names since then (they are looked up again),
or reads the table again when the log was pruned past the mark. The write still checks the
generation in its own transaction (``interactions.ReadAhead``), so an item deleted after
the read is never written to.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, func, select

from recsys.catalog.changes import changes_since
from recsys.catalog.models import Item, User
from recsys.ingest.bulk import lookup_ids

log = logging.getLogger(__name__)

# Rows of a table an ingest keeps in memory, at most (about 100 bytes each); past it, the
# batches of a larger table are looked up in the database one query per batch.
KNOWN_KEYS_LIMIT = 2_000_000
# Ids found in the database after the table was read are kept beside it, and merged into it
# once there are this many (or half the table's rows, if more).
MERGE_AT = 50_000


class KnownKeys:
    """External id -> catalog key of one table (``Item`` or ``User``), for one ingest."""

    def __init__(self, model: type[Item] | type[User], limit: int = KNOWN_KEYS_LIMIT):
        self.model, self.limit = model, limit
        self.loaded = False
        self.ids: pd.Index | None = None  # None: too large to keep, look up per batch
        self.keys = np.zeros(0, dtype=np.int64)  # (N,) the key of each of ``ids``
        self.found: dict[str, int] = {}  # found in the database since the table was read
        self.mark: int | None = None  # items: the items generation the keys hold at

    def find(self, connection: Connection, names: pa.Array, generation: int | None = None):
        """(B,) catalog keys of ``names``, -1 where the catalog has none; ``generation``
        (items): the items generation ``connection`` sees, read before this call."""
        if not self.loaded or (generation is not None and generation != self.mark):
            self._refresh(connection, generation)
        if self.ids is None:
            return lookup_ids(connection, self.model, names)
        values = names.to_numpy(zero_copy_only=False)
        keys = np.full(len(values), -1, dtype=np.int64)
        position = self.ids.get_indexer(values)
        held = position >= 0
        keys[held] = self.keys[position[held]]  # -1 where an item was forgotten
        missing = np.flatnonzero(keys < 0)
        if len(missing) and self.found:
            keys[missing] = [self.found.get(name, -1) for name in values[missing]]
            missing = missing[keys[missing] < 0]
        if len(missing):
            looked = lookup_ids(connection, self.model, names.take(pa.array(missing)))
            keys[missing] = looked
            self._keep(values[missing][looked >= 0], looked[looked >= 0])
        return keys

    def _keep(self, names: np.ndarray, keys: np.ndarray) -> None:
        self.found.update(zip(names.tolist(), keys.tolist(), strict=True))
        if len(self.found) < max(MERGE_AT, len(self.keys) // 2):
            return
        found = pd.Index(list(self.found), dtype=object)
        keys = np.fromiter(self.found.values(), dtype=np.int64, count=len(found))
        position = self.ids.get_indexer(found)  # >= 0: a forgotten item, found again
        again = position >= 0
        self.keys[position[again]] = keys[again]
        self.ids = self.ids.append(found[~again])
        self.keys = np.concatenate([self.keys, keys[~again]])
        self.found = {}

    def _refresh(self, connection: Connection, generation: int | None) -> None:
        """Read the table (the first time, or when the change log cannot say what changed),
        or forget the items written or deleted since ``mark``."""
        if self.loaded and self.ids is not None and self.mark is not None:
            changes = changes_since(connection.engine, self.mark)
            if changes.complete:
                self._forget([*changes.removed, *changes.written])
                self.mark = changes.generation
                return
        self._read(connection, generation)

    def _read(self, connection: Connection, generation: int | None) -> None:
        self.loaded, self.found = True, {}
        self.mark = generation
        rows = connection.scalar(select(func.count()).select_from(self.model)) or 0
        if rows > self.limit:
            log.info("%s: %d rows, looked up per batch", self.model.__tablename__, rows)
            self.ids, self.keys = None, np.zeros(0, dtype=np.int64)
            return
        pairs = connection.execute(select(self.model.external_id, self.model.id)).all()
        self.ids = pd.Index([name for name, _ in pairs], dtype=object)
        self.keys = np.array([key for _, key in pairs], dtype=np.int64)
        log.debug("%s: %d keys read", self.model.__tablename__, len(self.keys))

    def _forget(self, names: list[str]) -> None:
        for name in names:
            self.found.pop(name, None)
        if names and self.ids is not None:
            position = self.ids.get_indexer(pd.Index(names, dtype=object))
            self.keys[position[position >= 0]] = -1  # looked up again when next met
