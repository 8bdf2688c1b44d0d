"""The weights stage of `recsys train`: block weights chosen on a validation slice.

Each user's latest ``validation_share`` of training interactions is held out, a collaborative
model is fitted on the rest, and every candidate of ``TrainConfig.grid`` is scored by the
evaluation protocol (``recsys.model.protocol``) on a seeded sample of users: warm recall@10
plus cold-item recall@10. The choice is returned; the config is left as it was.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.model.config import TrainConfig
from recsys.model.content import build_collaborative
from recsys.model.data import CatalogData
from recsys.model.fusion import FusedModel
from recsys.model.protocol import build_task, rank, score
from recsys.model.split import temporal_split

log = logging.getLogger(__name__)

K = 10


@dataclass(frozen=True)
class WeightChoice:
    """What the weights stage chose, and what the bundle reports of it: the validation
    metrics ("validation_recall@10", ...) and the choice, or why the stage was skipped."""

    weights: dict[str, float]
    cold_scale: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)


def choose_weights(
    data: CatalogData, content: dict[str, np.ndarray], config: TrainConfig, use_gpu: bool = False
) -> WeightChoice | None:
    """The best candidate of the grid, or None when the data cannot hold a slice out (no
    interactions, one user, ``validation_share`` 0): the config's weights then stand."""
    interactions = data.interactions
    if interactions.empty or config.validation_share <= 0 or interactions["user_id"].nunique() < 2:
        return None
    fit_part, val_part = temporal_split(interactions, config.validation_share)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = build_task(fit_part, val_part, item_ids).sample(config.validation_users, seed=0)
    if not len(task.user_ids):
        skipped = {"validation": "skipped: too few interactions per user to hold any out"}
        return WeightChoice(dict(config.fusion.weights), dict(config.fusion.cold_scale), skipped)
    cf = build_collaborative(fit_part, item_ids, config.cf, use_gpu)
    fused = FusedModel(config.fusion).fit(cf, content, len(item_ids))
    scorer = _Scorer(fused, cf.user_ids_)

    def evaluate(weights: dict[str, float], cold_scale: dict[str, float]) -> dict[str, float]:
        fused.set_weights(weights, cold_scale)
        result = score(rank(scorer, task, K), task, (K,), ())
        metrics = {f"recall@{K}": result["overall"][f"recall@{K}"]}
        if result["cold_items"]["users"]:
            metrics[f"cold_recall@{K}"] = result["cold_items"][f"recall@{K}"]
            metrics["cold_users"] = result["cold_items"]["users"]
        return metrics

    choice = _grid_search(evaluate, fused.layout_.dims, config)
    log.info("weights chosen on the validation slice: %s", choice.metrics)
    return choice


class _Scorer:
    """Scores of every item for external user ids, from the fused vectors (a contender)."""

    name = "validation"

    def __init__(self, fused: FusedModel, user_ids: np.ndarray):
        self.fused = fused
        self.users = pd.Index(user_ids)

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users.get_indexer(user_ids)
        return self.fused.user_vectors_[rows] @ self.fused.item_vectors_.T  # (U, I)


def _grid_search(evaluate, blocks: dict[str, int], config: TrainConfig) -> WeightChoice:
    """Block weights first (cold items at the config's scale), then, with ``search_cold``,
    cold items' multipliers under the chosen weights."""
    grid = config.grid
    options = {
        "tabular": grid.tabular if "tabular" in blocks else (0.0,),
        "image": grid.image if "image" in blocks else (0.0,),
        "popularity": grid.popularity,
    }
    cold_scale = {b: config.fusion.cold_scale.get(b, 1.0) for b in blocks}
    best = (-1.0, {}, {})
    for values in itertools.product(*options.values()):
        weights = {"cf": 1.0, **dict(zip(options, values, strict=True))}
        metrics = evaluate(weights, cold_scale)
        if _objective(metrics) > best[0]:
            best = (_objective(metrics), weights, metrics)
    objective, weights, metrics = best
    if grid.search_cold and f"cold_recall@{K}" in metrics:
        for cf, tab, pop in itertools.product(
            grid.cold_cf, grid.cold_tabular, grid.cold_popularity
        ):
            candidate = {**cold_scale, "cf": cf, "tabular": tab, "popularity": pop}
            found = evaluate(weights, candidate)
            if _objective(found) > objective:
                objective, cold_scale, metrics = _objective(found), candidate, found
    report = {f"validation_{k}": v for k, v in metrics.items()}
    return WeightChoice(
        weights, cold_scale, {**report, "weights": weights, "cold_scale": cold_scale}
    )


def _objective(metrics: dict[str, float]) -> float:
    """Warm plus cold-item recall on the validation slice (warm alone without cold items)."""
    return metrics[f"recall@{K}"] + metrics.get(f"cold_recall@{K}", 0.0)
