"""Does a feed's fold-in give a stored user's factors back? And what do its reasons leave over?

For a seeded sample of the active bundle's users: the cosine and norm ratio of the collaborative
fold-in of the user's stored history at the weights a feed uses (``Recommender.history_with``
with no fresh event) against the user's stored factors, and the mean absolute "your overall
taste" share of their top-10 feed (what the reasons leave unexplained), for the stored feed and
for the feed after one fresh event on an item they had not seen.

    .venv/bin/python scripts/fold_in_check.py --database-url sqlite:///CATALOG.db --users 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from recsys.catalog.db import connect_current
from recsys.model.bundle import load_active

TASTE = "your overall taste"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recommender = load_active(connect_current(args.database_url))
    cf = recommender.cf
    rng = np.random.default_rng(args.seed)
    users = rng.choice(cf.user_ids_, min(args.users, len(cf.user_ids_)), replace=False)
    cosines, ratios, stored_taste, fresh_taste = [], [], [], []
    for user in users.tolist():
        row = recommender.user_index.get(user)
        history, weights = recommender.history_with(user, [])
        folded, stored = cf.fold_in(history, weights), cf.user_factors_[row]
        cosines.append(float(folded @ stored / np.linalg.norm(folded) / np.linalg.norm(stored)))
        ratios.append(float(np.linalg.norm(folded) / np.linalg.norm(stored)))
        stored_taste.append(_taste(recommender.recommend([user], k=10)))
        unseen = next(i for i in recommender.item_ids[rng.permutation(50)] if i not in history)
        history, weights = recommender.history_with(user, [str(unseen)])
        fresh = recommender.recommend_for_history(
            [history], k=10, weights=None if weights is None else [weights]
        )
        fresh_taste.append(_taste(fresh))
    report = {
        "users": len(users),
        "recency half-life": cf.recency_,
        "fold-in vs stored: cosine, min / median": [round(min(cosines), 4), _median(cosines)],
        "fold-in vs stored: norm ratio, median / max": [_median(ratios), round(max(ratios), 3)],
        "mean |overall taste| share, stored feed": round(float(np.mean(stored_taste)), 4),
        "mean |overall taste| share, one fresh event": round(float(np.mean(fresh_taste)), 4),
    }
    print(json.dumps(report, indent=1))


def _taste(results) -> float:
    """Mean over the listed items of |"your overall taste" share| / |score|."""
    shares = [
        abs(sum(r.share for r in reasons if r.label == TASTE)) / max(abs(score), 1e-9)
        for reasons, score in zip(results.because[0], results.scores[0], strict=True)
    ]
    return float(np.mean(shares)) if shares else 0.0


def _median(values) -> float:
    return round(float(np.median(values)), 4)


if __name__ == "__main__":
    main()
