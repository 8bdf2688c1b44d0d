"""What the views share: settings, the catalog engine, the model holder, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from flask import current_app
from sqlalchemy import Engine

from recsys.model.recommender import Results
from recsys.serving import ModelHolder, ServingState
from recsys.settings import Settings
from services.metrics import Metrics


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    holder: ModelHolder
    metrics: Metrics


def context() -> ServiceContext:
    return current_app.extensions["recsys"]


def image_url(item_id: str) -> str:
    return f"/images/{quote(item_id, safe='')}"


def card(item_id: str, fields: dict | None) -> dict:
    """An item as the API shows it; ``fields`` from the catalog (None: not in the catalog)."""
    fields = fields or {"title": None, "in_stock": None, "has_image": False, "attributes": {}}
    return {
        "item_id": item_id,
        "title": fields["title"],
        "image_url": image_url(item_id) if fields["has_image"] else None,
        "in_stock": fields["in_stock"],
        "attributes": fields["attributes"],
    }


def ranked(state: ServingState, results: Results, query: int = 0) -> list[dict]:
    """One query's results as cards with scores, best first."""
    ids, scores = results.ids[query], results.scores[query]
    return [
        {**card(item_id, state.cards.get(item_id)), "score": round(float(score), 6)}
        for item_id, score in zip(ids, scores, strict=True)
    ]
