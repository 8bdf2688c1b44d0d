"""How close a served feed's token candidates come to the exact ranking, and what they cost.

    python scripts/bench_token_candidates.py BUNDLE_DIR [--users 300] [--k 20]

A feed ranks the union of the index's pool and the items its user's token profile scores
highest (``recsys.model.recommender.token_candidates``) exactly; the offline evaluation scores
every item. For a sample of the bundle's users and for each token budget and reach (how many
times the pool each part brings), prints the share of the exact top-k (fused score plus token
term over the whole catalog, seen items left out) the served ranking finds, and the
milliseconds per feed of that part (index search, candidates, exact scoring of the union).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import scipy.sparse as sp

from recsys.model import recommender as served
from recsys.model.bundle import load_recommender
from recsys.model.ranking import top_k_finite


@click.command(help=__doc__.split("\n\n")[0])
@click.argument(
    "bundle", metavar="BUNDLE_DIR", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--users", "n_users", type=int, default=300, show_default=True, help="Users sampled (seed 0)."
)
@click.option("--k", type=int, default=20, show_default=True, help="Feed length.")
@click.option(
    "--budgets",
    default="200000,20000,5000",
    show_default=True,
    help="Token budgets, comma-separated.",
)
@click.option(
    "--reaches", default="1,2,4", show_default=True, help="Pool multipliers, comma-separated."
)
def main(bundle: Path, n_users: int, k: int, budgets: str, reaches: str) -> None:
    recommender = load_recommender(bundle)
    fused = recommender.fused
    if not fused.token_weight:
        raise SystemExit(f"{bundle}: the feed gives the token term no weight; nothing to measure")
    profiles = fused.user_tokens_
    rng = np.random.default_rng(0)
    users = rng.choice(profiles.shape[0], min(n_users, profiles.shape[0]), replace=False)
    exact, seen = [], []
    for user in users:
        mine = recommender.cf.user_items_[user].indices
        scores = fused.item_vectors_ @ fused.user_vectors(user)
        scores += fused.token_scores(profiles[user])[0]
        scores[mine] = -np.inf
        exact.append(set(top_k_finite(scores[None], k)[0].tolist()))
        seen.append(mine)
    print(f"{bundle.name}: {len(recommender.item_ids)} items, {fused.token_postings.nnz} item "
          f"tokens, {len(users)} users, top-{k}")  # fmt: skip
    for budget in (int(b) for b in budgets.split(",")):
        recommender.token_budget = budget
        for reach in (int(r) for r in reaches.split(",")):
            served.TOKEN_REACH = reach
            found, seconds = 0, 0.0
            for user, best, mine in zip(users, exact, seen, strict=True):
                query = fused.user_vectors(user)
                profile = sp.csr_matrix(profiles[user], dtype=np.float32)
                start = time.perf_counter()
                pool = recommender.index.search(query, recommender._reach(k), None, [mine])
                rows, _, _ = recommender._with_tokens(profile, query, pool, None, mine, k)
                seconds += time.perf_counter() - start
                found += len(best & set(rows.tolist()))
            print(f"budget {budget:>9,} reach {reach}: {found / (k * len(users)):.4f} of the "
                  f"exact top-{k}, {seconds / len(users) * 1e3:.2f} ms per feed")  # fmt: skip


if __name__ == "__main__":
    main()
