"""Catalog health for the shop's operators: duplicate listings, outliers, a cluster map.

Admin-scoped JSON endpoints under ``/v1/admin/catalog/`` over the served bundle's item
vectors (``recsys.catalog_intel``), and the page ``/catalog`` (``static/catalog.html``) that
shows them with the items' photos. Each answer is computed once per (bundle version,
parameters) in a process and kept, so re-opening the page costs nothing; a new bundle
computes afresh.

Duplicates: the pairs above the cosine threshold of the items' listing vectors
(``FusedModel.listing_vectors``: as the "similar" surface compares items, so that a re-listed
item meets its source although only the source has events) are candidates; when the
catalog's items have photos, the candidates (the 2,000 most similar at most, so a request
never decodes the whole catalog) are decided by geometric verification of their photos
(``recsys.catalog_intel.photos``) at a verified-score threshold calibrated once per bundle
from edited copies of 300 sampled photos; without photos their titles check them
(``duplicates.title_checked``), and with ``verify=false`` cosine decides. Outliers read the
listing vectors too; clusters read the fused item vectors.
The answer's ``score`` says which.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import numpy as np
from flask import Blueprint, current_app
from pydantic import BaseModel, Field

from recsys.catalog.reads import titles_by_row
from recsys.catalog_intel import (
    ClusterConfig,
    Clusterer,
    DuplicateConfig,
    DuplicateFinder,
    OutlierConfig,
    OutlierScorer,
)
from recsys.catalog_intel.duplicates import LISTING_THRESHOLD, duplicate_sets, title_checked
from recsys.catalog_intel.photos import CatalogPhotos, VerifiedPairs
from recsys.scopes import ADMIN
from services.context import card, context
from services.contract import endpoint
from services.errors import ApiError
from services.schemas import Item, QueryBool, QueryFloat, QueryInt

bp = Blueprint("catalog_health", __name__)

MAX_SETS = 200
MAX_OUTLIERS = 200
MAX_MAP_POINTS = 2000


class DuplicatesQuery(BaseModel):
    threshold: QueryFloat = Field(
        LISTING_THRESHOLD,
        ge=-1,
        le=1,
        description="Cosine of the served vectors from which items pair up",
    )
    limit: QueryInt = Field(50, ge=1, le=MAX_SETS, description="Largest sets shown")
    verify: QueryBool = Field(
        True,
        description="Decide the candidate pairs by their photos, when items have photos; "
        "else check them by their titles' words",
    )
    verified_threshold: QueryFloat = Field(
        None,
        ge=-1,
        le=1,
        description="Verified photo score from which a candidate pair is a duplicate; "
        "default: calibrated on edited copies of the catalog's own photos",
    )


class OutliersQuery(BaseModel):
    top: QueryInt = Field(24, ge=1, le=MAX_OUTLIERS, description="Most unusual items shown")
    fpr: QueryFloat = Field(
        0.01, gt=0, lt=1, description="Share of the catalog flagged (expected false positives)"
    )


class ClustersQuery(BaseModel):
    k: QueryInt = Field(None, ge=2, le=64, description="Clusters; default: best silhouette")
    members: QueryInt = Field(12, ge=1, le=48, description="Items listed per cluster")


class ScoredItem(Item):
    score: float


class DuplicateSet(BaseModel):
    items: list[Item]
    similarity: float = Field(description="Highest score (see score) between two of its items")


class Duplicates(BaseModel):
    """Duplicate listings, largest set first"""

    model_version: str
    threshold: float = Field(description="Cosine from which items are candidate pairs")
    score: Literal["verified", "cosine and titles", "cosine"] = Field(
        description="What decided the pairs: photo verification; without photos, the "
        "cosine capped by the share of the shorter title's words the other title has; or "
        "cosine alone (verify=false)"
    )
    verified_threshold: float | None = Field(description="Verified score from which pairs count")
    verified_pairs: int = Field(description="Candidate pairs whose photos were verified")
    skipped_pairs: int = Field(
        description="Candidate pairs left out unverified (a photo missing, or beyond the cap)"
    )
    total_sets: int
    sets: list[DuplicateSet]


class Outliers(BaseModel):
    """Items least like the rest of the catalog, most unusual first"""

    model_version: str
    k: int
    threshold: float = Field(description="Scores above it are flagged")
    flagged: int
    items: list[ScoredItem]


class Cluster(BaseModel):
    cluster: int
    size: int
    medoid: Item
    members: list[Item]


class MapPoint(BaseModel):
    item_id: str
    x: float
    y: float
    cluster: int


class Clusters(BaseModel):
    """K-means clusters of the catalog with their medoids, and a 2-D map of the items"""

    model_version: str
    k: int
    clusters: list[Cluster]
    points: list[MapPoint] = Field(description="A sample of items on the vectors' 2 main axes")


class _Results:
    """Answers by (model version, task, parameters); the few latest kept."""

    def __init__(self, size: int = 16):
        self.lock = threading.RLock()  # an answer may ask for a kept part (photo threshold)
        self.size = size
        self.kept: OrderedDict[tuple, BaseModel] = OrderedDict()

    def get(self, key: tuple, compute: Callable[[], BaseModel]) -> BaseModel:
        with self.lock:  # one computation at a time per process; they are minutes at most
            if key not in self.kept:
                self.kept[key] = compute()
                while len(self.kept) > self.size:
                    self.kept.popitem(last=False)
            self.kept.move_to_end(key)
            return self.kept[key]


def _results() -> _Results:
    return current_app.extensions.setdefault("catalog_health", _Results())


def _served():
    """(version, item ids (N,), fused model) of the served bundle, or a 503."""
    holder = context().holder
    if not holder.ready:
        raise ApiError(503, "model_not_ready", "no model bundle loaded; run `recsys train`")
    state = holder.state
    recommender = state.recommender
    if len(recommender.item_ids) < 3:
        raise ApiError(409, "too_few_items", "catalog health needs at least 3 items")
    return state.version, recommender.item_ids, recommender.fused


def _cards(ids) -> list[Item]:
    ids = [str(i) for i in ids]
    found = context().cards.cards(ids)
    return [Item(**card(i, found.get(i))) for i in ids]


@bp.get("/v1/admin/catalog/duplicates")
@endpoint(
    query=DuplicatesQuery,
    responses={200: Duplicates},
    errors=(400, 401, 403, 409, 503),
    scope=ADMIN,
)
def duplicates(query: DuplicatesQuery) -> Duplicates:
    """Duplicate listings: sets of items whose vectors are above the threshold, confirmed by
    their photos when they have some"""
    version, ids, fused = _served()

    def compute() -> Duplicates:
        vectors = fused.listing_vectors()
        finder = DuplicateFinder(DuplicateConfig(threshold=query.threshold)).fit(vectors)
        left, right, score = finder.pairs_.left, finder.pairs_.right, finder.pairs_.similarity
        photo = {"score": "cosine", "verified_threshold": None}
        photo |= {"verified_pairs": 0, "skipped_pairs": 0}
        if query.verify:  # said also when no pair reaches the threshold
            checked = _verified(version, ids, left, right, score, query.verified_threshold)
            if checked is not None:
                left, right, score = checked.left, checked.right, checked.score
                photo = {"score": "verified", "verified_threshold": checked.threshold}
                photo |= {"verified_pairs": checked.verified, "skipped_pairs": checked.skipped}
            else:  # no photos: the titles' words check the pairs
                titles = titles_by_row(context().engine, ids)
                left, right, score = title_checked(titles, left, right, score, finder.threshold_)
                photo["score"] = "cosine and titles"
        best = np.full(len(ids), -np.inf, np.float32)
        np.maximum.at(best, np.r_[left, right], np.r_[score, score])
        sets = _sets(len(ids), left, right)
        shown = [
            DuplicateSet(items=_cards(ids[rows]), similarity=round(float(best[rows].max()), 6))
            for rows in sets[: query.limit]
        ]
        return Duplicates(
            model_version=version,
            threshold=finder.threshold_,
            total_sets=len(sets),
            sets=shown,
            **photo,
        )

    key = (version, "duplicates", query.threshold, query.limit, query.verify)
    return _results().get((*key, query.verified_threshold), compute)


def _verified(version, ids, left, right, score, threshold):
    """The candidate pairs decided by their photos (``CatalogPhotos.verify``), or None when
    the catalog has no photos: fewer than 10 among its sampled items, which also calibrate
    the default threshold (once per bundle)."""
    photos = CatalogPhotos(context().engine, ids)
    calibrated = _results().get((version, "photo threshold"), photos.calibrate)
    if calibrated is None:
        return None
    threshold = calibrated if threshold is None else threshold
    if not len(left):  # no candidate: nothing to decode
        return VerifiedPairs(left, right, score, float(threshold), verified=0, skipped=0)
    return photos.verify(left, right, score, threshold)


def _sets(n: int, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Rows of each duplicate set (connected components of the pairs), largest first."""
    set_of = duplicate_sets(n, left, right)
    rows = np.flatnonzero(set_of >= 0)
    rows = rows[np.argsort(set_of[rows], kind="stable")]
    groups = np.split(rows, np.cumsum(np.bincount(set_of[rows]))[:-1]) if len(rows) else []
    return sorted(groups, key=len, reverse=True)


