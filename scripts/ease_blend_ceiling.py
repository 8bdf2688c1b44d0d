"""How far the fused model could get on warm recall@10 with EASE^R beside it, at best.

    .venv/bin/python scripts/ease_blend_ceiling.py --database-url sqlite:///DB --seed N

On the evaluation's split (``recsys evaluate``'s defaults: temporal, 20% held out, seed N)
it fits the fused contender (what `recsys train` builds), the EASE^R contender (lambda chosen
on its validation slice) and the ALS contender, then scores blends of their per-user scores,
each standardised per user (zero mean, unit spread over the catalog), at several fixed
weights. The weights are not chosen on validation: every blend's recall@10 is read off the
test split, so the best row is a ceiling, an upper bound of what serving EASE^R beside the
fused vectors (e.g. as a low-rank block of the index) could add, not a result.
"""

from __future__ import annotations

import argparse

import numpy as np
from sqlalchemy import create_engine
from threadpoolctl import threadpool_limits

from recsys.evaluation.contenders import Fused, MatrixFactorization
from recsys.evaluation.neighbourhood import EASE
from recsys.evaluation.run import EvaluationConfig
from recsys.model.data import CatalogData, read_catalog
from recsys.model.protocol import build_task, rank, score
from recsys.model.split import split_interactions

BLEND_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


class Blend:
    """Per-user scores ``sum_j w_j z(scores_j)``, z standardising each user's row."""

    name = "blend"

    def __init__(self, parts: list[tuple[float, object]]):
        self.parts = parts

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        total = 0.0
        for weight, contender in self.parts:
            scores = np.asarray(contender.scores(user_ids), dtype=np.float64)
            spread = scores.std(axis=1, keepdims=True) + 1e-9
            total = total + weight * (scores - scores.mean(axis=1, keepdims=True)) / spread
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = EvaluationConfig(seed=args.seed)
    data = read_catalog(create_engine(args.database_url))
    split = split_interactions(
        data.interactions, config.split, config.holdout, config.seed, config.cutoff
    )
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = build_task(split.train, split.test, item_ids)
    train = CatalogData(data.items, data.kinds, split.train)

    def recall(contender) -> float:
        return score(rank(contender, task, 10), task, (10,), ())["overall"]["recall@10"]

    with threadpool_limits(1, "blas"):
        fused = Fused(config.fused).fit(train)
        ease = EASE(config.peers.ease_lambdas, seed=args.seed).fit(train)
        als = MatrixFactorization("als", config.peers).fit(train)
        rows = [("fused", recall(fused)), (f"EASE (lambda {ease.param_:g})", recall(ease))]
        rows += [("ALS", recall(als))]
        for weight in BLEND_WEIGHTS:
            rows.append((f"fused + {weight:g} x EASE", recall(Blend([(1, fused), (weight, ease)]))))
        for weight in BLEND_WEIGHTS[:3]:
            rows.append((f"EASE + {weight:g} x ALS", recall(Blend([(1, ease), (weight, als)]))))
    print(f"| seed {args.seed} | recall@10 |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value:.4f} |")


if __name__ == "__main__":
    main()
