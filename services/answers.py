"""Answers of the read endpoints, kept by everything they were computed from.

A similar-items answer depends on its request (path and query string) and on what the worker
serves: the bundle, the catalog generation its live delta is current to, and the generation
of the item cards shown in it. A feed depends on these and on the user's events stored since
the bundle, which every feed request reads anyway (``recsys.serving.fresh_history``). Under a
key made of all of them an answer is byte for byte the one the worker would compute again, so
a repeated request (a popular product page, a shopper reloading the home page) costs a
lookup instead of a search, its reasons and its cards. A new bundle, an item write or a new
event gives new keys; the answers under the old ones age out of the LRU, which holds at most
``max_bytes`` of serialized answers per worker.

A similar-items answer, and the feed of a user without fresh events, is also kept across the
follow steps that cannot have changed it (``Carried``: its generation, the items it lists,
its lowest score and what else the check needs, checked by ``Recommender.similar_unchanged``
and ``Recommender.feed_unchanged``): under a shop's item writes every step moves the
generations, and without this no answer would be given twice.

Answers are kept only while the worker's catalog follower keeps the item cards current
(``CardCache.followed_generation``): a worker that reads the generation on each request has
no generation to key on without reading it, so it computes every answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import NamedTuple


class Carried(NamedTuple):
    """An answer kept across follow steps: its body, the catalog generation it is current
    to, the items it shows a card or a title of (those it lists first), its lowest score
    (-inf: it lists fewer than asked) and, for a feed, the bundle rows it was ranked among
    (``Results.considered``)."""

    body: bytes
    generation: int
    listed: tuple[str, ...]
    floor: float
    considered: bytes = b""


def _size(value: bytes | tuple) -> int:
    """About the bytes an answer holds (a listed id and its tuple slot cost about 60)."""
    if isinstance(value, bytes):
        return len(value)
    return len(value[0]) + sum(60 + len(item) for item in value[2]) + len(value[4])


class AnswerCache:
    """Serialized answers (bytes, or ``Carried``) by key, least recently used dropped past
    ``max_bytes`` (0: none kept). Keys and values are tuples of strings, numbers and bytes:
    the garbage collector does not walk them. Safe to share between a worker's threads."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._answers: OrderedDict[Hashable, bytes | tuple] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def size(self) -> int:
        """Bytes of answers held."""
        return self._bytes

    def get(self, key: Hashable | None) -> bytes | Carried | None:
        """The answer kept under ``key``; None when there is none (or ``key`` is None)."""
        if key is None or not self.max_bytes:
            return None
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
        return answer if answer is None or isinstance(answer, bytes) else Carried(*answer)

    def put(self, key: Hashable | None, answer: bytes | Carried) -> None:
        """Keep ``answer`` under ``key`` (nothing when ``key`` is None, or the answer alone is
        over a quarter of the budget)."""
        answer = answer if isinstance(answer, bytes) else tuple(answer)  # not walked by the gc
        size = _size(answer)
        if key is None or not self.max_bytes or size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._answers.pop(key, None)
            self._bytes += size - (_size(old) if old is not None else 0)
            self._answers[key] = answer
            while self._bytes > self.max_bytes:
                _, dropped = self._answers.popitem(last=False)
                self._bytes -= _size(dropped)
