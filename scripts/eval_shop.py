"""How well the active bundle knows the demo shop's hidden truth (labels.csv, shoppers.csv).

    .venv/bin/python scripts/eval_shop.py --data var/data/fashion-shop [--items 500] [--users 500]

similar P@10: for sampled items (new ones included; "cold" = no interactions), the share of
`similar_items`' top 10 that share the item's Fashion-MNIST class. recommend taste@10: for
sampled shoppers, the share of `recommend`'s top 10 in one of their hidden preferred classes.
Chance is about 0.1 and, for taste@10, the shopper's share of classes (1-3 of 10). Uses the
global database settings (RECSYS_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.catalog import connect
from recsys.model.bundle import load_active
from recsys.model.recommender import Recommender
from recsys.settings import Settings


def similar_precision(
    rec: Recommender, labels: pd.Series, items: np.ndarray, k: int, mode: str = "similar"
) -> float:
    found = rec.similar_items(list(items), k=k, mode=mode).ids
    hits = [
        np.mean(labels[ids].to_numpy() == labels[item])
        for item, ids in zip(items, found, strict=True)
    ]
    return float(np.mean(hits))


def taste_share(rec: Recommender, labels: pd.Series, shoppers: pd.DataFrame, k: int) -> float:
    found = rec.recommend(shoppers["user_id"].tolist(), k=k).ids
    tastes = [set(map(int, s.split("|"))) for s in shoppers["labels"]]
    return float(
        np.mean(
            [np.isin(labels[ids], list(t)).mean() for ids, t in zip(found, tastes, strict=True)]
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("var/data/fashion-shop"))
    parser.add_argument("--items", type=int, default=500, help="sampled query items")
    parser.add_argument("--users", type=int, default=500, help="sampled shoppers")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels = pd.read_csv(args.data / "labels.csv", dtype={"item_id": str}).set_index("item_id")
    labels = labels["label"]
    interacted = set(pd.read_csv(args.data / "interactions.csv", usecols=["item_id"])["item_id"])
    shoppers = pd.read_csv(args.data / "shoppers.csv", dtype=str)
    rec = load_active(connect(Settings.load().database_url))
    rng = np.random.default_rng(args.seed)
    items = rng.choice(labels.index.to_numpy(), size=min(args.items, len(labels)), replace=False)
    cold = np.array([item not in interacted for item in items])
    report = {"cold_items_sampled": int(cold.sum())}
    for mode in ("similar", "also"):
        suffix = "" if mode == "similar" else "_also"
        report[f"similar_p@10{suffix}"] = similar_precision(rec, labels, items, args.k, mode)
        for name, part in (("cold", items[cold]), ("warm", items[~cold])):
            report[f"similar_p@10{suffix}_{name}"] = similar_precision(
                rec, labels, part, args.k, mode
            )
    report |= {
        "recommend_taste@10": taste_share(
            rec,
            labels,
            shoppers.sample(min(args.users, len(shoppers)), random_state=args.seed),
            args.k,
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
