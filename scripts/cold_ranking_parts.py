"""What ranks new items on the test split: the fused model's cold-item parts against the TF-IDF
profile contender, paired per user.

    .venv/bin/python scripts/cold_ranking_parts.py --database-url sqlite:///DB --seed N \
        [--ratios 0.3,1,3,10] [--alphas 3,10,30,100] [--tabular-ratios 0.25,1,2]

Fits the fused contender of `recsys evaluate --split temporal --seed N` without its weights
stage (``validation_share`` 0: the fitted blocks are the same, only the weights are not
chosen), then ranks the test users' cold items (items without training interactions, among
themselves, as the evaluation's cold-item recall@10 does) by: the contender; the token term
alone under each profile form; the collaborative block cold items get from their content
(the ridge prediction) alone, at the config's penalty (``FusionConfig.content_alpha``) and
refitted at each of ``--alphas``; that block plus ``ratio`` times the token term, per form;
the content (tabular) contender (the catalog's tabular block, binary profiles), and the token
term (binary) plus ``--tabular-ratios`` times it. Prints cold-item recall@10 of each and its
mean paired difference to the contender with one standard error, and checks that the token
term alone under "binary" profiles is the contender's ranking (same item tokens, profiles and
users). Issue 13, benchmarks/RESULTS.md sessions 10 and 39.
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
from recsys.model.fusion import (
    TOKEN_PROFILES,
    cold_features,
    fit_cold_predictor,
    normalize_rows,
)
from recsys.model.protocol import build_task, rank, restricted_per_user
from recsys.model.split import split_interactions
from recsys.model.training import fit_in_memory

K = 10


class Ranker:
    """A contender for ``protocol.rank`` from (U, I) scores of the fitted users' rows."""

    name = "part"

    def __init__(self, users: pd.Index, score):
        self.users, self.score = users, score

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users.get_indexer(user_ids)
        out = np.asarray(self.score(np.maximum(rows, 0)), dtype=np.float32)
        out[rows < 0] = 0.0
        return out


def cold_recall(contender, task) -> np.ndarray:
    """(H,) cold-item recall@K of the users holding cold items out."""
    _, cold = restricted_per_user(rank(contender, task, K).cold, task, task.cold, (K,))
    return cold[f"recall@{K}"]


class Both:
    """``first``'s scores plus ``ratio`` times ``second``'s (two fitted contenders)."""

    name = "blend"

    def __init__(self, first, second, ratio: float):
        self.first, self.second, self.ratio = first, second, ratio

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        return self.first.scores(user_ids) + self.ratio * self.second.scores(user_ids)


def predicted_cf(fused, features, alpha: float):
    """Scores by the collaborative block cold items get from their content ``features``
    (``cold_features``, as the fit made them) with the ridge map refitted at ``alpha`` (warm
    items keep their fitted block)."""
    warm, cold = ~fused.cold_, fused.cold_
    targets = np.hstack([fused.item_blocks_["cf"], fused.item_blocks_["popularity"]])
    coef, intercept = fit_cold_predictor(features[warm], targets[warm], alpha)
    items = fused.item_blocks_["cf"].copy()
    items[cold] = (np.asarray(features[cold] @ coef) + intercept)[:, :-1]
    return lambda rows: fused.user_blocks_["cf"][rows] @ items.T  # (b, I)


def fitted_without_weights(database_url: str, seed: int):
    """The fused contender of `recsys evaluate --split temporal --seed SEED` fitted on its
    training part without the weights stage (``validation_share`` 0: the same blocks, no
    weights chosen) -> (the training part, the test task, the content, the fit)."""
    config = EvaluationConfig(seed=seed)
    fitting = replace(config.fused, validation_share=0.0)
    data = read_catalog(create_engine(database_url))
    split = split_interactions(data.interactions, "temporal", config.holdout, seed)
    train = CatalogData(data.items, data.kinds, split.train)
    task = build_task(split.train, split.test, data.items["item_id"].to_numpy(dtype=str))
    content = ItemContent(fitting).content(train)
    return train, task, content, fit_in_memory(train, fitting, content)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratios", default="0.3,1,3,10", help="cf + ratio x tokens blends")
    parser.add_argument("--alphas", default="3,10,30,100", help="ridge penalties of the cf part")
    parser.add_argument("--tabular-ratios", default="0.25,1,2", help="tokens + ratio x tabular")
    args = parser.parse_args()
    train, task, content, fitted = fitted_without_weights(args.database_url, args.seed)
    fused, users = fitted.fused, pd.Index(fitted.cf.user_ids_)
    contender = ContentProfile("TF-IDF profile", content.tokens).fit(train)
    profiles = {}
    for form in TOKEN_PROFILES:
        fused.token_profile_ = form
        profiles[form] = fused.history_token_profiles(fitted.cf.user_items_)  # (U, F)
    rows = contender._rows(users.to_numpy())  # the contender's row of each fitted user
    checks = {
        "item_tokens_max_diff": float(
            abs(normalize_rows(content.tokens) - fused.item_tokens_).max()
        ),
        "users_unknown_to_contender": int((rows < 0).sum()),
        "binary_profile_max_diff": float(abs(contender.profiles_[rows] - profiles["binary"]).max()),
    }

    def tokens(form):
        return lambda rows: (profiles[form][rows] @ fused.item_tokens_.T).toarray()

    def cf(rows):
        return fused.user_blocks_["cf"][rows] @ fused.item_blocks_["cf"].T  # (b, I)

    parts = {"TF-IDF profile": contender}
    parts.update({f"tokens ({f})": Ranker(users, tokens(f)) for f in TOKEN_PROFILES})
    parts["cf predicted from content"] = Ranker(users, cf)
    for form in ("confidence", "binary"):
        for ratio in floats(args.ratios):
            blend = lambda rows, f=form, r=ratio: cf(rows) + r * tokens(f)(rows)  # noqa: E731
            parts[f"cf + {ratio:g} x tokens ({form})"] = Ranker(users, blend)
    features = cold_features(
        {b: normalize_rows(v) for b, v in content.blocks.items() if v.shape[1]}, content.tokens
    )
    parts.update(
        {
            f"cf predicted, alpha {a:g}": Ranker(users, predicted_cf(fused, features, a))
            for a in floats(args.alphas)
        }
    )
    if "tabular" in content.blocks:
        tabular = ContentProfile("content (tabular)", content.blocks["tabular"]).fit(train)
        parts["content (tabular)"] = tabular
        for ratio in floats(args.tabular_ratios):
            parts[f"tokens (binary) + {ratio:g} x tabular"] = Both(contender, tabular, ratio)
    recalls = {name: cold_recall(part, task) for name, part in parts.items()}
    base = recalls["TF-IDF profile"]
    results = {"checks": checks, "users": len(base), "cold_recall@10": {}}
    for name, recall in recalls.items():
        diff = recall - base
        error = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        results["cold_recall@10"][name] = {
            "recall": round(float(recall.mean()), 4),
            "minus_contender": round(float(diff.mean()), 4),
            "se": round(float(error), 4),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
