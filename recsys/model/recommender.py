"""The serving API: external ids in, external ids and scores out, batch-first.

``recsys.model.bundle.load_recommender(bundle_dir)`` (or ``load_active(engine)``) then
``recommend(user_ids, k=10, exclude_seen=True, candidates=None, filters=None, diversity=λ)``
and ``similar_items(item_ids, k=10, filters=None, diversity=λ)``.

Diversity: ``diversity`` λ in [0, 1] re-ranks a candidate pool from the index by MMR over the
items' content vectors (``recsys.model.diversity``; 0: the plain ranking). Every result
carries ``because``: its score split exactly into reasons (``recsys.model.explain``).

Token term: a feed whose bundle gives the items' sparse tokens weight (``recsys.model.fusion``)
ranks the index's pool together with the items its token profile picks, by the whole score,
exactly; picking them reads at most ``token_budget`` item tokens (``token_candidates``).

Popularity fallback: a user the bundle has never seen (no interactions at training time) gets
the most popular items (by number of distinct users at training time) that pass the filters,
with ``fallback`` set for that query. Use ``recommend_for_history`` to rank for a new user's
first items without retraining.

Filters: ``{"in_stock": True, "<attribute>": value or [values]}`` on categorical and multi
attributes; an item passes an attribute filter when it has any of the values. Numeric and date
attributes take inclusive ranges (``{"price": {"min": 100, "max": 500}}``, ``"100..500"``, a
number alone: exactly it; ``recsys.model.ranges``), read from one float64 array per attribute.

Live catalog: with ``live`` set (a ``recsys.model.delta.Delta``, kept current by a
``LiveCatalog``), answers leave out items removed from the catalog or out of stock (unless
``in_stock=False`` asks for them), neighbour-table rows included, and rank in the items
listed or changed since the bundle was trained.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InvalidBundle, InvalidInput, UnknownFilter, UnknownItem
from recsys.ingest.values import BadValue, composed, parse_id
from recsys.model import explain, sparse_rows
from recsys.model.data import IdIndex, mapped, sorted_places
from recsys.model.delta import LIVE_REASON, UPDATED_REASON
from recsys.model.diversity import DEFAULT_DIVERSITY, check_diversity, diversify, pool_size
from recsys.model.fusion import CONTENT_BLOCKS, TOKEN_BUDGET, FusedModel
from recsys.model.index import IndexConfig, Projection, VectorIndex
from recsys.model.ranges import (
    RANGE_KINDS,
    NumberColumn,
    Range,
    column_numbers,
    looks_like_range,
    parse_range,
    passes_any,
)
from recsys.model.ranking import along, first_kept, reserved_places, top_k_finite
from recsys.model.tabular import label_pairs

log = logging.getLogger(__name__)

FILTER_KINDS = ("categorical", "multi")
PARTS = ("values", "offsets", "rows")  # of a saved Postings
# A feed with the token term takes this many times its pool from the index and from the tokens
# before ranking their union exactly (Recommender._reach), and at least TOKEN_REACH_MIN: a k = 1
# feed ranked 2 and 2 items, and its one item was not the first of the same user's k = 100
# feed for 44 of 300 shoppers.
TOKEN_REACH = 2
TOKEN_REACH_MIN = 20
# A grouped answer (``group_by``: one item per value of an attribute, such as a product's
# sizes and colours listed as items of one style) ranks GROUP_REACH times k items first, and
# GROUP_REACH times more, up to GROUP_ROUNDS rankings, while that leaves a list short of k
# groups and more items could be ranked.
GROUP_REACH = 4
GROUP_ROUNDS = 3
# A fold-in's reason for the part of a score that items added since the bundle gave.
NEW_ITEMS_VIEWED = "new items you viewed"
# What a feed's ``new_items`` places hold. An item is new when the bundle's data has no event
# on it: one listed since the bundle, or one nobody had taken when it was trained. Their
# scores are small beside those of items with events (the weights stage sizes them for recall,
# and on the temporal split a place given to a new item costs more hits than it brings:
# scripts/new_item_slots.py, benchmarks/RESULTS.md session 62), so without kept places a
# feed rarely shows one before the next training.
NEW_ITEMS_RULE = (
    "a personal feed with fewer than new_items new items (no events in the model's data: "
    "listed since it was trained, or never taken) gives its lowest places to the user's best "
    "new items; a fallback (popularity) feed gives them to the new items whose content "
    "predicts the most popularity"
)
# How far below a kept answer's last score a live item written since must score for the
# answer to stand (``similar_unchanged``, ``feed_unchanged``): the live ranking computes the
# same sums in another order (a matrix product, not a matrix-vector one), so the last bits
# may differ.
FLOOR_MARGIN = 1e-5


@dataclass
class Results:
    """Per query: external ids (best first) and scores; ``fallback`` marks popularity answers;
    ``because``: per query and item, the reasons its score splits into (empty: not asked)."""

    ids: list[list[str]]
    scores: list[np.ndarray]
    fallback: list[bool] = field(default_factory=list)
    because: list[list[list[explain.Reason]]] = field(default_factory=list)
    # feeds of stored users: the bundle rows each was ranked among (``Recommender.feed_unchanged``)
    considered: list[bytes | None] = field(default_factory=list)

    def alike(self) -> Results:
        """Item-to-item answers without the items that score 0 or less: nothing in common
        with the query item (an item with no content and no events scored 0 with every
        other, and its "similar items" were the catalog's first rows, with no reason)."""
        keep = [np.asarray(scores) > 0 for scores in self.scores]
        ids = [
            [i for i, k in zip(ids, kept, strict=True) if k]
            for ids, kept in zip(self.ids, keep, strict=True)
        ]
        because = (
            [
                [r for r, k in zip(reasons, kept, strict=True) if k]
                for reasons, kept in zip(self.because, keep, strict=True)
            ]
            if self.because
            else self.because
        )
        scores = [np.asarray(scores)[kept] for scores, kept in zip(self.scores, keep, strict=True)]
        return replace(self, ids=ids, scores=scores, because=because)

    def kept(self, places: list[list[int]]) -> Results:
        """These results with only each list's items at ``places`` (in that order); no list
        is carried across catalog changes (``considered`` None)."""
        ids = [[listed[j] for j in at] for listed, at in zip(self.ids, places, strict=True)]
        scores = [
            np.asarray(s, dtype=np.float32)[np.asarray(at, dtype=np.int64)]
            for s, at in zip(self.scores, places, strict=True)
        ]
        because = (
            [[reasons[j] for j in at] for reasons, at in zip(self.because, places, strict=True)]
            if self.because
            else self.because
        )
        considered = [None] * len(ids) if self.considered else self.considered
        return replace(self, ids=ids, scores=scores, because=because, considered=considered)

    def to_json(self) -> list[dict[str, Any]]:
        fallback = self.fallback or [False] * len(self.ids)
        because = self.because or [[[] for _ in ids] for ids in self.ids]
        return [
            {
                "ids": ids,
                "scores": [round(float(s), 6) for s in scores],
                "fallback": fb,
                "because": [[r.to_json() for r in item] for item in reasons],
            }
            for ids, scores, fb, reasons in zip(
                self.ids, self.scores, fallback, because, strict=True
            )
        ]


@dataclass(frozen=True)
class Postings:
    """One attribute's inverted lists as arrays: the rows of ``values[j]`` are
    ``rows[offsets[j]:offsets[j + 1]]``; ``values`` sorted, so a lookup is a binary search
    (no per-value Python objects, and the arrays can be mapped from a bundle's files)."""

    values: np.ndarray  # (V,) str, sorted
    offsets: np.ndarray  # (V + 1,) int64
    rows: np.ndarray  # (P,) int64

    @classmethod
    def build(cls, rows: np.ndarray, labels: np.ndarray) -> Postings:
        codes, values = pd.factorize(np.asarray(labels, dtype=str), sort=True)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(values))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(np.asarray(values, dtype=str), offsets, rows[order].astype(np.int64))

    def rows_of(self, value: str) -> np.ndarray:
        places, found = sorted_places(self.values, [value])
        if not found[0]:
            return self.rows[:0]
        j = int(places[0])
        return self.rows[self.offsets[j] : self.offsets[j + 1]]


def check_k(k: Any) -> int:
    """``k`` as a whole number >= 1, or ``InvalidInput`` (as the HTTP API and CLI refuse it:
    0 stopped in FAISS, a negative one sliced a list short)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise InvalidInput(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def check_new_items(new_items: Any, k: int) -> int:
    """``new_items`` as a whole number from 0 to ``k``, or ``InvalidInput`` naming it."""
    whole = isinstance(new_items, numbers.Integral) and not isinstance(new_items, bool)
    if not whole or not 0 <= new_items <= k:
        raise InvalidInput(
            f"new_items must be a whole number from 0 to k ({k}): how many of the feed's "
            f"places to keep for new items; got {new_items!r}"
        )
    return int(new_items)


def as_ids(values: Any, name: str) -> list[str]:
    """Ids as the catalog holds them, by the one id rule (``parse_id``: 12, 12.0 and "12"
    are "12"; None, NaN, empty and control characters are ``InvalidInput`` naming ``name``);
    one id alone counts as a list of one."""
    if isinstance(values, str | bytes | numbers.Number) or values is None:
        values = [values]
    ids = values if isinstance(values, list) else np.asarray(values, dtype=object).ravel()
    try:
        return [parse_id("" if value is None else value, name) for value in ids]
    except BadValue as exc:  # None is no id (ingest reads an empty cell as missing)
        raise InvalidInput(str(exc)) from None


_FILTERS_SHAPE = (
    "filters are a mapping of attribute -> value or list of values (in_stock: True/False; "
    'a numeric or date attribute also takes ranges: "100..500" or {"min": 100, "max": 500})'
)


def check_filters(filters: Any) -> dict[str, Any] | None:
    """``filters`` as the HTTP API takes them, or ``InvalidInput`` naming the attribute: a
    string "false" for in_stock, or None as a value, used to filter as something else."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidInput(f"{_FILTERS_SHAPE}, got {type(filters).__name__}")
    checked = {}
    for name, wanted in filters.items():
        if name == "in_stock":
            if not isinstance(wanted, bool | np.bool_):
                raise InvalidInput(f"filters['in_stock'] must be True or False, got {wanted!r}")
            checked[name] = wanted
            continue
        several = isinstance(wanted, list | tuple | set | np.ndarray)
        values = [_filter_value(name, value) for value in (wanted if several else [wanted])]
        checked[name] = values if several else values[0]
    return checked


