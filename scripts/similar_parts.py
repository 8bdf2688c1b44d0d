"""Which content part can carry the demo shop's "more like this" row: same-class precision@10
of each part alone and of blends, beside what the active bundle serves.

    RECSYS_DATABASE_URL=sqlite:///shop.db RECSYS_ARTIFACTS_DIR=... \\
        .venv/bin/python scripts/similar_parts.py --data var/data/fashion-shop [--items 500]

For sampled items (those without interactions reported apart), each ranking is exact over
the whole catalog: cosine of the tabular block, of the image block, and of the sparse item
tokens (title words and attribute values, the token term's TF-IDF rows), alone and summed.
A blend's precision bounds what surface weights over those parts can reach; "served" is
``similar_items(mode="similar")`` of the bundle (its chosen weights, its index).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.catalog import connect
from recsys.model.bundle import load_active
from recsys.settings import Settings

BLENDS = {
    "tabular": {"tabular": 1.0},
    "image": {"image": 1.0},
    "tokens": {"tokens": 1.0},
    "tabular + image": {"tabular": 1.0, "image": 1.0},
    "tokens + image": {"tokens": 1.0, "image": 1.0},
    "tokens + tabular": {"tokens": 1.0, "tabular": 1.0},
    "tokens + tabular + image": {"tokens": 1.0, "tabular": 1.0, "image": 1.0},
    "tokens + image/2": {"tokens": 1.0, "image": 0.5},
}


def cosines(fused, part: str, queries: np.ndarray) -> np.ndarray | None:
    """(Q, I) cosine of the query rows to every item in one part; None if the bundle lacks it."""
    if part == "tokens":
        tokens = fused.item_tokens_ if fused.has_tokens else None
        return None if tokens is None else (tokens[queries] @ tokens.T).toarray()
    block = fused.item_blocks_.get(part)
    if block is None:
        return None
    unit = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return unit[queries] @ unit.T


def precision(scores: np.ndarray, queries: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(Q,) share of each query's top-k (itself excluded) with the query's label."""
    scores = scores.copy()
    scores[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return (labels[top] == labels[queries][:, None]).mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("var/data/fashion-shop"))
    parser.add_argument("--items", type=int, default=500, help="sampled query items")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rec = load_active(connect(Settings.load().database_url))
    labels = pd.read_csv(args.data / "labels.csv", dtype={"item_id": str}).set_index("item_id")
    labels = labels["label"].reindex(rec.item_ids).to_numpy()
    interacted = set(pd.read_csv(args.data / "interactions.csv", usecols=["item_id"])["item_id"])
    rng = np.random.default_rng(args.seed)
    queries = rng.choice(len(rec.item_ids), min(args.items, len(rec.item_ids)), replace=False)
    cold = np.array([item not in interacted for item in rec.item_ids[queries]])

    def line(name: str, hits: np.ndarray) -> None:
        print(
            f"{name:26s} all {hits.mean():.3f}  with interactions {hits[~cold].mean():.3f}  "
            f"without ({cold.sum()}) {hits[cold].mean():.3f}"
        )

    served = rec.similar_items(list(rec.item_ids[queries]), k=args.k).ids
    index = pd.Index(rec.item_ids)
    line("served (`similar`)", np.array([
        np.mean(labels[index.get_indexer(ids)] == labels[q])
        for q, ids in zip(queries, served, strict=True)
    ]))  # fmt: skip
    print(f"  its weights: {rec.fused.surface_weights_['similar']}")
    parts = {p: cosines(rec.fused, p, queries) for p in ("tabular", "image", "tokens")}
    for name, weights in BLENDS.items():
        if any(parts[p] is None for p in weights):
            continue
        scores = sum(w * parts[p] for p, w in weights.items())
        line(name, precision(scores, queries, labels, args.k))


if __name__ == "__main__":
    main()
