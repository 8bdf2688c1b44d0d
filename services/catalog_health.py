"""Catalog health for the shop's operators: duplicate listings, outliers, a cluster map.

Admin-scoped JSON endpoints under ``/v1/admin/catalog/`` over the served bundle's item
vectors (``recsys.catalog_intel``), and the page ``/catalog`` (``static/catalog.html``) that
shows them with the items' photos.

What each answer is drawn from (a fit: the duplicate sets at a threshold, every item's outlier
score, the clusters at a k) is computed once per bundle and kept (``_Fits``). It runs in a
background thread, one fit at a time per worker; a request waits for it at most
``CATALOG_HEALTH_WAIT_SECONDS`` (0.25 s, for a waiting request holds one of its worker's
threads) and is otherwise answered 202 with a Retry-After (the page asks again), instead of
holding a thread for the minutes a fit takes at 10^6 items. Under gunicorn the workers share
their fits through files in the server's ``shared_dir`` (``RECSYS_SHARED_DIR``, made per
server by services/gunicorn.conf.py): one worker computes and writes a fit, the others read
it, and the server computes one fit at a time (``_shared``;
``scripts/bench_catalog_health.py``). A restart computes afresh. A worker queues
``MAX_PENDING`` fits at most (a fifth different one is a 429). The answers' sizes
(``limit`` and ``offset``, ``top``, ``members``) and the outliers' ``fpr`` are cut from a
fit per request.

Duplicates: the pairs above the cosine threshold of the items' listing vectors
(``FusedModel.listing_vectors``: as the "similar" surface compares items, so that a re-listed
item meets its source although only the source has events) are candidates; when the
catalog's items have photos, the candidates (the 2,000 most similar at most, so a request
never decodes the whole catalog) are decided by geometric verification of their photos
(``recsys.catalog_intel.photos``) at a verified-score threshold calibrated once per bundle
from edited copies of 300 sampled photos; without photos their titles check them
(``duplicates.title_checked``), and with ``verify=false`` cosine decides. With ``group_by``
(else the server's RECSYS_GROUP_BY), a candidate pair of one product's variants (the same
value of that attribute) is left out before any of that, and counted. Outliers read the
listing vectors too; clusters read the fused item vectors.
The answer's ``score`` says which.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Literal

import numpy as np
from flask import Blueprint, Response, current_app
from pydantic import BaseModel, ConfigDict, Field

from recsys.catalog_intel import (
    ClusterConfig,
    Clusterer,
    OutlierConfig,
    OutlierScorer,
)
from recsys.catalog_intel.clusters import describe_clusters
from recsys.catalog_intel.duplicates import (
    LISTING_THRESHOLD,
    duplicate_sets,
    set_rows,
)
from recsys.catalog_intel.outliers import threshold_at, top_rows
from recsys.catalog_intel.photos import CatalogPhotos, checked_pairs
from recsys.errors import InvalidInput
from recsys.scopes import ADMIN
from services.context import card, context
from services.contract import JSON, endpoint
from services.errors import ApiError, bad_parameter
from services.schemas import Item, QueryBool, QueryFloat, QueryInt

log = logging.getLogger(__name__)

bp = Blueprint("catalog_health", __name__)

MAX_SETS = 200
MAX_OUTLIERS = 200
MAX_MEMBERS = 48
MAX_MAP_POINTS = 2000
WAIT_SECONDS = 0.25  # a request waits this long for its fit, then gets a 202
RETRY_AFTER = 2  # seconds, in a 202's Retry-After
MAX_PENDING = 4  # fits queued or running per worker; past it a new one is a 429


class DuplicatesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # ?topp=5 was ignored

    threshold: QueryFloat = Field(
        LISTING_THRESHOLD,
        ge=-1,
        le=1,
        description="Cosine of the served vectors from which items pair up",
    )
    limit: QueryInt = Field(50, ge=1, le=MAX_SETS, description="Sets shown, largest first")
    offset: QueryInt = Field(
        0, ge=0, description="Sets to skip, largest first: the next of the page before"
    )
    group_by: str | None = Field(
        None,
        max_length=255,
        description="An attribute naming the product each item is a variant of (e.g. style, "
        "for a product listed once per size and colour): two items with the same value are "
        "no duplicates, whatever their photos. Absent: the server's RECSYS_GROUP_BY; empty: "
        "none",
    )
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


MAX_OUTLIER_K = 1000  # a neighbour search this wide over every item is minutes at 10^6


class OutliersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # ?topp=5 was ignored

    top: QueryInt = Field(24, ge=1, le=MAX_OUTLIERS, description="Most unusual items shown")
    k: QueryInt = Field(
        None,
        ge=1,
        le=MAX_OUTLIER_K,
        description="Neighbour rank of the score (as `recsys catalog outliers --k`); default: "
        "2% of the items, from 10 to 100",
    )
    fpr: QueryFloat = Field(
        0.01, gt=0, lt=1, description="Share of the catalog flagged (expected false positives)"
    )


class ClustersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # ?topp=5 was ignored

    k: QueryInt = Field(None, ge=2, le=64, description="Clusters; default: best silhouette")
    members: QueryInt = Field(12, ge=1, le=MAX_MEMBERS, description="Items listed per cluster")


class ScoredItem(Item):
    score: float
    flagged: bool = Field(description="Above the threshold: one of the flagged outliers")


class DuplicateSet(BaseModel):
    size: int = Field(description="Items in the set")
    items: list[Item] = Field(description=f"Its first {MAX_MEMBERS} items")
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
    group_by: str | None = Field(description="The attribute naming each item's product, if any")
    grouped_pairs: int = Field(
        description="Candidate pairs left out as variants of one product (same group_by value)"
    )
    total_sets: int
    offset: int
    limit: int
    next: int | None = Field(description="The offset of the page that follows (null: the last)")
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
    # What most of its items share, for a person to name it by: the attribute value with
    # the highest share of the cluster's items (null: no filterable attribute, or none).
    attribute: str | None = Field(description="The attribute whose value most items share")
    value: str | None = Field(description="That value")
    share: float | None = Field(description="The share of the cluster's items with it")
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


class Computing(BaseModel):
    """Still computing (minutes on a large catalog): ask again after the Retry-After"""

    model_version: str
    status: Literal["computing"] = "computing"
    retry_after: int = Field(description="Seconds to wait before asking again")


Fit = dict[str, np.ndarray]  # arrays only (scalars 0-d), so that a file of it loads unpickled


class _Fits:
    """This process's fits by (bundle version, task, parameters), the latest ``size`` kept.

    Fits run in a background thread while there are some (one at a time: a worker's other
    threads keep serving), each read from or written to its file in ``folder`` when one is
    given (``_shared``).
    """

    def __init__(self, size: int = 16):
        self.lock = threading.Lock()
        self.size = size
        self.futures: OrderedDict[tuple, Future] = OrderedDict()
        self.jobs: deque = deque()
        self.runner: threading.Thread | None = None

    def get(
        self, key: tuple, folder: Path | None, compute: Callable[[], Fit], wait: float
    ) -> Fit | None:
        """The fit of ``key``, or None when it is not done within ``wait`` seconds (it goes
        on). A fit that failed raises here, and the next call computes it again."""
        with self.lock:
            future = self.futures.get(key)
            if future is None or (future.done() and future.exception() is not None):
                pending = sum(not kept.done() for kept in self.futures.values())
                if pending >= MAX_PENDING:
                    raise ApiError(
                        429,
                        "catalog_health_busy",
                        f"{pending} catalog-health computations are under way in this worker; "
                        "ask again when they are done (a fit asked for again is not repeated)",
                        headers={"Retry-After": str(RETRY_AFTER * 5)},
                    )
                future = self.futures[key] = Future()
                self.jobs.append((future, key, folder, compute))
                self._start()
                self._trim()
            self.futures.move_to_end(key)
        try:
            return future.result(timeout=wait)
        except TimeoutError:
            return None

    def now(self, key: tuple, folder: Path | None, compute: Callable[[], Fit]) -> Fit:
        """The fit of ``key``, computed in this thread if need be: a part that several fits
        read (the photo score's calibration), asked for from the background thread."""
        with self.lock:
            kept = self.futures.get(key)
        if kept is not None and kept.done() and kept.exception() is None:
            return kept.result()
        fit = _shared(key, folder, compute, nested=True)
        done = Future()
        done.set_result(fit)
        with self.lock:
            self.futures[key] = done
            self._trim()
        return fit

    def _start(self) -> None:
        """A runner for the queued jobs, unless one is running (under ``self.lock``). It is
        no daemon: a process that exits waits for its fits, rather than stopping a thread
        inside torch or FAISS, which aborts the interpreter; gunicorn kills a worker that
        takes longer than its graceful timeout."""
        if self.runner is None:
            self.runner = threading.Thread(target=self._run, name="catalog-health")
            self.runner.start()

    def _trim(self) -> None:
        done = [key for key, future in self.futures.items() if future.done()]
        for key in done[: max(0, len(self.futures) - self.size)]:
            del self.futures[key]

    def _run(self) -> None:
        """Run the queued jobs, then end (a new job starts a new runner). Once the main thread
        has ended (the process exits) the jobs not started are dropped."""
        while True:
            with self.lock:
                if not self.jobs or not threading.main_thread().is_alive():
                    for future, *_ in self.jobs:
                        future.cancel()
                    self.jobs.clear()
                    self.runner = None
                    return
                job = self.jobs.popleft()
            self._do(*job)
            del job  # its closure (a bundle's model) is let go before the next waits

    @staticmethod
    def _do(future: Future, key: tuple, folder: Path | None, compute: Callable[[], Fit]) -> None:
        try:
            future.set_result(_shared(key, folder, compute))
        except BaseException as exc:  # handed to the requests that wait for it
            if isinstance(exc, InvalidInput):  # the request's to fix: its 400 says how
                log.info("catalog health: %s refused: %s", key[1], exc)
            else:
                log.exception("catalog health: %s failed", key[1])
            # its frames would keep what the fit read (the model, the catalog's connections)
            future.set_exception(exc.with_traceback(None))


def _shared(
    key: tuple, folder: Path | None, compute: Callable[[], Fit], nested: bool = False
) -> Fit:
    """``compute()``, or the fit another worker of this server wrote to ``folder``.

    The server computes one fit at a time (a lock beside the bundles' folders): a fit at 10^6
    items holds gigabytes and a core, and three workers each running one would hold three. A
    worker that gets the lock finds the fit written if another computed it meanwhile; one
    already written is read without the lock (it appears whole, by a rename). ``nested``: a
    part of the fit this thread computes under the lock. An unwritable folder computes here, as
    an unreadable file does again."""
    if folder is None:
        return compute()
    name = hashlib.sha256(json.dumps(key[1:], default=str).encode()).hexdigest()[:20]
    path = folder / f"{key[1].replace(' ', '-')}-{name}.npz"
    if (fit := _read(path)) is not None:
        return fit
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = None if nested else open(folder.parent / "one-at-a-time.lock", "a")  # noqa: SIM115
    except OSError as exc:
        log.warning(
            "catalog health: %s is not writable (%s); computing in this worker", folder, exc
        )
        return compute()
    with lock or contextlib.nullcontext():
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if (fit := _read(path)) is not None:
                return fit
        fit = compute()
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            with open(partial, "wb") as out:
                np.savez(out, **fit)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.warning("catalog health: %s not written (%s)", path, exc)
        return fit


def _read(path: Path) -> Fit | None:
    """The fit written at ``path``, or None (none yet, or unreadable: computed again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as exc:
        log.warning("catalog health: %s is unreadable (%s); computing it again", path, exc)
        return None


def _fits() -> _Fits:
    return current_app.extensions.setdefault("catalog_health", _Fits())


def _folder(version: str) -> Path | None:
    """Where bundle ``version``'s fits are kept for every worker of this server."""
    shared = context().settings.shared_dir
    return Path(shared, "catalog-health", version) if shared else None


def _fit(version: str, task: str, compute: Callable[[], Fit], *params) -> Fit | Response:
    """Bundle ``version``'s fit of ``task`` at ``params`` (``compute`` reads that bundle, as
    ``_served`` gave it: a model swap meanwhile does not mix two), or a 202 telling the client
    to come back (``_Fits.get``)."""
    wait = current_app.config.get("CATALOG_HEALTH_WAIT_SECONDS", WAIT_SECONDS)
    fit = _fits().get((version, task, *params), _folder(version), compute, wait)
    if fit is not None:
        return fit
    computing = Computing(model_version=version, retry_after=RETRY_AFTER)
    return Response(
        computing.model_dump_json(),
        status=202,
        mimetype=JSON,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def _served():
    """(version, item ids (N,), fused model, item filters) of the served bundle, or a 503."""
    holder = context().holder
    if not holder.ready:
        raise ApiError(503, "model_not_ready", "no model bundle loaded; run `recsys train`")
    state = holder.state
    recommender = state.recommender
    if len(recommender.item_ids) < 3:
        raise ApiError(409, "too_few_items", "catalog health needs at least 3 items")
    return state.version, recommender.item_ids, recommender.fused, recommender.filters


def _cards(ids) -> list[Item]:
    ids = [str(i) for i in ids]
    found = context().cards.cards(ids)
    return [Item(**card(i, found.get(i))) for i in ids]


@bp.get("/v1/admin/catalog/duplicates")
@endpoint(
    query=DuplicatesQuery,
    responses={200: Duplicates, 202: Computing},
    errors=(400, 401, 403, 409, 429, 503),
    scope=ADMIN,
)
def duplicates(query: DuplicatesQuery) -> Duplicates | Response:
    """Duplicate listings: sets of items whose vectors are above the threshold, confirmed by
    their photos when they have some"""
    version, ids, fused, filters = _served()
    engine, fits, folder = context().engine, _fits(), _folder(version)  # the fit runs elsewhere
    group_by, groups = _groups(filters, query.group_by)
    params = (query.threshold, query.verify, query.verified_threshold, group_by)

    def calibrated() -> float | None:
        """The verified score's default threshold (None: no photos), once per bundle."""
        fit = fits.now((version, "photo threshold"), folder, lambda: _calibrate(engine, ids))
        threshold = float(fit["threshold"])
        return None if np.isnan(threshold) else threshold

    def compute() -> Fit:
        checked = checked_pairs(
            engine,
            ids,
            fused.listing_vectors(),
            query.threshold,
            query.verify,
            query.verified_threshold,
            calibrated,
            groups=groups,
        )
        left, right, score = checked.left, checked.right, checked.score
        verified_at = checked.verified_threshold
        photo = {
            "score": checked.scored_by,
            "verified_threshold": np.nan if verified_at is None else verified_at,
            "verified_pairs": checked.verified,
            "skipped_pairs": checked.skipped,
            "grouped_pairs": checked.grouped,
        }
        best = np.full(len(ids), -np.inf, np.float32)
        np.maximum.at(best, np.r_[left, right], np.r_[score, score])
        rows, sizes = set_rows(duplicate_sets(len(ids), left, right))
        fit = {"rows": rows, "sizes": sizes, "best": best[rows], "threshold": checked.threshold}
        return {name: np.asarray(value) for name, value in (fit | photo).items()}

    fit = _fit(version, "duplicates", compute, *params)
    if isinstance(fit, Response):
        return fit
    live = _live(fit, _removed(len(ids)))  # (S,) the sets still to deduplicate
    page = np.flatnonzero(live)[query.offset : query.offset + query.limit]
    shown, verified_threshold = [], float(fit["verified_threshold"])
    for rows, best in zip(*_split(fit, page), strict=True):
        members = ids[rows].tolist()
        found = context().cards.cards(members)  # items removed since the fit are no listings
        members = [item for item in members if item in found]
        if len(members) < 2:  # its copies removed: nothing left to deduplicate
            continue
        cards = [Item(**card(item, found[item])) for item in members[:MAX_MEMBERS]]
        similarity = round(float(best.max()), 6)
        shown.append(DuplicateSet(size=len(members), items=cards, similarity=similarity))
    end, total = query.offset + query.limit, int(live.sum())
    return Duplicates(
        model_version=version,
        threshold=float(fit["threshold"]),
        score=str(fit["score"]),
        verified_threshold=None if np.isnan(verified_threshold) else verified_threshold,
        verified_pairs=int(fit["verified_pairs"]),
        skipped_pairs=int(fit["skipped_pairs"]),
        group_by=group_by or None,
        grouped_pairs=int(fit["grouped_pairs"]),
        total_sets=total,
        offset=query.offset,
        limit=query.limit,
        next=end if end < total else None,
        sets=shown,
    )


def _groups(filters, asked: str | None) -> tuple[str, np.ndarray | None]:
    """(the attribute naming each item's product, "" for none; (N,) each item's value
    number of it, -1 for none): the request's ``group_by`` ("" for none), else the server's
    (RECSYS_GROUP_BY); a 400 naming it when the bundle cannot group by it."""
    name = context().settings.group_by if asked is None else asked
    try:
        return name or "", filters.group_codes(name)
    except InvalidInput as exc:
        hint = "" if asked is not None else " (RECSYS_GROUP_BY)"
        raise bad_parameter("group_by", f"{exc}{hint}") from None


def _live(fit: Fit, removed: np.ndarray) -> np.ndarray:
    """(S,) bool: the duplicate sets that still have two items the catalog lists (a set
    whose copies were removed since the bundle is nothing left to deduplicate)."""
    sizes = fit["sizes"]
    if not len(sizes) or not removed.any():
        return np.ones(len(sizes), dtype=bool)
    live = np.add.reduceat(
        (~removed[fit["rows"]]).astype(np.int64), np.r_[0, np.cumsum(sizes)[:-1]]
    )
    return live >= 2


def _calibrate(engine, ids) -> Fit:
    threshold = CatalogPhotos(engine, ids).calibrate()
    return {"threshold": np.asarray(np.nan if threshold is None else threshold)}


def _split(fit: Fit, sets: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The rows of duplicates fit's ``sets`` (their numbers, ascending), and their best
    scores."""
    sizes = fit["sizes"]
    ends = np.cumsum(sizes)
    rows, best = [], []
    for s in sets.tolist():  # a page of sets: at most MAX_SETS
        part = slice(int(ends[s] - sizes[s]), int(ends[s]))
        rows.append(fit["rows"][part])
        best.append(fit["best"][part])
    return rows, best


@bp.get("/v1/admin/catalog/outliers")
@endpoint(
    query=OutliersQuery,
    responses={200: Outliers, 202: Computing},
    errors=(400, 401, 403, 409, 429, 503),
    scope=ADMIN,
)
def outliers(query: OutliersQuery) -> Outliers | Response:
    """Outliers: the items least like the others (a wrong photo, an odd product)"""
    version, ids, fused, _ = _served()

    def compute() -> Fit:
        # listings, not engagement: in the fused vectors the cf block's norm made the most
        # viewed items outliers; and each content block at one weight, not the similar
        # surface's, which may drop the photo (scripts/planted_outliers.py)
        scorer = OutlierScorer(OutlierConfig(k=query.k)).fit(fused.content_vectors())
        return {"scores": scorer.scores_, "k": np.asarray(scorer.k_)}

    if query.k is not None and query.k >= len(ids):
        raise bad_parameter("k", f"must be below the {len(ids)} items of the model")
    fit = _fit(version, "outliers", compute, query.k)
    if isinstance(fit, Response):
        return fit
    # items removed from the catalog since the bundle are left out, as the CLI leaves them:
    # a deleted item was the top outlier, with no title or photo
    scores, kept = fit["scores"], np.flatnonzero(~_removed(len(ids)))
    threshold = threshold_at(scores[kept], query.fpr)
    top = kept[top_rows(scores[kept], query.top)]
    items = [
        ScoredItem(
            **item.model_dump(),
            score=round(float(scores[row]), 6),
            flagged=bool(scores[row] > threshold),
        )
        for item, row in zip(_cards(ids[top]), top, strict=True)
    ]
    return Outliers(
        model_version=version,
        k=int(fit["k"]),
        threshold=threshold,
        flagged=int((scores[kept] > threshold).sum()),
        items=items,
    )


def _removed(n_items: int) -> np.ndarray:
    """(N,) bool: the served bundle's items removed from the catalog since it was trained
    (none known: a worker without a live catalog, or a bundle swapped since ``_served``)."""
    live = context().holder.state.recommender.live
    if live is None or len(live.removed) != n_items:
        return np.zeros(n_items, dtype=bool)
    return np.asarray(live.removed, dtype=bool)


@bp.get("/v1/admin/catalog/clusters")
@endpoint(
    query=ClustersQuery,
    responses={200: Clusters, 202: Computing},
    errors=(400, 401, 403, 409, 429, 503),
    scope=ADMIN,
)
def clusters(query: ClustersQuery) -> Clusters | Response:
    """Clusters: k-means groups of the catalog, their medoids and a map of the items"""
    version, ids, fused, filters = _served()  # one bundle's, whatever a swap does meanwhile

    def compute() -> Fit:
        vectors = fused.item_vectors_
        k = query.k if query.k is None else min(query.k, len(ids))
        fitted = Clusterer(ClusterConfig(k=k)).fit(vectors)
        rows, xy = _map(vectors)
        attributes = {
            name: (filters.labels(name), filters.postings[name].values) for name in filters.postings
        }
        named = describe_clusters(fitted.labels_, fitted.k_, attributes)
        return {
            "k": np.asarray(fitted.k_),
            "names": np.array([n[:2] if n else ("", "") for n in named], dtype=str).reshape(-1, 2),
            "shares": np.array([n[2] if n else np.nan for n in named], dtype=np.float64),
            "medoids": fitted.medoids_,
            "sizes": fitted.sizes_,
            "members": _first_members(fitted.labels_, fitted.k_, MAX_MEMBERS),
            "labels": fitted.labels_.astype(np.int32),
            "map_rows": rows,
            "map_xy": xy,
            "map_labels": fitted.labels_[rows],
        }

    fit = _fit(version, "clusters", compute, query.k)
    if isinstance(fit, Response):
        return fit
    # items removed from the catalog since the bundle are left out, as the CLI leaves them:
    # they were listed with no title or photo. A fit stored before labels were kept has none.
    removed, sizes = _removed(len(ids)), fit["sizes"]
    if "labels" in fit and removed.any():
        sizes = np.bincount(fit["labels"][~removed], minlength=len(sizes))
    groups = []
    for c, medoid in enumerate(fit["medoids"]):
        members = fit["members"][c]
        members = members[(members >= 0) & ~removed[np.maximum(members, 0)]]
        if medoid < 0 or not sizes[c] or not len(members):  # (or none left of its first 48)
            continue
        if removed[medoid]:  # the cluster's first remaining item stands for it
            medoid = members[0]
        medoid_card, *member_cards = _cards([ids[medoid], *ids[members[: query.members]]])
        size = int(sizes[c])
        attribute, value = fit["names"][c].tolist()  # "": no value names it
        groups.append(
            Cluster(
                cluster=c,
                size=size,
                attribute=attribute or None,
                value=value if attribute else None,
                share=float(fit["shares"][c]) if attribute else None,
                medoid=medoid_card,
                members=member_cards,
            )
        )
    points = [
        MapPoint(item_id=str(ids[r]), x=round(float(x), 4), y=round(float(y), 4), cluster=int(c))
        for r, (x, y), c in zip(fit["map_rows"], fit["map_xy"], fit["map_labels"], strict=True)
        if not removed[r]
    ]
    return Clusters(model_version=version, k=int(fit["k"]), clusters=groups, points=points)


def _first_members(labels: np.ndarray, k: int, most: int) -> np.ndarray:
    """(k, most) the first ``most`` rows of each cluster, -1 past its size."""
    rows = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[rows], np.arange(k))
    place = np.arange(len(rows)) - starts[labels[rows]]
    members = np.full((k, most), -1, np.int64)
    kept = place < most
    members[labels[rows][kept], place[kept]] = rows[kept]
    return members


def _map(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of rows and their coordinates (in [-1, 1]) on the vectors' two
    principal axes."""
    rows = np.arange(len(vectors))
    if len(rows) > MAX_MAP_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_MAP_POINTS, replace=False))
    x = np.asarray(vectors[rows], np.float64)
    x = x - x.mean(axis=0)
    _, _, axes = np.linalg.svd(x, full_matrices=False)  # (D', D)
    xy = x @ axes[:2].T if len(axes) >= 2 else np.c_[x @ axes[:1].T, np.zeros(len(x))]
    xy /= max(float(np.abs(xy).max()), 1e-12)
    return rows, xy


@bp.get("/catalog")
def page():
    """The catalog-health page (it asks for an admin key and calls the endpoints above)."""
    return current_app.send_static_file("catalog.html")