def _filter_value(name: str, value: Any) -> Any:
    """One value of attribute filter ``name``: a string (composed), a finite number, a
    ``{"min": ..., "max": ...}`` range (a dict) or a ``Range``; else ``InvalidInput``."""
    if isinstance(value, Range):
        return value
    if isinstance(value, Mapping):
        return dict(value)  # its bounds are read by the attribute's kind (ItemFilters.resolve)
    bad = value is None or isinstance(value, bool | np.bool_)
    bad |= not isinstance(value, str | numbers.Real)
    if bad or (isinstance(value, numbers.Real) and not math.isfinite(value)):
        raise InvalidInput(
            f"filters[{name!r}] takes strings, finite numbers or {{min, max}} ranges, got {value!r}"
        )
    if isinstance(value, str) and not value.strip():
        raise InvalidInput(f"filters[{name!r}]: a value is required, got {value!r}")
    # stored values are composed (NFC, at every door): "Bäumler" typed with a combining
    # umlaut matched no item
    return composed(value) if isinstance(value, str) else value


class ItemFilters:
    """Boolean masks over item rows: stock, attribute values (inverted lists) and numeric
    and date attributes (``numbers``: name -> ``NumberColumn``, one float64 per row; None
    for a bundle saved before range filters)."""

    def __init__(
        self,
        in_stock: np.ndarray,
        postings: dict[str, Postings],
        numbers: dict[str, NumberColumn] | None = None,
    ):
        self.in_stock = np.asarray(in_stock, dtype=bool)
        self.postings = postings
        self.numbers = numbers
        self._labels: dict[str, sp.csr_matrix] = {}
        self._codes: dict[str, np.ndarray | None] = {}

    @classmethod
    def from_items(cls, items: pd.DataFrame, kinds: dict[str, str]) -> ItemFilters:
        postings = {
            name: Postings.build(*label_pairs(kind, items[name]))
            for name, kind in kinds.items()
            if kind in FILTER_KINDS and name in items.columns
        }
        numbers = {
            name: NumberColumn(kind, column_numbers(kind, items[name]))
            for name, kind in kinds.items()
            if kind in RANGE_KINDS and name in items.columns
        }
        return cls(items["in_stock"].to_numpy(dtype=bool), postings, numbers)

    def resolve(self, filters: dict[str, Any] | None) -> dict[str, Any] | None:
        """``check_filters``' answer with each numeric or date attribute's values read as a
        list of ``Range`` (any of them), or ``InvalidInput`` naming the attribute and the
        forms it takes for a value its kind does not take (a range on a categorical
        attribute, "abc" on price). An attribute the bundle does not filter on is left for
        ``mask``'s ``UnknownFilter``."""
        if not filters:
            return filters
        resolved = {}
        for name, wanted in filters.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            if name == "in_stock":
                resolved[name] = wanted
            elif name in (self.numbers or {}):
                kind = self.numbers[name].kind
                resolved[name] = [parse_range(name, kind, value) for value in values]
            else:  # an attribute the bundle does not filter on: ``mask`` names it
                if name in self.postings:
                    self._check_values(name, values)
                resolved[name] = wanted
        return resolved

    def _check_values(self, name: str, values: list) -> None:
        """``InvalidInput`` for a range asked of categorical attribute ``name`` (text such as
        "1..5" that is none of its values counts as one)."""
        for value in values:
            if looks_like_range(value) and not (
                isinstance(value, str) and len(self.postings[name].rows_of(value))
            ):
                raise InvalidInput(
                    f"filters[{name!r}] is not a numeric or date attribute: it takes values "
                    f"(one, or a list for any of them), not a range such as {value!r}"
                )

    def _unknown(self, name: str) -> UnknownFilter:
        filterable = ", ".join(["in_stock", *sorted([*self.postings, *(self.numbers or {})])])
        why = f"cannot filter on {name!r}; filterable: {filterable}"
        if self.numbers is None:  # a bundle saved before range filters
            why += "; this model was trained before range filters: retrain to filter numeric "
            why += "and date attributes"
        return UnknownFilter(why)

    def mask(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        """(N,) bool: the rows passing ``filters`` (as ``resolve`` gives them), or None."""
        if not filters:
            return None
        mask = np.ones(len(self.in_stock), dtype=bool)
        for name, wanted in filters.items():
            if name == "in_stock":
                mask &= self.in_stock if wanted else ~self.in_stock
                continue
            if name in (self.numbers or {}):
                ranges = wanted if isinstance(wanted, list) else [wanted]
                mask &= passes_any(ranges, self.numbers[name].values)
                continue
            if name not in self.postings:
                raise self._unknown(name)
            allowed = np.zeros(len(mask), dtype=bool)
            for value in np.atleast_1d(wanted).tolist():
                allowed[self.postings[name].rows_of(str(value))] = True
            mask &= allowed
        return mask

    def labels(self, name: str) -> sp.csr_matrix:
        """(items, values) 0/1: which of attribute ``name``'s values each item has (built
        from the inverted lists on first use)."""
        found = self._labels.get(name)
        if found is None:
            postings = self.postings[name]
            codes = np.repeat(np.arange(len(postings.values)), np.diff(postings.offsets))
            ones = np.ones(len(postings.rows), dtype=np.float32)
            shape = (len(self.in_stock), len(postings.values))
            found = sp.csr_matrix((ones, (np.asarray(postings.rows), codes)), shape=shape)
            self._labels[name] = found
        return found

    def group_codes(self, group_by: Any) -> np.ndarray | None:
        """(items,) each item's value number of attribute ``group_by`` (-1: none), the
        attribute naming the product items are variants of; None for None or "" (no
        grouping). ``UnknownFilter`` naming the attributes it may be, for one the bundle
        does not filter on or whose items may hold several values."""
        if group_by is None or group_by == "":
            return None
        if not isinstance(group_by, str):
            raise InvalidInput(f"group_by takes an attribute name, got {group_by!r}")
        if group_by in self.postings and (codes := self._group(group_by)) is not None:
            return codes
        single = sorted(n for n in self.postings if self._group(n) is not None)
        why = (
            "items hold several of its values"
            if group_by in self.postings
            else "no categorical attribute of that name"
        )
        raise UnknownFilter(
            f"cannot group by {group_by!r} ({why}); attributes with one value per item: "
            f"{', '.join(single) or 'none'}"
        )

    def _group(self, name: str) -> np.ndarray | None:
        return self._single_codes(name, self.labels(name))

    def shared(self, query_rows: np.ndarray, found: np.ndarray) -> list[list[list[str]]]:
        """Per query and found item (rows (Q, k), -1 padded), the attributes of which the
        two items have a value in common (array lookups on the CSR parts, no sparse algebra:
        this runs on every similar-items request)."""
        out: list[list[list[str]]] = [[[] for _ in row] for row in found]
        query_rows = np.asarray(query_rows)
        for name in self.postings:
            labels = self.labels(name)
            codes = self._single_codes(name, labels)
            if codes is not None:  # one value per item at most: compare codes
                mine = codes[query_rows][:, None]  # (Q, 1)
                share = (codes[np.maximum(found, 0)] == mine) & (mine >= 0) & (found >= 0)
            else:
                share = np.stack(
                    [
                        _share_any(labels, found[q], _row_indices(labels, query))
                        for q, query in enumerate(query_rows.tolist())
                    ]
                )
            queries, places = np.nonzero(share)
            named = self.named(name)
            for q, j in zip(queries.tolist(), places.tolist(), strict=True):
                out[q][j].append(named)
        return out

    def values_of(self, row: int) -> dict[str, set[str]]:
        """The filterable attributes' values of bundle row ``row`` (names without one left
        out): what ``shared_with`` compares, for a query that is not a bundle row."""
        out = {}
        for name, postings in self.postings.items():
            codes = _row_indices(self.labels(name), row)
            if len(codes):
                out[name] = set(postings.values[codes].tolist())
        return out

    def shared_with(self, values: dict[str, set[str]], found: np.ndarray) -> list[list[str]]:
        """Per found bundle row (k,) (-1: none), the attributes of which it has one of
        ``values`` (name -> values, as ``values_of`` or a live item's attributes give)."""
        out: list[list[str]] = [[] for _ in found]
        for name, wanted in values.items():
            postings = self.postings.get(name)
            if postings is None or not wanted:
                continue
            places, known = sorted_places(postings.values, sorted(wanted))
            labels = self.labels(name)
            share = _share_any(labels, np.asarray(found), places[known])
            named = self.named(name, several=len(wanted) > 1)
            for j in np.flatnonzero(share).tolist():
                out[j].append(named)
        return out

    def named(self, name: str, several: bool = False) -> str:
        """Attribute ``name`` as a pair's reason names it: ``explain.InCommon`` ("genres in
        common") where a bundle item holds several of its values, or where one item of the
        pair does (``several``: a live item's), else as it is ("same brand"). Every path that
        lists shared attributes names them by this one rule."""
        if several or self._single_codes(name, self.labels(name)) is None:
            return explain.InCommon(name)
        return name

    def _single_codes(self, name: str, labels: sp.csr_matrix) -> np.ndarray | None:
        """(items,) each item's one value of attribute ``name`` (-1: none), or None when an
        item has several (a multi-valued attribute: genres); kept after the first call."""
        if name not in self._codes:
            counts = np.diff(labels.indptr)
            codes = None
            if counts.max(initial=0) <= 1:
                codes = np.full(len(counts), -1, dtype=np.int64)
                codes[counts == 1] = labels.indices[labels.indptr[:-1][counts == 1]]
            self._codes[name] = codes
        return self._codes[name]

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``in_stock.npy``, ``filters.json`` (attribute names) and three arrays per
        attribute, ``filter_<n>_{values,offsets,rows}.npy``; ``ranges.json`` ([name, kind]
        of each numeric and date attribute) and its values, ``range_<n>.npy``."""
        np.save(directory / "in_stock.npy", self.in_stock, allow_pickle=False)
        for n, postings in enumerate(self.postings.values()):
            for part in ("values", "offsets", "rows"):
                array = getattr(postings, part)
                np.save(directory / f"filter_{n}_{part}.npy", array, allow_pickle=False)
        (directory / "filters.json").write_text(json.dumps(list(self.postings)))
        if self.numbers is None:  # as loaded from a bundle saved before range filters
            return
        for n, column in enumerate(self.numbers.values()):
            np.save(directory / f"range_{n}.npy", column.values, allow_pickle=False)
        kinds = [[name, column.kind] for name, column in self.numbers.items()]
        (directory / "ranges.json").write_text(json.dumps(kinds))

    @classmethod
    def load(cls, directory: Path) -> ItemFilters:
        """Mapped read-only: processes serving one bundle share the pages. A bundle without
        ``ranges.json`` (saved before range filters) filters on no numeric attribute."""
        names = json.loads((directory / "filters.json").read_text())
        postings = {
            name: Postings(*(mapped(directory / f"filter_{n}_{part}.npy") for part in PARTS))
            for n, name in enumerate(names)
        }
        numbers = None
        if (directory / "ranges.json").exists():
            kinds = json.loads((directory / "ranges.json").read_text())
            numbers = {
                name: NumberColumn(kind, mapped(directory / f"range_{n}.npy"))
                for n, (name, kind) in enumerate(kinds)
            }
        return cls(np.load(directory / "in_stock.npy", allow_pickle=False), postings, numbers)


def _item_index(item_ids: np.ndarray, cf) -> IdIndex:
    """The collaborative model's item lookup where it indexes the same ids (as in every
    bundle ``recsys train`` writes): one lookup per process, not two."""
    if cf is not None and np.array_equal(cf.item_ids_, item_ids):
        return cf.item_index_
    return IdIndex(item_ids)


class Recommender:
    """Fused vectors + FAISS index + id mappings + filters; see the module docstring.

    ``neighbours``: each item's unfiltered similar items, (rows (N, W) int32, scores (N, W)
    float32), from ``compute_neighbours`` or a bundle; None: every call searches the index.
    ``image_encoder_dir``: where the bundle's image encoder is (loaded on first use).
    ``token_budget``: the most item tokens one feed reads to find its token candidates
    (``token_candidates``).
    """

    def __init__(
        self,
        fused: FusedModel,
        cf,
        item_ids,
        filters: ItemFilters,
        index: VectorIndex,
        manifest: dict[str, Any],
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
        image_encoder_dir: Path | None = None,
        token_budget: int = TOKEN_BUDGET,
        item_index: IdIndex | None = None,
    ):
        self.fused, self.cf, self.filters, self.index = fused, cf, filters, index
        self.token_budget = token_budget
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.item_index = _item_index(self.item_ids, cf) if item_index is None else item_index
        self.user_index = cf.user_index_ if cf is not None else IdIndex(np.zeros(0, dtype=str))
        self.manifest = manifest
        popularity = fused.item_blocks_.get("popularity")
        warm = ~fused.cold_
        self.popularity = (
            np.where(warm, popularity[:, 0], -1.0)
            if popularity is not None
            else np.zeros(len(warm))
        )
        self.neighbours = neighbours
        self.image_encoder_dir = image_encoder_dir
        self._popular_order: np.ndarray | None = None
        self._image_encoder = None
        self._image_index: VectorIndex | None = None
        # The catalog's changes since this bundle (recsys.model.delta); None: the bundle alone.
        self.live = None
        self._live_popularity = None  # (the delta, its items' popularity) for fallback feeds
        self._live_bundle = None  # (the delta, (M,) its items' bundle rows, -1: added since)
        self._live_rows = None  # (the delta, the sorted bundle rows of its items)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unsaved"))

    @property
    def has_images(self) -> bool:
        return "image" in self.fused.item_blocks_

    # -- queries -------------------------------------------------------------------------
    def recommend(
        self,
        user_ids,
        k: int = 10,
        exclude_seen: bool = True,
        candidates=None,
        filters=None,
        diversity: float = DEFAULT_DIVERSITY,
        seen_elsewhere=None,
        new_items: int = 0,
        only_new: bool = False,
        group_by: str | None = None,
    ) -> Results:
        """Top-k items per user; unknown users get the popularity fallback (flagged).
        ``seen_elsewhere``: per user, ids the bundle does not hold that they have seen (events
        on items added since), left out of the live items ranked in when ``exclude_seen``.
        ``new_items``: places of each personal feed kept for new items (``NEW_ITEMS_RULE``);
        ``only_new``: rank new items alone. ``group_by``: an attribute naming the product
        each item is a variant of: one item per value (the best), and with ``exclude_seen``
        none of the values of the user's seen items (``check_group_by``)."""
        diversity, k, filters = check_diversity(diversity), check_k(k), self.check_filters(filters)
        new_items = check_new_items(new_items, k)
        args = (user_ids, k, exclude_seen, candidates, filters, diversity, seen_elsewhere)
        if group := self.check_group_by(group_by):

            def ask(width: int, only_new: bool = only_new) -> Results:
                return self.recommend(*args[:1], width, *args[2:], only_new=only_new)

            rows = self.user_index.rows(as_ids(user_ids, "user_id"))
            seen = [
                [
                    *(self.item_ids[_row_indices(self.cf.user_items_, row)] if row >= 0 else ()),
                    *elsewhere,
                ]
                for row, elsewhere in zip(
                    rows.tolist(), _per_query(seen_elsewhere, rows), strict=True
                )
            ]
            if not exclude_seen:
                seen = [[] for _ in seen]
            return self._grouped_feed(ask, k, group, seen, new_items)
        allowed = self._allowed(candidates, filters, only_new)
        rows = self.user_index.rows(as_ids(user_ids, "user_id"))
        width = pool_size(k, diversity, len(self.item_ids))
        found = np.full((len(rows), width), -1, dtype=np.int64)
        scores = np.full((len(rows), width), -np.inf, dtype=np.float32)
        considered: list[bytes | None] = [None] * len(rows)
        for q, row in enumerate(rows.tolist()):
            if row < 0:
                found[q], scores[q] = self._popular(width, allowed)
                continue
            found[q], scores[q], considered[q] = self._stored_feed(
                row, width, allowed, exclude_seen
            )
        found, scores = diversify(found, scores, self.fused.item_blocks_, k, diversity)
        results = self._results(found, scores)
        results.fallback = (rows < 0).tolist()
        results.considered = considered
        results.because = [
            self._feed_because(found[q], scores[q], row, None) for q, row in enumerate(rows)
        ]
        live = self.live
        if live is not None and live.size and self.fused.has_user_vectors:
            queries = self.fused.user_vectors(np.maximum(rows, 0))
            skip = [
                None
                if row < 0
                else [*self._live_seen(live, _row_indices(self.cf.user_items_, row)), *elsewhere]
                if exclude_seen
                else ()
                for row, elsewhere in zip(
                    rows.tolist(), _per_query(seen_elsewhere, rows), strict=True
                )
            ]
            profiles = (
                self.fused.user_tokens_[np.maximum(rows, 0)] if self.fused.has_tokens else None
            )
            results = self._with_live(
                results, queries, k, candidates, filters, skip, profiles=profiles, only_new=only_new
            )
        elsewhere = _per_query(seen_elsewhere, rows) if exclude_seen else None
        results = self._live_fallback(results, k, candidates, filters, elsewhere, only_new)
        if not new_items:
            return results
        offered = self.recommend(*args[:1], new_items, *args[2:], only_new=True)
        return self._reserved(results, offered, k, new_items)

    def recommend_for_history(
        self,
        histories,
        k: int = 10,
        exclude_seen: bool = True,
        candidates=None,
        filters=None,
        diversity: float = DEFAULT_DIVERSITY,
        weights=None,
        seen_elsewhere=None,
        new_items: int = 0,
        only_new: bool = False,
        also_seen=None,
        group_by: str | None = None,
    ) -> Results:
        """Top-k for users given only their item histories (lists of item ids), no retraining.

        The user vector is folded in from the history (ALS ``recalculate_user`` or a ridge
        solve) plus a content profile of those items, as ``recommend`` would have it after
        retraining. An empty history gets the popularity fallback. ``weights``: per history,
        one weight per item for the collaborative fold-in (``history_with``); the content
        profiles count each item once either way. ``seen_elsewhere``: as ``recommend``'s; those
        the live catalog holds (items added since the bundle) are folded in too, from their
        live blocks (collaborative stand-ins predicted from content, content, tokens), each
        counted once: a shopper whose first events were on new items kept the popularity
        fallback until the next training. ``new_items`` and ``only_new``: as ``recommend``'s.
        ``also_seen``: per history, more item ids the feed leaves out as seen (with
        ``exclude_seen``) without folding them in (a shopper's events past those folded in).
        ``group_by``: as ``recommend``'s, the seen items those of the history, ``also_seen``
        and ``seen_elsewhere``.
        """
        diversity, k, filters = check_diversity(diversity), check_k(k), self.check_filters(filters)
        new_items = check_new_items(new_items, k)
        args = (histories, k, exclude_seen, candidates, filters, diversity, weights, seen_elsewhere)
        if group := self.check_group_by(group_by):

            def ask(width: int, only_new: bool = only_new) -> Results:
                return self.recommend_for_history(
                    *args[:1], width, *args[2:], only_new=only_new, also_seen=also_seen
                )

            seen = [
                [*history, *elsewhere, *also]
                for history, elsewhere, also in zip(
                    histories,
                    _per_query(seen_elsewhere, histories),
                    _per_query(also_seen, histories),
                    strict=True,
                )
            ]
            if not exclude_seen:
                seen = [[] for _ in seen]
            return self._grouped_feed(ask, k, group, seen, new_items)
        places = self._history_places(histories)
        matrix = self._history_matrix(histories, places)
        elsewhere = _per_query(seen_elsewhere, histories)
        also = _per_query(also_seen, histories)
        # one delta for the whole call: the follower replaces it once a second, and a history
        # matrix of one delta's M live items met the blocks of the next one's M + 1 (a feed
        # answered 400 "matmul: dimension mismatch" while items were written)
        live = self.live
        outside = self._live_history(elsewhere, live)  # (U, M) the live items of each history
        empty = (matrix.getnnz(axis=1) == 0) & (outside.getnnz(axis=1) == 0)
        cf_vectors = weighted = None
        if self.cf is not None:
            weighted = None if weights is None else self._history_matrix(histories, places, weights)
            folded = matrix if weighted is None else weighted
            stand_ins = self._live_stand_ins(outside, live)
            cf_vectors = np.stack(
                [
                    self.cf.fold_in(self.item_ids[r], w, self.fused.cf_stand_ins, extra)
                    for (r, w), extra in zip(_entries(folded), stand_ins, strict=True)
                ]
            ).astype(np.float32)
        live_content = (  # none to sum for most feeds: no live item in their history
            {b: outside @ v for b, v in _live_blocks(live, CONTENT_BLOCKS).items()}
            if outside.nnz
            else None
        )
        queries = self.fused.history_queries(cf_vectors, matrix, live_content)
        exclude = list(_rows(matrix)) if exclude_seen else None
        unheld = [()] * len(also)  # per query: the ``also`` items the bundle does not hold
        if exclude is not None and any(also):
            exclude, unheld = self._also_seen(exclude, also)
        allowed = self._allowed(candidates, filters, only_new)
        width = pool_size(k, diversity, len(self.item_ids))
        pools = self.index.search(queries, self._reach(width), allowed, exclude)
        found, scores = pools[0][:, :width].copy(), pools[1][:, :width].copy()
        live_tokens = live.tokens if live is not None and outside.nnz else None
        profiles = self.fused.history_token_profiles(
            matrix, None if live_tokens is None else outside @ live_tokens
        )
        if profiles is not None and self.fused.token_weight:
            for u in range(len(found)):
                pool = (pools[0][u : u + 1], pools[1][u : u + 1])
                seen = exclude[u] if exclude is not None else None
                found[u], scores[u], _ = self._with_tokens(
                    sparse_rows.row(profiles, u), queries[u], pool, allowed, seen, width
                )
        for user in np.flatnonzero(empty):
            found[user], scores[user] = self._popular(width, allowed)
        found, scores = diversify(found, scores, self.fused.item_blocks_, k, diversity)
        results = self._results(found, scores)
        results.fallback = empty.tolist()
        results.because = [
            self._feed_because(
                found[u], scores[u], -1 if empty[u] else None, (matrix, weighted, u, queries[u])
            )
            for u in range(len(found))
        ]
        for u in np.flatnonzero(outside.getnnz(axis=1) & ~empty):  # their part, by name
            listed = scores[u][found[u] >= 0]
            results.because[u] = explain.settled(results.because[u], listed, NEW_ITEMS_VIEWED)
        if live is not None:
            skip = [
                None
                if none
                else [*self._live_seen(live, exclude[u]), *elsewhere[u], *unheld[u]]
                if exclude_seen
                else ()
                for u, none in enumerate(empty.tolist())
            ]
            results = self._with_live(
                results, queries, k, candidates, filters, skip, profiles=profiles, only_new=only_new
            )
        seen = [[*e, *u] for e, u in zip(elsewhere, unheld, strict=True)] if exclude_seen else None
        results = self._live_fallback(results, k, candidates, filters, seen, only_new)
        if not new_items:
            return results
        offered = self.recommend_for_history(
            *args[:1], new_items, *args[2:], only_new=True, also_seen=also_seen
        )
        return self._reserved(results, offered, k, new_items)

    def check_group_by(self, group_by: Any) -> str | None:
        """``group_by`` as an answer groups by it: None or "" for none, else the name of an
        attribute the bundle filters on with at most one value per item; ``UnknownFilter``
        naming the ones it may be otherwise (``ItemFilters.group_codes``)."""
        return None if self.filters.group_codes(group_by) is None else group_by

    def _group_codes(self, name: str) -> np.ndarray:
        return self.filters.group_codes(name)

    def _groups_of(self, ids: Sequence[str], name: str) -> list[str | None]:
        """Each item's value of attribute ``name`` (None: none): a live item's as the catalog
        has it now, a bundle item's as the bundle does."""
        codes, live_at = self._group_parts(ids, name)
        values = np.asarray(self.filters.postings[name].values)
        out = [str(values[c]) if c >= 0 else None for c in codes.tolist()]
        for j, value in live_at.items():
            out[j] = value
        return out

    def _taken(self, items: Sequence[Sequence[str]], name: str) -> list[set[str]]:
        """Per query, the values of attribute ``name`` its ``items`` have: set-wise over the
        bundle's codes (a shopper's history may hold thousands of items)."""
        values = np.asarray(self.filters.postings[name].values)
        taken = []
        for listed in items:
            codes, live_at = self._group_parts(listed, name)
            bundle = np.unique(codes[codes >= 0])
            found = {str(v) for v in values[bundle].tolist()}
            taken.append(found | {v for v in live_at.values() if v is not None})
        return taken

    def _group_parts(self, ids: Sequence[str], name: str) -> tuple[np.ndarray, dict]:
        """((n,) each item's bundle value code of attribute ``name``, -1 for none or for a
        live item; {place: value or None} of the live items, as the catalog has them now)."""
        ids = np.asarray(list(ids), dtype=str)
        rows = self.item_index.rows(ids.tolist()) if len(ids) else np.zeros(0, dtype=np.int64)
        codes = np.where(rows >= 0, self._group_codes(name)[np.maximum(rows, 0)], -1)
        live_at = {}
        live = self.live
        if live is not None and live.size and len(ids):
            for j in np.flatnonzero(np.isin(ids, live.ids)).tolist():
                value = live.attributes[live.positions[ids[j]]].get(name)
                live_at[j] = None if value is None else str(value)
            codes[list(live_at)] = -1
        return codes, live_at

    def _grouped(self, ask, k: int, name: str, taken: list[set[str]] | None) -> Results:
        """``ask(width)``'s lists with one item per value of attribute ``name`` (each list's
        best of it), past each list's ``taken`` values (None: none), cut to ``k``; asked
        again GROUP_REACH times wider, up to GROUP_ROUNDS times, while a list is short of k
        groups and more items could be listed (a product's sizes took 7 of 10 places)."""
        live = self.live
        most = len(self.item_ids) + (live.size if live is not None else 0)
        width = max(k, min(k * GROUP_REACH, most))
        for _ in range(GROUP_ROUNDS):
            results = ask(width)
            groups = [self._groups_of(ids, name) for ids in results.ids]
            places = one_per_group(groups, k, taken or [set() for _ in groups])
            short = any(
                len(at) < k and len(ids) >= width
                for at, ids in zip(places, results.ids, strict=True)
            )
            if not short or width >= most:
                break
            width = min(width * GROUP_REACH, most)
        return results.kept(places)

    def _grouped_feed(self, ask, k: int, name: str, seen: list, new_items: int) -> Results:
        """A grouped feed (``_grouped``) of ``ask``'s lists past the groups of each query's
        ``seen`` items, with ``new_items`` places kept for new items of groups it does not
        list (``_reserved``)."""
        taken = self._taken(seen, name)
        results = self._grouped(ask, k, name, taken)
        if not new_items:
            return results
        listed = [
            t | (set(self._groups_of(ids, name)) - {None})
            for t, ids in zip(taken, results.ids, strict=True)
        ]
        offered = self._grouped(lambda width: ask(width, only_new=True), new_items, name, listed)
        return self._reserved(results, offered, k, new_items)

    def _also_seen(self, exclude: list, also: list) -> tuple[list, list]:
        """(``exclude`` with the bundle rows of each query's ``also`` items added, the ``also``
        items the bundle does not hold): the seen items of ``recommend_for_history``'s
        ``also_seen``."""
        more, unheld = [], []
        for rows, items in zip(exclude, also, strict=True):
            found = self.item_index.rows(list(items)) if items else np.zeros(0, np.int64)
            more.append(np.union1d(rows, found[found >= 0]).astype(np.asarray(rows).dtype))
            unheld.append([item for item, row in zip(items, found, strict=True) if row < 0])
        return more, unheld

    def _reserved(self, results: Results, offered: Results, k: int, n: int) -> Results:
        """``results`` with ``n`` places of each feed kept for new items (``NEW_ITEMS_RULE``;
        a visitor's popularity feed too): ``offered`` holds each feed's best new items
        (``only_new``; a visitor's by their predicted popularity, ``popular_order``).
        A feed with a kept place is not carried across catalog changes (``considered``
        None): the items that may take it are not among the rows it was ranked among."""
        ids, scores, because = [], [], []
        for q, listed in enumerate(results.ids):
            asked = results.because[q] if results.because else [[] for _ in listed]
            shown = set(listed)
            extra = [j for j, i in enumerate(offered.ids[q]) if i not in shown]
            pool = [*listed, *(offered.ids[q][j] for j in extra)]
            told = offered.because[q] if offered.because else [[] for _ in offered.ids[q]]
            reasons = [*asked, *(told[j] for j in extra)]
            points = np.concatenate([results.scores[q], np.asarray(offered.scores[q])[extra]])
            is_listed = np.zeros((1, k), dtype=bool)
            is_listed[0, : len(listed)] = True
            new = np.zeros((1, k), dtype=bool)
            new[0, : len(listed)] = self._new_items(listed)
            places = reserved_places(is_listed, new, np.ones((1, len(extra)), dtype=bool), n)[0]
            places = places[places >= 0]
            # places into [listed padded to k | extra]
            at = np.where(places < k, places, places - k + len(listed))
            ids.append([pool[j] for j in at.tolist()])
            scores.append(points[at].astype(np.float32))
            because.append([reasons[j] for j in at.tolist()])
        considered = [
            c if fallback else None
            for c, fallback in zip(
                results.considered or [None] * len(ids), results.fallback, strict=True
            )
        ]
        return replace(
            results,
            ids=ids,
            scores=scores,
            because=because if results.because else results.because,
            considered=considered if results.considered else results.considered,
        )

    def _new_items(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) bool: new items (``NEW_ITEMS_RULE``), of ids a feed lists."""
        rows = self.item_index.rows(list(ids)) if len(ids) else np.zeros(0, dtype=np.int64)
        return np.where(rows >= 0, self.fused.cold_[np.maximum(rows, 0)], True)

    @staticmethod
    def _live_history(lists, live) -> sp.csr_matrix:
        """(U, M) 1 where history ``u`` holds live item ``m`` of the delta ``live`` (an item
        added or changed since the bundle), from per-history lists of ids the bundle does
        not hold."""
        size = live.size if live is not None else 0
        rows, cols = [], []
        for u, items in enumerate(lists):
            found = {live.positions[i] for i in items if i in live.positions} if size else ()
            rows += [u] * len(found)
            cols += sorted(found)
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(lists), size))

    def _live_stand_ins(self, outside: sp.csr_matrix, live) -> list[np.ndarray | None]:
        """Per history, the collaborative stand-in factors of its live items (``outside``,
        of the delta ``live``), in the cf model's units (as ``FusedModel.cf_stand_ins``
        gives the bundle's new items')."""
        block = _live_blocks(live, ("cf",)).get("cf")
        if block is None or not outside.nnz:
            return [None] * outside.shape[0]
        scale = self.fused.cf_scales_[0]
        return [np.asarray(block[cols], dtype=np.float64) * scale for cols, _ in _entries(outside)]

    def _stored_feed(self, row: int, width: int, allowed, exclude_seen: bool):
        """(rows (width,), scores (width,), the rows it ranked among) of a stored user's feed
        from the bundle: the index's pool with the token candidates (``_with_tokens``)."""
        seen = _row_indices(self.cf.user_items_, row) if exclude_seen else None
        query = self.fused.user_vectors(row)
        pool = self.index.search(query, self._reach(width), allowed, [seen])
        tokens = sparse_rows.row(self.fused.user_tokens_, row) if self.fused.has_tokens else None
        return self._with_tokens(tokens, query, pool, allowed, seen, width)

    def feed_unchanged(
        self,
        live,
        since: int,
        user_id: str,
        listed: Sequence[str],
        floor: float,
        considered: bytes,
        k: int = 10,
        exclude_seen: bool = True,
        filters=None,
        diversity: float = DEFAULT_DIVERSITY,
    ) -> bool:
        """Whether ``recommend([user_id], k, exclude_seen, None, filters, diversity)``, which
        listed ``listed`` (lowest score ``floor``; -inf when fewer than k) among the bundle
        rows ``considered`` (``Results.considered``) with the live delta at generation
        ``since``, gives that answer with ``live`` too.

        The bundle rows a feed ranks among (the index's pool and the token candidates, both
        of the rows that pass now) are found again, which is a fraction of the feed's cost;
        when they are the same, the bundle's part of the answer is. It then holds when no
        item it lists was written or removed since, and no live item written since scores
        ``floor`` or more for the user. An unknown user's feed, or one filtered by
        attribute or for out-of-stock items, is not told: False.
        """
        if (
            not considered
            or live.written_at is None
            or since > live.generation  # a catalog moved back (restored): nothing is known
            or not self._stock_filter_only(filters)
        ):
            return False
        row = int(self.user_index.rows([user_id])[0])
        if row < 0 or not self._listed_unwritten(live, since, listed):
            return False
        new = np.flatnonzero(live.live_written_at > since)
        if new.size:
            scores = live.vectors[new] @ self.fused.user_vectors(row)
            if self.fused.has_tokens and live.tokens is not None:
                profile = self.fused.user_tokens_[[row]]  # (1, F)
                terms = (live.tokens[new] @ profile.T).toarray()[:, 0]
                scores = scores + terms * live.token_scale[new]
            if scores.max() >= floor - FLOOR_MARGIN:
                return False
        # last, as the dearest: the candidates found again
        width = pool_size(k, diversity, len(self.item_ids))
        allowed = self._allowed(None, filters)
        return self._stored_feed(row, width, allowed, exclude_seen)[2] == considered

    def _listed_unwritten(self, live, since: int, listed: Sequence[str]) -> bool:
        """No item of ``listed`` (bundle or live) was written or removed after ``since``; a
        listed id neither in the bundle nor live now was (a live item removed since)."""
        rows = self.item_index.rows(listed) if len(listed) else np.zeros(0, dtype=np.int64)
        for item, row in zip(listed, rows.tolist(), strict=True):
            at = live.positions.get(item) if row < 0 else None
            if row < 0 and (at is None or live.live_written_at[at] > since):
                return False
        bundle = rows[rows >= 0]
        return not bundle.size or live.written_at[bundle].max() <= since

    def _reach(self, width: int) -> int:
        """How many items each part of a feed (the index, the token term) brings for a pool
        of ``width``: more than the pool when the token term counts, so that items second
        best on both parts still reach the exact ranking of their union."""
        if not self.fused.token_weight:
            return width
        return max(width * TOKEN_REACH, min(TOKEN_REACH_MIN, len(self.item_ids)))

    def _with_tokens(self, profile, query, pool, allowed, seen, width: int):
        """One feed's (rows, scores) of ``width`` with the token term added, and the rows it
        ranked among (as bytes): the index's pool and the items the user's token profile
        ranks highest (allowed, not ``seen``; ``token_candidates``), ranked together by the
        whole score, exactly; ``profile``: the user's token profile (a ``sparse_rows.Row``).
        The term's weight 0 (or no tokens) leaves the pool as the index gave it."""
        found, scores = pool[0][0], pool[1][0]
        if profile is None or not self.fused.token_weight:
            found, scores = found[:width], scores[:width]
            return found, scores, found.astype(np.int64).tobytes() + scores.tobytes()
        rows, terms = token_candidates(self.fused, profile, self.token_budget)
        keep = np.ones(len(rows), dtype=bool) if allowed is None else allowed[rows]
        if seen is not None and len(seen):
            seen = np.asarray(seen)
            at = np.minimum(np.searchsorted(rows, seen), max(len(rows) - 1, 0))
            keep[at[rows[at] == seen] if len(rows) else at[:0]] = False
        # equal terms in row order: the same candidates whatever else left the list
        best = top_k_finite(terms[keep][None, :], len(found))[0]
        extra = rows[keep][best[best >= 0]]
        union = np.union1d(found[found >= 0], extra)
        if not union.size:  # no item passes the filters or the candidates: an empty feed
            return np.full(width, -1, np.int64), np.full(width, -np.inf, np.float32), b""
        total = np.asarray(self.fused.item_vectors_[union] @ query, dtype=np.float32)
        total += self.fused.row_token_scores(profile, union)
        best = top_k_finite(total[None, :], width)[0]
        rows = np.where(best >= 0, union[np.maximum(best, 0)], -1)
        scores = np.where(best >= 0, total[np.maximum(best, 0)], -np.inf).astype(np.float32)
        return rows, scores, union.astype(np.int64).tobytes()

    def _feed_because(self, found, scores, user_row, folded) -> list[list[explain.Reason]]:
        """Reasons of one feed: ``user_row`` < 0 (fallback): popularity; else the stored
        user's history (``folded`` None) or, of a fold-in, (history matrix, the fold-in's
        weighted one or None, its row, query)."""
        valid = found >= 0
        if user_row is not None and user_row < 0:
            return explain.fallback(self.fused.cold_[found[valid]], scores[valid])
        if folded is None:
            # the recency weights the factors were solved from (None without recency)
            history = explain.history_of(self.cf.user_items_, user_row, self.cf.user_recent_)
            query = self.fused.user_vectors(user_row)
        else:
            matrix, weighted, user, query = folded
            fold_in = None if weighted is None else weighted.data
            history = explain.history_of(matrix, user, fold_in)
        parts = explain.history_parts(self.fused, self.cf, history, query, found)
        reasons = explain.feed_reasons(self.item_ids, history, parts)
        return [r for r, ok in zip(reasons, valid, strict=True) if ok]

    def history_with(
        self, user_id: str, fresh: Sequence[str], times: Sequence | None = None
    ) -> tuple[list[str], list | None]:
        """A user's training items, then the ``fresh`` items of events stored since (newest
        first), once each, as ``recommend_for_history`` takes them; and, when the users'
        factors were solved with recency (``CollaborativeModel.recency_``), each item's
        fold-in weight, as training would weigh it had the fresh events been in its data:
        a training entry's recency-weighted confidence, halved once more per half-life of
        fresh events newer than its latest, and the i-th newest of those 0.5 ** (i /
        half-life) (summed when an item is both). ``times`` (the fresh events' times, None:
        undated) orders them by time, and those dated at or before the user's latest
        training event (or undated) come after every training entry, as a retrain would
        place them: three events dated 2005 that arrived late had outweighed a history of
        1,703 events until the next training. Without ``times``, the order of ``fresh``
        (arrival). None: every item counts once, as without recency."""
        seen = self.seen_items(user_id)
        history = list(dict.fromkeys([*seen, *fresh]))
        cf = self.cf
        if cf is None or cf.recency_ is None:
            return history, None
        weight = dict.fromkeys(history, 0.0)
        row = self.user_index.get(str(user_id), -1)
        newer, late = self._newer_and_late(row, fresh, times)
        if row >= 0:
            part = slice(cf.user_items_.indptr[row], cf.user_items_.indptr[row + 1])
            stored = cf.user_recent_[part] * 0.5 ** (len(newer) / cf.recency_)
            for item, value in zip(seen, stored.tolist(), strict=True):
                weight[item] += value
        for place, item in enumerate(newer):
            weight[item] += 0.5 ** (place / cf.recency_)
        for place, item in enumerate(late, start=len(newer) + len(seen)):
            weight[item] += 0.5 ** (place / cf.recency_)
        return history, [weight[item] for item in history]

    def _newer_and_late(self, row: int, fresh: Sequence[str], times: Sequence | None):
        """(fresh items dated after the user's latest training event, newest first; the
        others, undated last), or (``fresh`` as given, []) without times to go by."""
        latest = self.cf.user_latest_
        if times is None or latest is None:
            return list(fresh), []
        since = latest[row] if row >= 0 else np.datetime64("NaT")
        stamps = np.array([np.datetime64("NaT") if t is None else t for t in times], "M8[us]")
        dated = ~np.isnat(stamps)
        newer = dated & (np.isnat(since) | (stamps > since))
        # newest first; the stable sort keeps arrival order among equal times (undated: last)
        order = np.argsort(
            -np.where(dated, stamps.astype(np.int64), np.iinfo(np.int64).min + 1), kind="stable"
        )
        items = np.asarray(fresh, dtype=object)[order]
        return items[newer[order]].tolist(), items[~newer[order]].tolist()

    def seen_items(self, user_id: str) -> list[str]:
        """Item ids the user interacted with in the training data ([] for unknown users)."""
        row = self.user_index.get(str(user_id), -1)
        if row < 0 or self.cf is None:
            return []
        return self.item_ids[_row_indices(self.cf.user_items_, row)].tolist()

    def search_images(self, images, k: int = 10, filters=None, group_by: str | None = None):
        """Catalog items that look most like each query image (file paths or uint8 arrays).

        Ranks by cosine similarity of the image encoder's vectors alone; ``InvalidBundle`` when
        the bundle was trained without images. ``images``: paths, one path, a (N, H, W[, 3])
        uint8 array, or a list of same-shape arrays. ``group_by``: one item per value of that
        attribute (``check_group_by``).
        """
        k, filters = check_k(k), self.check_filters(filters)
        if group := self.check_group_by(group_by):
            return self._grouped(
                lambda width: self.search_images(images, width, filters), k, group, None
            )
        if isinstance(images, str | Path):
            images = [images]
        elif (
            isinstance(images, list | tuple)
            and images
            and all(isinstance(image, np.ndarray) for image in images)
        ):
            if len({image.shape for image in images}) > 1:
                raise InvalidInput("images given as arrays must have one shape; give paths")
            images = np.stack(images)
        encoder = self.image_encoder
        queries = np.asarray(encoder.transform(images), dtype=np.float32)
        if self._image_index is None:
            self._image_index = VectorIndex.build(
                self.fused.item_blocks_["image"], IndexConfig(kind="flat")
            )
        results = self._search(queries, k, self._allowed(None, filters), None, self._image_index)
        results.because = [explain.single(explain.PHOTO_REASON, s) for s in results.scores]
        live = self.live
        if live is not None:
            results = live.merge_images(results, queries, k, live.mask(filters))
        return results

    @property
    def image_encoder(self):
        """The bundle's image encoder (loaded on first use)."""
        if self._image_encoder is None:
            path = self.image_encoder_dir
            if not self.has_images or path is None or not path.is_dir():
                raise InvalidBundle(
                    f"model bundle {self.version} has no image encoder: the catalog had no "
                    "images when it was trained"
                )
            from recsys.vision import ImageEncoder

            self._image_encoder = ImageEncoder.load(path, device="cpu")
        return self._image_encoder

    def similar_items(
        self,
        item_ids,
        k: int = 10,
        filters=None,
        mode: str = "similar",
        diversity: float = DEFAULT_DIVERSITY,
        group_by: str | None = None,
    ) -> Results:
        """Top-k items like each given item (itself excluded); ``UnknownItem`` if unknown.

        ``mode``: ``similar`` ("more like this", content-led: the product page's default) or
        ``also`` ("shoppers who viewed this also viewed"), each with the block weights chosen
        for it at training time. For a pool (k, or 3k with diversity) up to the bundle's
        precomputed width, a ``similar`` answer comes from the neighbour table wherever the
        table holds that many items that pass the filters (the same rows and scores a search
        of the table's graph gives); otherwise from the serving index. ``group_by``: an
        attribute naming the product each item is a variant of: one item per value (the
        best), none of the query item's own (``check_group_by``).
        """
        diversity, k, filters = check_diversity(diversity), check_k(k), self.check_filters(filters)
        self.fused.check_surface(mode)
        item_ids = as_ids(item_ids, "item_id")
        if group := self.check_group_by(group_by):

            def ask(width: int) -> Results:
                return self.similar_items(item_ids, width, filters, mode, diversity)

            return self._grouped(ask, k, group, self._taken([[i] for i in item_ids], group))
        live = self.live
        if live is not None and any(live.knows(i) for i in item_ids):
            return self._similar_to_live(
                np.asarray(item_ids, dtype=str), k, filters, mode, diversity
            )
        gone = [i for i in item_ids if live is not None and i in live.gone]
        if gone:
            raise UnknownItem(f"item {gone[0]!r} was removed from the catalog")
        rows = self._item_rows(item_ids)
        if live is not None and live.removed[rows].any():
            gone = str(self.item_ids[rows[live.removed[rows]][0]])
            raise UnknownItem(f"item {gone!r} was removed from the catalog")
        found, scores = self._similar_pool(
            rows, pool_size(k, diversity, len(self.item_ids) - 1), filters, mode
        )
        found, scores = diversify(*_in_common(found, scores), self.fused.item_blocks_, k, diversity)
        results = self._results(found, scores)
        shares = explain.block_shares(self.fused, rows, found, mode, scores)
        shared = self.filters.shared(rows, found)
        results.because = explain.listed_reasons(shares, shared, found)
        if live is not None and live.size:
            asked = self.item_ids[rows].tolist()
            queries = self.fused.item_queries(rows, mode)
            skip = [[item] for item in asked]
            results = self._with_live(results, queries, k, None, filters, skip, mode, asked)
        return results.alike()

    def similar_unchanged(
        self,
        live,
        since: int,
        item_id: str,
        listed: Sequence[str],
        floor: float,
        k: int = 10,
        filters=None,
        mode: str = "similar",
        diversity: float = DEFAULT_DIVERSITY,
    ) -> bool:
        """Whether ``similar_items([item_id], k, filters, mode, diversity)``, which listed
        ``listed`` (lowest score ``floor``; -inf when it listed fewer than k) with the live
        delta at generation ``since``, gives that answer with ``live`` too.

        It does when the item's answer came from the neighbour table and no item written or
        removed since is the item, one it listed, one in its table row, or a live item that
        would score ``floor`` or more against it: then its table row, the rows that pass and
        the live items it could list are those it had. Other answers (searched, filtered by
        attribute or for out-of-stock items, ``also``, a live query) are not told: False.
        """
        table = self.neighbours
        if (
            live.written_at is None
            or since > live.generation  # a catalog moved back (restored): nothing is known
            or table is None
            or mode != "similar"
            or not self._stock_filter_only(filters)
            or live.knows(item_id)
        ):
            return False
        width = pool_size(k, diversity, len(self.item_ids) - 1)
        rows = self.item_index.rows([item_id])
        if width > table[0].shape[1] or rows[0] < 0:
            return False
        if not self._listed_unwritten(live, since, [item_id, *listed]):
            return False
        neighbours = table[0][rows[0]]
        neighbours = neighbours[neighbours >= 0]
        if live.written_at[neighbours].max(initial=0) > since:
            return False
        if np.count_nonzero(live.shown[neighbours]) < width:
            return False  # short of rows that pass: the answer was searched
        new = np.flatnonzero(live.live_written_at > since)
        if not new.size:
            return True
        query = self.fused.item_queries(rows[:1], mode)
        return bool((live.surface[new] @ query[0]).max() < floor - FLOOR_MARGIN)

    @staticmethod
    def _stock_filter_only(filters) -> bool:
        """``filters`` ask for nothing but items in stock (the default)."""
        return all(name == "in_stock" and bool(value) for name, value in (filters or {}).items())

    def _similar_to_live(
        self, item_ids: np.ndarray, k: int, filters, mode: str, diversity: float
    ) -> Results:
        """Similar items of queries some of which are live items (new or changed since the
        bundle): their queries come from the delta, the bundle's index and the delta answer,
        diversified and explained as the bundle's items' answers are."""
        live = self.live
        queries = np.zeros((len(item_ids), self.fused.layout_.dim), dtype=np.float32)
        is_live = np.array([live.knows(i) for i in item_ids.tolist()], dtype=bool)
        queries[is_live] = live.item_queries(item_ids[is_live].tolist(), mode, self.fused)
        if (~is_live).any():
            queries[~is_live] = self.fused.item_queries(self.item_rows(item_ids[~is_live]), mode)
        own = self.item_index.rows(item_ids)
        width = pool_size(k, diversity, len(self.item_ids) - 1)
        allowed = self._allowed(None, filters)
        found, scores = self.index.search(queries, width, allowed, own[:, None])
        if mode == "similar":  # cold items met as the bundle's own queries meet them
            found, scores = self._with_cold_content(queries, found, scores, allowed, own)
        found, scores = diversify(*_in_common(found, scores), self.fused.item_blocks_, k, diversity)
        results = self._results(found, scores)
        items = self._listed_vectors(found, mode)  # (Q, k, D)
        cold = self._no_interactions(item_ids)[:, None] | self.fused.cold_[np.maximum(found, 0)]
        shares = explain.query_shares(self.fused, queries, items, mode, cold)
        values = self._query_values(item_ids.tolist())
        shared = [self.filters.shared_with(v, row) for v, row in zip(values, found, strict=True)]
        results.because = explain.listed_reasons(shares, shared, found)
        skip = [[item] for item in item_ids.tolist()]
        asked = item_ids.tolist()
        return self._with_live(results, queries, k, None, filters, skip, mode, asked).alike()

    def _listed_vectors(self, found: np.ndarray, mode: str) -> np.ndarray:
        """(Q, k, D) the vectors of bundle rows ``found`` (Q, k) as the surface's queries
        meet them: ``similar`` meets cold items' content unscaled (``surface_item_vectors``),
        ``also`` as the index holds them (a cold item's content times the feed's cold
        multiplier, 100 on the demo shop, made a live item's reasons 100 times its score)."""
        rows = np.maximum(found, 0).ravel()
        if mode != "similar" or not self.fused.content_cold_scaled:
            vectors = np.asarray(self.fused.item_vectors_[rows])
        else:
            vectors = self.fused.surface_rows(rows)
        return vectors.reshape(*found.shape, -1)

    def _no_interactions(self, item_ids) -> np.ndarray:
        """(n,) bool: the items the bundle saw no interactions of (new since, or cold in it),
        whose cf part is predicted from content; a live item written since keeps its bundle
        row's (``recsys.model.delta``)."""
        return self.fused.without_interactions(self.item_index.rows(list(item_ids)))

    def _query_values(self, item_ids: list[str]) -> list[dict[str, set[str]]]:
        """Each query item's filterable attributes' values: a live item's as the catalog has
        it now, a bundle item's as the bundle has it."""
        live, names = self.live, list(self.filters.postings)
        return [
            live.values_of(live.positions[item], names)
            if live is not None and live.knows(item)
            else self.filters.values_of(int(self.item_index.rows([item])[0]))
            for item in item_ids
        ]

    def _live_seen(self, live, rows: np.ndarray) -> list[str]:
        """The ids of bundle ``rows`` (a user's history) that the live catalog lists anew
        (written since the bundle): a feed that leaves out seen items leaves them out of its
        live part too (an edited item came back into the feed of a shopper who bought it)."""
        cached = self._live_rows
        if cached is None or cached[0] is not live:
            written = self._bundle_rows_of(live)
            cached = self._live_rows = (live, np.sort(written[written >= 0]))
        written = cached[1]
        rows = np.asarray(rows)
        if not len(rows) or not len(written):
            return []
        places = np.minimum(np.searchsorted(written, rows), len(written) - 1)
        return self.item_ids[rows[written[places] == rows]].tolist()

    def _with_live(
        self,
        results: Results,
        queries,
        k,
        candidates,
        filters,
        skip,
        mode=None,
        asked=None,
        profiles=None,
        only_new: bool = False,
    ):
        """``results`` with the live items that pass ``filters`` and ``candidates`` ranked in
        (``skip``: per query, ids to leave out, or None: add none; ``mode``: the item-to-item
        surface, None for feeds; ``asked``: its query items; ``profiles``: feeds' user token
        profiles, for the token term). Item-to-item answers explain a live item by its score's
        parts, as a bundle item's; feeds say whether it is new or was changed since."""
        live = self.live
        allowed = self._live_allowed(live, filters, candidates, only_new)
        surface = mode == "similar"  # met as the neighbour table meets bundle items
        if mode is None:
            because = self._live_feed_reasons(live)
        else:
            because = self._live_item_reasons(live, queries, mode, asked)
        return live.merge(results, queries, k, allowed, skip, profiles, surface, because)

    def _live_fallback(
        self, results: Results, k: int, candidates, filters, seen=None, only_new: bool = False
    ) -> Results:
        """The popularity fallback's answers (``results.fallback``) with the live items that
        pass ``filters`` and ``candidates`` ranked in by popularity, as the bundle's items
        are: a changed item by its events (a write keeps them), a new one at 0, after every
        item with events. ``seen``: per query, live ids to leave out."""
        live = self.live
        if live is None or not live.size or not any(results.fallback):
            return results
        if self._live_popularity is None or self._live_popularity[0] is not live:
            rows = self._bundle_rows_of(live)
            known = np.maximum(self.popularity[np.maximum(rows, 0)], 0)
            self._live_popularity = (live, np.where(rows >= 0, known, 0.0).astype(np.float32))
        popularity = self._live_popularity[1]
        scores = np.broadcast_to(popularity, (len(results.ids), live.size))
        seen = seen or [()] * len(results.fallback)
        skip = [s if fallback else None for fallback, s in zip(results.fallback, seen, strict=True)]

        def because(_q: int, rows: np.ndarray, found: np.ndarray) -> list[list[explain.Reason]]:
            return explain.fallback(popularity[rows] <= 0, found)

        allowed = self._live_allowed(live, filters, candidates, only_new)
        return live.merge_scored(results, scores, k, allowed, skip, because)

    def _live_item_reasons(self, live, queries: np.ndarray, mode: str, asked: list[str]):
        """``Delta.merge``'s reasons of live items added to item-to-item answers: their
        scores split by block, the attributes they share with the query item named."""
        vectors = live.surface if mode == "similar" else live.vectors
        values: dict[int, dict[str, set[str]]] = {}

        def because(q: int, rows: np.ndarray, scores: np.ndarray) -> list[list[explain.Reason]]:
            if q not in values:
                values[q] = self._query_values([asked[q]])[0]
            items = np.asarray(vectors[rows])[None]  # (1, n, D)
            cold = self._no_interactions([asked[q]])[:, None] | self._no_interactions(
                live.ids[rows]
            )
            shares = explain.query_shares(self.fused, queries[q : q + 1], items, mode, cold)
            shared = [[live.shared(j, values[q], self.filters.named) for j in rows.tolist()]]
            return explain.similar_reasons(shares, shared, 0)

        return because

    def _live_feed_reasons(self, live):
        """``Delta.merge``'s reasons of live items added to feeds: the whole score, "new in
        the catalog" for an item the bundle does not hold, "updated in the catalog" for one
        changed since."""

        def because(_q: int, rows: np.ndarray, scores: np.ndarray) -> list[list[explain.Reason]]:
            known = self._bundle_rows_of(live)[rows] >= 0
            return [
                [explain.Reason(UPDATED_REASON if old else LIVE_REASON, float(score))]
                for old, score in zip(known.tolist(), scores.tolist(), strict=True)
            ]

        return because

    def _similar_pool(self, rows: np.ndarray, width: int, filters, mode: str):
        """(rows (Q, width), scores (Q, width)) most like each query row, itself excluded.

        ``similar`` queries are answered from the neighbour table where it holds ``width``
        rows that pass the filters (and the live catalog): the first ``width`` of them are
        exactly the top ``width`` of a filtered search over the table's graph. The other
        queries search the index.
        """
        table = self.neighbours
        allowed = self._allowed(None, filters)
        if mode != "similar" or table is None or width > table[0].shape[1]:
            queries = self.fused.item_queries(rows, mode)
            found, scores = self.index.search(queries, width, allowed, rows[:, None])
            if mode == "similar":
                found, scores = self._with_cold_content(queries, found, scores, allowed, rows)
            return found, scores
        found, scores = table[0][rows], table[1][rows]  # (Q, W)
        keep = found >= 0
        if allowed is not None:
            keep &= allowed[np.maximum(found, 0)]
        short = np.flatnonzero(keep.sum(axis=1) < width)  # count_nonzero(axis) costs 2x as much
        found, scores = first_kept(found, scores, keep, width)
        if len(short):
            queries = self.fused.item_queries(rows[short], mode)
            searched = self.index.search(queries, width, allowed, rows[short, None])
            found[short], scores[short] = self._with_cold_content(
                queries, *searched, allowed, rows[short]
            )
        return found, scores

    def _with_cold_content(self, queries, found, scores, allowed, rows):
        """``similar`` answers of the serving index (``found``, ``scores``: (Q, W)) with the
        cold items it holds as feeds see them, scaled down (``FusedModel.content_cold_scaled``),
        scored instead as the neighbour table meets them (``surface_item_vectors``): exactly,
        where the allowed cold items are few enough (the index's exact-search share of the
        catalog); beyond that they stay as the index holds them."""
        fused = self.fused
        if not fused.content_cold_scaled:
            return found, scores
        cold = np.asarray(fused.cold_, dtype=bool)
        candidates = np.flatnonzero(cold if allowed is None else cold & allowed)
        width = found.shape[1]
        if not len(candidates) or len(candidates) > max(
            width, self.index.config.exact_filter_share * len(cold)
        ):
            return found, scores
        vectors = fused.surface_rows(candidates)  # cold, all of them
        extra = np.asarray(queries @ vectors.T, dtype=np.float32)  # (Q, C)
        extra[candidates[None, :] == np.asarray(rows)[:, None]] = -np.inf  # the item itself
        held = (found >= 0) & cold[np.maximum(found, 0)]  # cold, as the index scaled them
        every = np.hstack([found, np.broadcast_to(candidates, extra.shape)])
        every_scores = np.hstack([np.where(held, -np.inf, scores), extra])
        best = top_k_finite(every_scores, width)  # (Q, W) columns, -1 where none is left
        valid = best >= 0
        at = np.maximum(best, 0)
        found = np.where(valid, along(every, at), -1)
        scores = np.where(valid, along(every_scores, at), -np.inf)
        return found.astype(np.int64), scores.astype(np.float32)

    def compute_neighbours(self, width: int, batch: int = 4096) -> None:
        """Fill ``neighbours``: every item's unfiltered top-``width`` similar items (mode
        ``similar``, the scores of ``similar_items``' search), found in ``neighbour_index``
        (-1 where fewer exist); 0 fills none."""
        n = len(self.item_ids)
        width = min(width, max(n - 1, 1))
        if width <= 0:
            self.neighbours = None
            return
        index, projection = self.neighbour_index()
        rows = np.full((n, width), -1, dtype=np.int32)
        scores = np.full((n, width), -np.inf, dtype=np.float32)
        for start in range(0, n, batch):
            own = np.arange(start, min(start + batch, n))
            queries = neighbour_queries(self.fused, own, projection)
            rows[own], scores[own] = index.search(queries, width, None, own[:, None])
        self.neighbours = (rows, scores)

    def neighbour_index(self) -> tuple[VectorIndex, Projection | None]:
        """The index the neighbour table is searched in, and how its queries are projected.

        The serving index, unless it is an HNSW graph and the similar surface reads only
        some blocks or weighs them: a graph laid out by every block serves queries that read
        a few of them badly (10^6 items whose cf factors outweigh the tabular block the
        surface reads: recall@10 0.70 against exact search at any efSearch). Then an HNSW
        graph of the surface's own ``FusedModel.surface_projection`` is built for the table
        alone (same inner products, so the same scores up to rounding) and dropped after.
        Where the serving index holds cold items with scaled content blocks
        (``FusedModel.content_cold_scaled``), the table's index (of the serving kind) holds
        ``FusedModel.surface_item_vectors`` instead, so that new items stay in similar items.
        """
        fused, index = self.fused, self.index
        projection = fused.surface_projection("similar")
        if fused.content_cold_scaled:  # the table meets cold items by their whole content
            vectors = fused.surface_item_vectors(fused.item_blocks_, fused.cold_)
        elif index.kind != "hnsw" or projection is None or projection.is_identity(index.dim):
            return index, None
        else:
            vectors = index.vectors
        data = vectors if projection is None else projection.data(vectors)
        del vectors
        return VectorIndex.build(data, index.config), projection

    def item_rows(self, item_ids) -> np.ndarray:
        """(n,) bundle rows of ``item_ids`` (by the id rule); ``UnknownItem`` for one the
        bundle does not hold."""
        return self._item_rows(as_ids(item_ids, "item_id"))

    def _item_rows(self, ids: list[str]) -> np.ndarray:
        """``item_rows`` of ids already held to the id rule."""
        rows = self.item_index.rows(ids)
        if (rows < 0).any():
            missing = ids[int(np.argmax(rows < 0))]
            live = self.live
            if live is not None and missing in live.waiting:
                raise UnknownItem(
                    f"item {missing!r} waits for room in the live catalog, which is full "
                    f"({live.max_items} items, RECSYS_LIVE_MAX_ITEMS): the next `recsys "
                    "train` adds it"
                )
            raise UnknownItem(
                f"item {missing!r} is not in model bundle "
                f"{self.manifest.get('version')}; ingest it (a serving worker picks up items "
                "written to the catalog within about a second) or run `recsys train`"
            )
        return rows

    # -- helpers -------------------------------------------------------------------------
    def check_filters(self, filters) -> dict[str, Any] | None:
        """``filters`` as this bundle reads them (``check_filters``, then numeric and date
        attributes' values as ``Range`` lists), or ``InvalidInput`` naming the attribute and
        what it takes. An attribute the bundle does not filter on is ``UnknownFilter`` when
        the rows are masked (``self.filters.mask``), as the CLI checks before it answers."""
        return self.filters.resolve(check_filters(filters))

    def _allowed(self, candidates, filters, only_new: bool = False) -> np.ndarray | None:
        """(N,) bool: the bundle rows an answer may list (None: all), those without events
        in the bundle's data alone with ``only_new``."""
        live, shown = self.live, None
        if live is not None:
            shown, filters = live.visible(filters)
        mask = self.filters.mask(filters)
        if candidates is not None:
            only = np.zeros(len(self.item_ids), dtype=bool)
            only[self._candidate_rows(candidates)] = True
            mask = only if mask is None else mask & only
        if shown is not None:
            mask = shown if mask is None else mask & shown
        if only_new:
            mask = self.fused.cold_ if mask is None else mask & self.fused.cold_
        return mask

    def _live_allowed(self, live, filters, candidates, only_new: bool) -> np.ndarray:
        """(M,) bool: the live items an answer may list, those the bundle does not hold
        (added since) alone with ``only_new``."""
        allowed = live.mask(filters, candidates)
        if only_new:
            allowed &= self._bundle_rows_of(live) < 0
        return allowed

    def _bundle_rows_of(self, live) -> np.ndarray:
        """(M,) the bundle row of each of the delta ``live``'s items (-1: added since), looked
        up once per delta (the feeds' stock, seen-item and new-item masks all read it)."""
        cached = self._live_bundle
        if cached is None or cached[0] is not live:
            cached = self._live_bundle = (live, self.item_index.rows(live.ids.tolist()))
        return cached[1]

    def _candidate_rows(self, candidates) -> np.ndarray:
        """Bundle rows of ``candidates``; live items among them are ranked by the delta."""
        live = self.live
        if live is not None:  # an item added and removed since is left out as removed, one
            # waiting for room in a full delta as not yet listed
            left_out = live.gone | live.waiting
            candidates = [c for c in candidates if not (live.knows(str(c)) or str(c) in left_out)]
        return self.item_rows(candidates) if len(candidates) else np.zeros(0, dtype=np.int64)

    def _search(self, queries, k, allowed, exclude, index: VectorIndex | None = None) -> Results:
        found, scores = (index or self.index).search(queries, k, allowed, exclude)
        return self._results(found, scores)

    def _results(self, found: np.ndarray, scores: np.ndarray) -> Results:
        """Results from (Q, k) rows and scores, -1 padding dropped."""
        ids = [self._ids(row) for row in found]
        kept = [s[f >= 0] for s, f in zip(scores, found, strict=True)]
        return Results(ids, kept, [False] * len(ids))

    def _ids(self, rows: np.ndarray) -> list[str]:
        return self.item_ids[rows[rows >= 0]].tolist()

    def _popular(self, k: int, allowed) -> tuple[np.ndarray, np.ndarray]:
        """(rows (k,), scores (k,)) of the k most popular allowed items, -1 / -inf padded:
        the first allowed rows of the popularity order, read in growing blocks (a request
        reads about k rows of it, not the catalog)."""
        order, chosen, start, step = self.popular_order, [], 0, 4 * k
        while sum(map(len, chosen)) < k and start < len(order):
            block = order[start : start + step]
            chosen.append(block if allowed is None else block[allowed[block]])
            start, step = start + step, step * 4
        rows = np.full(k, -1, dtype=np.int64)
        found = np.concatenate([order[:0], *chosen])[:k]
        rows[: len(found)] = found
        # an item without events is listed last (popularity -1) with its popularity, 0
        scores = np.where(rows >= 0, np.maximum(self.popularity[np.maximum(rows, 0)], 0), -np.inf)
        return rows, scores.astype(np.float32)

    @property
    def popular_order(self) -> np.ndarray:
        """Item rows by popularity, most popular first, then the items without events by
        the popularity their content predicts (``FusedModel._predict_cold``), ties in row
        order (sorted once): a visitor's feed that keeps places for new items shows those
        most like the shop's popular ones, not the first rows of the catalog."""
        if self._popular_order is None:
            predicted = self.fused.item_blocks_.get("popularity")
            cold = np.asarray(self.fused.cold_, dtype=bool)
            key = np.asarray(self.popularity, dtype=np.float64).copy()
            if predicted is not None and cold.any():  # in [0, 1]: below every warm item
                key[cold] = np.asarray(predicted[cold, 0], dtype=np.float64) - 2.0
            self._popular_order = np.argsort(-key, kind="stable")
        return self._popular_order

    def _history_places(self, histories) -> tuple[list[int], list[int]]:
        """(history number, item row) of every listed item, in the histories' order."""
        rows, cols = [], []
        for user, history in enumerate(histories):
            found = self.item_rows(history) if len(history) else np.zeros(0, dtype=np.int64)
            rows += [user] * len(found)
            cols += found.tolist()
        return rows, cols

    def _history_matrix(self, histories, places, weights=None) -> sp.csr_matrix:
        """(histories, items) CSR at ``_history_places``: 1 per listed item, or its entry of
        ``weights`` (summed)."""
        rows, cols = places
        data = np.ones(len(rows), dtype=np.float32)
        if weights is not None:
            if [len(w) for w in weights] != [len(h) for h in histories]:
                raise ValueError("weights must hold one weight per item of each history")
            data = np.concatenate([np.zeros(0), *weights]).astype(np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(histories), len(self.item_ids)))


