"""How a user's content profile counts their history items, per content block: new items
ranked by the fused model's tabular (or image) block alone on the test split, with the
users' profiles made of their items' rows counted by confidence, once each, at most once, or
by log(1 + confidence), beside the content contender of the same block.

    .venv/bin/python scripts/content_profile_forms.py --database-url sqlite:///DB --seed N

Fits the fused contender of `recsys evaluate --split temporal --seed N` without its weights
stage (``validation_share`` 0: the blocks are the same, only the weights are not chosen),
then ranks the test users' cold items among themselves (the evaluation's cold-item
recall@10) by each block's profile under each form, and by the fitted model's own profiles
(``FusedModel.user_blocks_``). Prints cold-item recall@10 of each as JSON. Issue 13,
benchmarks/RESULTS.md session 61.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pandas as pd
from sqlalchemy import create_engine

from recsys.evaluation.contenders import ContentProfile, ItemContent
from recsys.evaluation.run import EvaluationConfig
from recsys.model.data import CatalogData, read_catalog
from recsys.model.fusion import CONTENT_BLOCKS, normalize_rows
from recsys.model.protocol import build_task, rank, restricted_per_user
from recsys.model.split import split_interactions
from recsys.model.training import fit_in_memory

K = 10
FORMS = {
    "confidence": lambda w: w,
    "once": np.sign,
    "at most once": lambda w: np.minimum(w, 1.0),
    "log(1 + confidence)": np.log1p,
}


class Profiles:
    """A contender for ``protocol.rank``: each fitted user's profile against every item."""

    name = "profiles"

    def __init__(self, users: pd.Index, profiles: np.ndarray, items: np.ndarray):
        self.users, self.profiles, self.items = users, profiles, items

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users.get_indexer(user_ids)
        out = np.asarray(self.profiles[np.maximum(rows, 0)] @ self.items.T, dtype=np.float32)
        out[rows < 0] = 0.0
        return out


def cold_recall(contender, task) -> float:
    _, cold = restricted_per_user(rank(contender, task, K).cold, task, task.cold, (K,))
    return round(float(cold[f"recall@{K}"].mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = EvaluationConfig(seed=args.seed)
    fitting = replace(config.fused, validation_share=0.0)
    data = read_catalog(create_engine(args.database_url))
    split = split_interactions(data.interactions, "temporal", config.holdout, args.seed)
    train = CatalogData(data.items, data.kinds, split.train)
    task = build_task(split.train, split.test, data.items["item_id"].to_numpy(dtype=str))
    content = ItemContent(fitting).content(train)
    fitted = fit_in_memory(train, fitting, content)
    fused, users = fitted.fused, pd.Index(fitted.cf.user_ids_)
    history = fitted.cf.user_items_.tocsr().astype(np.float32)
    results = {
        "users_holding_cold_items": int(
            task.heldout[:, task.cold].getnnz(axis=1).astype(bool).sum()
        )
    }
    for block in (b for b in CONTENT_BLOCKS if b in content.blocks and content.blocks[b].shape[1]):
        items = fused.item_blocks_[block]
        found = {
            f"content ({block}) contender": cold_recall(
                ContentProfile(block, content.blocks[block]).fit(train), task
            )
        }
        for form, counted in FORMS.items():
            weighted = history.copy()
            weighted.data = counted(weighted.data).astype(np.float32)
            profiles = normalize_rows(np.asarray(weighted @ items))
            found[form] = cold_recall(Profiles(users, profiles, items), task)
        found["the fitted model's"] = cold_recall(
            Profiles(users, fused.user_blocks_[block], items), task
        )
        results[block] = found
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
