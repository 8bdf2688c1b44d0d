"""Does outlier search find listings with a wrong photo? Plants them in a copy of a catalog.

Copies a SQLite catalog (the source is never written), gives ``--plant`` seeded items the
photo of another item whose ``--attribute`` differs (a seller's wrong upload: a sneaker's
listing showing a blouse), trains a bundle at `recsys train`'s defaults, and scores the
spaces outlier search could read with ``OutlierScorer``, side by side: the fused item
vectors and ``FusedModel.listing_vectors`` (the attributes and photo as the "similar"
surface compares them, what duplicates, `recsys catalog outliers` and the admin endpoint
read), at each neighbour rank ``--k`` (default: the scorer's own). For each: the ROC AUC of
the planted items' scores against the rest, and how many planted items are flagged at each
``--fpr``; and, as session 45 noticed, the share of the most-viewed and never-viewed items
flagged (``--plant 0``: that alone, for a catalog without photos).

    .venv/bin/python scripts/planted_outliers.py --source DEMO/catalog.db --workdir /tmp/odd \
        --attribute department
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.catalog.models import Interaction, Item
from recsys.catalog_intel import OutlierConfig, OutlierScorer
from recsys.catalog_intel.outliers import threshold_at
from recsys.model.bundle import load_active
from recsys.model.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relisted_duplicates import copied_catalog  # a script beside this one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a SQLite catalog file")
    parser.add_argument("--workdir", type=Path, required=True, help="replaced whole")
    parser.add_argument("--attribute", help="whose value the wrong photo's differs")
    parser.add_argument("--plant", type=int, default=50, help="items given a wrong photo")
    parser.add_argument("--fpr", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[0],
        help="neighbour ranks scored side by side (0: OutlierScorer's default)",
    )
    args = parser.parse_args()
    if args.plant and not args.attribute:
        parser.error("--attribute is needed to plant wrong photos (or --plant 0)")
    engine = copied_catalog(args.source, args.workdir)
    planted = plant(engine, args.attribute, args.plant, args.seed)
    train(engine, args.workdir / "artifacts", device="cpu")
    recommender = load_active(engine)
    fused = recommender.fused
    rows = recommender.item_rows(planted)
    events = event_counts(engine, recommender.item_ids)
    spaces = {
        "fused item vectors": fused.item_vectors_,
        "listing vectors": fused.listing_vectors(),
        "content vectors (each block at one weight)": fused.content_vectors(),
    }
    report = {
        f"{name}, k {k or 'default'}": scored(v, rows, events, args.fpr, k or None)
        for name, v in spaces.items()
        for k in args.k
    }
    surface = fused.surface_weights_["similar"]
    print(json.dumps({"planted": len(planted), "similar surface": surface, **report}, indent=1))


def plant(engine, attribute: str, n: int, seed: int) -> list[str]:
    """Give ``n`` seeded items with a photo the photo of an item whose ``attribute`` differs
    -> the planted items' ids."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return []
    with Session(engine) as session, session.begin():
        items = session.scalars(
            select(Item).where(Item.image_path.is_not(None)).order_by(Item.id)
        ).all()
        values = np.array([str((i.attributes or {}).get(attribute)) for i in items])
        if len(set(values.tolist())) < 2:
            raise SystemExit(f"--attribute {attribute!r} has fewer than 2 values among the items")
        paths = [i.image_path for i in items]
        chosen = rng.choice(len(items), min(n, len(items)), replace=False)
        for place in chosen.tolist():
            others = np.flatnonzero(values != values[place])
            items[place].image_path = paths[int(rng.choice(others))]
        return [items[place].external_id for place in chosen.tolist()]


def event_counts(engine, item_ids: np.ndarray) -> np.ndarray:
    """Events per item, in ``item_ids``' order."""
    with Session(engine) as session:
        counted = (
            select(Item.external_id, func.count(Interaction.id))
            .join(Interaction, Interaction.item_id == Item.id)
            .group_by(Item.external_id)
        )
        found = dict(session.execute(counted).all())
    return np.array([found.get(i, 0) for i in item_ids.tolist()])


def scored(vectors, planted: np.ndarray, events: np.ndarray, fprs: list[float], k) -> dict:
    is_planted = np.zeros(len(vectors), dtype=bool)
    is_planted[planted] = True
    top = events >= np.quantile(events, 0.99)
    never = events == 0
    scorer = OutlierScorer(OutlierConfig(k=k)).fit(vectors)  # the scores: one search
    out: dict = {"k": scorer.k_}
    if is_planted.any():
        out["planted ROC AUC"] = round(float(roc_auc_score(is_planted, scorer.scores_)), 4)
    for fpr in fprs:
        flagged = scorer.scores_ > threshold_at(scorer.scores_, fpr)
        out[f"fpr {fpr}: planted flagged"] = int(flagged[is_planted].sum())
        out[f"fpr {fpr}: most-viewed 1% / never viewed / the rest flagged, share"] = [
            round(float(flagged[top & ~is_planted].mean()), 4),
            round(float(flagged[never & ~is_planted].mean()), 4) if never.any() else None,
            round(float(flagged[~top & ~never & ~is_planted].mean()), 4),
        ]
    return out


if __name__ == "__main__":
    main()
