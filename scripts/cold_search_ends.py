"""The cold search's two ends on the validation slice and on the test split, per token profile
form: which one the weights stage keeps and how each ranks new items.

    .venv/bin/python scripts/cold_search_ends.py --database-url sqlite:///DB --seed N \
        [--cold-k 50]

Runs the weights stage of `recsys evaluate --split temporal --seed N`'s fused contender on its
training part (the same validation slice, user sample, ALS and candidates as
``recsys.model.validation.choose_weights``) once per token profile form, and records the ends
of the cold search's two ascents (from the feed's blend; from the token term alone, where it
finds cold items) as ``_pick_end`` sees them: each end's cold weights, its validation cold
recall at ``grid.cold_k`` and at the headline K (the validation users holding cold items out,
cold items among themselves), the paired difference of the token-alone end to the blend's
with one standard error, and the end kept. Then it fits the fused model on the whole training
part and ranks the test users' cold items under each end's weights (cold-item recall@10, as
the evaluation reports it, and the paired difference to the TF-IDF profile contender).
``--cold-k`` replaces ``WeightGrid.cold_k`` (the cold objective's cut-off, 50) in both stages.
``--average-tied`` adds, per form, one more end (``"kept": "average"``): the ends the cold
objective cannot tell from the best (``validation._better`` at ``grid.significance``), each
scaled to one standard deviation of its cold items' scores (centred per user), summed, and
scaled back to the best end's spread (a blend of equally plausible ends, tried instead of
picking one). Issue 13, benchmarks/RESULTS.md sessions 11 and 63.
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
from recsys.model import validation
from recsys.model.cf import CollaborativeModel
from recsys.model.data import CatalogData, read_catalog
from recsys.model.fusion import TOKENS, FusedModel
from recsys.model.protocol import build_task, rank, restricted_per_user
from recsys.model.split import split_interactions, validation_split

K = validation.K


class FusedScores:
    """The fused model's feed scores (``recsys.evaluation.contenders.Fused.scores``)."""

    name = "fused"

    def __init__(self, fused: FusedModel, users: pd.Index):
        self.fused, self.users = fused, users

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users.get_indexer(user_ids)
        picked = np.maximum(rows, 0)
        model = self.fused
        out = model.user_vectors(picked) @ model.item_vectors_.T
        tokens = model.token_scores(model.user_tokens_[picked])
        out = np.asarray(out if tokens is None else out + tokens, dtype=np.float32)
        out[rows < 0] = 0.0
        return out


def cold_recall(contender, task) -> np.ndarray:
    """(H,) cold-item recall@K of the users holding cold items out."""
    _, cold = restricted_per_user(rank(contender, task, K).cold, task, task.cold, (K,))
    return cold[f"recall@{K}"]


def paired(new: np.ndarray, old: np.ndarray) -> dict:
    diff = new - old
    error = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return {"diff": round(float(diff.mean()), 4), "se": round(float(error), 4)}


def averaged(ends: list, view: validation.Candidates, z: float) -> dict | None:
    """The tied ends' cold weights averaged at equal spread (module docstring); None when
    no end is tied with the best."""
    best = max(ends, key=lambda end: end[1].objective)
    tied = [end for end in ends if not validation._better(best[1], end[1], z)]
    if len(tied) < 2:
        return None
    cold = view._cold_cells & ~view._padding  # (U, C) the cold candidates
    names = sorted({block for weights, _ in tied for block in weights})
    columns = dict(zip(view.blocks, view._block_columns, strict=True))
    centred = []
    for block in names:
        scores = columns.get(block, np.zeros(cold.shape, np.float32))
        mean = np.where(cold, scores, 0).sum(1, keepdims=True) / np.maximum(
            cold.sum(1, keepdims=True), 1
        )
        centred.append((scores - mean)[cold].astype(np.float64))
    spread = np.cov(np.stack(centred), bias=True)  # (B, B) of the blocks' cold scores

    def vector(weights: dict) -> np.ndarray:
        return np.array([weights.get(block, 0.0) for block in names])

    def scale(v: np.ndarray) -> float:
        return float(np.sqrt(v @ spread @ v))

    total = sum(vector(w) / scale(vector(w)) for w, _ in tied if scale(vector(w)) > 0)
    total = total * scale(vector(best[0])) / scale(total)
    return {block: float(value) for block, value in zip(names, total, strict=True)}


