"""What the views share: settings, the catalog engine, the model holder, metrics; item cards
as the API shows them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import pydantic_core
from flask import Response, current_app, request
from sqlalchemy import Engine

from recsys.catalog.reads import CardCache, ItemCard
from recsys.model import explain
from recsys.model.recommender import Results
from recsys.serving import ModelHolder, ServingState
from recsys.settings import Settings
from services.answers import AnswerCache, Carried
from services.contract import JSON
from services.metrics import Metrics


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    holder: ModelHolder
    metrics: Metrics
    cards: CardCache  # every card the API shows comes from here
    answers: AnswerCache  # similar items and feeds already answered (services.answers)
    # Visual searches one process decodes and encodes at once: with 2 threads per worker,
    # one is always left for the other endpoints, and one decoded photo is in memory.
    image_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(1))


def context() -> ServiceContext:
    return current_app.extensions["recsys"]


def answer_key(ctx: ServiceContext, state: ServingState, *inputs: str) -> tuple | None:
    """The key this request's answer is kept under (``services.answers``): its path and query
    string, the bundle, the catalog generations of its live delta and of the item cards, and
    ``inputs`` the answer also depends on; None when the cards' generation is not followed."""
    cards = ctx.cards.followed_generation()
    if cards is None:
        return None
    live = state.recommender.live
    served = (state.version, -1 if live is None else live.generation, cards)
    return (request.path, request.query_string, *served, *inputs)


def kept_answer(
    ctx: ServiceContext, key: tuple | None, compute: Callable[[], dict], endpoint: str
) -> Response:
    """The JSON answer kept under ``key`` (``answer_key``), or ``compute()``'s, serialized and
    kept under it; counted by ``endpoint`` and where it came from."""
    body = ctx.answers.get(key)
    source = "kept"
    if body is None:
        body, source = pydantic_core.to_json(compute()), "computed"
        ctx.answers.put(key, body)
    ctx.metrics.child(ctx.metrics.answers, endpoint, source).inc()
    return Response(body, mimetype=JSON)


def carried_answer(
    ctx: ServiceContext,
    state: ServingState,
    endpoint: str,
    compute: Callable[[], tuple[dict, Sequence[str], float, bytes]],
    unchanged: Callable[[Any, Carried], bool],
) -> Response:
    """An answer kept across follow steps (``services.answers``): the one kept under this
    request is served while the delta and the cards are at its generation, or when
    ``unchanged(delta, kept)`` says no step since could have changed it (it is then kept at
    the new generation). ``compute()`` gives (the answer, the items it lists, its lowest
    score or -inf, what else ``unchanged`` reads). Without a followed generation both share,
    it is kept by the exact generations (``answer_key``)."""
    live = state.recommender.live
    if live is None or ctx.cards.followed_generation() != live.generation:
        return kept_answer(ctx, answer_key(ctx, state), lambda: compute()[0], endpoint)
    key = (request.path, request.query_string, state.version)
    kept = ctx.answers.get(key)

    def counted(*labels: str):
        return ctx.metrics.child(ctx.metrics.answers, *labels)

    if isinstance(kept, Carried) and kept.generation == live.generation:
        counted(endpoint, "kept").inc()
        return Response(kept.body, mimetype=JSON)
    if isinstance(kept, Carried) and unchanged(live, kept):
        ctx.answers.put(key, kept._replace(generation=live.generation))
        counted(endpoint, "carried").inc()
        return Response(kept.body, mimetype=JSON)
    answer, listed, floor, considered = compute()
    body = pydantic_core.to_json(answer)
    ctx.answers.put(key, Carried(body, live.generation, tuple(listed), floor, considered))
    counted(endpoint, "computed").inc()
    return Response(body, mimetype=JSON)


def image_url(item_id: str) -> str:
    return f"/images/{quote(item_id, safe='')}"


def card(item_id: str, found: ItemCard | None) -> dict[str, Any]:
    """The fields of an ``Item`` answer; ``found`` None: the model knows the item, the
    catalog does not (any more)."""
    if found is None:
        return {
            "item_id": item_id,
            "title": None,
            "image_url": None,
            "in_stock": None,
            "attributes": {},
        }
    return {
        "item_id": item_id,
        "title": found.title,
        "image_url": image_url(item_id) if found.has_image else None,
        "in_stock": found.in_stock,
        "attributes": found.attributes,
    }


def ranked(cards: CardCache, results: Results, query: int = 0) -> list[dict[str, Any]]:
    """One query's results as cards with scores and reasons (history items titled), in the
    order the model listed them: ``RankedItem``s as plain data, which the view's answer is
    serialized from as they are (``services.contract``; a feed holds about a hundred reasons)."""
    ids, scores = results.ids[query], results.scores[query]
    because = results.because[query] if results.because else [[] for _ in ids]
    mentioned = {r.item_id for reasons in because for r in reasons if r.item_id is not None}
    found = cards.cards(list(dict.fromkeys([*ids, *mentioned])))
    if not mentioned <= found.keys():  # an item removed since the bundle: no title to show
        because = explain.without_removed(because, found.keys())
    titles = {item_id: found[item_id].title for item_id in mentioned if item_id in found}
    return [
        {
            **card(item_id, found.get(item_id)),
            "score": round(score, 6),
            "because": [
                {
                    "label": label,
                    "share": round(float(share), 6),
                    "item_id": source,
                    "title": titles.get(source),  # None for reasons without an item
                }
                for label, share, source in reasons
            ],
        }
        for item_id, score, reasons in zip(ids, np.asarray(scores).tolist(), because, strict=True)
    ]
