"""The serving API: external ids in, external ids and scores out, batch-first.

``recsys.model.bundle.load_recommender(bundle_dir)`` (or ``load_active(engine)``) then
``recommend(user_ids, k=10, exclude_seen=True, candidates=None, filters=None)`` and
``similar_items(item_ids, k=10, filters=None)``.

Popularity fallback: a user the bundle has never seen (no interactions at training time) gets
the most popular items (by number of distinct users at training time) that pass the filters,
with ``fallback`` set for that query. Use ``recommend_for_history`` to rank for a new user's
first items without retraining.

Filters: ``{"in_stock": True, "<attribute>": value or [values]}`` on categorical and multi
attributes; an item passes an attribute filter when it has any of the values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InvalidBundle, UnknownItem
from recsys.model.data import IdIndex, mapped
from recsys.model.fusion import FusedModel
from recsys.model.index import IndexConfig, VectorIndex
from recsys.model.ranking import top_k_finite
from recsys.model.tabular import label_pairs

log = logging.getLogger(__name__)

FILTER_KINDS = ("categorical", "multi")
PARTS = ("values", "offsets", "rows")  # of a saved Postings


@dataclass
class Results:
    """Per query: external ids (best first) and scores; ``fallback`` marks popularity answers."""

    ids: list[list[str]]
    scores: list[np.ndarray]
    fallback: list[bool] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        fallback = self.fallback or [False] * len(self.ids)
        return [
            {"ids": ids, "scores": [round(float(s), 6) for s in scores], "fallback": fb}
            for ids, scores, fb in zip(self.ids, self.scores, fallback, strict=True)
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
    def build(cls, rows: np.ndarray, labels: pd.Series) -> Postings:
        codes, values = pd.factorize(labels.to_numpy(dtype=str), sort=True)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(values))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(np.asarray(values, dtype=str), offsets, rows[order].astype(np.int64))

    def rows_of(self, value: str) -> np.ndarray:
        j = int(np.searchsorted(self.values, value))
        if j == len(self.values) or self.values[j] != value:
            return self.rows[:0]
        return self.rows[self.offsets[j] : self.offsets[j + 1]]


class ItemFilters:
    """Boolean masks over item rows: stock and attribute values (inverted lists)."""

    def __init__(self, in_stock: np.ndarray, postings: dict[str, Postings]):
        self.in_stock = np.asarray(in_stock, dtype=bool)
        self.postings = postings

    @classmethod
    def from_items(cls, items: pd.DataFrame, kinds: dict[str, str]) -> ItemFilters:
        postings = {
            name: Postings.build(*label_pairs(kind, items[name]))
            for name, kind in kinds.items()
            if kind in FILTER_KINDS and name in items.columns
        }
        return cls(items["in_stock"].to_numpy(dtype=bool), postings)

    def mask(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        if not filters:
            return None
        mask = np.ones(len(self.in_stock), dtype=bool)
        for name, wanted in filters.items():
            if name == "in_stock":
                mask &= self.in_stock if wanted else ~self.in_stock
                continue
            if name not in self.postings:
                raise ValueError(
                    f"cannot filter on {name!r}; filterable: in_stock, {sorted(self.postings)}"
                )
            allowed = np.zeros(len(mask), dtype=bool)
            for value in np.atleast_1d(wanted).tolist():
                allowed[self.postings[name].rows_of(str(value))] = True
            mask &= allowed
        return mask

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``in_stock.npy``, ``filters.json`` (attribute names) and three arrays per
        attribute, ``filter_<n>_{values,offsets,rows}.npy``."""
        np.save(directory / "in_stock.npy", self.in_stock, allow_pickle=False)
        for n, postings in enumerate(self.postings.values()):
            for part in ("values", "offsets", "rows"):
                array = getattr(postings, part)
                np.save(directory / f"filter_{n}_{part}.npy", array, allow_pickle=False)
        (directory / "filters.json").write_text(json.dumps(list(self.postings)))

    @classmethod
    def load(cls, directory: Path) -> ItemFilters:
        """Mapped read-only: processes serving one bundle share the pages."""
        names = json.loads((directory / "filters.json").read_text())
        postings = {
            name: Postings(*(mapped(directory / f"filter_{n}_{part}.npy") for part in PARTS))
            for n, name in enumerate(names)
        }
        return cls(np.load(directory / "in_stock.npy", allow_pickle=False), postings)


