"""ALS alone under each confidence form: warm recall@10 on the temporal split (issue 13).

    .venv/bin/python scripts/als_confidence_forms.py DB [DB ...]

DB: a catalog's SQLite file (its path, not a URL); several are run in turn.

Per catalog (a SQLite file) and seed 0 and 1: implicit ALS with the current form
(c = alpha * w, CFConfig's) and with Hu's c = 1 + a * w for a in 1, 4, 16, 40 (the same
confidence matrix, its data mapped, at implicit's alpha 1), each scored on the held-out
20% by the evaluation protocol. Prints one line per form: both seeds and their mean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
from sqlalchemy import create_engine
from threadpoolctl import threadpool_limits

from recsys.model.cf import CFConfig, CollaborativeModel, implicit_model
from recsys.model.data import read_catalog
from recsys.model.protocol import build_task, rank, score
from recsys.model.split import split_interactions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_spark import FactorScores

HU_ALPHAS = (1, 4, 16, 40)


def recalls(db: str, seeds=(0, 1)) -> dict[str, list[float]]:
    data = read_catalog(create_engine(f"sqlite:///{db}"))
    split = split_interactions(data.interactions, "temporal", 0.2, 0)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = build_task(split.train, split.test, item_ids)
    out: dict[str, list[float]] = {}
    with threadpool_limits(1, "blas"):
        for seed in seeds:
            config = CFConfig(random_state=seed)
            model = CollaborativeModel(config).fit(split.train, item_ids)
            variants = {"alpha*w": None}
            variants.update({f"1+{a}w": a for a in HU_ALPHAS})
            for name, a in variants.items():
                if a is None:
                    users, items = model.user_factors_, model.item_factors_
                else:
                    matrix = model.user_items_.copy()
                    matrix.data = (1 + a * matrix.data).astype(np.float32)
                    als = implicit_model(config)
                    als.fit(matrix, show_progress=False)
                    users, items = als.user_factors, als.item_factors * model.warm_items_[:, None]
                scorer = FactorScores(name, model.user_ids_, users, items)
                metrics = score(rank(scorer, task, 10), task, (10,), (5, 20))
                out.setdefault(name, []).append(metrics["overall"]["recall@10"])
    return out


@click.command(help=__doc__)
@click.argument("dbs", metavar="DB...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))  # fmt: skip
def main(dbs: tuple[str, ...]) -> None:
    for db in dbs:
        for name, values in recalls(db).items():
            per_seed = " ".join(f"{v:.4f}" for v in values)
            print(f"{Path(db).name} {name:10s} {per_seed} mean {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
