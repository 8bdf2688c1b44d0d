"""What reserving feed places for new items costs and gives, on the temporal split.

    .venv/bin/python scripts/new_item_slots.py --database-url sqlite:///DB --seed N \
        [--slots 0,1,2] [--k 10]

Fits the fused contender of `recsys evaluate --split temporal --seed N` on the training part
and ranks the test users' items. Then, for each number of reserved places n, a feed lists its
top k, except that when fewer than n of them are new items (no training interaction: the
evaluation's cold items), the lowest-placed others give way to the user's best new items
not listed yet (``recsys.model.ranking.reserved_places``, what the service does with
``new_items``). Prints, per n: all-items recall@k and nDCG@k of the test users, the share of
feeds showing at least one new item, how many distinct new items are shown, and the share of
held-out new items recalled, with the paired difference to n = 0 and one standard error.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sqlalchemy import create_engine

from recsys.evaluation.contenders import Fused, ItemContent
from recsys.evaluation.run import EvaluationConfig
from recsys.model.data import CatalogData, read_catalog
from recsys.model.protocol import build_task, rank
from recsys.model.ranking import hit_matrix, per_user_metrics, reserved_places
from recsys.model.split import split_interactions


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=ints, default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    evaluation = EvaluationConfig(seed=args.seed)
    config = evaluation.fused
    data = read_catalog(create_engine(args.database_url))
    split = split_interactions(data.interactions, "temporal", evaluation.holdout, args.seed)
    train = CatalogData(data.items, data.kinds, split.train)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    fused = Fused(config, ItemContent(config)).fit(train)
    task = build_task(split.train, split.test, item_ids)
    k = args.k
    rankings = rank(fused, task, k)
    held = task.heldout
    sizes = held.getnnz(axis=1)
    cold_held = held[:, task.cold]
    holding = cold_held.getnnz(axis=1) > 0
    report = {
        "users": len(task.user_ids),
        "new_items": int(task.cold.sum()),
        "users_holding_new_items": int(holding.sum()),
        "held_out_share_on_new_items": round(float(cold_held.nnz / max(held.nnz, 1)), 4),
        "slots": {},
    }
    base = None
    for n in args.slots:
        top, best_new = rankings.all, rankings.cold
        is_listed = (best_new[:, :, None] == top[:, None, :]).any(axis=2)
        places = reserved_places(
            top >= 0, task.cold[np.maximum(top, 0)], (best_new >= 0) & ~is_listed, n
        )
        both = np.hstack([top, best_new])
        listed = np.where(places >= 0, np.take_along_axis(both, np.maximum(places, 0), 1), -1)
        hits = hit_matrix(listed, held)
        metrics = per_user_metrics(hits, sizes, (k,))
        recall = metrics[f"recall@{k}"]
        new_hits = hit_matrix(np.where(task.cold[np.maximum(listed, 0)], listed, -1), held)
        shown = np.unique(listed[(listed >= 0) & task.cold[np.maximum(listed, 0)]])
        row = {
            f"recall@{k}": round(float(recall.mean()), 4),
            f"ndcg@{k}": round(float(metrics[f"ndcg@{k}"].mean()), 4),
            "feeds_with_a_new_item": round(
                float((task.cold[np.maximum(listed, 0)] & (listed >= 0)).any(axis=1).mean()), 4
            ),
            "new_items_shown": len(shown),
            "held_out_new_items_recalled": round(float(new_hits.sum() / max(cold_held.nnz, 1)), 4),
        }
        if base is None:
            base = recall
        else:
            diff = recall - base
            row["recall_minus_none"] = {
                "diff": round(float(diff.mean()), 4),
                "se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
            }
        report["slots"][str(n)] = row
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