class Recommender:
    """Fused vectors + FAISS index + id mappings + filters; see the module docstring.

    ``neighbours``: each item's unfiltered similar items, (rows (N, W) int32, scores (N, W)
    float32), from ``compute_neighbours`` or a bundle; None: every call searches the index.
    ``image_encoder_dir``: where the bundle's image encoder is (loaded on first use).
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
    ):
        self.fused, self.cf, self.filters, self.index = fused, cf, filters, index
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.item_index = IdIndex(self.item_ids)
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
        self._image_encoder = None
        self._image_index: VectorIndex | None = None

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unsaved"))

    @property
    def has_images(self) -> bool:
        return "image" in self.fused.item_blocks_

    # -- queries -------------------------------------------------------------------------
    def recommend(
        self, user_ids, k: int = 10, exclude_seen: bool = True, candidates=None, filters=None
    ) -> Results:
        """Top-k items per user; unknown users get the popularity fallback (flagged)."""
        allowed = self._allowed(candidates, filters)
        rows = self.user_index.rows(user_ids).tolist()
        results = Results([], [], [])
        for row in rows:
            if row < 0:
                ids, scores = self._popular(k, allowed)
            else:
                seen = self.cf.user_items_[row].indices if exclude_seen else None
                found, scores = self.index.search(self.fused.user_vectors_[row], k, allowed, [seen])
                ids, scores = self._ids(found[0]), scores[0][found[0] >= 0]
            results.ids.append(ids)
            results.scores.append(scores)
            results.fallback.append(row < 0)
        return results

    def recommend_for_history(
        self, histories, k: int = 10, exclude_seen: bool = True, candidates=None, filters=None
    ) -> Results:
        """Top-k for users given only their item histories (lists of item ids), no retraining.

        The user vector is folded in from the history (ALS ``recalculate_user`` or a ridge
        solve) plus a content profile of those items, as ``recommend`` would have it after
        retraining. An empty history gets the popularity fallback.
        """
        matrix = self._history_matrix(histories)
        empty = matrix.getnnz(axis=1) == 0
        cf_vectors = None
        if self.cf is not None:
            cf_vectors = np.stack(
                [self.cf.fold_in(self.item_ids[r]) for r in _rows(matrix)]
            ).astype(np.float32)
        queries = self.fused.history_queries(cf_vectors, matrix)
        exclude = list(_rows(matrix)) if exclude_seen else None
        allowed = self._allowed(candidates, filters)
        results = self._search(queries, k, allowed, exclude)
        for user in np.flatnonzero(empty):
            results.ids[user], results.scores[user] = self._popular(k, allowed)
            results.fallback[user] = True
        return results

    def seen_items(self, user_id: str) -> list[str]:
        """Item ids the user interacted with in the training data ([] for unknown users)."""
        row = self.user_index.get(str(user_id), -1)
        if row < 0 or self.cf is None:
            return []
        return self.item_ids[self.cf.user_items_[row].indices].tolist()

    def search_images(self, images, k: int = 10, filters=None) -> Results:
        """Catalog items that look most like each query image (file paths or uint8 arrays).

        Ranks by cosine similarity of the image encoder's vectors alone; ``InvalidBundle`` when
        the bundle was trained without images.
        """
        encoder = self.image_encoder
        queries = np.asarray(encoder.transform(images), dtype=np.float32)
        if self._image_index is None:
            self._image_index = VectorIndex.build(
                self.fused.item_blocks_["image"], IndexConfig(kind="flat")
            )
        return self._search(queries, k, self._allowed(None, filters), None, self._image_index)

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

    def similar_items(self, item_ids, k: int = 10, filters=None, mode: str = "similar") -> Results:
        """Top-k items like each given item (itself excluded); ``UnknownItem`` if unknown.

        ``mode``: ``similar`` ("more like this", content-led: the product page's default) or
        ``also`` ("shoppers who viewed this also viewed"), each with the block weights chosen
        for it at training time. Without filters and for k up to the bundle's precomputed
        width, a ``similar`` answer is a slice of the neighbour table (the same rows and
        scores the index search gives).
        """
        rows = self.item_rows(item_ids)
        self.fused.check_surface(mode)
        table = self.neighbours
        if not filters and mode == "similar" and table is not None and k <= table[0].shape[1]:
            found = table[0][rows, :k]  # (Q, k)
            if (found >= 0).all():
                return self._results(found, np.array(table[1][rows, :k]))
        queries = self.fused.item_queries(rows, mode)
        return self._search(queries, k, self._allowed(None, filters), rows[:, None])

    def compute_neighbours(self, width: int, batch: int = 4096) -> None:
        """Fill ``neighbours``: every item's unfiltered top-``width`` similar items (mode
        ``similar``), found by the same index search ``similar_items`` runs (-1 where fewer
        exist); 0 fills none."""
        n = len(self.item_ids)
        width = min(width, max(n - 1, 1))
        if width <= 0:
            self.neighbours = None
            return
        rows = np.full((n, width), -1, dtype=np.int32)
        scores = np.full((n, width), -np.inf, dtype=np.float32)
        for start in range(0, n, batch):
            own = np.arange(start, min(start + batch, n))
            queries = self.fused.item_queries(own)
            rows[own], scores[own] = self.index.search(queries, width, None, own[:, None])
        self.neighbours = (rows, scores)

    def item_rows(self, item_ids) -> np.ndarray:
        ids = np.atleast_1d(np.asarray(item_ids, dtype=object))
        rows = self.item_index.rows(ids)
        if (rows < 0).any():
            raise UnknownItem(
                f"item {ids[np.argmax(rows < 0)]!r} is not in model bundle "
                f"{self.manifest.get('version')}; ingest it and run `recsys train`"
            )
        return rows

    # -- helpers -------------------------------------------------------------------------
    def _allowed(self, candidates, filters) -> np.ndarray | None:
        mask = self.filters.mask(filters)
        if candidates is not None:
            only = np.zeros(len(self.item_ids), dtype=bool)
            only[self.item_rows(candidates)] = True
            mask = only if mask is None else mask & only
        return mask

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

    def _popular(self, k: int, allowed) -> tuple[list[str], np.ndarray]:
        scores = self.popularity if allowed is None else np.where(allowed, self.popularity, -np.inf)
        order = top_k_finite(scores[None, :], k)[0]
        order = order[order >= 0]
        return self.item_ids[order].tolist(), scores[order].astype(np.float32)

    def _history_matrix(self, histories) -> sp.csr_matrix:
        rows, cols = [], []
        for user, history in enumerate(histories):
            found = self.item_rows(history) if len(history) else np.zeros(0, dtype=np.int64)
            rows += [user] * len(found)
            cols += found.tolist()
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(histories), len(self.item_ids)))


def _rows(matrix: sp.csr_matrix):
    for user in range(matrix.shape[0]):
        yield matrix.indices[matrix.indptr[user] : matrix.indptr[user + 1]]
