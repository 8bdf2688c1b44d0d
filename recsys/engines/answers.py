"""The service's answers as Parquet, for a shop's other systems (a nightly mail, ads, search).

``export_feeds`` writes each user's home feed as ``GET /users/{id}/recommendations`` answers
it (``recsys.serving.home_feed``: the bundle, the catalog's item changes, the user's events
since), ``export_similar`` each item's similar items as ``GET /items/{id}/similar`` does
(``Recommender.similar_items`` of the served recommender). Both write ``part-NNNNN.parquet``
files of ``IDS_PER_PART`` users or items each (memory stays that of one part, whatever the
catalog's size) and ``_manifest.json`` (the ``_`` keeps Spark and pyarrow readers off it) into
a folder beside ``out`` renamed to it at the end: a failed or interrupted export leaves
``out`` as it was (``recsys.engines.events``).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine
from tqdm import tqdm

from recsys.catalog.changes import generation
from recsys.catalog.models import utcnow
from recsys.catalog.reads import list_items, list_users
from recsys.engines.events import check_out, replace_folder, staging_folder
from recsys.errors import UnknownItem
from recsys.model.diversity import DEFAULT_DIVERSITY
from recsys.model.recommender import Recommender, Results
from recsys.serving import FeedRequest, ServingState, home_feed

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
# Users (items) a part file holds: its rows (k each) are what the export keeps in memory.
IDS_PER_PART = 10_000
# Users or items read from the catalog a query.
PAGE = 1_000
# Items asked of ``similar_items`` at a time.
SIMILAR_BATCH = 256
# Skipped item ids the manifest names (all are counted).
NAMED_SKIPPED = 100

FEED_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),  # 1: the first of the feed
        ("item_id", pa.string()),
        ("score", pa.float64()),
        ("fallback", pa.bool_()),  # the popularity fallback: a user without history
    ]
)
SIMILAR_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("rank", pa.int32()),
        ("similar_item_id", pa.string()),
        ("score", pa.float64()),
    ]
)


@dataclass(frozen=True)
class SimilarRequest:
    """What each item's similar items are asked for (the HTTP API's query parameters)."""

    k: int = 12
    mode: str = "similar"  # or "also": shoppers who viewed this also viewed
    diversity: float = DEFAULT_DIVERSITY  # MMR λ, 0 to 1
    group_by: str | None = None  # one item per value of this attribute
    # attribute filters, as the HTTP API's query parameters take them (price: "100..500")
    filters: dict[str, Any] | None = None


def catalog_users(engine: Engine, page: int = PAGE) -> Iterator[str]:
    """Every user id of the catalog in catalog order, ``page`` a query (keyed pages)."""
    after = None
    while True:
        found = list_users(engine, 0, page, after)
        yield from (user.user_id for user in found.users)
        if found.next is None:
            return
        after = found.next


def catalog_items(engine: Engine, page: int = PAGE) -> Iterator[str]:
    """Every item id of the catalog in catalog order, ``page`` a query (keyed pages)."""
    after = None
    while True:
        found = list_items(engine, 0, page, after=after)
        yield from (card.item_id for card in found.cards)
        if found.next is None:
            return
        after = found.next


def export_feeds(
    state: ServingState,
    engine: Engine,
    out: Path,
    user_ids: Iterable[str] | None = None,
    request: FeedRequest | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict:
    """Write the home feed of each of ``user_ids`` (default: every user of the catalog) from
    ``state`` to ``out``; returns what ``_manifest.json`` holds. A user the catalog does not
    have gets the popularity fallback, as the service gives it."""
    request = request or FeedRequest(k=10)
    users = catalog_users(engine) if user_ids is None else user_ids
    counts = {"users": 0}

    def part(batch: list[str]) -> pa.Table:
        columns: dict[str, list] = {name: [] for name in FEED_SCHEMA.names}
        for user_id in batch:
            results = home_feed(state, engine, user_id, request)
            _add(columns, user_id, results, fallback=bool(results.fallback[0]))
        counts["users"] += len(batch)
        return pa.table(columns, schema=FEED_SCHEMA)

    options = asdict(request)
    head = {"kind": "feeds", "bundle_version": state.version, "k": request.k, "options": options}
    return _export(out, overwrite, engine, users, part, head, counts, show_progress, "users")


def export_similar(
    recommender: Recommender,
    engine: Engine,
    out: Path,
    item_ids: Iterable[str] | None = None,
    request: SimilarRequest | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict:
    """Write the similar items of each of ``item_ids`` (default: every item of the catalog)
    from ``recommender`` (``recsys.serving.served_recommender``) to ``out``; returns what
    ``_manifest.json`` holds. An item the model does not know or that was removed is skipped
    and counted (``skipped``), not an error."""
    request = request or SimilarRequest()
    items = catalog_items(engine) if item_ids is None else item_ids
    counts: dict = {"items": 0, "skipped": 0, "skipped_ids": []}

    def part(batch: list[str]) -> pa.Table:
        columns: dict[str, list] = {name: [] for name in SIMILAR_SCHEMA.names}
        for start in range(0, len(batch), SIMILAR_BATCH):
            asked = batch[start : start + SIMILAR_BATCH]
            for item_id, results in _similar(recommender, asked, request, counts):
                _add(columns, item_id, results)
        counts["items"] += len(batch)
        return pa.table(columns, schema=SIMILAR_SCHEMA)

    options = asdict(request)
    head = {"kind": "similar", "bundle_version": recommender.version, "k": request.k}
    head["options"] = options
    return _export(out, overwrite, engine, items, part, head, counts, show_progress, "items")


def _similar(recommender: Recommender, item_ids: list[str], request: SimilarRequest, counts):
    """(item id, its one-query ``Results``) of those of ``item_ids`` the model answers for:
    the batch in one call, or item by item when one of them is unknown (``counts`` those)."""
    ask = dict(k=request.k, mode=request.mode, diversity=request.diversity)
    ask["group_by"], ask["filters"] = request.group_by, request.filters
    try:
        results = recommender.similar_items(item_ids, **ask)
        yield from ((item_id, _query(results, n)) for n, item_id in enumerate(item_ids))
        return
    except UnknownItem:
        pass
    for item_id in item_ids:
        try:
            yield item_id, recommender.similar_items([item_id], **ask)
        except UnknownItem as exc:
            counts["skipped"] += 1
            if len(counts["skipped_ids"]) < NAMED_SKIPPED:
                counts["skipped_ids"].append(item_id)
            log.info("skipped item %r: %s", item_id, exc)


def _query(results: Results, n: int) -> Results:
    """Query ``n`` of ``results`` alone (ids, scores, fallback)."""
    fallback = results.fallback[n : n + 1] if results.fallback else [False]
    return Results([results.ids[n]], [results.scores[n]], fallback)


def _add(columns: dict[str, list], query: str, results: Results, **constant) -> None:
    """Append the one query of ``results`` to ``columns`` as rows: the query (the first
    column), rank, the listed item (the third) and score, and ``constant`` columns."""
    ids = results.ids[0]
    asked, _, listed = list(columns)[:3]
    columns[asked].extend([query] * len(ids))
    columns["rank"].extend(range(1, len(ids) + 1))
    columns[listed].extend(ids)
    columns["score"].extend(np.asarray(results.scores[0], dtype=np.float64).tolist())
    for name, value in constant.items():
        columns[name].extend([value] * len(ids))


def write_part(table: pa.Table, path: Path) -> None:
    """One part file."""
    pq.write_table(table, path)


def _export(
    out: Path,
    overwrite: bool,
    engine: Engine,
    ids: Iterable[str],
    part: Callable[[list[str]], pa.Table],
    head: dict,
    counts: dict,
    show_progress: bool,
    unit: str,
) -> dict:
    """Write ``part(batch)`` of each ``IDS_PER_PART`` of ``ids`` into a staging folder, then
    the manifest, then rename it to ``out``."""
    out = Path(out)
    check_out(out, overwrite, MANIFEST, lambda name: name.startswith("part-"))
    items_generation = generation(engine)
    bar = tqdm(desc="exporting", unit=f" {unit}", unit_scale=True, disable=not show_progress)
    staging = staging_folder(out)
    try:
        rows, n = 0, 0
        for n, batch in enumerate(_batches(ids, IDS_PER_PART)):
            table = part(batch)
            write_part(table, staging / f"part-{n:05d}.parquet")
            rows += table.num_rows
            bar.update(len(batch))
        if rows == 0 and not any(staging.iterdir()):  # readers see the columns
            write_part(part([]), staging / "part-00000.parquet")
        summary = {**head, "rows": rows, **counts, "items_generation": items_generation}
        summary["written_at"] = utcnow().isoformat()
        (staging / MANIFEST).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        replace_folder(staging, out)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %d rows of %s to %s", rows, head["kind"], out)
    return summary


def _batches(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(ids)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