def validation_ends(
    train: CatalogData, content, config, average_tied: bool = False
) -> tuple[dict, dict, object]:
    """Per token profile form, the cold search's ends on the validation slice."""
    item_ids = train.items["item_id"].to_numpy(dtype=str)
    fit_part, val_part = validation_split(train.interactions, config.validation_share)
    every = build_task(fit_part, val_part, item_ids)
    task = every.sample(config.validation_users, seed=0)
    holding = np.asarray(every.heldout[:, every.cold].sum(axis=1)).ravel() > 0
    counts = {"validation_users": len(every.user_ids), "sampled": len(task.user_ids)}
    counts["holding_cold_items"] = int(holding.sum())
    cf, confidence, _ = validation.choose_confidence(fit_part, item_ids, task, config, False)
    fused = FusedModel(config.fusion).fit(cf, content.blocks, len(item_ids), tokens=content.tokens)
    profiles = validation._user_profiles(fused, cf, task, config.fusion.token_profiles)
    candidates = validation.Candidates.of_users(
        fused, cf.user_ids_, task, config.validation_candidates, profiles
    )
    blocks = {**fused.layout_.dims, **({TOKENS: 1} if fused.has_tokens else {})}
    picks = []
    original = validation._pick_end

    def recording(ends, at_headline, z):
        chosen = original(ends, at_headline, z)
        picks.append((ends, at_headline, chosen))
        return chosen

    validation._pick_end = recording
    found = {}
    try:
        for form in profiles or [None]:
            view, asked = candidates.with_profile(form), []

            def evaluate(weights, cold_scale, k=K, view=view, asked=asked):
                asked.append((weights, cold_scale))
                return validation._scored(view.rank(weights, cold_scale, k), task, k)

            picks.clear()
            choice, _ = validation._grid_search(evaluate, blocks, config)
            found[form] = {"chosen": {"weights": choice.weights, "cold_scale": choice.cold_scale}}
            if not picks:
                continue
            ends, at_headline, chosen = picks[-1]
            described, headline = [], []
            mean = averaged(ends, view, config.grid.significance) if average_tied else None
            for cold_weights, at_cold_k in ends + ([(mean, None)] if mean else []):
                headline.append(at_headline(cold_weights))
                feed, scale = asked[-1]  # what the cold weights are as feed weights
                described.append(
                    {
                        "cold_weights": cold_weights,
                        "weights": feed,
                        "cold_scale": scale,
                        f"cold_recall@{config.grid.cold_k}": None
                        if at_cold_k is None
                        else round(at_cold_k.objective, 4),
                        f"cold_recall@{K}": round(headline[-1].objective, 4),
                        "kept": "average" if at_cold_k is None else cold_weights == chosen,
                    }
                )
            found[form]["ends"] = described
            if len(ends) == 2:
                found[form]["alone_minus_blend"] = {
                    f"@{config.grid.cold_k}": paired(ends[1][1].per_user, ends[0][1].per_user),
                    f"@{K}": paired(headline[1].per_user, headline[0].per_user),
                }
    finally:
        validation._pick_end = original
    counts["holding_cold_items_sampled"] = int(
        (task.heldout[:, task.cold].getnnz(axis=1) > 0).sum()
    )
    return found, counts, confidence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold-k", type=int, default=None)
    parser.add_argument("--average-tied", action="store_true")
    args = parser.parse_args()
    evaluation = EvaluationConfig(seed=args.seed)
    config = evaluation.fused
    if args.cold_k:
        config = replace(config, grid=replace(config.grid, cold_k=args.cold_k))
    data = read_catalog(create_engine(args.database_url))
    split = split_interactions(data.interactions, "temporal", evaluation.holdout, args.seed)
    train = CatalogData(data.items, data.kinds, split.train)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    content = ItemContent(config).content(train)
    found, counts, confidence = validation_ends(train, content, config, args.average_tied)

    task = build_task(split.train, split.test, item_ids)
    cf = CollaborativeModel(config.cf).fit(train.interactions, item_ids, confidence=confidence)
    fused = FusedModel(config.fusion).fit(cf, content.blocks, len(item_ids), tokens=content.tokens)
    base = cold_recall(ContentProfile("TF-IDF profile", content.tokens).fit(train), task)
    scorer = FusedScores(fused, pd.Index(cf.user_ids_))
    for form, result in found.items():
        if form is not None:
            fused.token_profile_ = form
            fused.user_tokens_ = fused.history_token_profiles(cf.user_items_)
        for end in result.get("ends", []):
            fused.set_weights(end["weights"], end["cold_scale"])
            recall = cold_recall(scorer, task)
            end["test_cold_recall@10"] = round(float(recall.mean()), 4)
            end["test_minus_contender"] = paired(recall, base)
    report = {
        "validation": counts,
        "test_users_holding_cold_items": len(base),
        "test_contender_cold_recall@10": round(float(base.mean()), 4),
        "forms": found,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