def _live_blocks(live, names) -> dict[str, np.ndarray]:
    """The delta ``live``'s blocks of these names (none without live items)."""
    if live is None or not live.size:
        return {}
    return {b: np.asarray(live.blocks[b], dtype=np.float32) for b in names if b in live.blocks}


def one_per_group(groups: list[list[str | None]], k: int, taken: list[set[str]]) -> list[list[int]]:
    """Per list (its items' group values, best first), the places of its first item of each
    group past the groups in ``taken``, at most ``k``; an item without a value is a group of
    its own."""
    out = []
    for values, before in zip(groups, taken, strict=True):
        shown, places = set(before), []
        for j, value in enumerate(values):
            if len(places) == k:
                break
            if value is None or value not in shown:
                places.append(j)
                if value is not None:
                    shown.add(value)
        out.append(places)
    return out


def _in_common(found: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An item-to-item pool without the items that have nothing in common with the query
    (``Results.alike``), as padding (-1, -inf): left out before diversity picks among the
    rest, since left out after they took places the next items with something in common had."""
    nothing = scores <= 0
    return np.where(nothing, -1, found), np.where(nothing, -np.inf, scores)


def _per_query(lists, queries) -> list:
    """``lists`` (one list per query, or None: none) as one per query of ``queries``."""
    return [()] * len(queries) if lists is None else [list(items) for items in lists]


def _share_any(labels: sp.csr_matrix, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(len(rows),) bool: whether each row (-1: none) has any of ``values`` in ``labels``."""
    valid = np.flatnonzero(rows >= 0)
    if not len(values) or not len(valid):
        return np.zeros(len(rows), dtype=bool)
    owner, found, _ = sparse_rows.gather(labels, rows[valid])  # the rows' values, row by row
    hit = (found[:, None] == np.asarray(values)[None, :]).any(axis=1)  # few values: no sort
    return np.bincount(valid[owner[hit]], minlength=len(rows)) > 0


def _row_indices(matrix: sp.csr_matrix, row: int) -> np.ndarray:
    """One CSR row's column numbers (a view: no sparse matrix is built per request)."""
    return matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]