@bp.get("/v1/admin/catalog/outliers")
@endpoint(
    query=OutliersQuery, responses={200: Outliers}, errors=(400, 401, 403, 409, 503), scope=ADMIN
)
def outliers(query: OutliersQuery) -> Outliers:
    """Outliers: the items least like the others (a wrong photo, an odd product)"""
    version, ids, fused = _served()

    def compute() -> Outliers:
        # listings, not engagement: in the fused vectors the cf block's norm made the most
        # viewed items outliers (scripts/planted_outliers.py)
        vectors = fused.listing_vectors()
        scorer = OutlierScorer(OutlierConfig(false_positive_rate=query.fpr)).fit(vectors)
        top = scorer.top(query.top)
        items = [
            ScoredItem(**item.model_dump(), score=round(float(scorer.scores_[row]), 6))
            for item, row in zip(_cards(ids[top]), top, strict=True)
        ]
        return Outliers(
            model_version=version,
            k=scorer.k_,
            threshold=scorer.threshold_,
            flagged=int(scorer.flagged_.sum()),
            items=items,
        )

    return _results().get((version, "outliers", query.top, query.fpr), compute)


@bp.get("/v1/admin/catalog/clusters")
@endpoint(
    query=ClustersQuery, responses={200: Clusters}, errors=(400, 401, 403, 409, 503), scope=ADMIN
)
def clusters(query: ClustersQuery) -> Clusters:
    """Clusters: k-means groups of the catalog, their medoids and a map of the items"""
    version, ids, fused = _served()
    vectors = fused.item_vectors_

    def compute() -> Clusters:
        k = query.k if query.k is None else min(query.k, len(ids))
        fitted = Clusterer(ClusterConfig(k=k)).fit(vectors)
        groups = []
        for c, medoid in enumerate(fitted.medoids_):
            if medoid < 0:
                continue
            members = np.flatnonzero(fitted.labels_ == c)[: query.members]
            medoid_card, *member_cards = _cards([ids[medoid], *ids[members]])
            groups.append(
                Cluster(
                    cluster=c, size=int(fitted.sizes_[c]), medoid=medoid_card, members=member_cards
                )
            )
        return Clusters(
            model_version=version,
            k=fitted.k_,
            clusters=groups,
            points=_map(ids, vectors, fitted.labels_),
        )

    return _results().get((version, "clusters", query.k, query.members), compute)


def _map(ids: np.ndarray, vectors: np.ndarray, labels: np.ndarray) -> list[MapPoint]:
    """A seeded sample of items at their coordinates on the vectors' two principal axes."""
    rows = np.arange(len(ids))
    if len(rows) > MAX_MAP_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_MAP_POINTS, replace=False))
    x = np.asarray(vectors[rows], np.float64)
    x = x - x.mean(axis=0)
    _, _, axes = np.linalg.svd(x, full_matrices=False)  # (D', D)
    xy = x @ axes[:2].T if len(axes) >= 2 else np.c_[x @ axes[:1].T, np.zeros(len(x))]
    xy /= max(float(np.abs(xy).max()), 1e-12)
    return [
        MapPoint(
            item_id=str(ids[r]),
            x=round(float(p[0]), 4),
            y=round(float(p[1]), 4),
            cluster=int(labels[r]),
        )
        for r, p in zip(rows, xy, strict=True)
    ]


@bp.get("/catalog")
def page():
    """The catalog-health page (it asks for an admin key and calls the endpoints above)."""
    return current_app.send_static_file("catalog.html")
