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

import numpy as np
import pandas as pd
from cold_ranking_parts import Ranker, cold_recall, fitted_without_weights  # this folder's

from recsys.evaluation.contenders import ContentProfile
from recsys.model.fusion import CONTENT_BLOCKS, normalize_rows

FORMS = {
    "confidence": lambda w: w,
    "once": np.sign,
    "at most once": lambda w: np.minimum(w, 1.0),
    "log(1 + confidence)": np.log1p,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, task, content, fitted = fitted_without_weights(args.database_url, args.seed)
    fused, users = fitted.fused, pd.Index(fitted.cf.user_ids_)
    history = fitted.cf.user_items_.tocsr().astype(np.float32)

    def recall(contender) -> float:
        return round(float(cold_recall(contender, task).mean()), 4)

    def by(profiles: np.ndarray, items: np.ndarray) -> Ranker:
        return Ranker(users, lambda rows: profiles[rows] @ items.T)

    results = {}
    for block in (b for b in CONTENT_BLOCKS if b in content.blocks and content.blocks[b].shape[1]):
        items = fused.item_blocks_[block]
        contender = ContentProfile(block, content.blocks[block]).fit(train)
        found = {f"content ({block}) contender": recall(contender)}
        for form, counted in FORMS.items():
            weighted = history.copy()
            weighted.data = counted(weighted.data).astype(np.float32)
            found[form] = recall(by(normalize_rows(np.asarray(weighted @ items)), items))
        found["the fitted model's"] = recall(by(fused.user_blocks_[block], items))
        results[block] = found
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
