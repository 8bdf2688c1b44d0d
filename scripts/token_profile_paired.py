"""Token profile forms against confidence-weighted profiles in one fitted model, paired per user.

    .venv/bin/python scripts/token_profile_paired.py --database-url sqlite:///DB --seed N \
        [--fit-with binary]

Fits the fused contender of `recsys evaluate --split temporal --seed N` with the token
profile form ``--fit-with`` (``FusionConfig.token_profile``, default "binary" as in session
8; the weights stage then chooses its weights with it; "auto" lets it choose the form too)
on the training part, then ranks the test users once per form of ``TOKEN_PROFILES`` (the
same weights, cold multipliers and item vectors; only the profiles differ). Prints, per form
other than "confidence", all-items recall@10 and cold-item recall@10 and the mean paired
difference (form - confidence) with its standard error (issue 13, benchmarks/RESULTS.md
sessions 8 and 9).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pandas as pd
from sqlalchemy import create_engine

from recsys.evaluation.contenders import ItemContent
from recsys.evaluation.run import EvaluationConfig
from recsys.model.data import CatalogData, read_catalog
from recsys.model.fusion import AUTO, TOKEN_PROFILES
from recsys.model.protocol import build_task, rank, restricted_per_user
from recsys.model.ranking import hit_matrix, per_user_metrics
from recsys.model.split import split_interactions
from recsys.model.training import fit_in_memory

K = 10


class Feed:
    """The fused feed score (index part plus token term) with given user token profiles."""

    def __init__(self, name, fused, user_ids, profiles):
        self.name, self.fused, self.profiles = name, fused, profiles
        self.users = pd.Index(user_ids)

    def scores(self, user_ids):
        rows = self.users.get_indexer(user_ids)
        dense = self.fused.user_vectors(rows) @ self.fused.item_vectors_.T  # (U, I)
        tokens = self.fused.token_scores(self.profiles[rows])
        return dense if tokens is None else dense + tokens


def per_user(feed: Feed, task) -> tuple[np.ndarray, np.ndarray]:
    """(U,) all-items recall@K and (H,) cold-item recall@K of the users holding cold items."""
    rankings = rank(feed, task, K)
    held = task.heldout
    warm = per_user_metrics(hit_matrix(rankings.all, held), held.getnnz(axis=1), (K,))
    _, cold = restricted_per_user(rankings.cold, task, task.cold, (K,))
    return warm[f"recall@{K}"], cold.get(f"recall@{K}", np.zeros(0))


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    diff = a - b
    error = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return {"form": a.mean(), "confidence": b.mean(), "diff": diff.mean(), "se": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-with", default="binary", choices=(AUTO, *TOKEN_PROFILES))
    args = parser.parse_args()
    config = EvaluationConfig(seed=args.seed)
    fusion = replace(config.fused.fusion, token_profile=args.fit_with)
    config = replace(config, fused=replace(config.fused, fusion=fusion))
    data = read_catalog(create_engine(args.database_url))
    split = split_interactions(data.interactions, "temporal", config.holdout, args.seed)
    train = CatalogData(data.items, data.kinds, split.train)
    task = build_task(split.train, split.test, data.items["item_id"].to_numpy(dtype=str))
    content = ItemContent(config.fused).content(train)
    fitted = fit_in_memory(train, config.fused, content)
    fused, cf = fitted.fused, fitted.cf
    fitted_with = fused.token_profile_
    scored = {}
    for form in TOKEN_PROFILES:
        fused.token_profile_ = form
        profiles = fused.history_token_profiles(cf.user_items_)
        scored[form] = per_user(Feed(form, fused, cf.user_ids_, profiles), task)
    fused.token_profile_ = fitted_with
    results = {"fitted_with": fitted_with}
    for form in TOKEN_PROFILES[1:]:
        results[form] = {}
        for j, part in enumerate(("all", "cold")):
            pair = paired(scored[form][j], scored["confidence"][j])
            results[form][part] = {k: round(float(v), 4) for k, v in pair.items()}
            results[form][part]["users"] = len(scored[form][j])
    results["weights"], results["cold_scale"] = fused.weights_, fused.cold_scale_
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
