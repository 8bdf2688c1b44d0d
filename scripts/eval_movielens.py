"""Warm and cold-item recall@10 on MovieLens for the fused recommender and its peers.

Protocol: each user's latest 20% of ratings (by timestamp, floor) are held out; every model
trains on the rest. recall@10 = |top-10 ∩ held-out| / min(10, |held-out|), averaged over
users; training items are never recommended.
- warm: all catalog items are ranked (cold ones included), against all held-out items;
- cold: only items with no training interactions are ranked, for users who hold such items
  out, against those held-out cold items.

    .venv/bin/python scripts/eval_movielens.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.datasets.movielens import load_movielens
from recsys.model.data import CatalogData
from recsys.model.split import evaluate_scores, heldout_sets, temporal_split
from recsys.model.training import TrainConfig, fit_in_memory


def movielens_catalog() -> tuple[CatalogData, pd.DataFrame]:
    items, ratings = load_movielens()
    items = items.assign(
        item_id=items["item_id"].astype(str),
        image_path=None,
        in_stock=True,
        year=items["year"].astype("float64"),
    )[["item_id", "title", "image_path", "in_stock", "year", "genres"]]
    interactions = pd.DataFrame(
        {
            "user_id": ratings["user_id"].astype(str),
            "item_id": ratings["item_id"].astype(str),
            "event": "rating",
            "weight": ratings["rating"].astype(float),
            "timestamp": pd.to_datetime(ratings["timestamp"], unit="s"),
        }
    )
    kinds = {"year": "numeric", "genres": "multi"}
    return CatalogData(items=items, kinds=kinds, interactions=interactions), interactions


def peers(train: pd.DataFrame, users_all, item_ids, seed: int):
    """Score functions of popularity, plain implicit ALS (64 factors) and item-kNN cosine."""
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender

    u = pd.Index(users_all).get_indexer(train["user_id"])
    i = pd.Index(item_ids).get_indexer(train["item_id"])
    X = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(users_all), len(item_ids)))
    X.sum_duplicates()
    X.data[:] = 1.0
    pop = np.asarray(X.sum(axis=0)).ravel()
    als = AlternatingLeastSquares(factors=64, random_state=seed).fit(X, show_progress=False)
    als = als or _fitted(AlternatingLeastSquares(factors=64, random_state=seed), X)
    knn = CosineRecommender(K=100)
    knn.fit(X, show_progress=False)
    rng = np.random.default_rng(seed)
    return X, {
        "popularity": lambda rows: np.tile(pop, (len(rows), 1)),
        "random": lambda rows: rng.random((len(rows), X.shape[1])),
        "implicit ALS (64 factors)": lambda rows: _als_scores(als, X, rows),
        "item-kNN cosine (K=100)": lambda rows: np.asarray((X[rows] @ knn.similarity).todense()),
    }


def _fitted(model, X):
    model.fit(X, show_progress=False)
    return model


def _als_scores(model, X, rows):
    return model.user_factors[rows] @ model.item_factors.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data, interactions = movielens_catalog()
    train, test = temporal_split(interactions, 0.2)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    users_all = np.sort(interactions["user_id"].unique()).astype(str)
    rows = {}
    with threadpool_limits(1, "blas"):
        X, scorers = peers(train, users_all, item_ids, args.seed)
        cold = np.asarray(X.getnnz(axis=0) == 0)
        users, held = heldout_sets(test, users_all, item_ids)
        for name, score in scorers.items():
            rows[name] = evaluate_scores(score, users, held, X, cold)
        start = time.perf_counter()
        config = TrainConfig()
        config.cf.random_state = args.seed
        fused, parts = fit_in_memory(CatalogData(data.items, data.kinds, train), config)
        seconds = time.perf_counter() - start
        cf = parts.cf
        # The fused model's users are the training users; map evaluation rows onto them.
        to_cf = pd.Index(cf.user_ids_).get_indexer(users_all[users])
        seen = cf.user_items_[to_cf]
        rows["fused (this work)"] = evaluate_scores(
            lambda r: fused.user_vectors_[to_cf[r]] @ fused.item_vectors_.T,
            np.arange(len(users)), held, seen, fused.cold_,
        )  # fmt: skip
    rows["fused (this work)"]["fit_seconds"] = round(seconds, 1)
    print(f"weights {fused.weights_} cold_scale {fused.cold_scale_}")
    print(f"validation {parts.metrics}")
    print(f"{'model':32s} {'recall@10':>10s} {'cold recall@10':>15s}")
    for name, metrics in rows.items():
        print(f"{name:32s} {metrics['recall@10']:10.4f} {metrics['cold_recall@10']:15.4f}")
    print(f"users {len(users)}, cold users {rows['random']['cold_users']}, cold items {cold.sum()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