def _rows(matrix: sp.csr_matrix):
    for user in range(matrix.shape[0]):
        yield _row_indices(matrix, user)


def _entries(matrix: sp.csr_matrix):
    """Per CSR row: (its column numbers, its values)."""
    for user in range(matrix.shape[0]):
        part = slice(matrix.indptr[user], matrix.indptr[user + 1])
        yield matrix.indices[part], matrix.data[part]


def token_candidates(fused: FusedModel, profile: sparse_rows.Row | sp.csr_matrix, budget: int):
    """(rows ascending, terms): the items sharing a token with one profile (a row, or a (1, F)
    CSR matrix) and their token terms, from the postings of its tokens; past ``budget`` item
    tokens, of its rarest tokens' alone (``sparse_rows.rarest_dots``). The most common tokens
    add a little to very many items and pick out none, and the rows found are still scored
    exactly (``FusedModel.token_scores`` of those rows). So a feed reads at most ``budget``
    postings and sorts them, whatever the catalog: nothing here is per item."""
    rows, dots = sparse_rows.rarest_dots(
        fused.token_postings, profile.indices, profile.data, budget
    )
    return rows, fused.token_scale_[rows] * dots


def neighbour_queries(fused, rows: np.ndarray, projection: Projection | None) -> np.ndarray:
    """The neighbour table's queries of item ``rows``: their similar-surface queries, projected
    as ``Recommender.neighbour_index`` says."""
    queries = fused.item_queries(rows)
    return queries if projection is None else projection.queries(queries)
